//! One file per job: chunk jobs build the original in S3, delete jobs
//! remove a video's objects, verify jobs ask moderation, encode jobs follow
//! an fflow encode. `shard` consumes a chunk queue and dispatches.

pub mod chunks;
pub mod delete;
pub mod encode;
pub mod shard;
pub mod verify;

use std::time::Duration;

use std::sync::Arc;

use reelay_shared::{mq::Publisher, retry::RetryPolicy, storage::Storage, store::Store};

use crate::{config::ModerationConfig, fflow::Fflow};

/// How a verify or encode job ended; the consumer maps it to an ack or a
/// dead-letter in one place (`startup::settle`).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect is recorded, or there was nothing to do: ack.
    Done,
    /// It can't succeed (the webhook stayed down, no encoder replica took
    /// it): dead-letter it, with why.
    GaveUp(String),
}

/// What every job needs.
pub struct Context {
    pub store: Store,
    pub storage: Storage,
    pub retry: RetryPolicy,
    pub stage_idle: Duration,
    pub prefetch: u16,
    /// Publishes verify jobs once an upload is whole.
    pub publisher: Arc<Publisher>,
    /// Set when a moderation webhook is configured.
    pub moderation: Option<ModerationConfig>,
    /// Set when fflow replicas are configured: uploads are forwarded and
    /// encoded.
    pub fflow: Option<Arc<Fflow>>,
    pub http: reqwest::Client,
}

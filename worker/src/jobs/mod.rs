//! The jobs of every product, one folder each, and what they all need.

pub mod engagement;
pub mod fleet;
pub mod video;

use std::sync::Arc;

use reelay_shared::{
    mq::Publisher, ratelimit::RateLimiter, retry::RetryPolicy, storage::Storage, store::Store,
};

use crate::config::WorkerConfig;
use video::fflow::Fflow;

/// What every job needs: the configuration, once, and the handles built
/// from it.
pub struct Context {
    pub config: Arc<WorkerConfig>,
    pub store: Store,
    pub storage: Storage,
    /// Publishes the jobs that follow others (verify and encode after an
    /// upload).
    pub publisher: Arc<Publisher>,
    /// Set when fflow replicas are configured: uploads are forwarded and
    /// encoded.
    pub fflow: Option<Arc<Fflow>>,
    /// Rate limits shared with every other worker (fleet update requests).
    pub limiter: RateLimiter,
    pub http: reqwest::Client,
}

impl Context {
    /// Backoff for each S3 step (`REELAY_S3_RETRIES`).
    pub fn retry(&self) -> RetryPolicy {
        self.config.s3_retry.policy()
    }
}

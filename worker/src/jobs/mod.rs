//! The jobs of every product, one folder each, and what they all need.

pub mod engagement;
pub mod fleet;
pub mod video;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use reelay_shared::{
    VideoId, mq::Publisher, ratelimit::RateLimiter, retry::RetryPolicy, storage::Storage,
    store::Store,
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
    /// Uploads whose S3 step failed in a way that looked like an outage
    /// while S3 answered a probe, and how often: across restarts of the
    /// consumers, so an error S3 repeats is not waited out forever.
    pub s3_strikes: Mutex<HashMap<VideoId, u32>>,
    /// Chunk bytes held unacked across the shards.
    pub held: video::chunks::HeldBytes,
}

/// How often an upload's S3 step may fail while S3 answers before the
/// failure counts as S3 refusing it.
pub const S3_STRIKES: u32 = 3;

impl Context {
    /// Backoff for each S3 step (`REELAY_S3_RETRIES`).
    pub fn retry(&self) -> RetryPolicy {
        self.config.s3_retry.policy()
    }

    /// Counts one more unexplained S3 failure of `video`; how many so far.
    pub fn s3_strike(&self, video: VideoId) -> u32 {
        let mut strikes = self.s3_strikes.lock().expect("not poisoned");
        let n = strikes.entry(video).or_default();
        *n += 1;
        *n
    }

    /// Forgets `video`'s strikes (its upload ended).
    pub fn s3_forgive(&self, video: VideoId) {
        self.s3_strikes.lock().expect("not poisoned").remove(&video);
    }
}

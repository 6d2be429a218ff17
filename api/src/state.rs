//! What every request handler shares: the configuration, once, and the
//! handles built from it.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use reelay_shared::lock::Redis;
use reelay_shared::{
    clickhouse::ClickHouse, lock::Locks, mq::Publisher, storage::Storage, store::Store,
    video::queries::ProfileVideo,
};

use crate::{
    auth::Verifier,
    config::ApiConfig,
    engagement::events::{Audiences, PlaybackSink},
};

/// One per api, shared by every request: a clone is one reference count
/// (axum clones the state for each extractor of each request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<ApiConfig>,
    pub store: Store,
    /// Publishes jobs with confirms.
    pub publisher: Arc<Publisher>,
    /// The per-upload PATCH locks in Redis.
    pub locks: Locks,
    pub redis: Redis,
    /// Checks bearer tokens.
    pub verifier: Verifier,
    /// Names object keys and presigns temporary links (local computation:
    /// the api never sends object bytes to S3).
    pub storage: Storage,
    pub metrics: PrometheusHandle,
    /// Writes fleet reports in batches (group commit).
    pub reports: crate::fleet::devices::Reports,
    /// Publishes player events to the playback stream (group commit).
    pub playback: PlaybackSink,
    /// Who may watch which video, cached for player events.
    pub audiences: Audiences,
    /// The analytics store, for statistics (never on the events' path).
    pub clickhouse: ClickHouse,
    /// Each caller's rate on the endpoints that need no token.
    pub throttle: crate::throttle::Throttle,
    /// Request-body bytes held across all PATCHes.
    pub budget: Arc<crate::video::budget::Budget>,
    /// What status polls read, per video and caller, kept exact by
    /// LISTEN/NOTIFY: a poll costs no query while the video is unchanged.
    pub polls: reelay_shared::fresh::FreshCache<Arc<crate::routes::video::videos::PollAnswer>>,
    /// Each user's profile video as batch links read it, kept likewise.
    pub profiles: reelay_shared::fresh::FreshCache<ProfileVideo>,
}

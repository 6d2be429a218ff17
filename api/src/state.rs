//! What every request handler shares: the configuration, once, and the
//! handles built from it.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use reelay_shared::lock::Redis;
use reelay_shared::{
    clickhouse::ClickHouse, lock::Locks, mq::Publisher, storage::Storage, store::Store,
};

use crate::{
    auth::Verifier,
    config::ApiConfig,
    engagement::events::{Audiences, PlaybackSink},
};

#[derive(Clone)]
pub struct AppState {
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
}

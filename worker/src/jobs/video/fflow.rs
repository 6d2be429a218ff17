//! The worker's side of fflow: starting sessions on encoder replicas,
//! keeping `session → replica address` in Redis for every worker, forwarding
//! an upload's chunks in order to its replica, and asking for encodes.
//!
//! Forwarding is a copy for speed, never the source of truth: the original
//! in S3 is. When forwarding can't keep up or the replica goes away, it
//! stops, and the encode reads the original from S3 instead.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use redis::Script;
use reelay_shared::lock::Redis;
use reelay_shared::{
    VideoId,
    video::{
        fflow::{Encode, Glued, SessionInfo, Source, StartSession},
        routing,
    },
};

pub use crate::config::FflowConfig;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::Instrument;

/// Why a call to a replica did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The replica does not have the session (restarted, or never had it).
    #[error("the replica does not know the session")]
    Unknown,
    /// Its glued bytes are not the whole original.
    #[error("the replica's copy is incomplete")]
    Incomplete,
    #[error("the replica is unreachable: {0}")]
    Unreachable(String),
    #[error("the replica refused: {0}")]
    Refused(String),
}

/// Sets the route only if it is still `dead` (or gone): of two workers that
/// find a replica dead, the first to re-route wins and the other follows.
const REROUTE: &str = r#"
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return ARGV[2]
end
return current"#;

/// Chunks queued to one replica before forwarding gives up on it.
const FORWARD_QUEUE: usize = 8;

pub struct Fflow {
    http: reqwest::Client,
    config: FflowConfig,
    redis: Redis,
    prefix: String,
}

impl Fflow {
    pub fn new(config: FflowConfig, redis: Redis, prefix: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            config,
            redis,
            prefix,
        }
    }

    pub fn config(&self) -> &FflowConfig {
        &self.config
    }

    fn key(&self, video: VideoId) -> String {
        routing::session_key(&self.prefix, video)
    }

    /// The replica holding `video`'s session, if Redis knows one.
    pub async fn route(&self, video: VideoId) -> Option<String> {
        let mut redis = self.redis.clone();
        match redis::cmd("GET")
            .arg(self.key(video))
            .query_async::<Option<String>>(&mut redis)
            .await
        {
            Ok(route) => route,
            Err(e) => {
                tracing::warn!(error = %e, "reading the fflow route failed");
                None
            }
        }
    }

    pub async fn forget_route(&self, video: VideoId) {
        let mut redis = self.redis.clone();
        let deleted: Result<(), _> = redis::cmd("DEL")
            .arg(self.key(video))
            .query_async(&mut redis)
            .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "removing the fflow route failed; it expires");
        }
    }

    /// Starts a session on the next live replica (round robin across all
    /// workers through a Redis counter, so sessions spread) and records its
    /// route unless another worker recorded one meanwhile (other than
    /// `instead_of`, a replica found dead). The address to use, if any
    /// replica answered.
    pub async fn start_session(
        &self,
        video: VideoId,
        size: u64,
        instead_of: Option<&str>,
    ) -> Option<String> {
        let mut redis = self.redis.clone();
        let next: u64 = redis::cmd("INCR")
            .arg(format!("{}fflow-next", self.prefix))
            .query_async(&mut redis)
            .await
            .unwrap_or(0);
        let n = self.config.urls.len();
        for i in 0..n {
            let base = self.config.urls[(next as usize + i) % n].trim_end_matches('/');
            if instead_of.is_some_and(|dead| dead.starts_with(&format!("{base}/"))) {
                continue;
            }
            let started = self
                .http
                .post(format!("{base}/sessions"))
                .json(&StartSession {
                    video_id: video,
                    size_bytes: size,
                })
                .send()
                .await;
            let info: SessionInfo = match started {
                Ok(r) if r.status().is_success() => match r.json().await {
                    Ok(info) => info,
                    Err(e) => {
                        tracing::warn!(fflow = base, error = %e, "unreadable session answer");
                        continue;
                    }
                },
                Ok(r) => {
                    tracing::warn!(fflow = base, status = %r.status(), "replica refused a session");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(fflow = base, error = %e, "replica unreachable");
                    continue;
                }
            };
            let routed: Result<String, _> = Script::new(REROUTE)
                .key(self.key(video))
                .arg(instead_of.unwrap_or(""))
                .arg(&info.address)
                .arg(self.config.route_ttl.as_secs())
                .invoke_async(&mut redis)
                .await;
            return match routed {
                Ok(route) => {
                    if route != info.address {
                        // Another worker re-routed first: use theirs, drop ours.
                        self.drop_session(&info.address, video).await;
                    }
                    tracing::info!(fflow = %route, "fflow session routed");
                    Some(route)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording the fflow route failed");
                    Some(info.address)
                }
            };
        }
        None
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<SessionInfo, CallError> {
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        match response.status() {
            s if s.is_success() => response
                .json()
                .await
                .map_err(|e| CallError::Refused(format!("unreadable answer: {e}"))),
            reqwest::StatusCode::NOT_FOUND => Err(CallError::Unknown),
            reqwest::StatusCode::CONFLICT => Err(CallError::Incomplete),
            s => Err(CallError::Refused(format!(
                "{s}: {}",
                response.text().await.unwrap_or_default()
            ))),
        }
    }

    /// Asks `address` to encode `video` (idempotent: an encode under way is
    /// left as it is).
    pub async fn encode(
        &self,
        address: &str,
        video: VideoId,
        source: Source,
    ) -> Result<SessionInfo, CallError> {
        self.call(
            self.http
                .post(format!("{address}sessions/{video}/encode"))
                .json(&Encode { source }),
        )
        .await
    }

    /// The session, once its encode ended or after `wait` (a long poll).
    pub async fn status(
        &self,
        address: &str,
        video: VideoId,
        wait: Duration,
    ) -> Result<SessionInfo, CallError> {
        self.call(self.http.get(format!(
            "{address}sessions/{video}?wait_ms={}",
            wait.as_millis()
        )))
        .await
    }

    /// Tells the replica to drop the session (its local files), best effort.
    pub async fn drop_session(&self, address: &str, video: VideoId) {
        let dropped = self
            .http
            .delete(format!("{address}sessions/{video}"))
            .send()
            .await;
        if let Err(e) = dropped {
            tracing::debug!(error = %e, "dropping an fflow session failed; it expires there");
        }
    }

    async fn glue(
        &self,
        address: &str,
        video: VideoId,
        offset: u64,
        bytes: Bytes,
    ) -> Result<u64, CallError> {
        let response = self
            .http
            .put(format!("{address}sessions/{video}/chunks?offset={offset}"))
            .body(bytes)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        match response.status() {
            s if s.is_success() => response
                .json::<Glued>()
                .await
                .map(|g| g.length)
                .map_err(|e| CallError::Refused(e.to_string())),
            reqwest::StatusCode::NOT_FOUND => Err(CallError::Unknown),
            reqwest::StatusCode::CONFLICT => Err(CallError::Incomplete),
            s => Err(CallError::Refused(s.to_string())),
        }
    }

    /// A forwarder for `video`'s new bytes: to the replica its route names,
    /// or a new session when the upload has not stored a byte yet. None when
    /// neither is possible (then the encode reads from S3).
    pub async fn forwarder(
        self: &Arc<Self>,
        video: VideoId,
        size: u64,
        durable: u64,
    ) -> Option<Forwarder> {
        let address = match self.route(video).await {
            Some(address) => address,
            None if durable == 0 && size > 0 => self.start_session(video, size, None).await?,
            None => return None,
        };
        Some(Forwarder::spawn(self.clone(), address, video))
    }
}

/// Sends one upload's bytes to its replica, in order, from a task of its
/// own so the chunk consumer never waits on fflow. Gives up for good at the
/// first failure or when the replica falls behind by [`FORWARD_QUEUE`]
/// chunks.
pub struct Forwarder {
    queue: mpsc::Sender<(u64, Bytes)>,
    broken: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Forwarder {
    fn spawn(fflow: Arc<Fflow>, address: String, video: VideoId) -> Self {
        let (queue, mut chunks) = mpsc::channel::<(u64, Bytes)>(FORWARD_QUEUE);
        let broken = Arc::new(AtomicBool::new(false));
        let flag = broken.clone();
        let forward = async move {
            while let Some((offset, bytes)) = chunks.recv().await {
                if let Err(e) = fflow.glue(&address, video, offset, bytes).await {
                    tracing::warn!(fflow = %address, offset_bytes = offset, error = %e, "forwarding to fflow stopped; the encode will read from S3");
                    flag.store(true, Ordering::Relaxed);
                    return;
                }
            }
        };
        let task =
            tokio::spawn(forward.instrument(tracing::info_span!("forward", video.id = %video)));
        Self {
            queue,
            broken,
            task,
        }
    }

    /// Queues the bytes at `offset`; never waits.
    pub fn send(&self, offset: u64, bytes: Bytes) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        if self.queue.try_send((offset, bytes)).is_err() {
            tracing::warn!(
                offset_bytes = offset,
                "fflow is falling behind; forwarding stopped, the encode will read from S3"
            );
            self.broken.store(true, Ordering::Relaxed);
            self.task.abort();
        }
    }

    /// Waits (at most `within`) until every queued chunk reached the
    /// replica; whether all did. Dropped without this, a forwarder still
    /// sends what it queued, in the background.
    pub async fn finish(self, within: Duration) -> bool {
        let Self {
            queue,
            broken,
            task,
        } = self;
        drop(queue);
        let drained = tokio::time::timeout(within, task).await.is_ok();
        drained && !broken.load(Ordering::Relaxed)
    }
}

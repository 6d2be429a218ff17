//! The reaper: one pass finds what no request or job will move on any more
//! and ends it. Every step re-checks its condition inside the transaction
//! that appends its event (and under the upload's Redis lock where a PATCH
//! could race it), so a pass repeated by a new leader, or cut short, does no
//! harm.
//!
//! - Upload sessions past their `Upload-Expires`: FAILED (`expired`), then
//!   their session closed (below).
//! - PENDING videos that got no byte within the pending timeout: FAILED.
//! - FAILED videos that still have a session: the S3 multipart upload
//!   aborted, staged segments and any other object removed, Redis keys
//!   removed, `UploadAborted` recorded.
//! - DELETED videos whose objects are still in S3 after a grace time (their
//!   delete job died): swept, `ObjectsRemoved` recorded.
//! - LOADING videos with bytes the api confirmed but no worker stored, and
//!   no progress for the stall timeout: checked against S3 (the object may
//!   be whole: then UPLOADED) and the broker (chunks still queued: workers
//!   are behind, left alone); otherwise, once the reaper has watched it
//!   stay so for another stall timeout (a worker may hold the chunks
//!   unacked, which the broker does not count as queued), the confirmed
//!   bytes were lost (dead-lettered) and the offset goes back to what is
//!   durable, so the client's next HEAD resumes from there. Either way nothing stays stuck:
//!   a client that never comes back is expired like any other.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::Utc;
use object_store::{ObjectStoreExt, path::Path};
use reelay_shared::lock::Redis;
use reelay_shared::{
    VideoId, VideoStatus,
    lock::Locks,
    mq::{self, Topology},
    retry::RetryPolicy,
    storage::Storage,
    store::Store,
    video::{VideoEvent, VideoState, routing},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::lease::Lease;

/// Items looked at per kind and pass; the rest wait for the next pass.
const BATCH: i64 = 100;

/// When the reaper acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReapRules {
    /// A PENDING video with no byte this long after creation fails.
    pub pending_timeout: Duration,
    /// A LOADING video whose confirmed bytes did not move this long is checked.
    pub stall_timeout: Duration,
    /// A DELETED video's objects are swept once its delete job had this long.
    pub delete_grace: Duration,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reaped {
    /// Sessions past their expiry: FAILED (`expired`).
    pub expired: u32,
    /// PENDING without a byte: FAILED.
    pub abandoned: u32,
    /// Sessions of FAILED videos closed: multipart aborted, objects removed.
    pub sessions_closed: u32,
    /// DELETED videos whose leftover objects were removed.
    pub deletes_swept: u32,
    /// Stalled uploads whose object was whole after all: UPLOADED.
    pub stalls_completed: u32,
    /// Stalled uploads whose lost bytes the client is asked for again.
    pub stalls_rewound: u32,
    /// Stalled uploads with chunks still queued (workers behind or down).
    pub stalls_waiting: u32,
    /// Skipped because a PATCH holds the upload's lock right now.
    pub busy: u32,
    /// Steps that failed; retried next pass.
    pub errors: u32,
}

impl Reaped {
    /// Whether anything changed (skips and waits are not changes).
    pub fn changed(&self) -> bool {
        self.expired
            + self.abandoned
            + self.sessions_closed
            + self.deletes_swept
            + self.stalls_completed
            + self.stalls_rewound
            > 0
    }
}

pub struct Reaper {
    pub store: Store,
    pub storage: Storage,
    pub locks: Locks,
    pub redis: Redis,
    pub redis_prefix: String,
    pub amqp_url: String,
    pub topology: Topology,
    pub retry: RetryPolicy,
    pub rules: ReapRules,
    pub replica: String,
    /// Tells fflow replicas to drop the sessions of reaped uploads.
    pub http: reqwest::Client,
    /// Stalled uploads seen with nothing queued, by what they had stored
    /// and when this reaper first saw them so; see [`Reaper::stall_confirmed`].
    pub suspects: std::sync::Mutex<HashMap<VideoId, (u64, Instant)>>,
}

/// How an item ended.
enum Step {
    /// Acted: counted under the item's kind.
    Done,
    /// Nothing to do after all (someone else moved it on).
    Nothing,
    /// A PATCH holds the upload's lock.
    Busy,
    /// A stalled upload with chunks still queued.
    Waiting,
    /// A stalled upload whose offset went back to what is durable.
    Rewound,
}

/// The kinds of work of a pass, in the order a pass does them.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Expired,
    Abandoned,
    FailedSession,
    Deleted,
    Stalled,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Expired,
        Kind::Abandoned,
        Kind::FailedSession,
        Kind::Deleted,
        Kind::Stalled,
    ];
}

impl Reaped {
    fn count(&mut self, kind: Kind, step: Step) {
        let done = match kind {
            Kind::Expired => &mut self.expired,
            Kind::Abandoned => &mut self.abandoned,
            Kind::FailedSession => &mut self.sessions_closed,
            Kind::Deleted => &mut self.deletes_swept,
            Kind::Stalled => &mut self.stalls_completed,
        };
        match step {
            Step::Done => *done += 1,
            Step::Nothing => {}
            Step::Busy => self.busy += 1,
            Step::Waiting => self.stalls_waiting += 1,
            Step::Rewound => self.stalls_rewound += 1,
        }
    }
}

impl Reaper {
    /// One pass. Each item starts only while the lease has a third of its
    /// life left and is cut off after that third, so it ends before another
    /// replica could take over; the pass stops when the lease runs short.
    pub async fn pass(&self, lease: &Lease) -> Reaped {
        let margin = lease.ttl() / 3;
        let mut reaped = Reaped::default();
        for kind in Kind::ALL {
            let found = match self.find(kind).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(?kind, error = %e, "reaper query failed");
                    reaped.errors += 1;
                    continue;
                }
            };
            for id in found {
                if lease.held_for(margin).is_none() {
                    return reaped;
                }
                let span = tracing::info_span!("reap", video.id = %id, reap.kind = ?kind);
                let acted =
                    tokio::time::timeout(margin, self.act(kind, id)).instrument(span.clone());
                match acted.await {
                    Ok(Ok(step)) => reaped.count(kind, step),
                    Ok(Err(e)) => span.in_scope(|| failed_step(&mut reaped, &e)),
                    Err(_) => {
                        span.in_scope(|| failed_step(&mut reaped, &anyhow::anyhow!("timed out")))
                    }
                }
            }
        }
        reaped
    }

    async fn act(&self, kind: Kind, id: VideoId) -> anyhow::Result<Step> {
        match kind {
            Kind::Expired => self.expire(id).await,
            Kind::Abandoned => self.abandon(id).await,
            Kind::FailedSession => self.close_session(id).await,
            Kind::Deleted => self.sweep_deleted(id).await,
            Kind::Stalled => self.repair_stall(id).await,
        }
    }

    /// The videos a kind of work applies to now, oldest first.
    async fn find(&self, kind: Kind) -> Result<Vec<VideoId>, sqlx::Error> {
        let (sql, secs) = match kind {
            Kind::Expired => (
                "SELECT s.video_id FROM upload_sessions s JOIN videos v ON v.id = s.video_id \
                 WHERE v.status IN ('PENDING', 'LOADING') AND s.expires_at < now() - make_interval(secs => $1) \
                 ORDER BY s.expires_at LIMIT $2",
                0.0,
            ),
            Kind::Abandoned => (
                "SELECT id FROM videos WHERE status = 'PENDING' AND received_bytes = 0 AND stored_bytes = 0 \
                 AND size_bytes > 0 AND created_at < now() - make_interval(secs => $1) \
                 ORDER BY created_at LIMIT $2",
                self.rules.pending_timeout.as_secs_f64(),
            ),
            Kind::FailedSession => (
                "SELECT v.id FROM videos v JOIN upload_sessions s ON s.video_id = v.id \
                 WHERE v.status = 'FAILED' AND v.updated_at < now() - make_interval(secs => $1) \
                 ORDER BY v.updated_at LIMIT $2",
                0.0,
            ),
            Kind::Deleted => (
                "SELECT v.id FROM videos v WHERE v.status = 'DELETED' \
                 AND v.updated_at < now() - make_interval(secs => $1) \
                 AND EXISTS (SELECT 1 FROM flows f WHERE f.video_id = v.id AND f.status <> 'removed') \
                 ORDER BY v.updated_at LIMIT $2",
                self.rules.delete_grace.as_secs_f64(),
            ),
            Kind::Stalled => (
                "SELECT id FROM videos WHERE status = 'LOADING' AND stored_bytes < received_bytes \
                 AND updated_at < now() - make_interval(secs => $1) \
                 ORDER BY updated_at LIMIT $2",
                self.rules.stall_timeout.as_secs_f64(),
            ),
        };
        let rows: Vec<(VideoId,)> = sqlx::query_as(sql)
            .bind(secs)
            .bind(BATCH)
            .fetch_all(self.store.pool())
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// FAILED (`expired`) if the session is still past its expiry once the
    /// upload's lock is ours; then its session is closed.
    async fn expire(&self, id: VideoId) -> anyhow::Result<Step> {
        self.fail(id, "expired".into(), |current| {
            let expired = current
                .session
                .as_ref()
                .is_some_and(|s| s.expires_at < Utc::now());
            expired
                && current
                    .video
                    .as_ref()
                    .is_some_and(|v| v.status.accepts_bytes())
        })
        .await
    }

    /// FAILED if still PENDING without a byte; then its session is closed.
    async fn abandon(&self, id: VideoId) -> anyhow::Result<Step> {
        let timeout = self.rules.pending_timeout.as_secs();
        self.fail(
            id,
            format!("no bytes received within {timeout} s"),
            |current| {
                current.video.as_ref().is_some_and(|v| {
                    v.status == VideoStatus::Pending && v.received_bytes == 0 && v.stored_bytes == 0
                })
            },
        )
        .await
    }

    /// Under the upload's lock (so no PATCH races it), FAILED with `reason`
    /// if `still` holds of the video's current state; then its session is
    /// closed.
    async fn fail(
        &self,
        id: VideoId,
        reason: String,
        still: impl FnOnce(&VideoState) -> bool,
    ) -> anyhow::Result<Step> {
        let Some(lock) = self.locks.acquire(id).await? else {
            return Ok(Step::Busy);
        };
        let why = reason.clone();
        let failed = self
            .store
            .append(id, |current| {
                Ok(match still(current) {
                    true => (vec![VideoEvent::Failed { reason: why }], true),
                    false => (vec![], false),
                })
            })
            .await;
        lock.release().await;
        if !failed? {
            return Ok(Step::Nothing);
        }
        tracing::info!(reason, "upload failed by the reaper");
        self.close_session(id).await?;
        Ok(Step::Done)
    }

    /// A FAILED video's unfinished upload: abort the multipart upload, remove
    /// every object and the Redis keys, record `UploadAborted`.
    async fn close_session(&self, id: VideoId) -> anyhow::Result<Step> {
        let aggregate = self.store.load(id).await?;
        let (Some(video), Some(session)) = (&aggregate.video, &aggregate.session) else {
            return Ok(Step::Nothing);
        };
        if video.status != VideoStatus::Failed {
            return Ok(Step::Nothing);
        }
        self.storage
            .remove_video(id, session.multipart_id.as_deref(), &self.retry)
            .await?;
        self.forget_in_redis(id).await?;
        let closed = self
            .store
            .append(id, |current| {
                let open = current.session.is_some()
                    && current.video.as_ref().map(|v| v.status) == Some(VideoStatus::Failed);
                Ok(match open {
                    true => (vec![VideoEvent::UploadAborted], true),
                    false => (vec![], false),
                })
            })
            .await?;
        Ok(if closed { Step::Done } else { Step::Nothing })
    }

    /// A DELETED video whose objects outlived its delete job.
    async fn sweep_deleted(&self, id: VideoId) -> anyhow::Result<Step> {
        let aggregate = self.store.load(id).await?;
        if aggregate.video.as_ref().map(|v| v.status) != Some(VideoStatus::Deleted) {
            return Ok(Step::Nothing);
        }
        let multipart = aggregate.session.and_then(|s| s.multipart_id);
        self.storage
            .remove_video(id, multipart.as_deref(), &self.retry)
            .await?;
        self.forget_in_redis(id).await?;
        let removed = self
            .store
            .append(id, |current| {
                Ok(match current.video.as_ref().map(|v| v.status) {
                    Some(VideoStatus::Deleted) => (vec![VideoEvent::ObjectsRemoved], true),
                    _ => (vec![], false),
                })
            })
            .await?;
        if removed {
            tracing::info!("leftover objects of a deleted video swept");
        }
        Ok(if removed { Step::Done } else { Step::Nothing })
    }

    /// Every Redis key of an upload session (its fflow route and its lock),
    /// after telling the routed fflow replica to drop the session's files
    /// (best effort: a replica also drops idle sessions by itself).
    async fn forget_in_redis(&self, id: VideoId) -> Result<(), redis::RedisError> {
        let mut redis = self.redis.clone();
        let route_key = routing::session_key(&self.redis_prefix, id);
        let route: Option<String> = redis::cmd("GET")
            .arg(&route_key)
            .query_async(&mut redis)
            .await?;
        if let Some(address) = route {
            let dropped = self
                .http
                .delete(format!("{address}sessions/{id}"))
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await;
            if let Err(e) = dropped {
                tracing::info!(fflow = %address, error = %e, "fflow replica unreachable; it drops the idle session by itself");
            }
        }
        let keys = [route_key, self.locks.key(id)];
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut redis)
            .await
    }

    async fn repair_stall(&self, id: VideoId) -> anyhow::Result<Step> {
        let Some(lock) = self.locks.acquire(id).await? else {
            return Ok(Step::Busy);
        };
        let repaired = self.check_stall(id).await;
        lock.release().await;
        repaired
    }

    async fn check_stall(&self, id: VideoId) -> anyhow::Result<Step> {
        let Some(video) = self.store.video(id).await? else {
            return Ok(Step::Nothing);
        };
        if video.status != VideoStatus::Loading || video.stored_bytes >= video.received_bytes {
            return Ok(Step::Nothing);
        }
        // S3: a worker may have completed the multipart upload and died
        // before it recorded so.
        let key = Path::from(self.storage.original_key(id));
        match self.storage.s3.head(&key).await {
            Ok(meta) if meta.size == video.size() => {
                let sha256 = self.sha256_of(&key).await?;
                let size = video.size();
                let uploaded = self
                    .store
                    .append(id, |current| {
                        let loading = current
                            .video
                            .as_ref()
                            .is_some_and(|v| v.status == VideoStatus::Loading);
                        Ok(match loading {
                            true => (vec![VideoEvent::Uploaded { sha256 }], true),
                            false => (vec![], false),
                        })
                    })
                    .await?;
                if uploaded {
                    tracing::warn!(
                        size_bytes = size,
                        "stalled upload was whole in S3; recorded as uploaded"
                    );
                    return Ok(Step::Done);
                }
                return Ok(Step::Nothing);
            }
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e).context("HEAD of the original"),
        }
        // The broker: chunks waiting in the upload's shard mean workers are
        // behind (or all down), not that bytes were lost.
        let queued = self.ready_in_shard(id).await?;
        if queued > 0 {
            tracing::info!(
                queued_messages = queued,
                "stalled upload has chunks queued; waiting for workers"
            );
            return Ok(Step::Waiting);
        }
        // Nothing ready in the shard is not nothing in flight: a worker may
        // hold the chunks unacked (right after an outage longer than the
        // stall timeout, every upload looks stalled). Only a stall that
        // this reaper watched last a whole stall timeout is a loss.
        if !self.stall_confirmed(id, video.stored()) {
            return Ok(Step::Waiting);
        }
        let rewound = self
            .store
            .append(id, |current| {
                let Some(v) = current.video.as_ref() else {
                    return Ok((vec![], None));
                };
                if v.status != VideoStatus::Loading || v.stored_bytes >= v.received_bytes {
                    return Ok((vec![], None));
                }
                Ok((
                    vec![VideoEvent::ReceivedRewound {
                        received_bytes: v.stored(),
                    }],
                    Some((v.received(), v.stored())),
                ))
            })
            .await?;
        match rewound {
            Some((from, to)) => {
                tracing::warn!(
                    from_bytes = from,
                    to_bytes = to,
                    "confirmed bytes never reached S3; the client resumes from what is stored"
                );
                Ok(Step::Rewound)
            }
            None => Ok(Step::Nothing),
        }
    }

    /// Whether `id` has been seen stalled at `stored` bytes, with nothing
    /// queued, for a whole stall timeout of this reaper's own watch (a new
    /// leader watches afresh). Forgets what it saw long ago.
    fn stall_confirmed(&self, id: VideoId, stored: u64) -> bool {
        let now = Instant::now();
        let window = self.rules.stall_timeout;
        let mut suspects = self.suspects.lock().expect("not poisoned");
        suspects.retain(|_, (_, since)| now.duration_since(*since) < window * 3);
        let (seen_at, since) = suspects.entry(id).or_insert((stored, now));
        if *seen_at != stored {
            *seen_at = stored;
            *since = now;
        }
        let confirmed = now.duration_since(*since) >= window;
        if confirmed {
            suspects.remove(&id);
        }
        confirmed
    }

    /// Messages ready in the shard queue that carries `id`'s chunks.
    async fn ready_in_shard(&self, id: VideoId) -> anyhow::Result<u32> {
        let name = format!("{}-reaper", self.replica);
        let connection = mq::connect(&self.amqp_url, &name)
            .await
            .context("connecting to the broker")?;
        let declared = async {
            let channel = connection.create_channel().await?;
            channel
                .queue_declare(
                    self.topology.chunk_queue_of(id).as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
        }
        .await;
        let _ = connection.close(200, "done".into()).await;
        Ok(declared
            .context("looking at the shard queue")?
            .message_count())
    }

    /// SHA-256 of an object, streamed.
    async fn sha256_of(&self, key: &Path) -> anyhow::Result<String> {
        use futures_util::StreamExt;
        let mut stream = self.storage.s3.get(key).await?.into_stream();
        let mut hasher = Sha256::new();
        while let Some(bytes) = stream.next().await {
            hasher.update(&bytes?);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

fn failed_step(reaped: &mut Reaped, e: &anyhow::Error) {
    reaped.errors += 1;
    tracing::warn!(
        error = format!("{e:#}"),
        "reaper step failed; retried next pass"
    );
}

//! The Postgres event store: an append-only log with per-aggregate versions
//! and a global sequence, and the projections (videos, flows,
//! upload_sessions) applied in the same transaction.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction, postgres::PgPoolOptions, types::Json};
use uuid::Uuid;

use crate::{
    config::DatabaseConfig,
    domain::{
        Playback, ProfileEvent, StagedSegment, StoredPart, UserId, Verification, VideoEvent,
        VideoId, VideoStatus, percentage,
    },
    push,
};

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The advisory lock that orders writers against a projection rebuild.
/// Every append takes it shared as the first step of its transaction; a
/// rebuild takes it exclusively. So a rebuild waits for the appends in
/// flight and holds up new ones before they lock anything else, and the two
/// can never deadlock on the row and table locks each takes afterwards
/// (which they would, taken in opposite orders: an append locks its
/// projection row, then the log; a rebuild, the log, then the projections).
const PROJECTIONS_LOCK: i64 = 0x7265_656c_6179_0001;

/// The `videos` projection.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Video {
    pub id: VideoId,
    pub owner_id: UserId,
    pub status: VideoStatus,
    pub title: Option<String>,
    pub description: Option<String>,
    pub filename: Option<String>,
    pub filetype: Option<String>,
    pub size_bytes: i64,
    pub received_bytes: i64,
    pub stored_bytes: i64,
    pub sha256: Option<String>,
    pub failure_reason: Option<String>,
    pub verification: Verification,
    pub verification_reason: Option<String>,
    pub onboarding_position: Option<i32>,
    /// How far the encoder got, 0–100.
    pub encoding_percentage: i16,
    /// Where the streams are, once READY.
    pub playback: Option<Json<Playback>>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Video {
    pub fn size(&self) -> u64 {
        self.size_bytes as u64
    }

    pub fn received(&self) -> u64 {
        self.received_bytes as u64
    }

    pub fn stored(&self) -> u64 {
        self.stored_bytes as u64
    }

    /// Share of the original that is durable in S3.
    pub fn uploaded_percentage(&self) -> u8 {
        percentage(self.stored(), self.size())
    }
}

/// The `upload_sessions` projection: one row while the original uploads.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UploadSession {
    pub video_id: VideoId,
    pub flow_id: Uuid,
    pub upload_metadata: Option<String>,
    pub part_size_bytes: i64,
    pub multipart_id: Option<String>,
    pub parts: Json<Vec<StoredPart>>,
    pub staged: Json<Vec<StagedSegment>>,
    pub durable_bytes: i64,
    pub hash_state: String,
    pub last_activity_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The current state of one video aggregate, as `decide` sees it.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    pub video: Option<Video>,
    pub session: Option<UploadSession>,
}

/// The `profiles` projection.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Profile {
    pub user_id: UserId,
    pub video_id: Option<VideoId>,
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

/// One entry of the event log.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct RecordedEvent {
    pub seq: i64,
    pub version: i32,
    pub kind: String,
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The command does not fit the aggregate's current state.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Another writer appended the same version first.
    #[error("concurrent write to the same video")]
    Conflict,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&config.url)
            .await?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    pub async fn video(&self, id: VideoId) -> Result<Option<Video>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM videos WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn aggregate(&self, id: VideoId) -> Result<Aggregate, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, id, false).await
    }

    /// A page of `owner`'s videos, newest first, after the `(created_at, id)`
    /// cursor if given. Without a status filter, deleted videos are left out.
    pub async fn list_videos(
        &self,
        owner: UserId,
        status: Option<VideoStatus>,
        after: Option<(DateTime<Utc>, VideoId)>,
        limit: i64,
    ) -> Result<Vec<Video>, sqlx::Error> {
        let (after_at, after_id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        sqlx::query_as(
            "SELECT * FROM videos WHERE owner_id = $1 \
             AND (CASE WHEN $2::video_status IS NULL THEN status <> 'DELETED' ELSE status = $2 END) \
             AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(owner)
        .bind(status)
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// The onboarding collection in order: position, then creation.
    pub async fn onboarding(&self) -> Result<Vec<Video>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM videos WHERE onboarding_position IS NOT NULL AND status <> 'DELETED' \
             ORDER BY onboarding_position, created_at, id",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// The position after the last onboarding video.
    pub async fn next_onboarding_position(&self) -> Result<i32, sqlx::Error> {
        let (next,): (i32,) =
            sqlx::query_as("SELECT coalesce(max(onboarding_position) + 1, 0) FROM videos")
                .fetch_one(&self.pool)
                .await?;
        Ok(next)
    }

    /// The video's history, oldest first: its own events, and the profile
    /// events that made it (or stopped it being) someone's profile video.
    pub async fn events(&self, id: VideoId) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        sqlx::query_as(
            "SELECT seq, version, kind, payload, recorded_at FROM events \
             WHERE (aggregate_type = 'video' AND aggregate_id = $1) \
                OR (aggregate_type = 'profile' AND payload->>'video_id' = $1::text) \
             ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// Runs `decide` against the video's current state (locked for the
    /// transaction) and appends the events it returns, applying each to the
    /// projections in the same transaction. `decide` returns the events and
    /// a value handed back to the caller, or a rejection.
    pub async fn append<R>(
        &self,
        id: VideoId,
        decide: impl FnOnce(&Aggregate) -> Result<(Vec<VideoEvent>, R), String>,
    ) -> Result<R, AppendError> {
        let mut tx = begin_append(&self.pool).await?;
        let current = load(&mut tx, id, true).await?;
        let (events, out) = decide(&current).map_err(AppendError::Rejected)?;
        let mut version = current.video.as_ref().map_or(0, |v| v.version);
        let mut owner = current.video.as_ref().map(|v| v.owner_id);
        let recorded_at = Utc::now().trunc_subsecs(6);
        for event in &events {
            version += 1;
            let seq = insert_event(
                &mut tx,
                "video",
                id.0,
                version,
                event.kind(),
                &Json(event),
                recorded_at,
            )
            .await?;
            apply(&mut tx, id, version, event, recorded_at).await?;
            if let VideoEvent::Created { owner_id, .. } = event {
                owner = Some(*owner_id);
            }
            // The outbox: the owner's devices hear of it, or nothing does.
            if let (Some(owner), Some(state)) = (owner, event.status_after())
                && state.is_notified()
            {
                push::enqueue(&mut tx, owner, id, seq, state, recorded_at).await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// `user`'s profile, if they ever set a profile video.
    pub async fn profile(&self, user: UserId) -> Result<Option<Profile>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM profiles WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
    }

    /// As [`Store::append`], for the profile aggregate of `user`.
    pub async fn append_profile<R>(
        &self,
        user: UserId,
        decide: impl FnOnce(Option<&Profile>) -> Result<(Vec<ProfileEvent>, R), String>,
    ) -> Result<R, AppendError> {
        let mut tx = begin_append(&self.pool).await?;
        let current: Option<Profile> =
            sqlx::query_as("SELECT * FROM profiles WHERE user_id = $1 FOR UPDATE")
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        let (events, out) = decide(current.as_ref()).map_err(AppendError::Rejected)?;
        let mut version = current.as_ref().map_or(0, |p| p.version);
        let recorded_at = Utc::now().trunc_subsecs(6);
        for event in &events {
            version += 1;
            insert_event(
                &mut tx,
                "profile",
                user.0,
                version,
                event.kind(),
                &Json(event),
                recorded_at,
            )
            .await?;
            apply_profile(&mut tx, user, version, event, recorded_at).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// For each user id, in the order given, their current profile video's
    /// id and status: one round trip however many users.
    pub async fn profile_videos(
        &self,
        users: &[Uuid],
    ) -> Result<
        Vec<(
            Uuid,
            Option<VideoId>,
            Option<VideoStatus>,
            Option<Verification>,
        )>,
        sqlx::Error,
    > {
        sqlx::query_as(
            "SELECT u.user_id, v.id, v.status, v.verification \
             FROM unnest($1::uuid[]) WITH ORDINALITY AS u (user_id, n) \
             LEFT JOIN profiles p ON p.user_id = u.user_id \
             LEFT JOIN videos v ON v.id = p.video_id \
             ORDER BY u.n",
        )
        .bind(users)
        .fetch_all(&self.pool)
        .await
    }

    /// Empties the projections and replays the whole log into them, in one
    /// transaction, so readers see either the old rows or the rebuilt ones
    /// and are never blocked; appends wait until it commits.
    pub async fn rebuild_projections(&self) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PROJECTIONS_LOCK)
            .execute(&mut *tx)
            .await?;
        // DELETE rather than TRUNCATE: TRUNCATE's exclusive table locks would
        // block every reader until the replay ends.
        sqlx::raw_sql(
            "DELETE FROM profiles; DELETE FROM upload_sessions; DELETE FROM flows; DELETE FROM videos",
        )
        .execute(&mut *tx)
        .await?;
        // Page through the log so memory does not grow with its length.
        const PAGE: i64 = 1000;
        let unreadable = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
        let (mut replayed, mut after) = (0u64, 0i64);
        loop {
            let rows: Vec<(i64, String, Uuid, i32, serde_json::Value, DateTime<Utc>)> =
                sqlx::query_as(
                    "SELECT seq, aggregate_type, aggregate_id, version, payload, recorded_at \
                     FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            replayed += rows.len() as u64;
            for (_, kind, id, version, payload, at) in rows {
                if kind == "profile" {
                    let event: ProfileEvent =
                        serde_json::from_value(payload).map_err(unreadable)?;
                    apply_profile(&mut tx, UserId(id), version, &event, at).await?;
                } else {
                    let event: VideoEvent = serde_json::from_value(payload).map_err(unreadable)?;
                    apply(&mut tx, VideoId(id), version, &event, at).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(replayed)
    }

    /// Every projection row as JSON, ordered, for comparing two states.
    pub async fn projections_snapshot(&self) -> Result<serde_json::Value, sqlx::Error> {
        let (snapshot,): (serde_json::Value,) = sqlx::query_as(
            "SELECT jsonb_build_object( \
               'videos', (SELECT coalesce(jsonb_agg(to_jsonb(v) ORDER BY v.id), '[]') FROM videos v), \
               'flows', (SELECT coalesce(jsonb_agg(to_jsonb(f) ORDER BY f.id), '[]') FROM flows f), \
               'upload_sessions', (SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.video_id), '[]') FROM upload_sessions s), \
               'profiles', (SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.user_id), '[]') FROM profiles p))",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(snapshot)
    }
}

/// Starts an append's transaction: the shared side of [`PROJECTIONS_LOCK`]
/// comes before any other lock.
async fn begin_append(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(PROJECTIONS_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Appends one event with the next version of its aggregate and returns its
/// global sequence number; a version someone else took first is a
/// [`AppendError::Conflict`].
async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    aggregate_type: &str,
    id: Uuid,
    version: i32,
    kind: &str,
    payload: &(impl Serialize + Sync),
    recorded_at: DateTime<Utc>,
) -> Result<i64, AppendError> {
    let inserted: Result<(i64,), _> = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, version, kind, payload, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
    )
    .bind(aggregate_type)
    .bind(id)
    .bind(version)
    .bind(kind)
    .bind(Json(payload))
    .bind(recorded_at)
    .fetch_one(&mut **tx)
    .await;
    match inserted {
        Ok((seq,)) => Ok(seq),
        Err(e) => Err(match e.as_database_error().and_then(|d| d.constraint()) {
            Some("events_aggregate_version_key") => AppendError::Conflict,
            _ => AppendError::Database(e),
        }),
    }
}

async fn apply_profile(
    tx: &mut Transaction<'_, Postgres>,
    user: UserId,
    version: i32,
    event: &ProfileEvent,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let video = match event {
        ProfileEvent::VideoSet { video_id, .. } => Some(*video_id),
        ProfileEvent::VideoCleared { .. } => None,
    };
    sqlx::query(
        "INSERT INTO profiles (user_id, video_id, version, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id) DO UPDATE SET video_id = $2, version = $3, updated_at = $4",
    )
    .bind(user)
    .bind(video)
    .bind(version)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn load(
    conn: &mut sqlx::PgConnection,
    id: VideoId,
    for_update: bool,
) -> Result<Aggregate, sqlx::Error> {
    let query = if for_update {
        "SELECT * FROM videos WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM videos WHERE id = $1"
    };
    let video: Option<Video> = sqlx::query_as(query)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let session = if video.is_some() {
        sqlx::query_as(
            "SELECT video_id, flow_id, upload_metadata, part_size_bytes, multipart_id, parts, staged, \
             durable_bytes, hash_state, last_activity_at, expires_at FROM upload_sessions WHERE video_id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    } else {
        None
    };
    Ok(Aggregate { video, session })
}

/// Applies one event to the projections. Uses only the event and its
/// `recorded_at`, so replaying the log reproduces the rows exactly.
async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    id: VideoId,
    version: i32,
    event: &VideoEvent,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if let VideoEvent::Created {
        owner_id,
        flow_id,
        size_bytes,
        part_size_bytes,
        object_key,
        title,
        filename,
        filetype,
        upload_metadata,
        expires_at,
        onboarding_position,
    } = event
    {
        sqlx::query(
            "INSERT INTO videos (id, owner_id, status, title, filename, filetype, size_bytes, version, created_at, updated_at, \
             onboarding_position) VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, $7, $8, $8, $9)",
        )
        .bind(id)
        .bind(owner_id)
        .bind(title)
        .bind(filename)
        .bind(filetype)
        .bind(*size_bytes as i64)
        .bind(version)
        .bind(at)
        .bind(onboarding_position)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO flows (id, video_id, kind, object_key, size_bytes, status, created_at, updated_at) \
             VALUES ($1, $2, 'original', $3, $4, 'uploading', $5, $5)",
        )
        .bind(flow_id)
        .bind(id)
        .bind(object_key)
        .bind(*size_bytes as i64)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO upload_sessions (video_id, flow_id, upload_metadata, part_size_bytes, last_activity_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(flow_id)
        .bind(upload_metadata)
        .bind(*part_size_bytes as i64)
        .bind(at)
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }

    sqlx::query("UPDATE videos SET version = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(version)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    let query = match event {
        VideoEvent::Created { .. } => unreachable!("handled above"),
        VideoEvent::BytesReceived {
            received_bytes,
            expires_at,
        } => {
            sqlx::query(
                "UPDATE videos SET received_bytes = $2, \
                 status = CASE WHEN status = 'PENDING' THEN 'LOADING'::video_status ELSE status END \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(*received_bytes as i64)
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE upload_sessions SET last_activity_at = $2, expires_at = $3 WHERE video_id = $1")
                .bind(id)
                .bind(at)
                .bind(expires_at)
        }
        VideoEvent::MultipartStarted { multipart_id } => {
            sqlx::query("UPDATE upload_sessions SET multipart_id = $2 WHERE video_id = $1")
                .bind(id)
                .bind(multipart_id)
        }
        VideoEvent::SegmentStaged {
            segment,
            hash_state,
        } => {
            let end = (segment.offset + segment.len) as i64;
            stored(tx, id, end).await?;
            sqlx::query(
                "UPDATE upload_sessions SET staged = staged || jsonb_build_array($2::jsonb), \
                 durable_bytes = $3, hash_state = $4 WHERE video_id = $1",
            )
            .bind(id)
            .bind(Json(segment))
            .bind(end)
            .bind(hash_state)
        }
        VideoEvent::PartStored {
            part,
            stored_bytes,
            hash_state,
        } => {
            stored(tx, id, *stored_bytes as i64).await?;
            sqlx::query(
                "UPDATE upload_sessions SET parts = parts || jsonb_build_array($2::jsonb), staged = '[]', \
                 durable_bytes = $3, hash_state = $4 WHERE video_id = $1",
            )
            .bind(id)
            .bind(Json(part))
            .bind(*stored_bytes as i64)
            .bind(hash_state)
        }
        VideoEvent::Uploaded { sha256 } => {
            sqlx::query(
                "UPDATE videos SET status = 'UPLOADED', sha256 = $2, stored_bytes = size_bytes WHERE id = $1",
            )
            .bind(id)
            .bind(sha256)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE flows SET status = 'stored', stored_bytes = size_bytes, updated_at = $2 \
                 WHERE video_id = $1 AND kind = 'original'",
            )
            .bind(id)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            sqlx::query("DELETE FROM upload_sessions WHERE video_id = $1").bind(id)
        }
        VideoEvent::Failed { reason } => {
            sqlx::query("UPDATE videos SET status = 'FAILED', failure_reason = $2 WHERE id = $1")
                .bind(id)
                .bind(reason)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "UPDATE flows SET status = 'failed', updated_at = $2 WHERE video_id = $1 AND status = 'uploading'",
            )
            .bind(id)
            .bind(at)
        }
        VideoEvent::OnboardingPlaced { position } => {
            sqlx::query("UPDATE videos SET onboarding_position = $2 WHERE id = $1")
                .bind(id)
                .bind(position)
        }
        VideoEvent::ReviewRequested => {
            sqlx::query("UPDATE videos SET verification = 'pending_review' WHERE id = $1").bind(id)
        }
        VideoEvent::Moderated {
            verification,
            reason,
            ..
        } => sqlx::query(
            "UPDATE videos SET verification = $2, verification_reason = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(verification)
        .bind(reason),
        VideoEvent::DetailsUpdated { title, description } => {
            sqlx::query("UPDATE videos SET title = $2, description = $3 WHERE id = $1")
                .bind(id)
                .bind(title)
                .bind(description)
        }
        // The log keeps the history; the projections keep nothing personal.
        VideoEvent::Deleted => {
            sqlx::query("UPDATE upload_sessions SET upload_metadata = NULL WHERE video_id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "UPDATE videos SET status = 'DELETED', title = NULL, description = NULL, \
                 filename = NULL, filetype = NULL WHERE id = $1",
            )
            .bind(id)
        }
        VideoEvent::ObjectsRemoved => {
            sqlx::query("UPDATE flows SET status = 'removed', updated_at = $2 WHERE video_id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut **tx)
                .await?;
            sqlx::query("DELETE FROM upload_sessions WHERE video_id = $1").bind(id)
        }
        VideoEvent::UploadAborted => {
            sqlx::query("DELETE FROM upload_sessions WHERE video_id = $1").bind(id)
        }
        VideoEvent::ReceivedRewound { received_bytes } => {
            sqlx::query("UPDATE videos SET received_bytes = $2 WHERE id = $1")
                .bind(id)
                .bind(*received_bytes as i64)
        }
        VideoEvent::EncodingStarted { .. } => sqlx::query(
            "UPDATE videos SET status = 'ENCODING', encoding_percentage = 0 WHERE id = $1",
        )
        .bind(id),
        VideoEvent::EncodingProgressed { percent } => {
            sqlx::query("UPDATE videos SET encoding_percentage = $2 WHERE id = $1")
                .bind(id)
                .bind(i16::from(*percent))
        }
        VideoEvent::Encoded {
            renditions,
            playback,
        } => {
            for rendition in renditions {
                let details = serde_json::json!({
                    "name": rendition.name,
                    "width": rendition.width,
                    "height": rendition.height,
                    "bandwidth": rendition.bandwidth,
                });
                sqlx::query(
                    "INSERT INTO flows (id, video_id, kind, object_key, size_bytes, stored_bytes, status, \
                     details, created_at, updated_at) VALUES ($1, $2, 'rendition', $3, $4, $4, 'stored', $5, $6, $6)",
                )
                .bind(rendition.flow_id)
                .bind(id)
                .bind(format!("{}{}", playback.prefix, rendition.playlist))
                .bind(rendition.size_bytes as i64)
                .bind(details)
                .bind(at)
                .execute(&mut **tx)
                .await?;
            }
            sqlx::query(
                "UPDATE videos SET status = 'READY', encoding_percentage = 100, playback = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(Json(playback))
        }
    };
    query.execute(&mut **tx).await?;
    Ok(())
}

/// Bytes became durable in S3: a PENDING video is LOADING from then on,
/// even if the api has not yet recorded the end of a long PATCH.
async fn stored(
    tx: &mut Transaction<'_, Postgres>,
    id: VideoId,
    bytes: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE videos SET stored_bytes = $2, \
         status = CASE WHEN status = 'PENDING' THEN 'LOADING'::video_status ELSE status END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(bytes)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE flows SET stored_bytes = $2 WHERE video_id = $1 AND kind = 'original'")
        .bind(id)
        .bind(bytes)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

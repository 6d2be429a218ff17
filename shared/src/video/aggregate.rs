//! The video aggregate: its projection rows, the state `decide` sees, the
//! ways a command can be refused, and how it plugs into the event store
//! (the projector is in `projector.rs`, the push outbox in `push`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use super::{
    domain::{Playback, StagedSegment, StoredPart, UserId, Verification, VideoId, VideoStatus},
    events::VideoEvent,
    projector,
};
use crate::{
    push,
    store::{Aggregate, AggregateId},
    video::domain::percentage,
};

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
    /// The fleet firmware this upload is the file of, if any.
    pub firmware_id: Option<Uuid>,
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

/// The current state of one video, as `decide` sees it: nothing before its
/// `Created` event; a session while its original uploads.
#[derive(Clone, Debug, Default)]
pub struct VideoState {
    pub video: Option<Video>,
    pub session: Option<UploadSession>,
}

impl VideoState {
    /// The video, or [`VideoRejection::NotFound`].
    pub fn existing(&self) -> Result<&Video, VideoRejection> {
        self.video.as_ref().ok_or(VideoRejection::NotFound)
    }

    /// The video while it still takes bytes (PENDING or LOADING).
    pub fn open(&self) -> Result<&Video, VideoRejection> {
        let video = self.existing()?;
        match video.status.accepts_bytes() {
            true => Ok(video),
            false => Err(VideoRejection::Closed(video.status)),
        }
    }
}

/// Why a command on a video is refused. The api maps each to its HTTP
/// status in one place (`api/src/error.rs`); workers treat a rejection as
/// "someone else moved the video on".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VideoRejection {
    #[error("no such video")]
    NotFound,
    #[error("the video already exists")]
    AlreadyExists,
    /// It no longer takes bytes (or, for a delete job, is not deleted).
    #[error("the video is {}", .0.as_str())]
    Closed(VideoStatus),
    /// Bytes were recorded under the caller's feet (a second writer).
    #[error("the upload's offset is {actual}, not {expected}")]
    OffsetMoved { expected: u64, actual: u64 },
    #[error("the video is not onboarding content")]
    NotOnboarding,
    #[error("multipart upload {0} was already started")]
    MultipartStarted(String),
    #[error("part {number} is not next ({stored} parts are stored)")]
    PartOutOfOrder { number: u32, stored: u32 },
}

/// The video aggregate in the event store (aggregate type `video`).
pub struct VideoAggregate;

impl AggregateId for VideoId {
    type Aggregate = VideoAggregate;

    fn uuid(self) -> Uuid {
        self.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Aggregate for VideoAggregate {
    const TYPE: &'static str = "video";
    const TABLES: &'static [&'static str] = &["upload_sessions", "flows", "videos"];
    type Id = VideoId;
    type Event = VideoEvent;
    type State = VideoState;
    type Rejection = VideoRejection;

    async fn load(
        conn: &mut PgConnection,
        id: VideoId,
        for_update: bool,
    ) -> Result<VideoState, sqlx::Error> {
        let query = if for_update {
            "SELECT * FROM videos WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT * FROM videos WHERE id = $1"
        };
        let video: Option<Video> = sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        let session = match video {
            Some(_) => sqlx::query_as(
                "SELECT video_id, flow_id, upload_metadata, part_size_bytes, multipart_id, parts, \
                     staged, durable_bytes, hash_state, last_activity_at, expires_at \
                     FROM upload_sessions WHERE video_id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
            None => None,
        };
        Ok(VideoState { video, session })
    }

    fn version(state: &VideoState) -> i32 {
        state.video.as_ref().map_or(0, |v| v.version)
    }

    async fn apply(
        conn: &mut PgConnection,
        id: VideoId,
        version: i32,
        event: &VideoEvent,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        projector::apply(conn, id, version, event, at).await
    }

    /// The push outbox: when an event moves a video to a state its owner is
    /// told of, the owner's devices hear of it, or nothing does.
    async fn recorded(
        conn: &mut PgConnection,
        id: VideoId,
        before: &VideoState,
        event: &VideoEvent,
        seq: i64,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let Some(state) = event.status_after().filter(|s| s.is_notified()) else {
            return Ok(());
        };
        let owner = match (event, &before.video) {
            (VideoEvent::Created { owner_id, .. }, _) => Some(*owner_id),
            (_, Some(v)) => Some(v.owner_id),
            // Created earlier in this same append (`before` is the state
            // before all of it): its row is applied already.
            (_, None) => {
                sqlx::query_scalar("SELECT owner_id FROM videos WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
            }
        };
        if let Some(owner) = owner {
            push::enqueue(conn, owner, id, seq, state, at).await?;
        }
        Ok(())
    }
}

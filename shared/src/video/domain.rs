//! The video product's ids, states and value types.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{S3_MAX_PARTS, S3_MIN_PART_SIZE};

/// A video, and the tus upload id of its original.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct VideoId(pub Uuid);

impl VideoId {
    /// A new, time-ordered id (UUIDv7 keeps the primary-key index local).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Option<Self> {
        Uuid::parse_str(s).ok().map(Self)
    }
}

impl Default for VideoId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for VideoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The `sub` of a bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct UserId(pub Uuid);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a video is in its life. Mirrored by the SQL enum `video_status`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "video_status", rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VideoStatus {
    /// Created by the api on tus creation; no byte confirmed yet. The reaper
    /// fails it when no byte came within `REELAY_PENDING_TIMEOUT_SECS`, or
    /// once its upload expires.
    Pending,
    /// The api confirmed the first bytes; `uploaded_percentage` grows as the
    /// worker stores parts. The reaper fails it (`expired`) once its upload
    /// expires, and repairs it when confirmed bytes stopped reaching S3 (see
    /// `ReceivedRewound`).
    Loading,
    /// The worker completed the multipart upload (or the reaper found it
    /// complete): the original is whole in S3 and its SHA-256 is known. The
    /// reaper leaves it alone.
    Uploaded,
    /// A worker handed the original to an fflow replica, which is encoding
    /// renditions (`encoding_percentage` grows). The original stays linkable.
    /// A worker that dies meanwhile leaves its encode job to another, which
    /// picks the encode up where it runs.
    Encoding,
    /// The renditions (HLS and DASH) are in S3: playable. The reaper leaves
    /// it alone.
    Ready,
    /// Terminal: the worker gave up (S3 retries exhausted, a chunk gap) or the
    /// reaper expired the upload; `failure_reason` says which. The reaper
    /// aborts its unfinished multipart upload and removes its objects.
    Failed,
    /// Terminal: the owner terminated the upload or deleted the video; its
    /// title, description and filename are purged from the projections and
    /// the worker removes its objects (the reaper, if that job died).
    Deleted,
}

impl VideoStatus {
    /// No more bytes are accepted in these states.
    pub fn accepts_bytes(self) -> bool {
        matches!(self, Self::Pending | Self::Loading)
    }

    pub fn is_gone(self) -> bool {
        matches!(self, Self::Failed | Self::Deleted)
    }

    /// The name, as in the API and in SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Loading => "LOADING",
            Self::Uploaded => "UPLOADED",
            Self::Encoding => "ENCODING",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
            Self::Deleted => "DELETED",
        }
    }

    /// The owner's devices are told when a video gets here.
    pub fn is_notified(self) -> bool {
        matches!(self, Self::Uploaded | Self::Ready | Self::Failed)
    }
}

/// Where a video is in moderation. Mirrored by the SQL enum
/// `verification_state`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "verification_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// Nobody has looked at it (no moderation webhook, or not yet sent).
    Unverified,
    /// Sent to the moderation webhook; waiting for a decision.
    PendingReview,
    /// Accepted by moderation or an admin.
    Verified,
    /// Refused: links only for its owner and admins.
    Rejected,
}

/// Who decided a video's moderation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moderator {
    /// The webhook's own answer.
    Webhook,
    /// A later signed `POST /v1/moderation/{id}`.
    Callback,
    /// An admin through the API.
    Admin,
}

/// One stored segment of a partial part, written when a worker could not
/// hold the bytes in memory any longer (see docs/architecture.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedSegment {
    pub offset: u64,
    pub len: u64,
    pub key: String,
}

/// A part of the original's multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    pub number: u32,
    pub etag: String,
}

/// One rendition of an encoded video: a flow of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    /// The flow this rendition is (fixed in the event, so a rebuild gives
    /// the same row).
    pub flow_id: Uuid,
    /// `720p`, `360p`, … (the shorter side).
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// The bitrate asked of the encoder, bits per second.
    pub bandwidth: u64,
    /// Bytes of its init and media segments.
    pub size_bytes: u64,
    /// Its HLS media playlist, in the stream folder.
    pub playlist: String,
}

/// Where an encoded video's streams are: every file (manifests, segments)
/// sits under `prefix`; `hls` and `dash` name the manifests in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Playback {
    pub prefix: String,
    pub hls: String,
    pub dash: String,
    /// The poster image's object key.
    pub poster: String,
    pub duration_ms: u64,
}

/// The S3 part size for an upload of `size` bytes: at least `min_part`
/// (itself at least S3's 5 MiB), large enough that the upload fits in
/// 10,000 parts, rounded up to a whole MiB.
pub fn part_size_for(size: u64, min_part: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(S3_MAX_PARTS);
    let part = needed.max(min_part).max(S3_MIN_PART_SIZE);
    part.div_ceil(MIB) * MIB
}

/// Whole percent of `done` out of `total`; an empty upload is 100 % done.
pub fn percentage(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 100;
    }
    ((done.min(total) as u128 * 100) / total as u128) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_keeps_every_upload_within_ten_thousand_parts() {
        let min = 8 * 1024 * 1024;
        for size in [0u64, 1, 5 << 20, 1 << 30, 80 << 30, 50 << 40] {
            let part = part_size_for(size, min);
            assert!(part >= S3_MIN_PART_SIZE);
            assert!(part >= min);
            assert!(
                size.div_ceil(part) <= S3_MAX_PARTS,
                "size {size} part {part}"
            );
            assert_eq!(part % (1024 * 1024), 0);
        }
        assert_eq!(part_size_for(1 << 30, min), min);
    }

    #[test]
    fn a_status_name_is_its_serde_and_sql_name() {
        for status in [
            VideoStatus::Pending,
            VideoStatus::Loading,
            VideoStatus::Uploaded,
            VideoStatus::Encoding,
            VideoStatus::Ready,
            VideoStatus::Failed,
            VideoStatus::Deleted,
        ] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.as_str().into())
            );
        }
    }

    #[test]
    fn percentage_is_whole_and_capped() {
        assert_eq!(percentage(0, 10), 0);
        assert_eq!(percentage(9, 10), 90);
        assert_eq!(percentage(10, 10), 100);
        assert_eq!(percentage(0, 0), 100);
        assert_eq!(percentage(u64::MAX, u64::MAX), 100);
    }
}

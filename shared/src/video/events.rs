//! What happens to a video and to a user's profile, as appended to the
//! event log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    domain::{
        Moderator, Playback, Rendition, StagedSegment, StoredPart, UserId, Verification, VideoId,
        VideoStatus,
    },
    fflow::Source,
};
use crate::store::Event;

/// Everything that happens to a video, as appended to the event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VideoEvent {
    /// tus creation (api).
    Created {
        owner_id: UserId,
        flow_id: Uuid,
        size_bytes: u64,
        part_size_bytes: u64,
        object_key: String,
        title: Option<String>,
        filename: Option<String>,
        filetype: Option<String>,
        upload_metadata: Option<String>,
        expires_at: DateTime<Utc>,
        /// Set for onboarding content: its place in the collection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        onboarding_position: Option<i32>,
        /// Set when the upload is the file of a fleet firmware (that
        /// firmware's id): not a video to list, moderate or encode.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        firmware_id: Option<Uuid>,
    },
    /// The broker confirmed bytes up to `received_bytes` (api).
    BytesReceived {
        received_bytes: u64,
        expires_at: DateTime<Utc>,
    },
    /// The worker started the S3 multipart upload.
    MultipartStarted { multipart_id: String },
    /// The worker wrote a partial part to a staging object.
    SegmentStaged {
        segment: StagedSegment,
        hash_state: String,
    },
    /// The worker stored a part; staged segments before it are consumed.
    PartStored {
        part: StoredPart,
        stored_bytes: u64,
        hash_state: String,
    },
    /// The multipart upload is complete: the original is whole (worker).
    Uploaded { sha256: String },
    /// The video failed; `reason` says why.
    Failed { reason: String },
    /// The worker sent the video to the moderation webhook.
    ReviewRequested,
    /// Moderation decided; `reason` explains a rejection.
    Moderated {
        verification: Verification,
        reason: Option<String>,
        by: Moderator,
    },
    /// An admin moved onboarding content to `position`.
    OnboardingPlaced { position: i32 },
    /// The owner changed the title or description (the full new values).
    DetailsUpdated {
        title: Option<String>,
        description: Option<String>,
    },
    /// The owner deleted the video (tus termination or the REST DELETE): its
    /// personal metadata leaves the projections; a delete job follows.
    Deleted,
    /// The worker removed the video's objects from S3.
    ObjectsRemoved,
    /// The reaper closed a failed upload's session: its multipart upload
    /// aborted, its objects and Redis keys removed.
    UploadAborted,
    /// The reaper found confirmed bytes that never reached S3 (their chunks
    /// were dead-lettered) and moved the offset back to what is durable, so
    /// the client's next HEAD resumes from there.
    ReceivedRewound { received_bytes: u64 },
    /// A worker asked an fflow replica to encode the original, from the
    /// copy the replica glued (`local`) or from S3; again when the encode
    /// had to move to another replica.
    EncodingStarted { replica: String, source: Source },
    /// The encoder got this far (whole percent, recorded in steps).
    EncodingProgressed { percent: u8 },
    /// The renditions and manifests are in S3: the video is playable.
    Encoded {
        renditions: Vec<Rendition>,
        playback: Playback,
    },
}

impl VideoEvent {
    /// The status a video has after this event, for the events that set one.
    pub fn status_after(&self) -> Option<VideoStatus> {
        match self {
            Self::Created { .. } => Some(VideoStatus::Pending),
            Self::Uploaded { .. } => Some(VideoStatus::Uploaded),
            Self::Failed { .. } => Some(VideoStatus::Failed),
            Self::Deleted => Some(VideoStatus::Deleted),
            Self::EncodingStarted { .. } => Some(VideoStatus::Encoding),
            Self::Encoded { .. } => Some(VideoStatus::Ready),
            _ => None,
        }
    }
}

impl Event for VideoEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Created { .. } => "created",
            Self::BytesReceived { .. } => "bytes_received",
            Self::MultipartStarted { .. } => "multipart_started",
            Self::SegmentStaged { .. } => "segment_staged",
            Self::PartStored { .. } => "part_stored",
            Self::Uploaded { .. } => "uploaded",
            Self::Failed { .. } => "failed",
            Self::ReviewRequested => "review_requested",
            Self::Moderated { .. } => "moderated",
            Self::OnboardingPlaced { .. } => "onboarding_placed",
            Self::DetailsUpdated { .. } => "details_updated",
            Self::Deleted => "deleted",
            Self::ObjectsRemoved => "objects_removed",
            Self::UploadAborted => "upload_aborted",
            Self::ReceivedRewound { .. } => "received_rewound",
            Self::EncodingStarted { .. } => "encoding_started",
            Self::EncodingProgressed { .. } => "encoding_progressed",
            Self::Encoded { .. } => "encoded",
        }
    }
}

/// What happens to a user's profile (aggregate id = the user id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProfileEvent {
    /// The user made `video_id` their profile video; `previous` (if any) is
    /// deleted next.
    VideoSet {
        video_id: VideoId,
        previous: Option<VideoId>,
    },
    /// The current profile video was deleted; the user has none.
    VideoCleared { video_id: VideoId },
}

impl Event for ProfileEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::VideoSet { .. } => "profile_video_set",
            Self::VideoCleared { .. } => "profile_video_cleared",
        }
    }
}

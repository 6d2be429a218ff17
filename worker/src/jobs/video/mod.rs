//! The video product's jobs. Chunk and delete jobs arrive in order on the
//! chunk shards (`chunks`: the consumer; `upload`: one upload's bytes on
//! their way to an S3 multipart upload); verify and encode jobs on their
//! own unordered queues. `fflow` is the worker's side of the encoders.

pub mod chunks;
pub mod delete;
pub mod encode;
pub mod fflow;
pub mod shards;
pub mod upload;
pub mod verify;

use reelay_shared::{
    store::AppendError,
    video::{VideoId, VideoRejection, jobs::JobHeader},
};

/// Why a step of a video job stopped.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// S3 kept failing past the retries. When it refused (see
    /// [`reelay_shared::storage::unavailable`]) the video fails and its
    /// messages go to the dead-letter queue; when it was away, the upload
    /// starts over from committed state once it is back.
    #[error("S3 {step} failed: {source}")]
    Storage {
        step: &'static str,
        #[source]
        source: object_store::Error,
    },
    /// Postgres failed, or another writer moved the video on: drop what is
    /// in memory and let redelivery start again from the committed state.
    #[error(transparent)]
    State(#[from] AppendError<VideoRejection>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
}

impl From<reelay_shared::storage::StorageError> for StepError {
    fn from(e: reelay_shared::storage::StorageError) -> Self {
        Self::Storage {
            step: e.step,
            source: e.source,
        }
    }
}

/// The span a video job runs in.
pub fn job_span(video: VideoId, kind: &'static str) -> tracing::Span {
    tracing::info_span!("job", job.kind = kind, video.id = %video)
}

/// The span of a job read from its header.
pub fn span_of(header: &JobHeader) -> tracing::Span {
    job_span(header.video, header.kind.name())
}

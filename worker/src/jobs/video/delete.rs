//! Delete jobs: remove every object of a deleted video (aborting an
//! unfinished multipart upload), then record `ObjectsRemoved`.

use reelay_shared::{
    VideoId, VideoStatus,
    video::{VideoEvent, VideoRejection},
};

use super::StepError;
use crate::jobs::Context;

pub async fn remove_objects(ctx: &Context, video: VideoId) -> Result<(), StepError> {
    let state = ctx.store.load(video).await?;
    let Some(v) = &state.video else {
        return Ok(());
    };
    if v.status != VideoStatus::Deleted {
        tracing::warn!(status = ?v.status, "delete job for a video that is not deleted; ignored");
        return Ok(());
    }
    let multipart = state.session.and_then(|s| s.multipart_id);
    ctx.storage
        .remove_video(video, multipart.as_deref(), &ctx.retry())
        .await?;
    ctx.store
        .append(video, |current| {
            match current.video.as_ref().map(|v| v.status) {
                Some(VideoStatus::Deleted) => Ok((vec![VideoEvent::ObjectsRemoved], ())),
                Some(status) => Err(VideoRejection::Closed(status)),
                None => Err(VideoRejection::NotFound),
            }
        })
        .await?;
    tracing::info!("objects removed");
    Ok(())
}

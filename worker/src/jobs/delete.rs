//! Delete jobs: remove every object of a deleted video (aborting an
//! unfinished multipart upload), then record `ObjectsRemoved`.

use reelay_shared::{VideoId, VideoStatus, domain::VideoEvent};

use super::{Context, chunks::StepError};

pub async fn remove_objects(ctx: &Context, video: VideoId) -> Result<(), StepError> {
    let aggregate = ctx.store.aggregate(video).await?;
    let Some(v) = &aggregate.video else {
        return Ok(());
    };
    if v.status != VideoStatus::Deleted {
        tracing::warn!(upload.id = %video, status = ?v.status, "delete job for a video that is not deleted; ignored");
        return Ok(());
    }
    let multipart = aggregate.session.and_then(|s| s.multipart_id);
    ctx.storage
        .remove_video(video, multipart.as_deref(), &ctx.retry)
        .await?;
    ctx.store
        .append(video, |current| {
            match current.video.as_ref().map(|v| v.status) {
                Some(VideoStatus::Deleted) => Ok((vec![VideoEvent::ObjectsRemoved], ())),
                _ => Err("the video is no longer deleted".into()),
            }
        })
        .await?;
    tracing::info!(upload.id = %video, "objects removed");
    Ok(())
}

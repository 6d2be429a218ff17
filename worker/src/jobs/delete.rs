//! Delete jobs: remove every object of a deleted video (aborting an
//! unfinished multipart upload), then record `ObjectsRemoved`.

use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, multipart::MultipartStore, path::Path};
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
    let s3 = &ctx.storage.s3;
    let storage_error = |step| move |source| StepError::Storage { step, source };
    if let Some(multipart_id) = aggregate
        .session
        .as_ref()
        .and_then(|s| s.multipart_id.clone())
    {
        let key = Path::from(ctx.storage.original_key(video));
        let aborted = ctx
            .retry
            .run("abort_multipart", || {
                s3.abort_multipart(&key, &multipart_id)
            })
            .await;
        match aborted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage_error("abort_multipart")(e)),
        }
    }
    for prefix in ctx.storage.video_prefixes(video) {
        let prefix = Path::from(prefix.as_str());
        let keys: Vec<Path> = ctx
            .retry
            .run("list", || {
                s3.list(Some(&prefix))
                    .map_ok(|meta| meta.location)
                    .try_collect()
            })
            .await
            .map_err(storage_error("list"))?;
        for key in keys {
            match ctx.retry.run("delete", || s3.delete(&key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage_error("delete")(e)),
            }
        }
    }
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

//! Where a video's objects live in S3, and removing all of them.

use object_store::path::Path;

use super::domain::VideoId;
use crate::{
    retry::RetryPolicy,
    storage::{Storage, StorageError},
};

impl Storage {
    /// Where a video's original lives.
    pub fn original_key(&self, video: VideoId) -> String {
        format!("{}videos/{video}/original", self.prefix())
    }

    /// The folder of a video's renditions: manifests and segments.
    pub fn stream_prefix(&self, video: VideoId) -> String {
        format!("{}videos/{video}/stream/", self.prefix())
    }

    /// Where a video's poster image lives.
    pub fn poster_key(&self, video: VideoId) -> String {
        format!("{}videos/{video}/poster.jpg", self.prefix())
    }

    /// Where a staged segment of a partial part lives.
    pub fn staging_key(&self, video: VideoId, offset: u64) -> String {
        format!("{}staging/{video}/{offset:020}", self.prefix())
    }

    /// Every key of a video starts with one of these.
    pub fn video_prefixes(&self, video: VideoId) -> [String; 2] {
        [
            format!("{}videos/{video}/", self.prefix()),
            format!("{}staging/{video}/", self.prefix()),
        ]
    }

    /// Removes every object of a video: aborts its unfinished multipart
    /// upload if it has one, then deletes every key under its prefixes.
    /// Each step retries under `retry`; what is already gone counts as done,
    /// so running it twice (a redelivered job, the reaper after a dead job)
    /// is harmless. Returns how many objects it deleted.
    pub async fn remove_video(
        &self,
        video: VideoId,
        multipart_id: Option<&str>,
        retry: &RetryPolicy,
    ) -> Result<usize, StorageError> {
        use futures_util::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt, multipart::MultipartStore};
        let failed = |step| move |source| StorageError { step, source };
        if let Some(multipart_id) = multipart_id {
            let key = Path::from(self.original_key(video));
            let id = multipart_id.to_owned();
            let aborted = retry
                .run("abort_multipart", || self.s3.abort_multipart(&key, &id))
                .await;
            match aborted {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed("abort_multipart")(e)),
            }
        }
        let mut deleted = 0;
        for prefix in self.video_prefixes(video) {
            let prefix = Path::from(prefix.as_str());
            let keys: Vec<Path> = retry
                .run("list", || {
                    self.s3
                        .list(Some(&prefix))
                        .map_ok(|meta| meta.location)
                        .try_collect()
                })
                .await
                .map_err(failed("list"))?;
            for key in keys {
                match retry.run("delete", || self.s3.delete(&key)).await {
                    Ok(()) => deleted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(failed("delete")(e)),
                }
            }
        }
        Ok(deleted)
    }
}

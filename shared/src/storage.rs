//! S3 (Garage in development and tests) through object_store: object keys
//! under one prefix, and the multipart calls the worker resumes by id.

use std::{sync::Arc, time::Duration};

use object_store::{
    BackoffConfig, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path,
};

use crate::{config::S3Config, domain::VideoId, retry::RetryPolicy};

/// An S3 step that kept failing past its retries.
#[derive(Debug, thiserror::Error)]
#[error("S3 {step} failed: {source}")]
pub struct StorageError {
    pub step: &'static str,
    #[source]
    pub source: object_store::Error,
}

#[derive(Clone)]
pub struct Storage {
    pub s3: Arc<AmazonS3>,
    prefix: String,
}

impl Storage {
    /// Builds the client; object_store's own retries are kept short because
    /// the worker retries whole steps with backoff itself.
    pub fn new(config: &S3Config) -> Result<Self, object_store::Error> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_region(&config.region)
            .with_bucket_name(&config.bucket)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            // Skips hashing every part for the signature: CPU is the budget.
            .with_unsigned_payload(true)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(30),
            })
            .build()?;
        Ok(Self {
            s3: Arc::new(s3),
            prefix: config.key_prefix.clone(),
        })
    }

    /// The key prefix every object of this deployment (or test) starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where a video's original lives.
    pub fn original_key(&self, video: VideoId) -> String {
        format!("{}videos/{video}/original", self.prefix)
    }

    /// The folder of a video's renditions: manifests and segments.
    pub fn stream_prefix(&self, video: VideoId) -> String {
        format!("{}videos/{video}/stream/", self.prefix)
    }

    /// Where a video's poster image lives.
    pub fn poster_key(&self, video: VideoId) -> String {
        format!("{}videos/{video}/poster.jpg", self.prefix)
    }

    /// Where a staged segment of a partial part lives.
    pub fn staging_key(&self, video: VideoId, offset: u64) -> String {
        format!("{}staging/{video}/{offset:020}", self.prefix)
    }

    /// Every key of a video starts with one of these.
    pub fn video_prefixes(&self, video: VideoId) -> [String; 2] {
        [
            format!("{}videos/{video}/", self.prefix),
            format!("{}staging/{video}/", self.prefix),
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

    /// Deletes every object whose key starts with `prefix`, best effort
    /// (test and benchmark clean-up); returns how many it deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> usize {
        use futures_util::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let keys: Vec<Path> = self
            .s3
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap_or_default();
        let mut deleted = 0;
        for key in keys {
            if self.s3.delete(&key).await.is_ok() {
                deleted += 1;
            }
        }
        deleted
    }

    pub fn path(key: &str) -> Path {
        Path::from(key)
    }
}

//! S3 (Garage in development and tests) through object_store, every key
//! under one prefix. Each product names its own keys (`video/objects.rs`).

use std::{sync::Arc, time::Duration};

use object_store::{
    BackoffConfig, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path,
};

use crate::{config::S3Config, presign::Presigner};

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
    presigner: Presigner,
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
            presigner: Presigner::new(config),
            prefix: config.key_prefix.clone(),
        })
    }

    /// A presigned GET of `key` for `ttl` (at most seven days), made
    /// locally: see [`Presigner`].
    pub fn presign_get(&self, key: &str, ttl: Duration) -> String {
        self.presigner.get(key, ttl)
    }

    /// The key prefix every object of this deployment (or test) starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
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

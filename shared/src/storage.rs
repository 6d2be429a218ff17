//! S3 (Garage in development and tests) through object_store, every key
//! under one prefix. Each product names its own keys (`video/objects.rs`).

use std::{sync::Arc, time::Duration};

use object_store::{
    BackoffConfig, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path,
};

use crate::{config::S3Config, presign::Presigner};

/// How long [`Storage::reachable`] waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// An S3 step that kept failing past its retries.
#[derive(Debug, thiserror::Error)]
#[error("S3 {step} failed: {source}")]
pub struct StorageError {
    pub step: &'static str,
    #[source]
    pub source: object_store::Error,
}

/// Whether `e` says S3 was away, not that it refused: a connection that
/// failed or broke, a timeout, a 5xx or throttling, our own credentials
/// not taken. An outage says nothing about the object, so the step is
/// waited out from committed state; a refusal (no such object or upload, a
/// failed precondition, a malformed request) is final. What can't be told
/// apart counts as an outage: waiting it out loses nothing.
pub fn unavailable(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    if says_transient(e) {
        return true;
    }
    match e {
        E::NotFound { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => false,
        E::Generic { .. } => status(e).is_none_or(|s| s >= 500 || s == 408 || s == 429),
        _ => true,
    }
}

/// S3's error codes that mean "try again" whatever their status: a 400
/// for a body that stopped coming (a connection broken mid-part), a
/// throttle, S3's own trouble.
const TRANSIENT_CODES: [&str; 5] = [
    "<Code>RequestTimeout</Code>",
    "<Code>IncompleteBody</Code>",
    "<Code>SlowDown</Code>",
    "<Code>InternalError</Code>",
    "<Code>ServiceUnavailable</Code>",
];

/// Whether the chain's text carries one of [`TRANSIENT_CODES`].
fn says_transient(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut link = Some(e);
    while let Some(error) = link {
        let text = error.to_string();
        if TRANSIENT_CODES.iter().any(|code| text.contains(code)) {
            return true;
        }
        link = error.source();
    }
    false
}

/// The HTTP status S3 answered a failed request with, if it answered:
/// object_store keeps the status in an error type it does not export, so
/// it is read from the chain's text (`… status code: 503 …`).
fn status(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    const MARK: &str = "status code: ";
    let mut link = Some(e);
    while let Some(error) = link {
        if error
            .downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return None;
        }
        let text = error.to_string();
        if let Some(at) = text.find(MARK) {
            return text[at + MARK.len()..].get(..3)?.parse().ok();
        }
        link = error.source();
    }
    None
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

    /// Presigns many GETs for `ttl` (at most seven days) signed at one
    /// second: see [`crate::presign::Signer`].
    pub fn presigner(&self, ttl: Duration) -> crate::presign::Signer<'_> {
        self.presigner.signer(ttl)
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

    /// Whether S3 answers at all now (a HEAD of a key that need not
    /// exist: "not found" is an answer).
    pub async fn reachable(&self) -> bool {
        use object_store::ObjectStoreExt;
        let probe = Path::from(format!("{}.probe", self.prefix));
        match tokio::time::timeout(PROBE_TIMEOUT, self.s3.head(&probe)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => !unavailable(&e),
            Err(_) => false,
        }
    }

    pub fn path(key: &str) -> Path {
        Path::from(key)
    }
}

#[cfg(test)]
mod tests {
    use object_store::client::{HttpError, HttpErrorKind};

    use super::*;

    fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(source),
        }
    }

    /// An error that says what a failed request's text says.
    #[derive(Debug, thiserror::Error)]
    #[error("Error performing PUT in 1s - {0}")]
    struct Answered(&'static str);

    #[test]
    fn s3_away_is_told_from_s3_refusing() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(unavailable(&generic(HttpError::new(
            HttpErrorKind::Connect,
            refused
        ))));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(unavailable(&generic(HttpError::new(
            HttpErrorKind::Interrupted,
            reset
        ))));
        for away in [
            "Server returned non-2xx status code: 503 Service Unavailable: ",
            "Server returned non-2xx status code: 500 Internal Server Error: quorum",
            "Server returned non-2xx status code: 429 Too Many Requests: ",
            "something no one has seen yet",
        ] {
            assert!(unavailable(&generic(Answered(away))), "{away}");
        }
        assert!(unavailable(&generic(Answered(
            "Server returned non-2xx status code: 400 Bad Request: <Error><Code>RequestTimeout</Code></Error>"
        ))));
        for refusal in [
            "Server returned non-2xx status code: 400 Bad Request: <Code>EntityTooSmall</Code>",
            "Server returned non-2xx status code: 416 Range Not Satisfiable: ",
        ] {
            assert!(!unavailable(&generic(Answered(refusal))), "{refusal}");
        }
        let missing = object_store::Error::NotFound {
            path: "p/k".into(),
            source: Box::new(Answered("status code: 404 Not Found: NoSuchUpload")),
        };
        assert!(!unavailable(&missing));
        let denied = object_store::Error::PermissionDenied {
            path: "p/k".into(),
            source: Box::new(Answered("status code: 403 Forbidden")),
        };
        assert!(
            unavailable(&denied),
            "our credentials are no upload's fault"
        );
    }
}

//! Push notifications: the dispatcher that drains the outbox, and one
//! provider per platform (FCM HTTP v1, APNs, a signed webhook).
//!
//! Delivery is at least once. Every attempt for one notification carries the
//! same idempotency key (the outbox row's id), so a receiver drops what a
//! failover or a lost answer made us send twice.

pub mod apns;
pub mod fcm;
pub mod webhook;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::{StreamExt, future::BoxFuture};
use reelay_shared::{
    push::{self, Due, Platform},
    store::Store,
};
use serde::Serialize;
use uuid::Uuid;

use crate::lease::Lease;

/// What a provider is asked to deliver: nothing personal beyond the video id
/// and its state, and a key the app localises.
#[derive(Clone, Debug, Serialize)]
pub struct Push {
    pub idempotency_key: Uuid,
    #[serde(skip)]
    pub token: String,
    pub video_id: Uuid,
    pub state: String,
    pub message_key: &'static str,
}

impl Push {
    pub fn of(due: &Due) -> Self {
        Self {
            idempotency_key: due.id,
            token: due.token.clone(),
            video_id: due.video_id.0,
            state: due.state.as_str().to_owned(),
            message_key: message_key(due.state.as_str()),
        }
    }
}

/// The localisable message for a state (`video_uploaded`, `video_ready`,
/// `video_failed`).
pub fn message_key(state: &str) -> &'static str {
    match state {
        "UPLOADED" => "video_uploaded",
        "READY" => "video_ready",
        _ => "video_failed",
    }
}

/// How one attempt ended, as the provider's answer means it.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The provider took it.
    Sent,
    /// Try again later (a 5xx, 429, timeout, unreachable), no sooner than
    /// `after` if the provider said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The device token is no longer valid: forget the device.
    InvalidToken(String),
    /// Refused for good (a malformed request, a platform not configured).
    Rejected(String),
}

/// One push platform. The only trait object in the scheduler: its outside
/// parties are what a test must point somewhere else (by base URL).
pub trait Provider: Send + Sync {
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Delivery>;
}

/// Retries of one notification: exponential backoff with jitter.
#[derive(Clone, Copy, Debug)]
pub struct RetryRule {
    pub max_attempts: i32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryRule {
    /// The wait before attempt `attempts + 1`: `base * 2^attempts`, capped,
    /// with "equal jitter" (between half and all of it), and never sooner
    /// than the provider asked.
    pub fn backoff(&self, attempts: i32, at_least: Option<Duration>) -> Duration {
        let wait = reelay_shared::retry::backoff(self.base, self.cap, attempts.max(0) as u32);
        wait.max(at_least.unwrap_or_default())
    }
}

/// What a dispatch round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dispatched {
    pub sent: u32,
    pub retried: u32,
    pub failed: u32,
    pub devices_removed: u32,
}

impl Dispatched {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

pub struct Dispatcher {
    store: Store,
    providers: HashMap<Platform, Arc<dyn Provider>>,
    retry: RetryRule,
    concurrency: usize,
    /// Longest one attempt may take (each provider's HTTP timeout).
    attempt_timeout: Duration,
}

/// Due notifications taken per round.
pub const BATCH: i64 = 200;

impl Dispatcher {
    pub fn new(
        store: Store,
        providers: HashMap<Platform, Arc<dyn Provider>>,
        retry: RetryRule,
        concurrency: usize,
        attempt_timeout: Duration,
    ) -> Self {
        Self {
            store,
            providers,
            retry,
            concurrency,
            attempt_timeout,
        }
    }

    /// The notifications due now, oldest first, at most [`BATCH`].
    pub async fn due(&self) -> Result<Vec<Due>, sqlx::Error> {
        push::due(self.store.pool(), BATCH).await
    }

    /// Sends `due`, a few at once. Stops starting new attempts once the
    /// lease has less left than one attempt may take.
    pub async fn send(&self, due: Vec<Due>, lease: &Lease) -> Result<Dispatched, sqlx::Error> {
        let margin = self.attempt_timeout + Duration::from_secs(1);
        let outcomes: Vec<Result<Outcome, sqlx::Error>> = futures_util::stream::iter(due)
            .map(|due| async move {
                if lease.held_for(margin).is_none() {
                    return Ok(Outcome::NotAttempted);
                }
                self.attempt(due).await
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut done = Dispatched::default();
        for outcome in outcomes {
            match outcome? {
                Outcome::Sent => done.sent += 1,
                Outcome::Retried => done.retried += 1,
                Outcome::Failed => done.failed += 1,
                Outcome::DeviceRemoved => done.devices_removed += 1,
                Outcome::NotAttempted => {}
            }
        }
        Ok(done)
    }

    #[tracing::instrument(skip_all, fields(notification.id = %due.id, video.id = %due.video_id, platform = %due.platform))]
    async fn attempt(&self, due: Due) -> Result<Outcome, sqlx::Error> {
        let pool = self.store.pool();
        let push = Push::of(&due);
        let delivery = match self.providers.get(&due.platform) {
            None => Delivery::Rejected(format!("{} push is not configured", due.platform)),
            Some(provider) => {
                match tokio::time::timeout(self.attempt_timeout, provider.send(&push)).await {
                    Ok(delivery) => delivery,
                    Err(_) => Delivery::Retry {
                        reason: "timed out".into(),
                        after: None,
                    },
                }
            }
        };
        let labels = [("platform", due.platform.to_string())];
        Ok(match delivery {
            Delivery::Sent => {
                push::mark_sent(pool, due.id).await?;
                metrics::counter!("reelay_push_sent_total", &labels).increment(1);
                tracing::debug!("push sent");
                Outcome::Sent
            }
            Delivery::Retry { reason, after } if due.attempts + 1 < self.retry.max_attempts => {
                let wait = self.retry.backoff(due.attempts, after);
                push::retry_later(pool, due.id, wait, &reason).await?;
                metrics::counter!("reelay_push_retries_total", &labels).increment(1);
                tracing::info!(
                    reason,
                    retry_in_ms = wait.as_millis() as u64,
                    "push failed; retrying"
                );
                Outcome::Retried
            }
            Delivery::Retry { reason, .. } | Delivery::Rejected(reason) => {
                push::give_up(pool, due.id, &reason).await?;
                metrics::counter!("reelay_push_failed_total", &labels).increment(1);
                tracing::warn!(reason, "push given up");
                Outcome::Failed
            }
            Delivery::InvalidToken(reason) => {
                push::forget_device(pool, due.device_id).await?;
                metrics::counter!("reelay_push_devices_removed_total", &labels).increment(1);
                tracing::info!(device.id = %due.device_id, reason, "device token invalid; device removed");
                Outcome::DeviceRemoved
            }
        })
    }
}

enum Outcome {
    Sent,
    Retried,
    Failed,
    DeviceRemoved,
    NotAttempted,
}

/// Maps the usual HTTP answers of a push endpoint; `invalid_token` says
/// which answers mean the device is gone (each provider has its own).
pub(crate) fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    detail: String,
    invalid_token: bool,
) -> Delivery {
    if status.is_success() {
        Delivery::Sent
    } else if invalid_token {
        Delivery::InvalidToken(format!("{status}: {detail}"))
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Delivery::Retry {
            reason: format!("{status}: {detail}"),
            after: retry_after,
        }
    } else {
        Delivery::Rejected(format!("{status}: {detail}"))
    }
}

/// A push endpoint's answer: status, `Retry-After`, body.
pub(crate) struct Reply {
    pub status: reqwest::StatusCode,
    pub retry_after: Option<Duration>,
    pub body: String,
}

impl Reply {
    /// Sends `request` and reads the answer whole (push answers are small);
    /// no answer at all is worth another try.
    pub async fn of(request: reqwest::RequestBuilder) -> Result<Self, Delivery> {
        let response = request.send().await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let body = response.text().await.unwrap_or_default();
        Ok(Self {
            status,
            retry_after,
            body,
        })
    }

    /// What the answer means, `invalid_token` saying whether it is this
    /// provider's "the device is gone".
    pub fn delivery(self, invalid_token: bool) -> Delivery {
        classify(self.status, self.retry_after, self.body, invalid_token)
    }
}

/// `Retry-After` in seconds, if the answer has one.
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A request that never got an answer: worth another try.
pub(crate) fn unreachable(e: &reqwest::Error) -> Delivery {
    Delivery::Retry {
        reason: format!("unreachable: {e}"),
        after: None,
    }
}

/// Seconds since the Unix epoch (JWT `iat`/`exp`).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_capped_and_honours_retry_after() {
        let rule = RetryRule {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        for attempts in 0..6 {
            let exp = Duration::from_millis(100 * (1 << attempts)).min(Duration::from_secs(2));
            let wait = rule.backoff(attempts, None);
            assert!(wait >= exp / 2 && wait <= exp, "{attempts}: {wait:?}");
        }
        assert!(rule.backoff(30, None) <= Duration::from_secs(2));
        assert!(rule.backoff(0, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }

    #[test]
    fn answers_map_to_what_the_dispatcher_does() {
        use reqwest::StatusCode as S;
        assert_eq!(classify(S::OK, None, String::new(), false), Delivery::Sent);
        assert!(matches!(
            classify(S::SERVICE_UNAVAILABLE, None, String::new(), false),
            Delivery::Retry { .. }
        ));
        assert!(matches!(
            classify(S::TOO_MANY_REQUESTS, Some(Duration::from_secs(3)), String::new(), false),
            Delivery::Retry { after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(S::GONE, None, String::new(), true),
            Delivery::InvalidToken(_)
        ));
        assert!(matches!(
            classify(S::BAD_REQUEST, None, String::new(), false),
            Delivery::Rejected(_)
        ));
    }
}

//! Retrying steps that talk to S3 or a webhook, with exponential backoff
//! and jitter.

use std::{future::Future, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use rand::Rng;

/// The wait before retry number `attempt + 1`: `base` doubled per attempt,
/// capped at `cap`, with jitter (between half and all of it), so that many
/// retrying at once spread out.
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    exp.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: usize,
    pub base: Duration,
}

impl RetryPolicy {
    /// The wait before retrying after `attempt` failed tries (the same
    /// curve as [`RetryPolicy::run`]: capped at 32 × base), for steps that
    /// retry by returning their message to the queue.
    pub fn delay(&self, attempt: u32) -> Duration {
        backoff(self.base, self.base * 32, attempt)
    }

    /// Runs `step` until it succeeds or the attempts run out; returns the
    /// last error then. `what` names the step in the logs.
    pub async fn run<T, E, F, Fut>(&self, what: &str, step: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.base * 32)
            .with_max_times(self.attempts)
            .with_jitter();
        step.retry(backoff)
            .notify(|e: &E, after: Duration| {
                tracing::warn!(step = what, error = %e, retry_in_ms = after.as_millis() as u64, "step failed; retrying");
                metrics::counter!("reelay_retries_total", "step" => what.to_owned()).increment(1);
            })
            .await
    }
}

//! A rate limit shared by every replica, in Redis: each caller reserves the
//! next free instant of a schedule spaced `1 / rate` apart (GCRA with no
//! burst) and waits until then. Requests leave at most `rate` a second,
//! whichever replica sends them.

use std::time::Duration;

use redis::Script;

use crate::lock::Redis;

/// Reserves the next slot: the key holds the instant (µs, Redis's own
/// clock) from which the next caller may go.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local at = tonumber(redis.call('GET', KEYS[1]) or now)
if at < now then at = now end
redis.call('SET', KEYS[1], string.format('%.0f', at + interval), 'PX', ARGV[2])
return at - now"#;

#[derive(Clone)]
pub struct RateLimiter {
    redis: Redis,
    prefix: String,
    script: Script,
}

impl RateLimiter {
    pub fn new(redis: Redis, prefix: String) -> Self {
        Self {
            redis,
            prefix,
            script: Script::new(RESERVE),
        }
    }

    /// Waits for `name`'s next slot at `per_sec` a second.
    pub async fn acquire(&self, name: &str, per_sec: f64) -> Result<Duration, redis::RedisError> {
        let interval_us = (1e6 / per_sec.max(0.001)).ceil() as u64;
        let mut redis = self.redis.clone();
        let wait_us: i64 = self
            .script
            .key(format!("{}rate:{name}", self.prefix))
            .arg(interval_us)
            // The key outlives any wait it can cause, then goes.
            .arg(60_000 + interval_us / 1000)
            .invoke_async(&mut redis)
            .await?;
        let wait = Duration::from_micros(wait_us.max(0) as u64);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(wait)
    }
}

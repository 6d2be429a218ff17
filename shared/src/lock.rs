//! Redis: the per-upload lock that serialises PATCHes across api replicas.
//! `SET NX PX` with a random token, renewed while held, released only by
//! its holder (compare-and-delete).

use std::time::Duration;

use redis::{
    AsyncCommands, Cmd, Pipeline, RedisFuture, Script, Value,
    aio::{ConnectionLike, ConnectionManager},
};
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

use crate::config::RedisConfig;

const ACQUIRE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'OK'
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])"#;

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0"#;

/// The Redis connection of every api, worker and scheduler: multiplexed,
/// it comes back by itself after Redis restarts, and a command finding the
/// connection dropped (the first one after a restart) is sent once more on
/// the new one instead of failing. redis-rs's manager reconnects on that
/// error but hands it to the caller, so a Redis restart made the next
/// PATCH a 503 and the next fflow route read a miss.
#[derive(Clone)]
pub struct Redis(ConnectionManager);

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.0.req_packed_command(cmd).await {
                Err(e) if e.is_connection_dropped() => {
                    tracing::info!(error = %e, "the Redis connection had dropped; sending again");
                    self.0.req_packed_command(cmd).await
                }
                answered => answered,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.0.req_packed_commands(pipeline, offset, count).await {
                Err(e) if e.is_connection_dropped() => {
                    self.0.req_packed_commands(pipeline, offset, count).await
                }
                answered => answered,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Connects, failing fast while Redis is down: a command waits for at most
/// two connection attempts of 500 ms (redis-rs's defaults, six attempts
/// with backoff up to 3.2 s, held a PATCH for about 9 s before its 503).
pub async fn connect(config: &RedisConfig) -> Result<Redis, redis::RedisError> {
    let client = redis::Client::open(config.url.as_str())?;
    let settings = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, settings)
        .await
        .map(Redis)
}

#[derive(Clone)]
pub struct Locks {
    redis: Redis,
    prefix: String,
    ttl: Duration,
}

impl Locks {
    pub fn new(redis: Redis, prefix: String, ttl: Duration) -> Self {
        Self { redis, prefix, ttl }
    }

    pub fn key(&self, id: impl std::fmt::Display) -> String {
        format!("{}upload-lock:{id}", self.prefix)
    }

    /// Takes the upload's lock, or `None` while someone else holds it. The
    /// lock is renewed in the background until the guard is released or
    /// dropped; if renewal finds it lost, [`LockGuard::lost`] turns true.
    pub async fn acquire(
        &self,
        id: impl std::fmt::Display,
    ) -> Result<Option<LockGuard>, redis::RedisError> {
        let key = self.key(id);
        let token = Uuid::new_v4().to_string();
        let mut redis = self.redis.clone();
        // SET NX, or ours already: a command re-sent after a dropped
        // connection (see `Redis`) may find the lock it took itself.
        let taken: Option<String> = Script::new(ACQUIRE)
            .key(&key)
            .arg(&token)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut redis)
            .await?;
        if taken.is_none() {
            return Ok(None);
        }
        let (lost_tx, lost) = watch::channel(false);
        let renewer = tokio::spawn(renew(
            redis.clone(),
            key.clone(),
            token.clone(),
            self.ttl,
            lost_tx,
        ));
        Ok(Some(LockGuard {
            redis,
            key,
            token,
            lost,
            renewer,
        }))
    }
}

async fn renew(
    mut redis: Redis,
    key: String,
    token: String,
    ttl: Duration,
    lost: watch::Sender<bool>,
) {
    let script = Script::new(RENEW);
    loop {
        tokio::time::sleep(ttl / 3).await;
        let renewed: Result<i64, _> = script
            .key(&key)
            .arg(&token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut redis)
            .await;
        if !matches!(renewed, Ok(1)) {
            tracing::warn!(lock.key = %key, "upload lock lost");
            let _ = lost.send(true);
            return;
        }
    }
}

/// A held upload lock.
pub struct LockGuard {
    redis: Redis,
    key: String,
    token: String,
    lost: watch::Receiver<bool>,
    renewer: JoinHandle<()>,
}

impl LockGuard {
    /// True once renewal found the lock gone (expired or taken).
    pub fn lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Releases the lock if this guard still holds it.
    pub async fn release(mut self) {
        self.renewer.abort();
        let released: Result<i64, _> = Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut self.redis)
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "releasing the upload lock failed; it expires by itself");
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // A guard dropped without release (a cancelled request) stops renewing
        // and the lock expires after its ttl.
        self.renewer.abort();
    }
}

/// Deletes every key under `prefix` (tests and tools).
pub async fn delete_prefix(redis: &mut Redis, prefix: &str) -> Result<(), redis::RedisError> {
    let keys: Vec<String> = redis.keys(format!("{prefix}*")).await?;
    if !keys.is_empty() {
        let _: () = redis.del(keys).await?;
    }
    Ok(())
}

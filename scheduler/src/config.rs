//! The scheduler's configuration, from the environment only.

use std::{path::PathBuf, time::Duration};

use reelay_shared::config::{
    AmqpConfig, ConfigError, DatabaseConfig, Env, RedisConfig, S3Config, S3RetryConfig, Vars,
    millis, secs,
};

use crate::video::reaper::ReapRules;

/// FCM HTTP v1: `REELAY_FCM_CREDENTIALS` (a Google service-account key file;
/// unset: no FCM), `REELAY_FCM_BASE_URL` (default `https://fcm.googleapis.com`).
/// The OAuth2 token endpoint is the key file's `token_uri`.
#[derive(Clone, Debug, PartialEq)]
pub struct FcmConfig {
    pub credentials: PathBuf,
    pub base_url: String,
}

/// APNs, token-based: `REELAY_APNS_KEY_PATH` (the `.p8` key; unset: no
/// APNs), `REELAY_APNS_KEY_ID`, `REELAY_APNS_TEAM_ID`, `REELAY_APNS_TOPIC`
/// (the app's bundle id), `REELAY_APNS_BASE_URL` (default
/// `https://api.push.apple.com`).
#[derive(Clone, Debug, PartialEq)]
pub struct ApnsConfig {
    pub key_path: PathBuf,
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
    pub base_url: String,
}

/// A generic push webhook: `REELAY_PUSH_WEBHOOK_URL` (unset: none) and
/// `REELAY_PUSH_WEBHOOK_SECRET` (required with it: the HMAC-SHA256 key).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
}

/// Delivery of push notifications.
///
/// `REELAY_PUSH_POLL_MS` (default 1000): how often due retries are looked
/// for (new notifications wake the dispatcher at once);
/// `REELAY_PUSH_MAX_ATTEMPTS` (default 10); `REELAY_PUSH_RETRY_BASE_MS`
/// (default 2000) and `REELAY_PUSH_RETRY_CAP_SECS` (default 3600):
/// exponential backoff with jitter; `REELAY_PUSH_TIMEOUT_MS` (default 5000):
/// one attempt's limit, under half the lease; `REELAY_PUSH_CONCURRENCY`
/// (default 16): attempts at once.
#[derive(Clone, Debug, PartialEq)]
pub struct PushConfig {
    pub poll: Duration,
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    pub fcm: Option<FcmConfig>,
    pub apns: Option<ApnsConfig>,
    pub webhook: Option<WebhookConfig>,
}

/// `REELAY_SCHEDULER_INTERVAL_MS` (default 30000): time between reaper
/// passes; `REELAY_SCHEDULER_LEASE_MS` (default 15000): the leader lease's
/// life, renewed every third of it, so a dead leader is replaced within
/// 20 s; `REELAY_PENDING_TIMEOUT_SECS` (default 3600), `REELAY_STALL_TIMEOUT_SECS`
/// (default 600), `REELAY_DELETE_GRACE_SECS` (default 300): see
/// [`ReapRules`]; `REELAY_S3_RETRIES` / `REELAY_S3_RETRY_BASE_MS` as for
/// the worker; `REELAY_REPLICA` names this replica;
/// `REELAY_SCHEDULER_HTTP_ADDR` (default unset) is read by the
/// `reelay-scheduler` binary alone. Upload sessions expire
/// at the `Upload-Expires` the api gave them (`REELAY_UPLOAD_EXPIRY_SECS`).
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub replica: String,
    pub interval: Duration,
    /// `REELAY_FLEET_TICK_MS` (default 100): time between rollout driver
    /// passes.
    pub fleet_tick: Duration,
    pub lease_ttl: Duration,
    pub rules: ReapRules,
    pub s3_retry: S3RetryConfig,
    pub push: PushConfig,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub s3: S3Config,
}

impl SchedulerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let lease_ttl = env.millis_or("REELAY_SCHEDULER_LEASE_MS", 15_000)?;
        if lease_ttl < Duration::from_millis(300) {
            return Err(ConfigError::Invalid {
                name: "REELAY_SCHEDULER_LEASE_MS",
                reason: "must be at least 300".into(),
            });
        }
        let config = Self {
            replica: env.var_or("REELAY_REPLICA", "scheduler"),
            interval: env.millis_or("REELAY_SCHEDULER_INTERVAL_MS", 30_000)?,
            fleet_tick: env.millis_or("REELAY_FLEET_TICK_MS", 100)?,
            lease_ttl,
            rules: ReapRules {
                pending_timeout: env.secs_or("REELAY_PENDING_TIMEOUT_SECS", 3_600)?,
                stall_timeout: env.secs_or("REELAY_STALL_TIMEOUT_SECS", 600)?,
                delete_grace: env.secs_or("REELAY_DELETE_GRACE_SECS", 300)?,
            },
            s3_retry: S3RetryConfig::read(env)?,
            push: PushConfig::read(env)?,
            database: DatabaseConfig::read(env)?,
            amqp: AmqpConfig::read(env)?,
            redis: RedisConfig::read(env)?,
            s3: S3Config::read(env)?,
        };
        config.check()?;
        Ok(config)
    }

    pub fn to_env(&self) -> Vars {
        let mut vars = vec![
            ("REELAY_REPLICA", self.replica.clone()),
            ("REELAY_SCHEDULER_INTERVAL_MS", millis(self.interval)),
            ("REELAY_FLEET_TICK_MS", millis(self.fleet_tick)),
            ("REELAY_SCHEDULER_LEASE_MS", millis(self.lease_ttl)),
            (
                "REELAY_PENDING_TIMEOUT_SECS",
                secs(self.rules.pending_timeout),
            ),
            ("REELAY_STALL_TIMEOUT_SECS", secs(self.rules.stall_timeout)),
            ("REELAY_DELETE_GRACE_SECS", secs(self.rules.delete_grace)),
        ];
        vars.extend(self.s3_retry.to_env());
        vars.extend(self.push.to_env());
        vars.extend(self.database.to_env());
        vars.extend(self.amqp.to_env());
        vars.extend(self.redis.to_env());
        vars.extend(self.s3.to_env());
        vars
    }

    /// One attempt must end well inside the lease, or a failover could see
    /// it still running.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.push.timeout * 2 >= self.lease_ttl {
            return Err(ConfigError::Invalid {
                name: "REELAY_PUSH_TIMEOUT_MS",
                reason: format!(
                    "must be under half of REELAY_SCHEDULER_LEASE_MS ({} ms)",
                    self.lease_ttl.as_millis()
                ),
            });
        }
        Ok(())
    }
}

impl PushConfig {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let fcm = env.get("REELAY_FCM_CREDENTIALS").map(|path| FcmConfig {
            credentials: PathBuf::from(path),
            base_url: env.var_or("REELAY_FCM_BASE_URL", "https://fcm.googleapis.com"),
        });
        let apns = match env.get("REELAY_APNS_KEY_PATH") {
            None => None,
            Some(path) => Some(ApnsConfig {
                key_path: PathBuf::from(path),
                key_id: env.required("REELAY_APNS_KEY_ID")?,
                team_id: env.required("REELAY_APNS_TEAM_ID")?,
                topic: env.required("REELAY_APNS_TOPIC")?,
                base_url: env.var_or("REELAY_APNS_BASE_URL", "https://api.push.apple.com"),
            }),
        };
        let webhook = match env.get("REELAY_PUSH_WEBHOOK_URL") {
            None => None,
            Some(url) => Some(WebhookConfig {
                url,
                secret: env.required("REELAY_PUSH_WEBHOOK_SECRET")?,
            }),
        };
        Ok(Self {
            poll: env.millis_or("REELAY_PUSH_POLL_MS", 1_000)?,
            max_attempts: env.parse_or("REELAY_PUSH_MAX_ATTEMPTS", 10)?,
            retry_base: env.millis_or("REELAY_PUSH_RETRY_BASE_MS", 2_000)?,
            retry_cap: env.secs_or("REELAY_PUSH_RETRY_CAP_SECS", 3_600)?,
            timeout: env.millis_or("REELAY_PUSH_TIMEOUT_MS", 5_000)?,
            concurrency: env.parse_or("REELAY_PUSH_CONCURRENCY", 16usize)?.max(1),
            fcm,
            apns,
            webhook,
        })
    }

    /// The variables `read` takes this from; a provider not configured is
    /// written unset.
    pub fn to_env(&self) -> Vars {
        let mut vars = vec![
            ("REELAY_PUSH_POLL_MS", millis(self.poll)),
            ("REELAY_PUSH_MAX_ATTEMPTS", self.max_attempts.to_string()),
            ("REELAY_PUSH_RETRY_BASE_MS", millis(self.retry_base)),
            ("REELAY_PUSH_RETRY_CAP_SECS", secs(self.retry_cap)),
            ("REELAY_PUSH_TIMEOUT_MS", millis(self.timeout)),
            ("REELAY_PUSH_CONCURRENCY", self.concurrency.to_string()),
        ];
        match &self.fcm {
            Some(fcm) => vars.extend([
                (
                    "REELAY_FCM_CREDENTIALS",
                    fcm.credentials.display().to_string(),
                ),
                ("REELAY_FCM_BASE_URL", fcm.base_url.clone()),
            ]),
            None => vars.push(("REELAY_FCM_CREDENTIALS", String::new())),
        }
        match &self.apns {
            Some(apns) => vars.extend([
                ("REELAY_APNS_KEY_PATH", apns.key_path.display().to_string()),
                ("REELAY_APNS_KEY_ID", apns.key_id.clone()),
                ("REELAY_APNS_TEAM_ID", apns.team_id.clone()),
                ("REELAY_APNS_TOPIC", apns.topic.clone()),
                ("REELAY_APNS_BASE_URL", apns.base_url.clone()),
            ]),
            None => vars.push(("REELAY_APNS_KEY_PATH", String::new())),
        }
        match &self.webhook {
            Some(webhook) => vars.extend([
                ("REELAY_PUSH_WEBHOOK_URL", webhook.url.clone()),
                ("REELAY_PUSH_WEBHOOK_SECRET", webhook.secret.clone()),
            ]),
            None => vars.push(("REELAY_PUSH_WEBHOOK_URL", String::new())),
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduler_config_reads_back_what_it_writes() {
        let env = Env::of([
            ("REELAY_REPLICA", "s-1"),
            ("REELAY_SCHEDULER_LEASE_MS", "2000"),
            ("REELAY_PUSH_TIMEOUT_MS", "900"),
            ("REELAY_PENDING_TIMEOUT_SECS", "5"),
            ("REELAY_APNS_KEY_PATH", "/k.p8"),
            ("REELAY_APNS_KEY_ID", "K"),
            ("REELAY_APNS_TEAM_ID", "T"),
            ("REELAY_APNS_TOPIC", "app"),
            ("REELAY_PUSH_WEBHOOK_URL", "http://w/"),
            ("REELAY_PUSH_WEBHOOK_SECRET", "s"),
        ]);
        let config = SchedulerConfig::read(&env).unwrap();
        assert!(config.push.apns.is_some() && config.push.fcm.is_none());
        assert_eq!(
            SchedulerConfig::read(&Env::of(config.to_env())).unwrap(),
            config
        );
    }

    #[test]
    fn a_push_timeout_over_half_the_lease_is_refused() {
        let env = Env::of([
            ("REELAY_SCHEDULER_LEASE_MS", "1000"),
            ("REELAY_PUSH_TIMEOUT_MS", "600"),
        ]);
        let error = SchedulerConfig::read(&env).unwrap_err().to_string();
        assert!(error.contains("REELAY_PUSH_TIMEOUT_MS"), "{error}");
    }
}

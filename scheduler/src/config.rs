//! The scheduler's configuration, from the environment only.

use std::{path::PathBuf, time::Duration};

use reelay_shared::config::{
    AmqpConfig, ConfigError, DatabaseConfig, RedisConfig, S3Config, duration_ms_or, parse_or,
    required, var_or,
};

use crate::reaper::ReapRules;

/// FCM HTTP v1: `REELAY_FCM_CREDENTIALS` (a Google service-account key file;
/// unset: no FCM), `REELAY_FCM_BASE_URL` (default `https://fcm.googleapis.com`).
/// The OAuth2 token endpoint is the key file's `token_uri`.
#[derive(Clone, Debug)]
pub struct FcmConfig {
    pub credentials: PathBuf,
    pub base_url: String,
}

/// APNs, token-based: `REELAY_APNS_KEY_PATH` (the `.p8` key; unset: no
/// APNs), `REELAY_APNS_KEY_ID`, `REELAY_APNS_TEAM_ID`, `REELAY_APNS_TOPIC`
/// (the app's bundle id), `REELAY_APNS_BASE_URL` (default
/// `https://api.push.apple.com`).
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    pub key_path: PathBuf,
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
    pub base_url: String,
}

/// A generic push webhook: `REELAY_PUSH_WEBHOOK_URL` (unset: none) and
/// `REELAY_PUSH_WEBHOOK_SECRET` (required with it: the HMAC-SHA256 key).
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug)]
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
/// the worker; `REELAY_REPLICA` names this replica. Upload sessions expire
/// at the `Upload-Expires` the api gave them (`REELAY_UPLOAD_EXPIRY_SECS`).
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub replica: String,
    pub interval: Duration,
    pub lease_ttl: Duration,
    pub rules: ReapRules,
    pub s3_retries: usize,
    pub s3_retry_base: Duration,
    pub push: PushConfig,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub s3: S3Config,
}

impl SchedulerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let lease_ttl = duration_ms_or("REELAY_SCHEDULER_LEASE_MS", 15_000)?;
        if lease_ttl < Duration::from_millis(300) {
            return Err(ConfigError::Invalid {
                name: "REELAY_SCHEDULER_LEASE_MS",
                reason: "must be at least 300".into(),
            });
        }
        let secs = |name, default| parse_or(name, default).map(Duration::from_secs);
        let config = Self {
            replica: var_or("REELAY_REPLICA", "scheduler"),
            interval: duration_ms_or("REELAY_SCHEDULER_INTERVAL_MS", 30_000)?,
            lease_ttl,
            rules: ReapRules {
                pending_timeout: secs("REELAY_PENDING_TIMEOUT_SECS", 3_600)?,
                stall_timeout: secs("REELAY_STALL_TIMEOUT_SECS", 600)?,
                delete_grace: secs("REELAY_DELETE_GRACE_SECS", 300)?,
            },
            s3_retries: parse_or("REELAY_S3_RETRIES", 6usize)?,
            s3_retry_base: duration_ms_or("REELAY_S3_RETRY_BASE_MS", 200)?,
            push: PushConfig::from_env()?,
            database: DatabaseConfig::from_env()?,
            amqp: AmqpConfig::from_env()?,
            redis: RedisConfig::from_env()?,
            s3: S3Config::from_env()?,
        };
        config.check()?;
        Ok(config)
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
    pub fn from_env() -> Result<Self, ConfigError> {
        let fcm = match var_or("REELAY_FCM_CREDENTIALS", "") {
            path if path.is_empty() => None,
            path => Some(FcmConfig {
                credentials: PathBuf::from(path),
                base_url: var_or("REELAY_FCM_BASE_URL", "https://fcm.googleapis.com"),
            }),
        };
        let apns = match var_or("REELAY_APNS_KEY_PATH", "") {
            path if path.is_empty() => None,
            path => Some(ApnsConfig {
                key_path: PathBuf::from(path),
                key_id: required("REELAY_APNS_KEY_ID")?,
                team_id: required("REELAY_APNS_TEAM_ID")?,
                topic: required("REELAY_APNS_TOPIC")?,
                base_url: var_or("REELAY_APNS_BASE_URL", "https://api.push.apple.com"),
            }),
        };
        let webhook = match var_or("REELAY_PUSH_WEBHOOK_URL", "") {
            url if url.is_empty() => None,
            url => Some(WebhookConfig {
                url,
                secret: required("REELAY_PUSH_WEBHOOK_SECRET")?,
            }),
        };
        Ok(Self {
            poll: duration_ms_or("REELAY_PUSH_POLL_MS", 1_000)?,
            max_attempts: parse_or("REELAY_PUSH_MAX_ATTEMPTS", 10)?,
            retry_base: duration_ms_or("REELAY_PUSH_RETRY_BASE_MS", 2_000)?,
            retry_cap: Duration::from_secs(parse_or("REELAY_PUSH_RETRY_CAP_SECS", 3_600)?),
            timeout: duration_ms_or("REELAY_PUSH_TIMEOUT_MS", 5_000)?,
            concurrency: parse_or("REELAY_PUSH_CONCURRENCY", 16usize)?.max(1),
            fcm,
            apns,
            webhook,
        })
    }
}

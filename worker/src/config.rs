//! The worker's configuration, from the environment only.

use std::{net::SocketAddr, time::Duration};

use reelay_scheduler::config::SchedulerConfig;
use reelay_shared::config::{
    AmqpConfig, ConfigError, DatabaseConfig, RedisConfig, S3Config, duration_ms_or, parse_or,
    var_or,
};

use crate::fflow::FflowConfig;

/// See [`FflowConfig`] for the variables.
fn fflow_from_env() -> Result<Option<FflowConfig>, ConfigError> {
    let urls: Vec<String> = var_or("REELAY_FFLOW_URLS", "")
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Ok(None);
    }
    Ok(Some(FflowConfig {
        urls,
        route_ttl: Duration::from_secs(parse_or("REELAY_FFLOW_ROUTE_TTL_SECS", 90_000u64)?),
        encode_concurrency: parse_or("REELAY_ENCODE_CONCURRENCY", 4u16)?.max(1),
        poll: duration_ms_or("REELAY_ENCODE_POLL_MS", 1_000)?,
    }))
}

/// `REELAY_PREFETCH` (default 32): unacked messages per shard consumer;
/// `REELAY_S3_RETRIES` (default 6) and `REELAY_S3_RETRY_BASE_MS` (default
/// 200): exponential backoff with jitter for each S3 step before the video
/// is FAILED; `REELAY_STAGE_IDLE_MS` (default 5000): an upload whose buffer
/// saw no chunk for this long is staged to S3 so its messages can be acked;
/// `REELAY_WORKER_HTTP_ADDR` (default unset: no listener): `/healthz` and
/// `/metrics`; `REELAY_REPLICA` (default `worker`): this replica's name.
/// `REELAY_MODERATION_WEBHOOK_URL` (default unset: no moderation, videos
/// stay unverified), `REELAY_MODERATION_SECRET` (required with the URL: the
/// HMAC-SHA256 key of the signed body), `REELAY_MODERATION_RETRIES`
/// (default 5) and `REELAY_MODERATION_RETRY_BASE_MS` (default 1000):
/// backoff while the webhook is down; `REELAY_MODERATION_LINK_TTL_SECS`
/// (default 3600): life of the link the webhook gets.
#[derive(Clone, Debug)]
pub struct ModerationConfig {
    pub webhook_url: String,
    pub secret: String,
    pub retries: usize,
    pub retry_base: Duration,
    pub link_ttl: Duration,
}

impl ModerationConfig {
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        let webhook_url = var_or("REELAY_MODERATION_WEBHOOK_URL", "");
        if webhook_url.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            webhook_url,
            secret: reelay_shared::config::required("REELAY_MODERATION_SECRET")?,
            retries: parse_or("REELAY_MODERATION_RETRIES", 5usize)?,
            retry_base: duration_ms_or("REELAY_MODERATION_RETRY_BASE_MS", 1_000)?,
            link_ttl: Duration::from_secs(parse_or("REELAY_MODERATION_LINK_TTL_SECS", 3_600u64)?),
        }))
    }
}

/// `REELAY_SCHEDULER` (default false): when true this worker also runs the
/// scheduler (see `reelay_scheduler::config::SchedulerConfig` for its
/// settings); several replicas may, one leads.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub replica: String,
    pub prefetch: u16,
    pub s3_retries: usize,
    pub s3_retry_base: Duration,
    pub stage_idle: Duration,
    pub http_addr: Option<SocketAddr>,
    pub moderation: Option<ModerationConfig>,
    pub scheduler: Option<SchedulerConfig>,
    /// Set when `REELAY_FFLOW_URLS` names fflow replicas.
    pub fflow: Option<FflowConfig>,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub amqp: AmqpConfig,
    pub s3: S3Config,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let prefetch = parse_or("REELAY_PREFETCH", 32u16)?;
        if prefetch < 4 {
            return Err(ConfigError::Invalid {
                name: "REELAY_PREFETCH",
                reason: "must be at least 4".into(),
            });
        }
        let http_addr = match var_or("REELAY_WORKER_HTTP_ADDR", "") {
            a if a.is_empty() => None,
            a => Some(
                a.parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                        name: "REELAY_WORKER_HTTP_ADDR",
                        reason: e.to_string(),
                    })?,
            ),
        };
        Ok(Self {
            replica: var_or("REELAY_REPLICA", "worker"),
            prefetch,
            s3_retries: parse_or("REELAY_S3_RETRIES", 6usize)?,
            s3_retry_base: duration_ms_or("REELAY_S3_RETRY_BASE_MS", 200)?,
            stage_idle: duration_ms_or("REELAY_STAGE_IDLE_MS", 5_000)?,
            http_addr,
            moderation: ModerationConfig::from_env()?,
            scheduler: match parse_or("REELAY_SCHEDULER", false)? {
                true => Some(SchedulerConfig::from_env()?),
                false => None,
            },
            fflow: fflow_from_env()?,
            database: DatabaseConfig::from_env()?,
            redis: RedisConfig::from_env()?,
            amqp: AmqpConfig::from_env()?,
            s3: S3Config::from_env()?,
        })
    }
}

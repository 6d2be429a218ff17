//! Configuration read from the environment, one struct per concern. Every
//! variable, with its default, is listed in the README. This is the only
//! place that reads the environment.

use std::{str::FromStr, time::Duration};

/// A required variable is missing or a variable does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Reads `name`, or `default` when unset or empty.
pub fn var_or(name: &'static str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_owned(),
    }
}

/// Reads and parses `name`, or `default` when unset or empty.
pub fn parse_or<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
            name,
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

fn millis_or(name: &'static str, default_ms: u64) -> Result<Duration, ConfigError> {
    parse_or(name, default_ms).map(Duration::from_millis)
}

/// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/reelay`),
/// `REELAY_DB_MAX_CONNECTIONS` (default 10).
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            url: var_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/reelay"),
            max_connections: parse_or("REELAY_DB_MAX_CONNECTIONS", 10)?,
        })
    }
}

/// `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`),
/// `REELAY_QUEUE_PREFIX` (default `reelay`), `REELAY_SHARDS` (default 4).
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    pub url: String,
    pub queue_prefix: String,
    pub shards: u16,
}

impl AmqpConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let shards = parse_or("REELAY_SHARDS", 4u16)?;
        if shards == 0 {
            return Err(ConfigError::Invalid {
                name: "REELAY_SHARDS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            url: var_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            queue_prefix: var_or("REELAY_QUEUE_PREFIX", "reelay"),
            shards,
        })
    }
}

/// `REDIS_URL` (default `redis://127.0.0.1:6379`), `REELAY_REDIS_PREFIX`
/// (default `reelay:`).
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
}

impl RedisConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            url: var_or("REDIS_URL", "redis://127.0.0.1:6379"),
            key_prefix: var_or("REELAY_REDIS_PREFIX", "reelay:"),
        })
    }
}

/// `REELAY_S3_ENDPOINT` (default `http://127.0.0.1:3900`), `REELAY_S3_REGION`
/// (default `garage`), `REELAY_S3_BUCKET` (default `reelay`),
/// `REELAY_S3_ACCESS_KEY_ID` / `REELAY_S3_SECRET_ACCESS_KEY` (default: the
/// dev key that `scripts/garage.sh` imports), `REELAY_S3_PREFIX` (default
/// empty): every object key starts with it.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub key_prefix: String,
}

/// The fixed development credentials that `scripts/garage.sh` imports.
pub const DEV_S3_ACCESS_KEY_ID: &str = "GK0123456789abcdef01234567";
pub const DEV_S3_SECRET_ACCESS_KEY: &str =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

impl S3Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            endpoint: var_or("REELAY_S3_ENDPOINT", "http://127.0.0.1:3900"),
            region: var_or("REELAY_S3_REGION", "garage"),
            bucket: var_or("REELAY_S3_BUCKET", "reelay"),
            access_key_id: var_or("REELAY_S3_ACCESS_KEY_ID", DEV_S3_ACCESS_KEY_ID),
            secret_access_key: var_or("REELAY_S3_SECRET_ACCESS_KEY", DEV_S3_SECRET_ACCESS_KEY),
            key_prefix: var_or("REELAY_S3_PREFIX", ""),
        })
    }
}

/// Upload rules shared by the api (which fixes them per upload at creation)
/// and the worker.
///
/// `REELAY_CHUNK_SIZE` (default 4194304): largest chunk message;
/// `REELAY_PART_SIZE` (default 8388608): smallest S3 part, at least 5 MiB;
/// `REELAY_MAX_UPLOAD_SIZE` (default 53687091200, 50 GiB): Tus-Max-Size;
/// `REELAY_UPLOAD_EXPIRY_SECS` (default 86400): an unfinished upload expires
/// this long after its last activity.
#[derive(Clone, Debug)]
pub struct UploadConfig {
    pub chunk_size: usize,
    pub min_part_size: u64,
    pub max_upload_size: u64,
    pub expiry: Duration,
}

/// S3's floor for every part but the last.
pub const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's ceiling on the number of parts.
pub const S3_MAX_PARTS: u64 = 10_000;
/// Chunk messages stay well under RabbitMQ's largest message.
pub const MAX_CHUNK_SIZE: usize = 64 * 1024 * 1024;

impl UploadConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let chunk_size = parse_or("REELAY_CHUNK_SIZE", 4 * 1024 * 1024usize)?;
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(ConfigError::Invalid {
                name: "REELAY_CHUNK_SIZE",
                reason: format!("must be between 1 and {MAX_CHUNK_SIZE}"),
            });
        }
        let min_part_size = parse_or("REELAY_PART_SIZE", 8 * 1024 * 1024u64)?;
        if min_part_size < S3_MIN_PART_SIZE {
            return Err(ConfigError::Invalid {
                name: "REELAY_PART_SIZE",
                reason: format!("must be at least {S3_MIN_PART_SIZE} (S3's minimum part)"),
            });
        }
        Ok(Self {
            chunk_size,
            min_part_size,
            max_upload_size: parse_or("REELAY_MAX_UPLOAD_SIZE", 50 * 1024 * 1024 * 1024u64)?,
            expiry: Duration::from_secs(parse_or("REELAY_UPLOAD_EXPIRY_SECS", 86_400u64)?),
        })
    }
}

/// `REELAY_LOCK_TTL_MS` (default 5000): the upload lock's expiry, renewed
/// every third of it while a PATCH streams;
/// `REELAY_PATCH_IDLE_TIMEOUT_MS` (default 8000): a PATCH body that sends
/// nothing for this long is ended, keeping what was confirmed.
#[derive(Clone, Debug)]
pub struct LockConfig {
    pub ttl: Duration,
    pub patch_idle_timeout: Duration,
}

impl LockConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            ttl: millis_or("REELAY_LOCK_TTL_MS", 5_000)?,
            patch_idle_timeout: millis_or("REELAY_PATCH_IDLE_TIMEOUT_MS", 8_000)?,
        })
    }
}

/// Reads a required variable.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(ConfigError::Missing(name)),
    }
}

/// Reads a duration given in milliseconds.
pub fn duration_ms_or(name: &'static str, default_ms: u64) -> Result<Duration, ConfigError> {
    millis_or(name, default_ms)
}

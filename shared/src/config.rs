//! Configuration from environment variables, one struct per concern.
//!
//! Every variable is read through [`Env`], and each config struct names its
//! variables in exactly one place: `read` turns them into the struct and
//! `to_env` turns the struct back into them, so the test harness and the
//! benchmarks start the real binaries with the settings they built, never
//! with a second list of names. Every variable, with its default, is listed
//! in the README.

use std::{collections::HashMap, fmt::Display, str::FromStr, time::Duration};

/// A required variable is missing or a variable does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where settings come from: the process environment, or a given set of
/// variables (to check that `to_env` and `read` agree). An empty value
/// counts as unset.
#[derive(Clone, Debug, Default)]
pub struct Env {
    given: Option<HashMap<String, String>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self { given: None }
    }

    /// Exactly these variables, and nothing of the process environment.
    pub fn of<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            given: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    /// The value of `name`, unless unset or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        let value = match &self.given {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        value.filter(|v| !v.is_empty())
    }

    /// `name`, or `default` when unset.
    pub fn var_or(&self, name: &'static str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    /// `name`, which must be set.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    /// `name` parsed, or `default` when unset.
    pub fn parse_or<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        match self.get(name) {
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
            None => Ok(default),
        }
    }

    /// A duration given in milliseconds.
    pub fn millis_or(&self, name: &'static str, default_ms: u64) -> Result<Duration, ConfigError> {
        self.parse_or(name, default_ms).map(Duration::from_millis)
    }

    /// A duration given in seconds.
    pub fn secs_or(&self, name: &'static str, default_secs: u64) -> Result<Duration, ConfigError> {
        self.parse_or(name, default_secs).map(Duration::from_secs)
    }
}

/// Variables as `to_env` writes them.
pub type Vars = Vec<(&'static str, String)>;

/// A duration as `millis_or` reads it.
pub fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// A duration as `secs_or` reads it.
pub fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

/// An optional value as `Env::get` reads it (empty is unset).
pub fn optional(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

/// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/reelay`),
/// `REELAY_DB_MAX_CONNECTIONS` (default 10).
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.var_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/reelay"),
            max_connections: env.parse_or("REELAY_DB_MAX_CONNECTIONS", 10)?,
        })
    }

    pub fn to_env(&self) -> Vars {
        vec![
            ("DATABASE_URL", self.url.clone()),
            (
                "REELAY_DB_MAX_CONNECTIONS",
                self.max_connections.to_string(),
            ),
        ]
    }
}

/// `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`),
/// `REELAY_QUEUE_PREFIX` (default `reelay`), `REELAY_SHARDS` (default 32:
/// chunk queues, shared out among the live workers; fixed once the
/// deployment ran, see `shards::check_count`),
/// `REELAY_STREAM_MAX_AGE` (default `7D`): how long stream queues keep
/// messages (RabbitMQ's `x-max-age`: a number and Y, M, D, h, m or s).
#[derive(Clone, Debug, PartialEq)]
pub struct AmqpConfig {
    pub url: String,
    pub queue_prefix: String,
    pub shards: u16,
    pub stream_max_age: String,
}

impl AmqpConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let shards = env.parse_or("REELAY_SHARDS", 32u16)?;
        if shards == 0 {
            return Err(ConfigError::Invalid {
                name: "REELAY_SHARDS",
                reason: "must be at least 1".into(),
            });
        }
        let stream_max_age = env.var_or("REELAY_STREAM_MAX_AGE", "7D");
        let age_ok = stream_max_age.len() >= 2
            && stream_max_age[..stream_max_age.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit())
            && stream_max_age.ends_with(['Y', 'M', 'D', 'h', 'm', 's']);
        if !age_ok {
            return Err(ConfigError::Invalid {
                name: "REELAY_STREAM_MAX_AGE",
                reason: "a number and Y, M, D, h, m or s (7D)".into(),
            });
        }
        Ok(Self {
            url: env.var_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            queue_prefix: env.var_or("REELAY_QUEUE_PREFIX", "reelay"),
            shards,
            stream_max_age,
        })
    }

    pub fn to_env(&self) -> Vars {
        vec![
            ("AMQP_URL", self.url.clone()),
            ("REELAY_QUEUE_PREFIX", self.queue_prefix.clone()),
            ("REELAY_SHARDS", self.shards.to_string()),
            ("REELAY_STREAM_MAX_AGE", self.stream_max_age.clone()),
        ]
    }
}

/// `REDIS_URL` (default `redis://127.0.0.1:6379`), `REELAY_REDIS_PREFIX`
/// (default `reelay:`).
#[derive(Clone, Debug, PartialEq)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
}

impl RedisConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.var_or("REDIS_URL", "redis://127.0.0.1:6379"),
            key_prefix: env.var_or("REELAY_REDIS_PREFIX", "reelay:"),
        })
    }

    pub fn to_env(&self) -> Vars {
        vec![
            ("REDIS_URL", self.url.clone()),
            ("REELAY_REDIS_PREFIX", self.key_prefix.clone()),
        ]
    }
}

/// `REELAY_S3_ENDPOINT` (default `http://127.0.0.1:3900`), `REELAY_S3_REGION`
/// (default `garage`), `REELAY_S3_BUCKET` (default `reelay`),
/// `REELAY_S3_ACCESS_KEY_ID` / `REELAY_S3_SECRET_ACCESS_KEY` (default: the
/// dev key that `scripts/garage.sh` imports), `REELAY_S3_PREFIX` (default
/// empty): every object key starts with it.
#[derive(Clone, Debug, PartialEq)]
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
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            endpoint: env.var_or("REELAY_S3_ENDPOINT", "http://127.0.0.1:3900"),
            region: env.var_or("REELAY_S3_REGION", "garage"),
            bucket: env.var_or("REELAY_S3_BUCKET", "reelay"),
            access_key_id: env.var_or("REELAY_S3_ACCESS_KEY_ID", DEV_S3_ACCESS_KEY_ID),
            secret_access_key: env.var_or("REELAY_S3_SECRET_ACCESS_KEY", DEV_S3_SECRET_ACCESS_KEY),
            key_prefix: env.var_or("REELAY_S3_PREFIX", ""),
        })
    }

    pub fn to_env(&self) -> Vars {
        vec![
            ("REELAY_S3_ENDPOINT", self.endpoint.clone()),
            ("REELAY_S3_REGION", self.region.clone()),
            ("REELAY_S3_BUCKET", self.bucket.clone()),
            ("REELAY_S3_ACCESS_KEY_ID", self.access_key_id.clone()),
            (
                "REELAY_S3_SECRET_ACCESS_KEY",
                self.secret_access_key.clone(),
            ),
            ("REELAY_S3_PREFIX", self.key_prefix.clone()),
        ]
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
#[derive(Clone, Debug, PartialEq)]
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
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let chunk_size = env.parse_or("REELAY_CHUNK_SIZE", 4 * 1024 * 1024usize)?;
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(ConfigError::Invalid {
                name: "REELAY_CHUNK_SIZE",
                reason: format!("must be between 1 and {MAX_CHUNK_SIZE}"),
            });
        }
        let min_part_size = env.parse_or("REELAY_PART_SIZE", 8 * 1024 * 1024u64)?;
        if min_part_size < S3_MIN_PART_SIZE {
            return Err(ConfigError::Invalid {
                name: "REELAY_PART_SIZE",
                reason: format!("must be at least {S3_MIN_PART_SIZE} (S3's minimum part)"),
            });
        }
        Ok(Self {
            chunk_size,
            min_part_size,
            max_upload_size: env.parse_or("REELAY_MAX_UPLOAD_SIZE", 50 * 1024 * 1024 * 1024u64)?,
            expiry: env.secs_or("REELAY_UPLOAD_EXPIRY_SECS", 86_400)?,
        })
    }

    pub fn to_env(&self) -> Vars {
        vec![
            ("REELAY_CHUNK_SIZE", self.chunk_size.to_string()),
            ("REELAY_PART_SIZE", self.min_part_size.to_string()),
            ("REELAY_MAX_UPLOAD_SIZE", self.max_upload_size.to_string()),
            ("REELAY_UPLOAD_EXPIRY_SECS", secs(self.expiry)),
        ]
    }
}

/// `REELAY_LOCK_TTL_MS` (default 5000): the upload lock's expiry, renewed
/// every third of it while a PATCH streams;
/// `REELAY_PATCH_IDLE_TIMEOUT_MS` (default 8000): a PATCH body that sends
/// nothing for this long is ended, keeping what was confirmed.
#[derive(Clone, Debug, PartialEq)]
pub struct LockConfig {
    pub ttl: Duration,
    pub patch_idle_timeout: Duration,
}

impl LockConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            ttl: env.millis_or("REELAY_LOCK_TTL_MS", 5_000)?,
            patch_idle_timeout: env.millis_or("REELAY_PATCH_IDLE_TIMEOUT_MS", 8_000)?,
        })
    }

    pub fn to_env(&self) -> Vars {
        vec![
            ("REELAY_LOCK_TTL_MS", millis(self.ttl)),
            (
                "REELAY_PATCH_IDLE_TIMEOUT_MS",
                millis(self.patch_idle_timeout),
            ),
        ]
    }
}

/// `REELAY_S3_RETRIES` (default 6) and `REELAY_S3_RETRY_BASE_MS` (default
/// 200): exponential backoff with jitter for each S3 step of the worker and
/// the reaper before they give up on it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct S3RetryConfig {
    pub attempts: usize,
    pub base: Duration,
}

impl S3RetryConfig {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            attempts: env.parse_or("REELAY_S3_RETRIES", 6usize)?,
            base: env.millis_or("REELAY_S3_RETRY_BASE_MS", 200)?,
        })
    }

    pub fn to_env(&self) -> Vars {
        vec![
            ("REELAY_S3_RETRIES", self.attempts.to_string()),
            ("REELAY_S3_RETRY_BASE_MS", millis(self.base)),
        ]
    }

    pub fn policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            attempts: self.attempts,
            base: self.base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_config_reads_back_what_it_writes() {
        let env = Env::of([
            ("DATABASE_URL", "postgres://x@h:1/db"),
            ("REELAY_SHARDS", "7"),
            ("REELAY_S3_PREFIX", "p/"),
            ("REELAY_CHUNK_SIZE", "1024"),
            ("REELAY_LOCK_TTL_MS", "1234"),
            ("REELAY_S3_RETRIES", "2"),
        ]);
        let database = DatabaseConfig::read(&env).unwrap();
        assert_eq!(database.url, "postgres://x@h:1/db");
        assert_eq!(
            DatabaseConfig::read(&Env::of(database.to_env())).unwrap(),
            database
        );
        let amqp = AmqpConfig::read(&env).unwrap();
        assert_eq!(amqp.shards, 7);
        assert_eq!(AmqpConfig::read(&Env::of(amqp.to_env())).unwrap(), amqp);
        let redis = RedisConfig::read(&env).unwrap();
        assert_eq!(RedisConfig::read(&Env::of(redis.to_env())).unwrap(), redis);
        let s3 = S3Config::read(&env).unwrap();
        assert_eq!(s3.key_prefix, "p/");
        assert_eq!(S3Config::read(&Env::of(s3.to_env())).unwrap(), s3);
        let upload = UploadConfig::read(&env).unwrap();
        assert_eq!(upload.chunk_size, 1024);
        assert_eq!(
            UploadConfig::read(&Env::of(upload.to_env())).unwrap(),
            upload
        );
        let lock = LockConfig::read(&env).unwrap();
        assert_eq!(lock.ttl, Duration::from_millis(1234));
        assert_eq!(LockConfig::read(&Env::of(lock.to_env())).unwrap(), lock);
        let retry = S3RetryConfig::read(&env).unwrap();
        assert_eq!(
            S3RetryConfig::read(&Env::of(retry.to_env())).unwrap(),
            retry
        );
    }

    #[test]
    fn a_bad_value_is_named_in_the_error() {
        let env = Env::of([("REELAY_SHARDS", "many")]);
        let error = AmqpConfig::read(&env).unwrap_err().to_string();
        assert!(error.contains("REELAY_SHARDS"), "{error}");
        let env = Env::of([("REELAY_SHARDS", "0")]);
        assert!(AmqpConfig::read(&env).is_err());
    }
}

//! The api's configuration, from the environment only.

use std::{net::SocketAddr, time::Duration};

use reelay_shared::config::{
    AmqpConfig, ConfigError, DatabaseConfig, LockConfig, RedisConfig, S3Config, UploadConfig,
    parse_or, required,
};

/// `REELAY_HTTP_ADDR` (default `127.0.0.1:8080`), `REELAY_JWT_SECRET`
/// (required: the HS256 secret bearer tokens are signed with),
/// `REELAY_REPLICA` (default `api`: this replica's name in logs and on the
/// broker), plus the shared database, broker, Redis, upload and lock
/// settings.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    pub jwt_secret: String,
    /// `REELAY_JWT_PUBLIC_KEY` (default unset): a PEM RSA public key; when
    /// set, RS256 tokens are accepted too.
    pub jwt_public_key: Option<String>,
    pub replica: String,
    /// `REELAY_PUBLIC_URL` (default unset: the Host a request came to): the
    /// base of the manifest URLs handed to players.
    pub public_url: Option<String>,
    /// The S3 settings (the api names object keys and presigns links; it
    /// never sends object bytes).
    pub s3: S3Config,
    /// `REELAY_LINK_TTL_SECS` (default 900): a temporary link's life when
    /// the request names none.
    pub link_ttl: Duration,
    /// `REELAY_LINK_MAX_TTL_SECS` (default 86400): longer requests are capped.
    pub link_max_ttl: Duration,
    /// `REELAY_MODERATION_SECRET` (default unset: callbacks are refused):
    /// the HMAC-SHA256 key moderation callbacks are signed with.
    pub moderation_secret: Option<String>,
    /// `REELAY_SERVICE_LINKS_UNVERIFIED` (default true): whether services get
    /// links to videos moderation has not verified yet (rejected ones never).
    pub service_links_unverified: bool,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub upload: UploadConfig,
    pub lock: LockConfig,
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            addr: parse_or("REELAY_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            jwt_secret: required("REELAY_JWT_SECRET")?,
            jwt_public_key: Some(reelay_shared::config::var_or("REELAY_JWT_PUBLIC_KEY", ""))
                .filter(|k| !k.is_empty()),
            replica: reelay_shared::config::var_or("REELAY_REPLICA", "api"),
            public_url: Some(reelay_shared::config::var_or("REELAY_PUBLIC_URL", ""))
                .filter(|u| !u.is_empty()),
            s3: S3Config::from_env()?,
            link_ttl: Duration::from_secs(parse_or("REELAY_LINK_TTL_SECS", 900u64)?),
            link_max_ttl: Duration::from_secs(parse_or("REELAY_LINK_MAX_TTL_SECS", 86_400u64)?),
            moderation_secret: Some(reelay_shared::config::var_or(
                "REELAY_MODERATION_SECRET",
                "",
            ))
            .filter(|s| !s.is_empty()),
            service_links_unverified: parse_or("REELAY_SERVICE_LINKS_UNVERIFIED", true)?,
            database: DatabaseConfig::from_env()?,
            amqp: AmqpConfig::from_env()?,
            redis: RedisConfig::from_env()?,
            upload: UploadConfig::from_env()?,
            lock: LockConfig::from_env()?,
        })
    }
}

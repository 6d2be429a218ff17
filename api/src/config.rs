//! The api's configuration, from the environment only.

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use reelay_shared::{
    clickhouse::ClickHouseConfig,
    config::{
        AmqpConfig, ConfigError, DatabaseConfig, Env, LockConfig, RedisConfig, S3Config,
        UploadConfig, Vars, millis, optional, secs,
    },
};

/// `REELAY_HTTP_ADDR` (default `127.0.0.1:8080`), `REELAY_JWT_SECRET`
/// (required: the HS256 secret bearer tokens are signed with),
/// `REELAY_REPLICA` (default `api`: this replica's name in logs and on the
/// broker), plus the shared database, broker, Redis, upload and lock
/// settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    pub jwt_secret: String,
    /// `REELAY_JWT_PUBLIC_KEY` (default unset): a PEM RSA public key; when
    /// set, RS256 tokens are accepted too.
    pub jwt_public_key: Option<String>,
    /// `REELAY_JWT_LEEWAY_SECS` (default 60): how far a token's `exp` and
    /// `nbf` may be off (the issuer's clock against ours).
    pub jwt_leeway: Duration,
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
    /// `REELAY_CORS_ORIGINS` (default `*`): the origins browsers may call the
    /// api from, comma-separated, `*` for any. `scripts/bucket-cors.sh`
    /// gives the bucket the same list, so players can fetch segments.
    pub cors_origins: Vec<String>,
    /// `REELAY_WEB_DIR` (default `web/dist`): the bundled browser code
    /// (`make web`); the console is served from its `console/` folder.
    pub web_dir: PathBuf,
    /// `REELAY_DEV_TOKENS` (default false; `make up` sets it): the console's
    /// sign-in buttons may mint tokens for a new user or an admin
    /// (`POST /v1/dev/tokens`). Never in production: anyone could be admin.
    pub dev_tokens: bool,
    /// `REELAY_PUBLIC_RATE_PER_SEC` (default 50; 0 turns the limit off) and
    /// `REELAY_PUBLIC_RATE_BURST` (default 200): each caller's rate on the
    /// endpoints that need no token, per api replica (see `throttle`).
    pub public_rate: Option<PublicRate>,
    /// `REELAY_CLIENT_IP_HEADER` (default unset: the connection's peer):
    /// the header a trusted proxy in front names the client in, such as
    /// `x-forwarded-for` (its last address). Set it only behind a proxy
    /// that sets it: a client could name any address otherwise.
    pub client_ip_header: Option<String>,
    /// `REELAY_API_BUFFER_MIB` (default 32): request-body bytes this api
    /// holds across all PATCHes at most; past it, PATCHes publish shorter
    /// chunks and stop reading until there is room (see `video::budget`).
    pub buffer_budget: usize,
    /// `REELAY_POLL_CACHE_ENTRIES` (default 10000; 0 turns it off): status
    /// poll answers, one per (video, caller), this replica keeps, exact by
    /// LISTEN/NOTIFY (see `reelay_shared::fresh`); ~2 KB each at most.
    pub poll_cache_entries: usize,
    /// `REELAY_LINK_CACHE_USERS` (default 100000; 0 turns it off): users
    /// whose profile video batch links read from this replica's memory,
    /// kept likewise; ~100 bytes each.
    pub link_cache_users: usize,
    /// Where statistics are read from.
    pub clickhouse: ClickHouseConfig,
    /// `REELAY_VIEW_THRESHOLD_MS` (default 10000): a playback session is a
    /// view once it played this long (or completed).
    pub view_threshold: Duration,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub upload: UploadConfig,
    pub lock: LockConfig,
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let upload = UploadConfig::read(env)?;
        Ok(Self {
            buffer_budget: buffer_budget(env, upload.chunk_size)?,
            poll_cache_entries: env.parse_or("REELAY_POLL_CACHE_ENTRIES", 10_000)?,
            link_cache_users: env.parse_or("REELAY_LINK_CACHE_USERS", 100_000)?,
            upload,
            addr: env.parse_or("REELAY_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            jwt_secret: env.required("REELAY_JWT_SECRET")?,
            jwt_public_key: env.get("REELAY_JWT_PUBLIC_KEY"),
            jwt_leeway: env.secs_or("REELAY_JWT_LEEWAY_SECS", 60)?,
            replica: env.var_or("REELAY_REPLICA", "api"),
            public_url: env.get("REELAY_PUBLIC_URL"),
            s3: S3Config::read(env)?,
            link_ttl: env.secs_or("REELAY_LINK_TTL_SECS", 900)?,
            link_max_ttl: env.secs_or("REELAY_LINK_MAX_TTL_SECS", 86_400)?,
            moderation_secret: env.get("REELAY_MODERATION_SECRET"),
            service_links_unverified: env.parse_or("REELAY_SERVICE_LINKS_UNVERIFIED", true)?,
            cors_origins: cors_origins(env)?,
            web_dir: env.var_or("REELAY_WEB_DIR", "web/dist").into(),
            dev_tokens: env.parse_or("REELAY_DEV_TOKENS", false)?,
            public_rate: PublicRate::read(env)?,
            client_ip_header: client_ip_header(env)?,
            clickhouse: ClickHouseConfig::read(env)?,
            view_threshold: env.millis_or("REELAY_VIEW_THRESHOLD_MS", 10_000)?,
            database: DatabaseConfig::read(env)?,
            amqp: AmqpConfig::read(env)?,
            redis: RedisConfig::read(env)?,
            lock: LockConfig::read(env)?,
        })
    }

    pub fn to_env(&self) -> Vars {
        let mut vars = vec![
            ("REELAY_HTTP_ADDR", self.addr.to_string()),
            ("REELAY_JWT_SECRET", self.jwt_secret.clone()),
            ("REELAY_JWT_PUBLIC_KEY", optional(&self.jwt_public_key)),
            ("REELAY_JWT_LEEWAY_SECS", secs(self.jwt_leeway)),
            ("REELAY_REPLICA", self.replica.clone()),
            ("REELAY_PUBLIC_URL", optional(&self.public_url)),
            ("REELAY_LINK_TTL_SECS", secs(self.link_ttl)),
            ("REELAY_LINK_MAX_TTL_SECS", secs(self.link_max_ttl)),
            (
                "REELAY_MODERATION_SECRET",
                optional(&self.moderation_secret),
            ),
            (
                "REELAY_SERVICE_LINKS_UNVERIFIED",
                self.service_links_unverified.to_string(),
            ),
            ("REELAY_CORS_ORIGINS", self.cors_origins.join(",")),
            ("REELAY_VIEW_THRESHOLD_MS", millis(self.view_threshold)),
            ("REELAY_WEB_DIR", self.web_dir.display().to_string()),
            ("REELAY_DEV_TOKENS", self.dev_tokens.to_string()),
            (
                "REELAY_PUBLIC_RATE_PER_SEC",
                self.public_rate.map_or(0, |r| r.per_sec.get()).to_string(),
            ),
            (
                "REELAY_PUBLIC_RATE_BURST",
                self.public_rate.map_or(200, |r| r.burst.get()).to_string(),
            ),
            ("REELAY_CLIENT_IP_HEADER", optional(&self.client_ip_header)),
            (
                "REELAY_API_BUFFER_MIB",
                (self.buffer_budget >> 20).to_string(),
            ),
            (
                "REELAY_POLL_CACHE_ENTRIES",
                self.poll_cache_entries.to_string(),
            ),
            ("REELAY_LINK_CACHE_USERS", self.link_cache_users.to_string()),
        ];
        vars.extend(self.clickhouse.to_env());
        vars.extend(self.s3.to_env());
        vars.extend(self.database.to_env());
        vars.extend(self.amqp.to_env());
        vars.extend(self.redis.to_env());
        vars.extend(self.upload.to_env());
        vars.extend(self.lock.to_env());
        vars
    }
}

/// A caller's rate on the public endpoints: `per_sec` on average, `burst`
/// at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicRate {
    pub per_sec: NonZeroU32,
    pub burst: NonZeroU32,
}

impl PublicRate {
    fn read(env: &Env) -> Result<Option<Self>, ConfigError> {
        let per_sec: u32 = env.parse_or("REELAY_PUBLIC_RATE_PER_SEC", 50)?;
        let burst: u32 = env.parse_or("REELAY_PUBLIC_RATE_BURST", 200)?;
        let Some(per_sec) = NonZeroU32::new(per_sec) else {
            return Ok(None);
        };
        let burst = NonZeroU32::new(burst).ok_or(ConfigError::Invalid {
            name: "REELAY_PUBLIC_RATE_BURST",
            reason: "must be at least 1 (turn the limit off with REELAY_PUBLIC_RATE_PER_SEC=0)"
                .into(),
        })?;
        Ok(Some(Self { per_sec, burst }))
    }
}

/// `REELAY_API_BUFFER_MIB`: room for a chunk at least, at most 4095 MiB
/// (one semaphore).
fn buffer_budget(env: &Env, chunk_size: usize) -> Result<usize, ConfigError> {
    let mib: usize = env.parse_or("REELAY_API_BUFFER_MIB", 32)?;
    if !(1..4096).contains(&mib) || mib << 20 < chunk_size {
        return Err(ConfigError::Invalid {
            name: "REELAY_API_BUFFER_MIB",
            reason: format!(
                "must be between one chunk (REELAY_CHUNK_SIZE, {} MiB) and 4095",
                chunk_size.div_ceil(1 << 20)
            ),
        });
    }
    Ok(mib << 20)
}

/// `REELAY_CLIENT_IP_HEADER`: a header name, checked at start.
fn client_ip_header(env: &Env) -> Result<Option<String>, ConfigError> {
    let Some(name) = env.get("REELAY_CLIENT_IP_HEADER") else {
        return Ok(None);
    };
    axum::http::HeaderName::from_bytes(name.as_bytes())
        .map(|n| Some(n.as_str().to_owned()))
        .map_err(|_| ConfigError::Invalid {
            name: "REELAY_CLIENT_IP_HEADER",
            reason: format!("'{name}' is not a header name"),
        })
}

/// `REELAY_CORS_ORIGINS`: `*`, or origins such as `https://app.example`.
fn cors_origins(env: &Env) -> Result<Vec<String>, ConfigError> {
    let origins: Vec<String> = env
        .var_or("REELAY_CORS_ORIGINS", "*")
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    for origin in &origins {
        let valid = origin == "*"
            || ((origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin["https://".len().min(origin.len())..].contains('/')
                && origin.bytes().all(|b| b.is_ascii_graphic()));
        if !valid {
            return Err(ConfigError::Invalid {
                name: "REELAY_CORS_ORIGINS",
                reason: format!("'{origin}' is not * nor an origin like https://app.example"),
            });
        }
    }
    if origins.is_empty() {
        return Ok(vec!["*".into()]);
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_config_reads_back_what_it_writes() {
        let env = Env::of([
            ("REELAY_JWT_SECRET", "s"),
            ("REELAY_HTTP_ADDR", "127.0.0.1:0"),
            ("REELAY_MODERATION_SECRET", "m"),
            ("REELAY_LINK_TTL_SECS", "60"),
            ("REELAY_JWT_LEEWAY_SECS", "5"),
            ("REELAY_SERVICE_LINKS_UNVERIFIED", "false"),
            ("REELAY_DEV_TOKENS", "true"),
            ("REELAY_PUBLIC_RATE_PER_SEC", "5"),
            ("REELAY_CLIENT_IP_HEADER", "X-Forwarded-For"),
        ]);
        let config = ApiConfig::read(&env).unwrap();
        assert_eq!(config.moderation_secret.as_deref(), Some("m"));
        assert!(!config.service_links_unverified);
        assert!(config.dev_tokens);
        assert_eq!(
            config.public_rate.map(|r| (r.per_sec.get(), r.burst.get())),
            Some((5, 200))
        );
        assert_eq!(config.client_ip_header.as_deref(), Some("x-forwarded-for"));
        assert_eq!(config.jwt_leeway, Duration::from_secs(5));
        assert_eq!(ApiConfig::read(&Env::of(config.to_env())).unwrap(), config);
        assert_eq!(config.cors_origins, ["*"]);
        let off = Env::of([
            ("REELAY_JWT_SECRET", "s"),
            ("REELAY_PUBLIC_RATE_PER_SEC", "0"),
        ]);
        let off = ApiConfig::read(&off).unwrap();
        assert_eq!(off.public_rate, None);
        assert_eq!(ApiConfig::read(&Env::of(off.to_env())).unwrap(), off);
    }

    #[test]
    fn cors_origins_are_a_list_or_any() {
        let read = |origins: &str| {
            ApiConfig::read(&Env::of([
                ("REELAY_JWT_SECRET", "s"),
                ("REELAY_CORS_ORIGINS", origins),
            ]))
            .map(|c| c.cors_origins)
        };
        assert_eq!(
            read("https://a.example, http://127.0.0.1:8099/").unwrap(),
            ["https://a.example", "http://127.0.0.1:8099"]
        );
        assert!(read("a.example").is_err());
        assert!(read("https://a.example/path").is_err());
    }

    #[test]
    fn the_buffer_budget_holds_a_chunk_at_least() {
        let read = |mib: &str| {
            ApiConfig::read(&Env::of([
                ("REELAY_JWT_SECRET", "s"),
                ("REELAY_API_BUFFER_MIB", mib),
            ]))
            .map(|c| c.buffer_budget)
        };
        assert_eq!(read("8").unwrap(), 8 << 20);
        let error = read("2").unwrap_err().to_string();
        assert!(error.contains("REELAY_API_BUFFER_MIB"), "{error}");
    }

    #[test]
    fn the_api_needs_a_jwt_secret() {
        let error = ApiConfig::read(&Env::of([("REELAY_HTTP_ADDR", "127.0.0.1:1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("REELAY_JWT_SECRET"), "{error}");
    }
}

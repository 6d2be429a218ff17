//! The worker's configuration, from the environment only.

use std::{net::SocketAddr, time::Duration};

use reelay_scheduler::config::SchedulerConfig;
use reelay_shared::{
    clickhouse::ClickHouseConfig,
    config::{
        AmqpConfig, ConfigError, DatabaseConfig, Env, RedisConfig, S3Config, S3RetryConfig,
        UploadConfig, Vars, millis, secs,
    },
    fleet::signing::FirmwareSigner,
};

/// `REELAY_PREFETCH` (default 32): most unacked messages per shard consumer;
/// `REELAY_WORKER_BUFFER_MIB` (default 128): the chunk bytes the worker may
/// hold across all its shards: each shard consumer's prefetch is this over
/// (its share of shards × `REELAY_CHUNK_SIZE`), at least 2 and at most
/// `REELAY_PREFETCH`; `REELAY_SHARD_LEASE_MS` (default 6000): life of the
/// worker's shard leases (renewed every third of it; a dead worker's shards
/// are taken over within about this long);
/// `REELAY_STAGE_IDLE_MS` (default 5000): an upload whose buffer saw no
/// chunk for this long is staged to S3 so its messages can be acked;
/// `REELAY_WORKER_HTTP_ADDR` (default unset: no listener): `/healthz`,
/// `/readyz` and `/metrics`; `REELAY_REPLICA` (default `worker`): this
/// replica's name; `REELAY_SCHEDULER` (default false): when true this
/// worker also runs the scheduler (see `reelay_scheduler::config` for its
/// settings); several replicas may, one leads. The S3 retries are
/// `REELAY_S3_RETRIES` and `REELAY_S3_RETRY_BASE_MS`.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    pub replica: String,
    pub prefetch: u16,
    /// Chunk bytes held across all shards (`REELAY_WORKER_BUFFER_MIB`).
    pub buffer_budget: usize,
    /// The largest chunk message (the api's `REELAY_CHUNK_SIZE`).
    pub chunk_size: usize,
    pub shard_lease: Duration,
    pub s3_retry: S3RetryConfig,
    pub stage_idle: Duration,
    pub http_addr: Option<SocketAddr>,
    /// Set when a moderation webhook is configured.
    pub moderation: Option<ModerationConfig>,
    pub scheduler: Option<SchedulerConfig>,
    /// Set when `REELAY_FFLOW_URLS` names fflow replicas.
    pub fflow: Option<FflowConfig>,
    pub fleet: FleetConfig,
    pub etl: EtlConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub amqp: AmqpConfig,
    pub s3: S3Config,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let prefetch = env.parse_or("REELAY_PREFETCH", 32u16)?;
        if prefetch < 4 {
            return Err(ConfigError::Invalid {
                name: "REELAY_PREFETCH",
                reason: "must be at least 4".into(),
            });
        }
        let shard_lease = env.millis_or("REELAY_SHARD_LEASE_MS", 6_000)?;
        if shard_lease < Duration::from_millis(300) {
            return Err(ConfigError::Invalid {
                name: "REELAY_SHARD_LEASE_MS",
                reason: "must be at least 300".into(),
            });
        }
        let http_addr = env
            .get("REELAY_WORKER_HTTP_ADDR")
            .map(|a| {
                a.parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                        name: "REELAY_WORKER_HTTP_ADDR",
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        Ok(Self {
            replica: env.var_or("REELAY_REPLICA", "worker"),
            prefetch,
            buffer_budget: env.parse_or("REELAY_WORKER_BUFFER_MIB", 128usize)? << 20,
            chunk_size: UploadConfig::read(env)?.chunk_size,
            shard_lease,
            s3_retry: S3RetryConfig::read(env)?,
            stage_idle: env.millis_or("REELAY_STAGE_IDLE_MS", 5_000)?,
            http_addr,
            moderation: ModerationConfig::read(env)?,
            scheduler: match env.parse_or("REELAY_SCHEDULER", false)? {
                true => Some(SchedulerConfig::read(env)?),
                false => None,
            },
            fflow: FflowConfig::read(env)?,
            fleet: FleetConfig::read(env)?,
            etl: EtlConfig::read(env)?,
            database: DatabaseConfig::read(env)?,
            redis: RedisConfig::read(env)?,
            amqp: AmqpConfig::read(env)?,
            s3: S3Config::read(env)?,
        })
    }

    /// The variables `read` takes this from. A worker that runs the
    /// scheduler also writes the scheduler's (its replica name is the
    /// worker's).
    pub fn to_env(&self) -> Vars {
        let mut vars = vec![
            ("REELAY_PREFETCH", self.prefetch.to_string()),
            (
                "REELAY_WORKER_BUFFER_MIB",
                (self.buffer_budget >> 20).to_string(),
            ),
            ("REELAY_CHUNK_SIZE", self.chunk_size.to_string()),
            ("REELAY_SHARD_LEASE_MS", millis(self.shard_lease)),
            ("REELAY_STAGE_IDLE_MS", millis(self.stage_idle)),
            (
                "REELAY_WORKER_HTTP_ADDR",
                self.http_addr.map(|a| a.to_string()).unwrap_or_default(),
            ),
            ("REELAY_SCHEDULER", self.scheduler.is_some().to_string()),
        ];
        if let Some(scheduler) = &self.scheduler {
            vars.extend(scheduler.to_env());
        }
        vars.extend(ModerationConfig::to_env(self.moderation.as_ref()));
        vars.extend(FflowConfig::to_env(self.fflow.as_ref()));
        vars.extend(self.fleet.to_env());
        vars.extend(self.etl.to_env());
        vars.extend(self.s3_retry.to_env());
        vars.extend(self.database.to_env());
        vars.extend(self.redis.to_env());
        vars.extend(self.amqp.to_env());
        vars.extend(self.s3.to_env());
        // Last: the worker's name wins over the scheduler's.
        vars.push(("REELAY_REPLICA", self.replica.clone()));
        vars
    }
}

/// `REELAY_MODERATION_WEBHOOK_URL` (default unset: no moderation, videos
/// stay unverified), `REELAY_MODERATION_SECRET` (required with the URL: the
/// HMAC-SHA256 key of the signed body), `REELAY_MODERATION_RETRIES`
/// (default 5) and `REELAY_MODERATION_RETRY_BASE_MS` (default 1000):
/// backoff while the webhook is down; `REELAY_MODERATION_LINK_TTL_SECS`
/// (default 3600): life of the link the webhook gets.
#[derive(Clone, Debug, PartialEq)]
pub struct ModerationConfig {
    pub webhook_url: String,
    pub secret: String,
    pub retries: usize,
    pub retry_base: Duration,
    pub link_ttl: Duration,
}

impl ModerationConfig {
    pub fn read(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(webhook_url) = env.get("REELAY_MODERATION_WEBHOOK_URL") else {
            return Ok(None);
        };
        Ok(Some(Self {
            webhook_url,
            secret: env.required("REELAY_MODERATION_SECRET")?,
            retries: env.parse_or("REELAY_MODERATION_RETRIES", 5usize)?,
            retry_base: env.millis_or("REELAY_MODERATION_RETRY_BASE_MS", 1_000)?,
            link_ttl: env.secs_or("REELAY_MODERATION_LINK_TTL_SECS", 3_600)?,
        }))
    }

    pub fn to_env(config: Option<&Self>) -> Vars {
        let Some(c) = config else {
            return vec![("REELAY_MODERATION_WEBHOOK_URL", String::new())];
        };
        vec![
            ("REELAY_MODERATION_WEBHOOK_URL", c.webhook_url.clone()),
            ("REELAY_MODERATION_SECRET", c.secret.clone()),
            ("REELAY_MODERATION_RETRIES", c.retries.to_string()),
            ("REELAY_MODERATION_RETRY_BASE_MS", millis(c.retry_base)),
            ("REELAY_MODERATION_LINK_TTL_SECS", secs(c.link_ttl)),
        ]
    }
}

/// `REELAY_FFLOW_URLS` (default unset: no forwarding, no encoding): the
/// replicas, comma-separated, each as the base that starts a session on it;
/// `REELAY_FFLOW_ROUTE_TTL_SECS` (default 90000): how long a session's route
/// lives in Redis; `REELAY_ENCODE_CONCURRENCY` (default 4): encode jobs one
/// worker follows at once; `REELAY_ENCODE_POLL_MS` (default 1000): how often
/// it learns how far an encode got (each ask is a long poll that answers at
/// once when the encode ends).
#[derive(Clone, Debug, PartialEq)]
pub struct FflowConfig {
    pub urls: Vec<String>,
    pub route_ttl: Duration,
    pub encode_concurrency: u16,
    pub poll: Duration,
}

impl FflowConfig {
    pub fn read(env: &Env) -> Result<Option<Self>, ConfigError> {
        let urls: Vec<String> = env
            .var_or("REELAY_FFLOW_URLS", "")
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            urls,
            route_ttl: env.secs_or("REELAY_FFLOW_ROUTE_TTL_SECS", 90_000)?,
            encode_concurrency: env.parse_or("REELAY_ENCODE_CONCURRENCY", 4u16)?.max(1),
            poll: env.millis_or("REELAY_ENCODE_POLL_MS", 1_000)?,
        }))
    }

    pub fn to_env(config: Option<&Self>) -> Vars {
        let Some(c) = config else {
            return vec![("REELAY_FFLOW_URLS", String::new())];
        };
        vec![
            ("REELAY_FFLOW_URLS", c.urls.join(",")),
            ("REELAY_FFLOW_ROUTE_TTL_SECS", secs(c.route_ttl)),
            (
                "REELAY_ENCODE_CONCURRENCY",
                c.encode_concurrency.to_string(),
            ),
            ("REELAY_ENCODE_POLL_MS", millis(c.poll)),
        ]
    }
}

/// The fleet product's jobs.
///
/// `REELAY_FLEET_SIGNING_KEY` (default unset: uploaded firmware stays
/// pending): base64 of the 32-byte Ed25519 seed firmware is signed with
/// (`openssl rand -base64 32`); `REELAY_FLEET_BACKEND_URL` (default unset:
/// device updates are dead-lettered) and `REELAY_FLEET_BACKEND_SECRET`
/// (required with it): where update requests go and the HMAC-SHA256 key
/// they are signed with; `REELAY_FLEET_CONCURRENCY` (default 64): fleet jobs
/// one worker runs at once; `REELAY_FLEET_LINK_TTL_SECS` (default 86400):
/// life of the firmware link a device gets; `REELAY_FLEET_TIMEOUT_MS`
/// (default 10000): one call to the fleet backend.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    pub signing_key: Option<FirmwareSigner>,
    pub backend: Option<FleetBackend>,
    pub concurrency: u16,
    pub link_ttl: Duration,
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FleetBackend {
    pub url: String,
    pub secret: String,
}

impl FleetConfig {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let signing_key = env
            .get("REELAY_FLEET_SIGNING_KEY")
            .map(|k| {
                FirmwareSigner::from_base64(&k).map_err(|reason| ConfigError::Invalid {
                    name: "REELAY_FLEET_SIGNING_KEY",
                    reason,
                })
            })
            .transpose()?;
        let backend = match env.get("REELAY_FLEET_BACKEND_URL") {
            None => None,
            Some(url) => Some(FleetBackend {
                url: url.trim_end_matches('/').to_owned(),
                secret: env.required("REELAY_FLEET_BACKEND_SECRET")?,
            }),
        };
        Ok(Self {
            signing_key,
            backend,
            concurrency: env.parse_or("REELAY_FLEET_CONCURRENCY", 64u16)?.max(1),
            link_ttl: env.secs_or("REELAY_FLEET_LINK_TTL_SECS", 86_400)?,
            timeout: env.millis_or("REELAY_FLEET_TIMEOUT_MS", 10_000)?,
        })
    }

    pub fn to_env(&self) -> Vars {
        let mut vars = vec![
            (
                "REELAY_FLEET_SIGNING_KEY",
                self.signing_key
                    .as_ref()
                    .map(FirmwareSigner::to_base64)
                    .unwrap_or_default(),
            ),
            ("REELAY_FLEET_CONCURRENCY", self.concurrency.to_string()),
            ("REELAY_FLEET_LINK_TTL_SECS", secs(self.link_ttl)),
            ("REELAY_FLEET_TIMEOUT_MS", millis(self.timeout)),
        ];
        match &self.backend {
            Some(b) => vars.extend([
                ("REELAY_FLEET_BACKEND_URL", b.url.clone()),
                ("REELAY_FLEET_BACKEND_SECRET", b.secret.clone()),
            ]),
            None => vars.push(("REELAY_FLEET_BACKEND_URL", String::new())),
        }
        vars
    }
}

/// The engagement ETL, from the streams into ClickHouse: `REELAY_ETL`
/// (default true; every worker campaigns, one per stream reads);
/// `REELAY_ETL_BATCH` (default 20000): events per insert at most (large
/// inserts keep ClickHouse's parts few); `REELAY_ETL_FLUSH_MS` (default
/// 1000): the longest an event waits for its batch; `REELAY_ETL_LEASE_MS` (default 10000): each stream's reader
/// lease; `REELAY_ANALYTICS_RETENTION_MONTHS` (default 24): older monthly
/// partitions are dropped; `REELAY_VIEW_THRESHOLD_MS` (default 10000): a
/// session is a view once it played this long; and ClickHouse's
/// `REELAY_CLICKHOUSE_URL` and `REELAY_CLICKHOUSE_DATABASE`.
#[derive(Clone, Debug, PartialEq)]
pub struct EtlConfig {
    pub enabled: bool,
    pub batch: usize,
    pub flush: Duration,
    pub lease_ttl: Duration,
    pub retention_months: u32,
    pub view_threshold: Duration,
    pub clickhouse: ClickHouseConfig,
}

impl EtlConfig {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let batch = env.parse_or("REELAY_ETL_BATCH", 20_000usize)?;
        if !(1..=100_000).contains(&batch) {
            return Err(ConfigError::Invalid {
                name: "REELAY_ETL_BATCH",
                reason: "must be between 1 and 100000".into(),
            });
        }
        let lease_ttl = env.millis_or("REELAY_ETL_LEASE_MS", 10_000)?;
        if lease_ttl < Duration::from_millis(300) {
            return Err(ConfigError::Invalid {
                name: "REELAY_ETL_LEASE_MS",
                reason: "must be at least 300".into(),
            });
        }
        Ok(Self {
            enabled: env.parse_or("REELAY_ETL", true)?,
            batch,
            flush: env.millis_or("REELAY_ETL_FLUSH_MS", 1_000)?,
            lease_ttl,
            retention_months: env
                .parse_or("REELAY_ANALYTICS_RETENTION_MONTHS", 24u32)?
                .max(1),
            view_threshold: env.millis_or("REELAY_VIEW_THRESHOLD_MS", 10_000)?,
            clickhouse: ClickHouseConfig::read(env)?,
        })
    }

    pub fn to_env(&self) -> Vars {
        let mut vars = vec![
            ("REELAY_ETL", self.enabled.to_string()),
            ("REELAY_ETL_BATCH", self.batch.to_string()),
            ("REELAY_ETL_FLUSH_MS", millis(self.flush)),
            ("REELAY_ETL_LEASE_MS", millis(self.lease_ttl)),
            (
                "REELAY_ANALYTICS_RETENTION_MONTHS",
                self.retention_months.to_string(),
            ),
            ("REELAY_VIEW_THRESHOLD_MS", millis(self.view_threshold)),
        ];
        vars.extend(self.clickhouse.to_env());
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_config_reads_back_what_it_writes() {
        let env = Env::of([
            ("REELAY_PREFETCH", "8"),
            ("REELAY_REPLICA", "w-1"),
            ("REELAY_WORKER_HTTP_ADDR", "127.0.0.1:9000"),
            ("REELAY_MODERATION_WEBHOOK_URL", "http://m/"),
            ("REELAY_MODERATION_SECRET", "k"),
            ("REELAY_FFLOW_URLS", "http://a:1/, http://b:2"),
            ("REELAY_SCHEDULER", "true"),
            ("REELAY_SCHEDULER_LEASE_MS", "30000"),
            (
                "REELAY_FLEET_SIGNING_KEY",
                "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
            ),
            ("REELAY_FLEET_BACKEND_URL", "http://fleet/"),
            ("REELAY_FLEET_BACKEND_SECRET", "s"),
            ("REELAY_ETL_BATCH", "77"),
            ("REELAY_CLICKHOUSE_DATABASE", "stats_1"),
        ]);
        let config = WorkerConfig::read(&env).unwrap();
        assert_eq!(config.replica, "w-1");
        assert_eq!(
            config.fflow.as_ref().unwrap().urls,
            ["http://a:1", "http://b:2"]
        );
        assert!(config.moderation.is_some() && config.scheduler.is_some());
        assert_eq!(config.fleet.backend.as_ref().unwrap().url, "http://fleet");
        assert!(config.fleet.signing_key.is_some());
        assert_eq!(config.etl.batch, 77);
        assert_eq!(config.etl.clickhouse.database, "stats_1");
        let again = WorkerConfig::read(&Env::of(config.to_env())).unwrap();
        assert_eq!(again, config);
        assert_eq!(again.scheduler.unwrap().replica, "w-1");
    }

    #[test]
    fn a_plain_worker_writes_the_optional_parts_off() {
        let config = WorkerConfig::read(&Env::of([("REELAY_REPLICA", "w")])).unwrap();
        assert!(config.moderation.is_none() && config.fflow.is_none());
        // Unset in a child's environment, even if the parent had them.
        let vars = config.to_env();
        for name in ["REELAY_MODERATION_WEBHOOK_URL", "REELAY_FFLOW_URLS"] {
            assert!(
                vars.iter().any(|(k, v)| *k == name && v.is_empty()),
                "{name}"
            );
        }
        assert_eq!(WorkerConfig::read(&Env::of(vars)).unwrap(), config);
    }
}

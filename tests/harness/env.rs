//! [`TestEnv`]: one test's (or one benchmark run's) own database, queue
//! prefix, Redis key prefix and S3 key prefix on the real PostgreSQL,
//! RabbitMQ, Redis and Garage, the settings of every process that runs in
//! it, and its clean-up on drop (also when the test panics).

use std::{path::PathBuf, time::Duration};

use base64::Engine as _;
use futures_util::TryStreamExt;
use lapin::options::QueueDeleteOptions;
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use reelay_api::{
    auth::{self, Role},
    config::ApiConfig,
};
use reelay_scheduler::{
    config::{ApnsConfig, FcmConfig, PushConfig, SchedulerConfig, WebhookConfig},
    video::reaper::ReapRules,
};
use reelay_shared::fleet::signing::FirmwareSigner;
use reelay_shared::{
    PROJECTIONS, VideoId, VideoStatus,
    clickhouse::ClickHouseConfig,
    config::{
        AmqpConfig, DatabaseConfig, Env, LockConfig, RedisConfig, S3Config, S3RetryConfig,
        UploadConfig,
    },
    mq::Topology,
    storage::Storage,
    store::Store,
    video::{ProfileEvent, ProfileId, UserId, Video, VideoEvent},
};
use reelay_worker::config::{EtlConfig, FflowConfig, FleetConfig, WorkerConfig};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{MIB, binary_dir, push, wait_until};

/// Where the shared services are; `REELAY_TEST_PG` overrides the server.
pub fn pg_server() -> String {
    std::env::var("REELAY_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// What the processes of an environment are tuned for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tuning {
    /// Small and quick: 2 shards, short timeouts, 1 s staging.
    Test,
    /// The production defaults, as a deployment would run.
    Benchmark,
}

pub struct TestEnv {
    pub id: String,
    pub database_url: String,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub s3: S3Config,
    /// Its own ClickHouse database (`reelay_<kind>_<id>`), dropped with it.
    pub clickhouse: ClickHouseConfig,
    pub upload: UploadConfig,
    pub lock: LockConfig,
    pub jwt_secret: String,
    pub store: Store,
    pub storage: Storage,
    pub topology: Topology,
    /// Where the workspace's binaries are (next to the running executable
    /// unless set).
    pub binaries: PathBuf,
    tuning: Tuning,
    pg_server: String,
    db_name: String,
}

impl TestEnv {
    /// An environment for a test: small settings, quick timeouts.
    pub async fn new() -> Self {
        Self::create(&pg_server(), Tuning::Test).await
    }

    /// An environment for a benchmark run on `pg_server`: the production
    /// defaults (and whatever the environment sets), with its own names.
    pub async fn for_benchmark(pg_server: &str) -> Self {
        Self::create(pg_server, Tuning::Benchmark).await
    }

    async fn create(pg_server: &str, tuning: Tuning) -> Self {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let kind = match tuning {
            Tuning::Test => "test",
            Tuning::Benchmark => "bench",
        };
        let db_name = format!("reelay_{kind}_{id}");
        let admin = sqlx::PgPool::connect(&format!("{pg_server}/postgres"))
            .await
            .expect("PostgreSQL is up");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&admin)
            .await
            .expect("create the database");
        admin.close().await;
        let database_url = format!("{pg_server}/{db_name}");
        let store = Store::connect(&DatabaseConfig {
            url: database_url.clone(),
            max_connections: 4,
        })
        .await
        .expect("connect to the database");
        store.migrate().await.expect("migrations run");
        let env = Env::process();
        let amqp = AmqpConfig {
            queue_prefix: format!("{kind}.{id}"),
            shards: match tuning {
                Tuning::Test => 2,
                Tuning::Benchmark => AmqpConfig::read(&env).expect("broker settings").shards,
            },
            ..AmqpConfig::read(&env).expect("broker settings")
        };
        let s3 = S3Config {
            key_prefix: format!("{kind}/{id}/"),
            ..S3Config::read(&env).expect("S3 settings")
        };
        let storage = Storage::new(&s3).expect("S3 client");
        let (upload, lock) = match tuning {
            Tuning::Test => (
                UploadConfig {
                    chunk_size: 4 * MIB,
                    min_part_size: 5 * MIB as u64,
                    max_upload_size: 1 << 30,
                    expiry: Duration::from_secs(3600),
                },
                LockConfig {
                    ttl: Duration::from_secs(2),
                    patch_idle_timeout: Duration::from_secs(3),
                },
            ),
            Tuning::Benchmark => (
                UploadConfig::read(&env).expect("upload settings"),
                LockConfig::read(&env).expect("lock settings"),
            ),
        };
        let clickhouse = ClickHouseConfig {
            database: db_name.clone(),
            ..ClickHouseConfig::read(&env).expect("ClickHouse settings")
        };
        Self {
            clickhouse,
            topology: Topology::new(&amqp),
            redis: RedisConfig {
                key_prefix: format!("{kind}:{id}:"),
                ..RedisConfig::read(&env).expect("Redis settings")
            },
            upload,
            lock,
            jwt_secret: format!("secret-{id}"),
            binaries: binary_dir(),
            tuning,
            pg_server: pg_server.to_owned(),
            id,
            database_url,
            amqp,
            s3,
            store,
            storage,
            db_name,
        }
    }

    /// Spreads chunks over `shards` queues instead (before any process of
    /// the environment starts: the number is fixed once one ran).
    pub fn set_shards(&mut self, shards: u16) {
        self.amqp.shards = shards;
        self.topology = Topology::new(&self.amqp);
    }

    /// How many chunk shards each worker holds a lease on now, by replica
    /// name (`reelay_shared::shards`).
    pub async fn shard_owners(&self) -> std::collections::BTreeMap<String, usize> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT split_part(holder, '/', 1), count(*) FROM shard_leases \
             WHERE grp = $1 AND expires_at > now() GROUP BY 1",
        )
        .bind(&self.topology.prefix)
        .fetch_all(self.store.pool())
        .await
        .expect("read the shard leases");
        rows.into_iter().map(|(r, n)| (r, n as usize)).collect()
    }

    fn database(&self, max_connections: u32) -> DatabaseConfig {
        DatabaseConfig {
            url: self.database_url.clone(),
            max_connections,
        }
    }

    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            addr: "127.0.0.1:0".parse().expect("valid address"),
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key: None,
            jwt_leeway: Duration::from_secs(60),
            replica: format!("api-{}", self.id),
            public_url: None,
            s3: self.s3.clone(),
            link_ttl: Duration::from_secs(900),
            link_max_ttl: Duration::from_secs(86_400),
            moderation_secret: Some(format!("moderation-{}", self.id)),
            service_links_unverified: true,
            cors_origins: vec!["*".into()],
            web_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist"),
            dev_tokens: false,
            // Tests and benchmarks send from one address far past any
            // public rate; tests/integration/rate_limits.rs turns it on.
            public_rate: None,
            client_ip_header: None,
            buffer_budget: Env::process()
                .parse_or("REELAY_API_BUFFER_MIB", 32usize)
                .expect("a number of MiB")
                << 20,
            // As production, unless the environment turns it off (a bench's
            // reference).
            poll_cache_entries: Env::process()
                .parse_or("REELAY_POLL_CACHE_ENTRIES", 10_000usize)
                .expect("a number of entries"),
            link_cache_users: Env::process()
                .parse_or("REELAY_LINK_CACHE_USERS", 100_000usize)
                .expect("a number of users"),
            clickhouse: self.clickhouse.clone(),
            view_threshold: Duration::from_secs(10),
            database: self.database(match self.tuning {
                Tuning::Test => 8,
                Tuning::Benchmark => 10,
            }),
            amqp: self.amqp.clone(),
            redis: self.redis.clone(),
            upload: self.upload.clone(),
            lock: self.lock.clone(),
        }
    }

    pub fn worker_config(&self) -> WorkerConfig {
        let (s3_retry, stage_idle, connections) = match self.tuning {
            Tuning::Test => (
                S3RetryConfig {
                    attempts: 3,
                    base: Duration::from_millis(50),
                },
                Duration::from_secs(1),
                4,
            ),
            Tuning::Benchmark => (
                S3RetryConfig::read(&Env::process()).expect("retry settings"),
                Duration::from_secs(5),
                10,
            ),
        };
        WorkerConfig {
            replica: format!("worker-{}", self.id),
            prefetch: 32,
            buffer_budget: Env::process()
                .parse_or("REELAY_WORKER_BUFFER_MIB", 128usize)
                .expect("a number of MiB")
                << 20,
            chunk_size: self.upload.chunk_size,
            shard_lease: match self.tuning {
                Tuning::Test => Duration::from_secs(4),
                Tuning::Benchmark => Duration::from_secs(6),
            },
            s3_retry,
            stage_idle,
            http_addr: None,
            moderation: None,
            scheduler: None,
            fflow: None,
            fleet: FleetConfig {
                signing_key: Some(self.signing_key()),
                backend: None,
                concurrency: 64,
                link_ttl: Duration::from_secs(3600),
                timeout: Duration::from_secs(5),
            },
            // On where a test reads the engagement streams
            // (`worker_config_with_etl`).
            etl: EtlConfig {
                enabled: false,
                batch: 1000,
                flush: Duration::from_millis(200),
                lease_ttl: Duration::from_secs(3),
                retention_months: 24,
                view_threshold: Duration::from_secs(10),
                clickhouse: self.clickhouse.clone(),
            },
            database: self.database(connections),
            redis: self.redis.clone(),
            amqp: self.amqp.clone(),
            s3: self.s3.clone(),
        }
    }

    /// The key this environment's workers sign firmware with (derived from
    /// its id, so each test has its own).
    pub fn signing_key(&self) -> FirmwareSigner {
        let seed: [u8; 32] = Sha256::digest(format!("signing-{}", self.id)).into();
        FirmwareSigner::from_base64(&base64::engine::general_purpose::STANDARD.encode(seed))
            .expect("a 32-byte seed")
    }

    /// A worker's settings that also read the engagement streams into
    /// ClickHouse.
    pub fn worker_config_with_etl(&self) -> WorkerConfig {
        let mut config = self.worker_config();
        config.etl.enabled = true;
        config
    }

    /// A worker's settings that forward to and encode on `fflow` (bases of
    /// replicas), polling encodes often.
    pub fn worker_config_with_fflow(&self, fflow: &[String]) -> WorkerConfig {
        WorkerConfig {
            fflow: Some(FflowConfig {
                urls: fflow.to_vec(),
                route_ttl: Duration::from_secs(3600),
                encode_concurrency: 4,
                poll: Duration::from_millis(100),
            }),
            ..self.worker_config()
        }
    }

    /// An fflow replica's settings: its own data folder under `dir`.
    pub fn fflow_config(
        &self,
        replica: &str,
        dir: &std::path::Path,
    ) -> reelay_fflow::config::FflowConfig {
        reelay_fflow::config::FflowConfig {
            addr: "127.0.0.1:0".parse().expect("an address"),
            replica: replica.to_owned(),
            public_url: None,
            data_dir: dir.join(replica),
            disk_budget: 1 << 30,
            max_encodes: 2,
            session_ttl: Duration::from_secs(3600),
            preset: "ultrafast".into(),
            s3: self.s3.clone(),
        }
    }

    /// Scheduler settings for tests: short intervals and lease; the reaper's
    /// timeouts long (a test shortens the one it is about); no push
    /// provider (see [`TestEnv::point_push_at`]).
    pub fn scheduler_config(&self) -> SchedulerConfig {
        let hour = Duration::from_secs(3600);
        SchedulerConfig {
            replica: format!("scheduler-{}", self.id),
            interval: Duration::from_millis(200),
            fleet_tick: Duration::from_millis(100),
            lease_ttl: Duration::from_secs(2),
            rules: ReapRules {
                pending_timeout: hour,
                stall_timeout: hour,
                delete_grace: hour,
            },
            s3_retry: S3RetryConfig {
                attempts: 3,
                base: Duration::from_millis(50),
            },
            push: PushConfig {
                poll: Duration::from_millis(100),
                max_attempts: 5,
                retry_base: Duration::from_millis(100),
                retry_cap: Duration::from_secs(1),
                timeout: Duration::from_millis(900),
                concurrency: 8,
                fcm: None,
                apns: None,
                webhook: None,
            },
            database: self.database(4),
            amqp: self.amqp.clone(),
            redis: self.redis.clone(),
            s3: self.s3.clone(),
        }
    }

    /// Sends the scheduler's pushes to the local receivers, with the key
    /// files they verify written to `dir`.
    pub fn point_push_at(
        &self,
        config: &mut SchedulerConfig,
        receivers: &push::PushReceivers,
        dir: &std::path::Path,
    ) {
        let keys = receivers.keys();
        config.push.fcm = Some(FcmConfig {
            credentials: receivers.write_fcm_credentials(dir),
            base_url: receivers.fcm_base_url(),
        });
        config.push.apns = Some(ApnsConfig {
            key_path: receivers.write_apns_key(dir),
            key_id: keys.apns_key_id.clone(),
            team_id: keys.apns_team_id.clone(),
            topic: keys.apns_topic.clone(),
            base_url: receivers.apns_base_url(),
        });
        config.push.webhook = Some(WebhookConfig {
            url: receivers.webhook_url(),
            secret: keys.webhook_secret.clone(),
        });
    }

    /// A user's bearer token.
    pub fn token(&self, user: Uuid) -> String {
        auth::issue(&self.jwt_secret, user, 3600).expect("a token")
    }

    /// A bearer token with `role`.
    pub fn token_with_role(&self, user: Uuid, role: Role) -> String {
        auth::issue_with_role(&self.jwt_secret, user, role, 3600).expect("a token")
    }

    /// Who holds the scheduler's lease now.
    pub async fn lease_holder(&self) -> Option<String> {
        reelay_scheduler::lease::current_holder(self.store.pool(), reelay_scheduler::LEASE_NAME)
            .await
            .expect("the lease")
    }

    /// A Redis connection (keys of this test are under `self.redis.key_prefix`).
    pub async fn redis(&self) -> reelay_shared::lock::Redis {
        reelay_shared::lock::connect(&self.redis)
            .await
            .expect("Redis is up")
    }

    pub async fn video(&self, id: VideoId) -> Video {
        self.store
            .video(id)
            .await
            .expect("database")
            .expect("the video exists")
    }

    /// The kinds of the video's events, oldest first.
    pub async fn event_kinds(&self, id: VideoId) -> Vec<String> {
        self.store
            .events(id)
            .await
            .expect("history")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    /// Waits (up to 30 s) until the video's history has an event of `kind`.
    pub async fn wait_for_event(&self, id: VideoId, kind: &str) -> bool {
        wait_until(Duration::from_secs(30), || async {
            self.store
                .events(id)
                .await
                .expect("history")
                .iter()
                .any(|e| e.kind == kind)
        })
        .await
    }

    /// Waits until the video reaches `status` or fails the test (at once
    /// if the video FAILED instead).
    pub async fn wait_for_status(
        &self,
        id: VideoId,
        status: VideoStatus,
        within: Duration,
    ) -> Video {
        let reached = wait_until(within, || async {
            let now = self.video(id).await.status;
            now == status || (now == VideoStatus::Failed && status != VideoStatus::Failed)
        })
        .await;
        let last = self.video(id).await;
        assert!(
            reached && last.status == status,
            "video {id} did not reach {status:?} within {within:?}; it is {:?} ({:?})",
            last.status,
            last.failure_reason
        );
        last
    }

    /// A video of `user`'s, UPLOADED (1 byte) and made their profile video,
    /// recorded straight in the log: for tests and loads of the read path,
    /// which does not care how it got there.
    pub async fn record_profile_video(&self, user: Uuid) -> VideoId {
        let video = VideoId::new();
        let created = VideoEvent::Created {
            owner_id: UserId(user),
            flow_id: Uuid::now_v7(),
            size_bytes: 1,
            part_size_bytes: 8 << 20,
            object_key: self.storage.original_key(video),
            title: None,
            filename: None,
            filetype: None,
            upload_metadata: None,
            expires_at: chrono::Utc::now(),
            onboarding_position: None,
            firmware_id: None,
        };
        let uploaded = VideoEvent::Uploaded {
            sha256: "0".repeat(64),
        };
        self.store
            .append(video, |_| Ok((vec![created, uploaded], ())))
            .await
            .expect("record a video");
        let set = ProfileEvent::VideoSet {
            video_id: video,
            previous: None,
        };
        self.store
            .append(ProfileId(UserId(user)), |_| Ok((vec![set], ())))
            .await
            .expect("record a profile");
        video
    }

    /// Every projection row, to compare before and after a rebuild.
    pub async fn projections_snapshot(&self) -> serde_json::Value {
        self.store
            .projections_snapshot(PROJECTIONS)
            .await
            .expect("snapshot")
    }

    /// Rebuilds every projection from the log; how many events it replayed.
    pub async fn rebuild_projections(&self) -> u64 {
        self.store
            .rebuild_projections(PROJECTIONS)
            .await
            .expect("rebuild")
    }

    pub async fn object_bytes(&self, key: &str) -> Option<bytes::Bytes> {
        match self.storage.s3.get(&Path::from(key)).await {
            Ok(r) => Some(r.bytes().await.expect("read the object")),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("reading {key}: {e}"),
        }
    }

    /// SHA-256 of the video's original as Garage returns it.
    pub async fn original_sha256(&self, id: VideoId) -> String {
        let bytes = self
            .object_bytes(&self.storage.original_key(id))
            .await
            .expect("the original exists in S3");
        hex::encode(Sha256::digest(&bytes))
    }

    /// Keys under this test's S3 prefix.
    pub async fn object_keys(&self) -> Vec<String> {
        let prefix = Path::from(self.s3.key_prefix.as_str());
        self.storage
            .s3
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list objects")
    }

    /// Messages waiting in a queue (declares nothing; the queue must exist).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let connection = reelay_shared::mq::connect(&self.amqp.url, "test")
            .await
            .expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("the queue exists");
        let _ = connection.close(200, "done".into()).await;
        declared.message_count()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let db_name = self.db_name.clone();
        let pg_server = self.pg_server.clone();
        let queues: Vec<String> = reelay_shared::queues(&self.topology)
            .into_iter()
            .map(|q| q.name)
            .collect();
        let amqp = self.amqp.url.clone();
        let redis = self.redis.clone();
        let storage = self.storage.clone();
        let prefix = self.s3.key_prefix.clone();
        let pool = self.store.pool().clone();
        let clickhouse = reelay_shared::clickhouse::ClickHouse::new(&self.clickhouse);
        // A fresh runtime on its own thread: Drop can't await, and the
        // test's runtime may be shutting down.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                // Not `pool.close()`: its connections belong to the test's
                // runtime, which is blocked in this drop; FORCE ends them.
                drop(pool);
                if let Ok(admin) = sqlx::PgPool::connect(&format!("{pg_server}/postgres")).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                }
                if let Ok(connection) = reelay_shared::mq::connect(&amqp, "test-cleanup").await {
                    if let Ok(channel) = connection.create_channel().await {
                        for queue in queues {
                            let _ = channel
                                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                                .await;
                        }
                    }
                    let _ = connection.close(200, "cleanup".into()).await;
                }
                if let Ok(mut conn) = reelay_shared::lock::connect(&redis).await {
                    let _ = reelay_shared::lock::delete_prefix(&mut conn, &redis.key_prefix).await;
                }
                storage.delete_prefix(&prefix).await;
                let _ = clickhouse
                    .execute(&format!(
                        "DROP DATABASE IF EXISTS {}",
                        clickhouse.database()
                    ))
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}

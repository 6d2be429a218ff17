//! The integration-test harness. Each [`TestEnv`] has its own database,
//! queue prefix, Redis key prefix and S3 key prefix against the real
//! PostgreSQL, RabbitMQ, Redis and Garage, and removes all of it on drop
//! (also when the test panics), so tests run in parallel.

pub mod client;
pub mod proxy;
pub mod push;
pub mod webhook;

use std::{
    future::Future,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use futures_util::TryStreamExt;
use lapin::options::QueueDeleteOptions;
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use reelay_api::{Application, config::ApiConfig};
use reelay_scheduler::{
    Scheduler,
    config::{ApnsConfig, FcmConfig, PushConfig, SchedulerConfig, WebhookConfig},
    reaper::ReapRules,
};
use reelay_shared::{
    VideoId, VideoStatus,
    config::{AmqpConfig, DatabaseConfig, LockConfig, RedisConfig, S3Config, UploadConfig},
    mq::Topology,
    storage::Storage,
    store::{Store, Video},
};
use reelay_worker::{Worker, config::WorkerConfig};
use sha2::{Digest, Sha256};
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

pub const MIB: usize = 1024 * 1024;

/// Where the shared services are; `REELAY_TEST_PG` overrides the server.
fn pg_server() -> String {
    std::env::var("REELAY_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct TestEnv {
    pub id: String,
    pub database_url: String,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub s3: S3Config,
    pub upload: UploadConfig,
    pub lock: LockConfig,
    pub jwt_secret: String,
    pub store: Store,
    pub storage: Storage,
    pub topology: Topology,
    db_name: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let db_name = format!("reelay_test_{id}");
        let admin = sqlx::PgPool::connect(&format!("{}/postgres", pg_server()))
            .await
            .expect("PostgreSQL is up");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let database_url = format!("{}/{db_name}", pg_server());
        let store = Store::connect(&DatabaseConfig {
            url: database_url.clone(),
            max_connections: 4,
        })
        .await
        .expect("connect to the test database");
        store.migrate().await.expect("migrations run");
        let amqp = AmqpConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            queue_prefix: format!("test.{id}"),
            shards: 2,
        };
        let s3 = S3Config {
            key_prefix: format!("test/{id}/"),
            ..S3Config::from_env().expect("S3 settings")
        };
        let storage = Storage::new(&s3).expect("S3 client");
        Self {
            topology: Topology::new(&amqp),
            redis: RedisConfig {
                url: "redis://127.0.0.1:6379".into(),
                key_prefix: format!("test:{id}:"),
            },
            upload: UploadConfig {
                chunk_size: 4 * MIB,
                min_part_size: 5 * MIB as u64,
                max_upload_size: 1 << 30,
                expiry: Duration::from_secs(3600),
            },
            lock: LockConfig {
                ttl: Duration::from_secs(2),
                patch_idle_timeout: Duration::from_secs(3),
            },
            jwt_secret: format!("secret-{id}"),
            id,
            database_url,
            amqp,
            s3,
            store,
            storage,
            db_name,
        }
    }

    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            addr: "127.0.0.1:0".parse().expect("valid address"),
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key: None,
            replica: format!("api-{}", self.id),
            public_url: None,
            s3: self.s3.clone(),
            link_ttl: Duration::from_secs(900),
            link_max_ttl: Duration::from_secs(86_400),
            moderation_secret: Some(format!("moderation-{}", self.id)),
            service_links_unverified: true,
            database: DatabaseConfig {
                url: self.database_url.clone(),
                max_connections: 8,
            },
            amqp: self.amqp.clone(),
            redis: self.redis.clone(),
            upload: self.upload.clone(),
            lock: self.lock.clone(),
        }
    }

    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            replica: format!("worker-{}", self.id),
            prefetch: 32,
            s3_retries: 3,
            s3_retry_base: Duration::from_millis(50),
            stage_idle: Duration::from_secs(1),
            http_addr: None,
            moderation: None,
            scheduler: None,
            fflow: None,
            database: DatabaseConfig {
                url: self.database_url.clone(),
                max_connections: 4,
            },
            redis: self.redis.clone(),
            amqp: self.amqp.clone(),
            s3: self.s3.clone(),
        }
    }

    /// A worker's settings that forward to and encode on `fflow` (bases of
    /// replicas), polling encodes often.
    pub fn worker_config_with_fflow(&self, fflow: &[String]) -> WorkerConfig {
        WorkerConfig {
            fflow: Some(reelay_worker::fflow::FflowConfig {
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

    /// An fflow replica inside the test process; its data under `dir`.
    pub async fn spawn_fflow(&self, replica: &str, dir: &std::path::Path) -> TestFflow {
        let app = reelay_fflow::Application::build(self.fflow_config(replica, dir))
            .await
            .expect("fflow builds");
        let address = app.address().to_owned();
        let base = format!("http://127.0.0.1:{}", app.port());
        let task = tokio::spawn(async move {
            let _ = app.run_until_stopped(std::future::pending()).await;
        });
        TestFflow {
            base,
            address,
            data_dir: dir.join(replica),
            task: Some(task),
        }
    }

    /// The `reelay-fflow` binary as replica `replica`, on a port it picks;
    /// returns once it listens, with its base URL.
    pub async fn spawn_fflow_process(
        &self,
        replica: &str,
        dir: &std::path::Path,
    ) -> (tokio::process::Child, TestFflow) {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(binary("reelay-fflow"))
            .envs([
                ("REELAY_FFLOW_ADDR", "127.0.0.1:0".to_owned()),
                ("REELAY_FFLOW_REPLICA", replica.to_owned()),
                (
                    "REELAY_FFLOW_DATA_DIR",
                    dir.join(replica).display().to_string(),
                ),
                ("REELAY_FFLOW_PRESET", "ultrafast".to_owned()),
                ("REELAY_S3_ENDPOINT", self.s3.endpoint.clone()),
                ("REELAY_S3_BUCKET", self.s3.bucket.clone()),
                ("REELAY_S3_REGION", self.s3.region.clone()),
                ("REELAY_S3_ACCESS_KEY_ID", self.s3.access_key_id.clone()),
                (
                    "REELAY_S3_SECRET_ACCESS_KEY",
                    self.s3.secret_access_key.clone(),
                ),
                ("REELAY_S3_PREFIX", self.s3.key_prefix.clone()),
                ("REELAY_LOG_FORMAT", "json".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("reelay-fflow starts (run `cargo build --bins` first)");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if log["message"] == "fflow listening" {
                    return log["address"].as_str().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("reelay-fflow says where it listens");
        // Keep reading so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = address
            .trim_end_matches('/')
            .trim_end_matches(replica)
            .trim_end_matches('/')
            .to_owned();
        let fflow = TestFflow {
            base,
            address,
            data_dir: dir.join(replica),
            task: None,
        };
        (child, fflow)
    }

    /// The same settings as environment variables, for the real binaries.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        let w = self.worker_config();
        vec![
            ("DATABASE_URL", w.database.url),
            ("AMQP_URL", w.amqp.url),
            ("REELAY_QUEUE_PREFIX", w.amqp.queue_prefix),
            ("REELAY_SHARDS", w.amqp.shards.to_string()),
            ("REELAY_S3_ENDPOINT", w.s3.endpoint),
            ("REELAY_S3_BUCKET", w.s3.bucket),
            ("REELAY_S3_REGION", w.s3.region),
            ("REELAY_S3_ACCESS_KEY_ID", w.s3.access_key_id),
            ("REELAY_S3_SECRET_ACCESS_KEY", w.s3.secret_access_key),
            ("REELAY_S3_PREFIX", w.s3.key_prefix),
            ("REELAY_PREFETCH", w.prefetch.to_string()),
            ("REELAY_S3_RETRIES", w.s3_retries.to_string()),
            (
                "REELAY_S3_RETRY_BASE_MS",
                w.s3_retry_base.as_millis().to_string(),
            ),
            ("REELAY_STAGE_IDLE_MS", w.stage_idle.as_millis().to_string()),
            ("REDIS_URL", w.redis.url),
            ("REELAY_REDIS_PREFIX", w.redis.key_prefix),
            ("REELAY_REPLICA", w.replica),
            ("REELAY_LOG_FORMAT", "pretty".into()),
            ("RUST_LOG", "warn,reelay_worker=info".into()),
        ]
    }

    /// Scheduler settings for tests: short intervals and lease; the reaper's
    /// timeouts long (a test shortens the one it is about); no push
    /// provider (see [`TestEnv::point_push_at`]).
    pub fn scheduler_config(&self) -> SchedulerConfig {
        let hour = Duration::from_secs(3600);
        SchedulerConfig {
            replica: format!("scheduler-{}", self.id),
            interval: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(2),
            rules: ReapRules {
                pending_timeout: hour,
                stall_timeout: hour,
                delete_grace: hour,
            },
            s3_retries: 3,
            s3_retry_base: Duration::from_millis(50),
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
            database: DatabaseConfig {
                url: self.database_url.clone(),
                max_connections: 4,
            },
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

    /// A scheduler inside the test process.
    pub async fn spawn_scheduler(&self, config: SchedulerConfig) -> TestScheduler {
        let scheduler = Scheduler::build(config)
            .await
            .expect("the scheduler builds");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(scheduler.run_until_stopped(stopped));
        TestScheduler { stop, task }
    }

    /// A scheduler's settings as the environment the binaries read.
    pub fn scheduler_env(&self, config: &SchedulerConfig) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        let secs = |d: Duration| d.as_secs().to_string();
        let push = &config.push;
        let mut env = vec![
            ("DATABASE_URL", config.database.url.clone()),
            ("AMQP_URL", config.amqp.url.clone()),
            ("REELAY_QUEUE_PREFIX", config.amqp.queue_prefix.clone()),
            ("REELAY_SHARDS", config.amqp.shards.to_string()),
            ("REDIS_URL", config.redis.url.clone()),
            ("REELAY_REDIS_PREFIX", config.redis.key_prefix.clone()),
            ("REELAY_S3_ENDPOINT", config.s3.endpoint.clone()),
            ("REELAY_S3_BUCKET", config.s3.bucket.clone()),
            ("REELAY_S3_REGION", config.s3.region.clone()),
            ("REELAY_S3_ACCESS_KEY_ID", config.s3.access_key_id.clone()),
            (
                "REELAY_S3_SECRET_ACCESS_KEY",
                config.s3.secret_access_key.clone(),
            ),
            ("REELAY_S3_PREFIX", config.s3.key_prefix.clone()),
            ("REELAY_S3_RETRIES", config.s3_retries.to_string()),
            ("REELAY_S3_RETRY_BASE_MS", ms(config.s3_retry_base)),
            ("REELAY_SCHEDULER_INTERVAL_MS", ms(config.interval)),
            ("REELAY_SCHEDULER_LEASE_MS", ms(config.lease_ttl)),
            (
                "REELAY_PENDING_TIMEOUT_SECS",
                secs(config.rules.pending_timeout),
            ),
            (
                "REELAY_STALL_TIMEOUT_SECS",
                secs(config.rules.stall_timeout),
            ),
            ("REELAY_DELETE_GRACE_SECS", secs(config.rules.delete_grace)),
            ("REELAY_PUSH_POLL_MS", ms(push.poll)),
            ("REELAY_PUSH_MAX_ATTEMPTS", push.max_attempts.to_string()),
            ("REELAY_PUSH_RETRY_BASE_MS", ms(push.retry_base)),
            ("REELAY_PUSH_RETRY_CAP_SECS", secs(push.retry_cap)),
            ("REELAY_PUSH_TIMEOUT_MS", ms(push.timeout)),
            ("REELAY_PUSH_CONCURRENCY", push.concurrency.to_string()),
            ("REELAY_LOG_FORMAT", "pretty".into()),
            ("RUST_LOG", "warn,reelay_scheduler=info".into()),
        ];
        if let Some(fcm) = &push.fcm {
            env.push((
                "REELAY_FCM_CREDENTIALS",
                fcm.credentials.display().to_string(),
            ));
            env.push(("REELAY_FCM_BASE_URL", fcm.base_url.clone()));
        }
        if let Some(apns) = &push.apns {
            env.push(("REELAY_APNS_KEY_PATH", apns.key_path.display().to_string()));
            env.push(("REELAY_APNS_KEY_ID", apns.key_id.clone()));
            env.push(("REELAY_APNS_TEAM_ID", apns.team_id.clone()));
            env.push(("REELAY_APNS_TOPIC", apns.topic.clone()));
            env.push(("REELAY_APNS_BASE_URL", apns.base_url.clone()));
        }
        if let Some(webhook) = &push.webhook {
            env.push(("REELAY_PUSH_WEBHOOK_URL", webhook.url.clone()));
            env.push(("REELAY_PUSH_WEBHOOK_SECRET", webhook.secret.clone()));
        }
        env
    }

    /// The `reelay-scheduler` binary as replica `replica`.
    pub fn spawn_scheduler_process(
        &self,
        replica: &str,
        config: &SchedulerConfig,
    ) -> tokio::process::Child {
        spawn_process(
            "reelay-scheduler",
            self.scheduler_env(config)
                .into_iter()
                .chain([("REELAY_REPLICA", replica.to_owned())]),
        )
    }

    /// A `reelay-worker` process that also runs the scheduler
    /// (`REELAY_SCHEDULER=true`), as replica `replica`.
    pub fn spawn_scheduling_worker_process(
        &self,
        replica: &str,
        config: &SchedulerConfig,
    ) -> tokio::process::Child {
        spawn_process(
            "reelay-worker",
            self.worker_env()
                .into_iter()
                .chain(self.scheduler_env(config))
                .chain([
                    ("REELAY_SCHEDULER", "true".to_owned()),
                    ("REELAY_REPLICA", replica.to_owned()),
                ]),
        )
    }

    /// Who holds the scheduler's lease now.
    pub async fn lease_holder(&self) -> Option<String> {
        reelay_scheduler::lease::current_holder(self.store.pool(), reelay_scheduler::LEASE_NAME)
            .await
            .expect("the lease")
    }

    /// A Redis connection (keys of this test are under `self.redis.key_prefix`).
    pub async fn redis(&self) -> redis::aio::ConnectionManager {
        reelay_shared::lock::connect(&self.redis)
            .await
            .expect("Redis is up")
    }

    pub async fn spawn_api(&self) -> TestApi {
        self.spawn_api_with(self.api_config()).await
    }

    pub async fn spawn_api_with(&self, config: ApiConfig) -> TestApi {
        let app = Application::build(config).await.expect("the api builds");
        let port = app.port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestApi {
            address: format!("http://127.0.0.1:{port}"),
            stop: Some(stop),
            task,
        }
    }

    /// A worker inside the test process.
    pub async fn spawn_worker(&self) -> TestWorker {
        self.spawn_worker_with(self.worker_config()).await
    }

    pub async fn spawn_worker_with(&self, config: WorkerConfig) -> TestWorker {
        let worker = Worker::build(config).await.expect("the worker builds");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = worker
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestWorker {
            stop: Some(stop),
            task,
        }
    }

    /// A worker as its own process, the real `reelay-worker` binary.
    pub fn spawn_worker_process(&self) -> tokio::process::Child {
        spawn_process("reelay-worker", self.worker_env())
    }

    pub fn token(&self, user: Uuid) -> String {
        reelay_api::auth::issue(&self.jwt_secret, user, 3600).expect("a token")
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

    /// Waits until the video reaches `status` or fails the test.
    pub async fn wait_for_status(
        &self,
        id: VideoId,
        status: VideoStatus,
        within: Duration,
    ) -> Video {
        let reached = wait_until(within, || async { self.video(id).await.status == status }).await;
        let last = self.video(id).await;
        assert!(
            reached,
            "video {id} did not reach {status:?} within {within:?}; it is {:?} ({:?})",
            last.status, last.failure_reason
        );
        last
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
        let queues = self.topology.all_queues();
        let amqp = self.amqp.url.clone();
        let redis = self.redis.clone();
        let storage = self.storage.clone();
        let prefix = self.s3.key_prefix.clone();
        let pool = self.store.pool().clone();
        // A fresh runtime on its own thread: Drop can't await, and the
        // test's runtime may be shutting down.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                pool.close().await;
                if let Ok(admin) = sqlx::PgPool::connect(&format!("{}/postgres", pg_server())).await
                {
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
            });
        });
        let _ = cleanup.join();
    }
}

pub struct TestApi {
    pub address: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestApi {
    pub fn files_url(&self) -> String {
        format!("{}/files/", self.address)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An fflow replica (in the test process, or a process the test holds).
pub struct TestFflow {
    /// Where sessions start: `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its own address, `<base>/<replica>/`.
    pub address: String,
    pub data_dir: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl TestFflow {
    /// Files the replica holds (glued sources, encode outputs).
    pub fn local_files(&self) -> usize {
        fn count(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        count(&self.data_dir)
    }
}

impl Drop for TestFflow {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A scheduler running in the test process; dropped, it stops at once
/// (without giving up its lease, as if it had died).
pub struct TestScheduler {
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TestScheduler {
    /// Stops it as SIGTERM would: it gives up its lease.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestWorker {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a binary of this workspace with `env`; killed when dropped.
fn spawn_process(
    name: &str,
    env: impl IntoIterator<Item = (&'static str, String)>,
) -> tokio::process::Child {
    tokio::process::Command::new(binary(name))
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts (run `cargo build --bins` first): {e}"))
}

/// A binary of this workspace, next to the test executable's `deps/`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    dir.join(name)
}

/// Polls `check` every 50 ms until it is true or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `len` random bytes (fresh every run: Garage deduplicates blocks).
pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of what a (presigned) URL serves; panics unless it answers 200.
pub async fn download_sha256(url: &str) -> String {
    let response = reqwest::get(url).await.expect("GET the link");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "the link downloads"
    );
    sha256_hex(&response.bytes().await.expect("the body"))
}

/// The tests' Python tus client script.
pub fn tus_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tus_upload.py")
}

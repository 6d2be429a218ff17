//! What both benchmarks share: starting release binaries with their own
//! database, queues and key prefixes, and removing it all afterwards.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use reelay_shared::storage::Storage;
use tokio::process::{Child, Command};

pub fn spawn(path: &str, env: &[(&str, String)], name: &str) -> anyhow::Result<Child> {
    Command::new(path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("REELAY_REPLICA", name)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {path} (build with `cargo build --release --bins`)"))
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the api was not ready within 30 s")
}

/// A minimal tus client (so the client takes little of the 2 cores): POST,
/// then sequential PATCHes of `patch` bytes. Returns the upload id once the
/// last PATCH was answered (every byte acknowledged).
pub async fn tus_upload(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    data: bytes::Bytes,
    patch: usize,
) -> anyhow::Result<String> {
    let created = http
        .post(format!("{base}/files/"))
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", data.len())
        .send()
        .await?;
    if created.status() != 201 {
        bail!("creation failed: {}", created.status());
    }
    let location = created.headers()["location"].to_str()?.to_owned();
    let id = location.rsplit('/').next().unwrap_or_default().to_owned();
    let mut offset = 0usize;
    while offset < data.len() {
        let end = (offset + patch).min(data.len());
        let r = http
            .patch(format!("{base}{location}"))
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset)
            .body(data.slice(offset..end))
            .send()
            .await?;
        if r.status() != 204 {
            bail!(
                "PATCH at {offset} failed: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        offset = end;
    }
    Ok(id)
}

/// Polls the video every 20 ms until it has `status`; fails if it FAILED.
pub async fn wait_for_status(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    status: &str,
) -> anyhow::Result<()> {
    loop {
        let video: serde_json::Value = http
            .get(format!("{base}/v1/videos/{id}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        match video["status"].as_str() {
            Some(s) if s == status => return Ok(()),
            Some("FAILED") => bail!("the video failed: {}", video["failure_reason"]),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A token from `reelay-api token` for `user` with `role`.
pub async fn token(
    bin_dir: &str,
    secret: &str,
    role: &str,
    user: uuid::Uuid,
) -> anyhow::Result<String> {
    let out = Command::new(format!("{bin_dir}/reelay-api"))
        .args(["token", "--user", &user.to_string(), "--role", role])
        .env("REELAY_JWT_SECRET", secret)
        .output()
        .await?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// One run's own database, queue prefix, Redis and S3 prefixes, JWT
/// secret and api port; [`BenchEnv::cleanup`] removes them.
pub struct BenchEnv {
    pub tag: String,
    pub db: String,
    pub database_url: String,
    pub storage: Storage,
    pub s3_prefix: String,
    pub secret: String,
    pub port: u16,
    admin: sqlx::PgPool,
}

impl BenchEnv {
    pub async fn create(postgres: &str) -> anyhow::Result<Self> {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let db = format!("reelay_bench_{tag}");
        let admin = sqlx::PgPool::connect(&format!("{postgres}/postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await?;
        let s3 = reelay_shared::config::S3Config {
            key_prefix: format!("bench/{tag}/"),
            ..reelay_shared::config::S3Config::from_env()?
        };
        Ok(Self {
            database_url: format!("{postgres}/{db}"),
            storage: Storage::new(&s3)?,
            s3_prefix: s3.key_prefix,
            secret: format!("bench-{tag}"),
            port: free_port()?,
            tag,
            db,
            admin,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment of the api and workers of this run.
    pub fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("REELAY_QUEUE_PREFIX", format!("bench.{}", self.tag)),
            ("REELAY_REDIS_PREFIX", format!("bench:{}:", self.tag)),
            ("REELAY_S3_PREFIX", self.s3_prefix.clone()),
            ("REELAY_JWT_SECRET", self.secret.clone()),
            ("REELAY_HTTP_ADDR", format!("127.0.0.1:{}", self.port)),
            ("RUST_LOG", "warn".into()),
        ]
    }

    /// Drops the database, the objects and the queues of this run.
    pub async fn cleanup(&self) {
        let (admin, db, storage, prefix, tag) = (
            &self.admin,
            &self.db,
            &self.storage,
            &self.s3_prefix,
            &self.tag,
        );

        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .execute(admin)
        .await;
        storage.delete_prefix(prefix).await;
        // The same broker and queue names the api and workers of this run used.
        let amqp = reelay_shared::config::AmqpConfig {
            queue_prefix: format!("bench.{tag}"),
            ..reelay_shared::config::AmqpConfig::from_env().expect("the broker settings parse")
        };
        if let Ok(conn) = reelay_shared::mq::connect(&amqp.url, "bench-cleanup").await
            && let Ok(channel) = conn.create_channel().await
        {
            for queue in reelay_shared::mq::Topology::new(&amqp).all_queues() {
                let _ = channel
                    .queue_delete(queue.as_str().into(), Default::default())
                    .await;
            }
        }
    }
}

//! A chaos run: real tus clients (tuspy, and tus-js-client under Node.js)
//! upload many files at once to two api replicas while a fault driver kills
//! processes (an api replica, a worker, the scheduler's leader) and takes
//! the services away (PostgreSQL, RabbitMQ, Redis, Garage: each reached
//! through a harness [`Proxy`] that is cut and restored, so the machine's
//! services and the tests beside the run are untouched). Once the faults
//! stop and the system settles, it checks every byte: each upload is
//! UPLOADED with the exact SHA-256 of its file, or FAILED with its client
//! told; nothing is left half-way; no multipart upload is left open in
//! Garage; nothing is dead-lettered but for a failed video; every push
//! notification due reached its device (FCM, APNs and webhook receivers);
//! and rebuilding the projections from the log gives the live ones.
//!
//! `reelay-chaos` (`make chaos`) runs it at size; `tests/integration/chaos.rs`
//! runs a short one in `make test`.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use rand::{Rng, RngCore, SeedableRng, rngs::StdRng, seq::SliceRandom};
use reelay_api::{auth::Role, config::ApiConfig};
use reelay_fflow::config::FflowConfig;
use reelay_scheduler::config::SchedulerConfig;
use reelay_shared::{
    VideoId, VideoStatus, config::Vars, fleet::jobs::FleetJob, video::jobs::JobHeader,
};
use reelay_worker::config::{FleetBackend as BackendConfig, WorkerConfig};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::process::Child;
use uuid::Uuid;

use crate::{
    TestEnv,
    client::{Tus, call_json},
    engagement::Session,
    fleet_backend::FleetBackend,
    media::Sample,
    proxy::Proxy,
    push::PushReceivers,
};

/// What a run does.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub uploads: usize,
    pub faults: usize,
    pub seed: u64,
    /// Devices in the rollout that runs through the faults.
    pub devices: usize,
    /// Of the uploads, how many are real videos (the rest are random
    /// bytes, which the encoders refuse), and how long each is.
    pub videos: usize,
    pub video_secs: u32,
    /// The largest file (the smallest is 1 byte).
    pub max_size: u64,
    /// The longest pause a client makes between chunks (a phone's pace).
    pub max_pause: Duration,
    /// Chunk sizes are powers of two between these (log2 of bytes).
    pub chunk_log2: (u32, u32),
    /// The longest a service stays away or a killed process stays dead.
    pub max_down: Duration,
    /// The time over which the faults are spread.
    pub fault_window: Duration,
    /// How long clients keep retrying, and how long the system then has to
    /// settle.
    pub client_deadline: Duration,
    pub settle: Duration,
    /// Stop and start the machine's own services (`make chaos`) instead of
    /// cutting their proxies (`make test`, where other tests share them).
    pub real_services: bool,
}

impl ChaosConfig {
    /// The short run of `make test`: a few minutes on two cores.
    pub fn short(seed: u64) -> Self {
        Self {
            uploads: 20,
            // Each kind once.
            faults: FAULTS.len(),
            seed,
            devices: 60,
            videos: 3,
            video_secs: 3,
            max_size: 16 << 20,
            max_pause: Duration::from_millis(600),
            chunk_log2: (15, 20),
            max_down: Duration::from_secs(4),
            fault_window: Duration::from_secs(30),
            client_deadline: Duration::from_secs(180),
            settle: Duration::from_secs(90),
            real_services: false,
        }
    }
}

/// The kinds of fault the driver injects.
pub const FAULTS: [&str; 9] = [
    "kill api",
    "kill worker",
    "kill fflow",
    "kill scheduler leader",
    "postgres down",
    "rabbitmq down",
    "redis down",
    "garage down",
    "clickhouse down",
];

/// What a run found.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub uploads: usize,
    pub bytes: u64,
    pub faults: BTreeMap<&'static str, usize>,
    /// Faults that began while some client was still uploading.
    pub faults_during_uploads: usize,
    /// Uploads whose client was told every byte was taken.
    pub acknowledged: usize,
    /// Whole uploads that ended READY, and random files the encoders
    /// refused (FAILED after they were whole).
    pub ready: usize,
    pub refused_by_encoder: usize,
    /// Real videos that did not end READY (or files left unencoded).
    pub videos_not_ready: usize,
    /// Uploads that ended FAILED, their client told so.
    pub failed_told: usize,
    /// Uploads whose client gave up without being told the upload failed
    /// (a 404 or 410 from the server).
    pub gave_up: usize,
    /// Bytes acknowledged to a client that are not in the stored object, or
    /// that a later HEAD asked it for again.
    pub lost_bytes: u64,
    /// Stored objects whose SHA-256 is not their file's.
    pub corrupted: usize,
    /// Videos not UPLOADED, READY, FAILED or DELETED once settled.
    pub stuck: usize,
    /// Multipart uploads left open in Garage.
    pub orphaned: usize,
    /// Devices in the rollout, those that ended succeeded, and requests
    /// to the fleet backend beyond one per device.
    pub rollout_devices: usize,
    pub rollout_succeeded: usize,
    pub duplicate_update_requests: usize,
    /// Completed, every device succeeded, each asked once.
    pub rollout_exact: bool,
    /// Player events the api accepted, those not in ClickHouse once
    /// settled, and those in it more than once.
    pub player_events: usize,
    /// Batches the player gave up on (never accepted by its deadline).
    pub player_batches_unaccepted: usize,
    pub player_events_missing: usize,
    pub player_events_doubled: usize,
    /// Push notifications written (one per device per notified state).
    pub pushes_due: usize,
    /// Notifications due that no receiver took, or that were never
    /// written, or that a receiver found malformed.
    pub pushes_missing: usize,
    /// Notifications a receiver took more than once.
    pub duplicate_notifications: usize,
    /// Messages in the dead-letter queues.
    pub dead_letters: u32,
    /// Dead letters not explained by their video having FAILED.
    pub unexplained_dead_letters: u32,
    pub rebuild_matches: bool,
    pub wall: Duration,
    /// What went wrong, upload by upload, for the reader.
    pub findings: Vec<String>,
}

impl ChaosReport {
    pub fn fault_count(&self) -> usize {
        self.faults.values().sum()
    }

    /// Lost, corrupted, stuck and orphaned are all 0, dead letters are
    /// explained and the projections rebuild to what they are.
    pub fn clean(&self) -> bool {
        self.lost_bytes == 0
            && self.gave_up == 0
            && self.corrupted == 0
            && self.stuck == 0
            && self.orphaned == 0
            && self.unexplained_dead_letters == 0
            && self.pushes_missing == 0
            && self.rollout_exact
            && self.videos_not_ready == 0
            && self.player_events > 0
            && self.player_batches_unaccepted == 0
            && self.player_events_missing == 0
            && self.player_events_doubled == 0
            && self.rebuild_matches
    }

    /// The table, then the one summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut row =
            |name: &str, value: String| out.push_str(&format!("{name:<32} {value:>14}\n"));
        row("seed", self.seed.to_string());
        row("uploads", self.uploads.to_string());
        row("bytes", self.bytes.to_string());
        for (kind, n) in &self.faults {
            row(&format!("faults: {kind}"), n.to_string());
        }
        row(
            "faults while uploading",
            self.faults_during_uploads.to_string(),
        );
        row("acknowledged uploads", self.acknowledged.to_string());
        row("encoded, READY", self.ready.to_string());
        row(
            "refused by the encoder",
            self.refused_by_encoder.to_string(),
        );
        row("videos not READY", self.videos_not_ready.to_string());
        row("failed, client told", self.failed_told.to_string());
        row("clients that gave up", self.gave_up.to_string());
        row("lost bytes", self.lost_bytes.to_string());
        row("corrupted objects", self.corrupted.to_string());
        row("stuck uploads", self.stuck.to_string());
        row("orphaned multipart uploads", self.orphaned.to_string());
        row("rollout devices", self.rollout_devices.to_string());
        row("rollout succeeded", self.rollout_succeeded.to_string());
        row(
            "duplicate update requests",
            self.duplicate_update_requests.to_string(),
        );
        row("player events accepted", self.player_events.to_string());
        row(
            "player events missing",
            self.player_events_missing.to_string(),
        );
        row(
            "player events doubled",
            self.player_events_doubled.to_string(),
        );
        row("push notifications due", self.pushes_due.to_string());
        row(
            "push notifications missing",
            self.pushes_missing.to_string(),
        );
        row(
            "duplicate notifications",
            self.duplicate_notifications.to_string(),
        );
        row("dead letters", self.dead_letters.to_string());
        row(
            "unexplained dead letters",
            self.unexplained_dead_letters.to_string(),
        );
        row(
            "projections rebuild exactly",
            self.rebuild_matches.to_string(),
        );
        row("wall time s", format!("{:.1}", self.wall.as_secs_f64()));
        for finding in &self.findings {
            out.push_str(&format!("  ! {finding}\n"));
        }
        out.push_str(&format!(
            "chaos: {} uploads, {} faults, lost {}, corrupted {}, stuck {}, orphaned {}\n",
            self.uploads,
            self.fault_count(),
            self.lost_bytes,
            self.corrupted,
            self.stuck,
            self.orphaned
        ));
        out
    }
}

/// One file to upload, and what its client said in the end.
struct Upload {
    path: PathBuf,
    size: u64,
    sha256: String,
    /// A real video, which must end READY.
    video: bool,
}

#[derive(Deserialize)]
struct ClientResult {
    path: PathBuf,
    id: Option<String>,
    ok: bool,
    error: Option<String>,
    /// Acknowledged bytes the server later asked for again.
    regressed: u64,
}

/// A service reached through a proxy, `addr` rewritten in every URL.
fn through(url: &str, addr: &str, proxy: &Proxy) -> String {
    assert!(url.contains(addr), "{url} names {addr}");
    url.replacen(addr, &format!("127.0.0.1:{}", proxy.port), 1)
}

/// `host:port` of a URL such as `amqp://guest:guest@127.0.0.1:5672/%2f`.
fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

/// The four services, each behind a proxy the driver can cut, or (real)
/// reached directly and stopped and started for real.
struct Services {
    proxies: Vec<(&'static str, Proxy)>,
    real: bool,
}

/// How a service of this machine stops and starts (as
/// `scripts/services.sh` starts it), and the port that says it is back.
fn real_service(name: &str) -> (String, String, u16) {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    match name {
        "postgres down" => (
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -n1) main stop -m fast".into(),
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -n1) main start".into(),
            5432,
        ),
        "rabbitmq down" => ("rabbitmqctl -q stop_app".into(), "rabbitmqctl -q start_app".into(), 5672),
        "clickhouse down" => (
            // The bracket keeps the pattern from matching this very shell.
            "pkill -KILL -f 'clickhouse-serve[r]' || true".into(),
            format!("setsid {} >/dev/null", scripts.join("clickhouse.sh").display()),
            8123,
        ),
        "redis down" => (
            "redis-cli shutdown nosave".into(),
            "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no \
             --dir /var/lib/redis --logfile /var/log/redis/reelay.log"
                .into(),
            6379,
        ),
        _ => (
            // By its name: a pattern over command lines would match this
            // very shell's.
            "pkill -KILL -x garage || true".into(),
            // Its own session: a Ctrl-C of the run leaves it running.
            format!("setsid {} >/dev/null", scripts.join("garage.sh").display()),
            3900,
        ),
    }
}

async fn sh(command: &str) {
    let status = tokio::process::Command::new("bash")
        .args(["-c", command])
        .status()
        .await
        .expect("bash runs");
    assert!(status.success(), "{command}: {status}");
}

impl Services {
    /// Takes `name` away for `down`, then brings it back.
    async fn outage(&mut self, name: &str, down: Duration) {
        if self.real {
            let (stop, start, port) = real_service(name);
            sh(&stop).await;
            tokio::time::sleep(down).await;
            sh(&start).await;
            let back = crate::wait_until(Duration::from_secs(60), || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await;
            assert!(back, "{name}: the service came back");
            return;
        }
        let proxy = self.proxy(name);
        proxy.cut().await;
        tokio::time::sleep(down).await;
        proxy.restore().await;
    }

    async fn start(env: &TestEnv, real: bool) -> (Self, [(String, String); 5]) {
        let pairs = [
            ("postgres down", env.database_url.clone()),
            ("rabbitmq down", env.amqp.url.clone()),
            ("redis down", env.redis.url.clone()),
            ("garage down", env.s3.endpoint.clone()),
            ("clickhouse down", env.clickhouse.url.clone()),
        ];
        let mut proxies = Vec::new();
        let mut urls: Vec<(String, String)> = Vec::new();
        for (name, url) in pairs {
            if real {
                urls.push((url.clone(), url));
                continue;
            }
            let addr = address_of(&url);
            let proxy = Proxy::start(Box::leak(addr.clone().into_boxed_str())).await;
            urls.push((url.clone(), through(&url, &addr, &proxy)));
            proxies.push((name, proxy));
        }
        let urls: [(String, String); 5] = urls.try_into().expect("five services");
        (Self { proxies, real }, urls)
    }

    fn proxy(&mut self, name: &str) -> &mut Proxy {
        &mut self
            .proxies
            .iter_mut()
            .find(|(n, _)| *n == name)
            .expect("a service")
            .1
    }
}

/// The processes of the system under test.
struct System {
    api_configs: Vec<ApiConfig>,
    apis: Vec<Child>,
    fflow_configs: Vec<FflowConfig>,
    fflows: Vec<Child>,
    worker_vars: Vec<Vars>,
    workers: Vec<Child>,
}

const WORKERS: [&str; 2] = ["chaos-w1", "chaos-w2"];

impl System {
    async fn start(
        env: &TestEnv,
        urls: &[(String, String); 5],
        push: &PushReceivers,
        dir: &Path,
    ) -> (Self, Vec<String>, FleetBackend) {
        let [database, amqp, redis, s3, clickhouse] = urls.clone().map(|(_, proxied)| proxied);
        let mut api = env.api_config();
        api.database.url = database.clone();
        api.amqp.url = amqp.clone();
        api.redis.url = redis.clone();
        api.s3.endpoint = s3.clone();
        api.clickhouse.url = clickhouse.clone();
        let mut scheduler: SchedulerConfig = env.scheduler_config();
        scheduler.database.url = database.clone();
        scheduler.amqp.url = amqp.clone();
        scheduler.redis.url = redis.clone();
        scheduler.s3.endpoint = s3.clone();
        // S3 calls retry as deployed (REELAY_S3_RETRIES, …), not with the
        // tests' short retries: an outage of a few seconds is theirs to ride.
        let s3_retry =
            reelay_shared::config::S3RetryConfig::read(&reelay_shared::config::Env::process())
                .expect("S3 retry settings");
        scheduler.s3_retry = s3_retry;
        // Stalled uploads are looked at within the settle window, and so are
        // uploads created twice (a creation whose answer a fault took: the
        // client creates another) that never get a byte.
        scheduler.rules.stall_timeout = Duration::from_secs(20);
        scheduler.rules.pending_timeout = Duration::from_secs(30);
        env.point_push_at(&mut scheduler, push, dir);
        let mut system = Self {
            api_configs: Vec::new(),
            apis: Vec::new(),
            fflow_configs: Vec::new(),
            fflows: Vec::new(),
            worker_vars: Vec::new(),
            workers: Vec::new(),
        };
        // Two encoders; a restarted one listens where the workers know it.
        let mut encoders = Vec::new();
        for replica in ["chaos-f1", "chaos-f2"] {
            let mut config = env.fflow_config(replica, dir);
            config.s3.endpoint = s3.clone();
            let (child, fflow) = env.spawn_fflow_process_with(&config).await;
            let port: u16 = fflow.base.rsplit(':').next().unwrap().parse().unwrap();
            config.addr = format!("127.0.0.1:{port}").parse().expect("address");
            system.fflow_configs.push(config);
            system.fflows.push(child);
            encoders.push(fflow.base.clone());
        }
        let mut addresses = Vec::new();
        for i in 0..2 {
            let (child, address) = env.spawn_api_process(&api).await;
            // A restarted replica listens where its clients know it.
            let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
            let mut config = api.clone();
            config.addr = format!("127.0.0.1:{port}").parse().expect("address");
            config.replica = format!("chaos-api{i}");
            system.api_configs.push(config);
            system.apis.push(child);
            addresses.push(address);
        }
        // Devices install in a second and report through the first replica.
        let service = env.token_with_role(Uuid::new_v4(), Role::Service);
        let backend = FleetBackend::start(&addresses[0], service, Duration::from_secs(1)).await;
        system.worker_vars = WORKERS
            .iter()
            .map(|replica| {
                let mut worker: WorkerConfig = env.worker_config_with_fflow(&encoders);
                worker.etl = env.worker_config_with_etl().etl;
                worker.etl.clickhouse.url = clickhouse.clone();
                worker.fleet.backend = Some(BackendConfig {
                    url: backend.url.clone(),
                    secret: backend.secret.clone(),
                });
                worker.replica = (*replica).to_owned();
                worker.s3_retry = s3_retry;
                worker.database.url = database.clone();
                worker.amqp.url = amqp.clone();
                worker.redis.url = redis.clone();
                worker.s3.endpoint = s3.clone();
                worker.scheduler = Some(SchedulerConfig {
                    replica: (*replica).to_owned(),
                    ..scheduler.clone()
                });
                let mut vars = worker.to_env();
                vars.push(("RUST_LOG", "error".into()));
                vars
            })
            .collect();
        for vars in &system.worker_vars {
            system
                .workers
                .push(env.spawn_process("reelay-worker", vars.clone()));
        }
        (system, addresses, backend)
    }

    async fn restart_api(&mut self, env: &TestEnv, i: usize) {
        let (child, _) = env.spawn_api_process(&self.api_configs[i]).await;
        self.apis[i] = child;
    }

    async fn restart_fflow(&mut self, env: &TestEnv, i: usize) {
        let (child, _) = env.spawn_fflow_process_with(&self.fflow_configs[i]).await;
        self.fflows[i] = child;
    }

    fn restart_worker(&mut self, env: &TestEnv, i: usize) {
        self.workers[i] = env.spawn_process("reelay-worker", self.worker_vars[i].clone());
    }
}

/// SIGKILL, and wait until it is dead.
async fn kill(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Random files under `dir`, 1 byte to `max_size`, fresh bytes each.
fn make_files(rng: &mut StdRng, dir: &Path, config: &ChaosConfig) -> Vec<Upload> {
    let samples = [Sample::FastStart, Sample::MoovAtEnd, Sample::WebM];
    let (n, max_size) = (config.uploads, config.max_size);
    let videos = (0..config.videos.min(n)).map(|i| {
        let seconds = rng.random_range(1..=config.video_secs.max(1));
        let bytes = samples[i % samples.len()].make(dir, seconds);
        let path = dir.join(format!("video-{i}.bin"));
        std::fs::write(&path, &bytes).expect("write a video");
        Upload {
            path,
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            video: true,
        }
    });
    let videos: Vec<Upload> = videos.collect();
    let random = (videos.len()..n)
        .map(|i| {
            // Small and large alike: sizes spread over orders of magnitude,
            // with a few on a part boundary.
            let size = match i % 7 {
                0 => 1,
                1 => (5 << 20).min(max_size),
                _ => {
                    let exp = rng.random_range(0.0..(max_size as f64).log2());
                    (2f64.powf(exp) as u64).clamp(1, max_size)
                }
            };
            let mut bytes = vec![0u8; size as usize];
            rng.fill_bytes(&mut bytes);
            let path = dir.join(format!("file-{i}.bin"));
            std::fs::write(&path, &bytes).expect("write a file");
            Upload {
                path,
                size,
                sha256: hex::encode(Sha256::digest(&bytes)),
                video: false,
            }
        })
        .collect::<Vec<_>>();
    videos.into_iter().chain(random).collect()
}

/// Starts one client process over `items`, pinned to `api`.
fn start_client(
    kind: &str,
    api: &str,
    token: &str,
    items: Vec<serde_json::Value>,
    deadline: Duration,
    dir: &Path,
    n: usize,
) -> Child {
    let spec = serde_json::json!({
        "endpoint": format!("{api}/files/"),
        "token": token,
        "deadline_secs": deadline.as_secs(),
        "uploads": items,
    });
    let spec_path = dir.join(format!("spec-{kind}-{n}.json"));
    std::fs::write(&spec_path, spec.to_string()).expect("write the spec");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("chaos");
    let mut command = match kind {
        "tuspy" => {
            let mut c = tokio::process::Command::new("python3");
            c.arg(scripts.join("tuspy_uploads.py"));
            c
        }
        _ => {
            let mut c = tokio::process::Command::new("node");
            c.arg(scripts.join("tusjs_uploads.mjs"));
            c
        }
    };
    command
        .arg(&spec_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("the {kind} client starts: {e}"))
}

/// Multipart uploads still open under `prefix` in the bucket (S3
/// ListMultipartUploads, signed by curl).
async fn open_multipart_uploads(env: &TestEnv) -> usize {
    let s3 = &env.s3;
    // SigV4 wants the query sorted and percent-encoded, and Garage the
    // payload's hash (of nothing).
    let prefix: String = s3
        .key_prefix
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let url = format!(
        "{}/{}?prefix={prefix}&uploads=",
        s3.endpoint.trim_end_matches('/'),
        s3.bucket,
    );
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--fail"])
        .arg("-H")
        .arg(format!(
            "x-amz-content-sha256: {}",
            hex::encode(Sha256::digest(b""))
        ))
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", s3.region))
        .arg("--user")
        .arg(format!("{}:{}", s3.access_key_id, s3.secret_access_key))
        .arg(&url)
        .output()
        .await
        .expect("curl runs");
    assert!(
        output.status.success(),
        "ListMultipartUploads: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .matches("<Upload>")
        .count()
}

/// What the player sent: event ids the api accepted (202, not dropped),
/// and ids of batches never accepted.
#[derive(Default)]
struct Played {
    accepted: Vec<Uuid>,
    unaccepted: usize,
}

/// A player on the uploader's videos over the fault window: a session's
/// events every 300 ms, to either api replica; a batch that is not
/// accepted is sent again, as a player does, until its deadline.
async fn play(
    apis: Vec<String>,
    token: String,
    videos: Vec<VideoId>,
    window: Duration,
    deadline: Duration,
) -> Played {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let mut played = Played::default();
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < window {
        n += 1;
        let session = Session::new(videos[n % videos.len()], chrono::Utc::now())
            .at(0, "open", 0)
            .at(300, "play", 0)
            .at(5_300, "position", 5_000)
            .at(10_300, "position", 10_000)
            .at(12_000, "pause", 11_700);
        let ids: Vec<Uuid> = session
            .events
            .iter()
            .map(|e| {
                e["event_id"]
                    .as_str()
                    .and_then(|i| i.parse().ok())
                    .expect("an id")
            })
            .collect();
        let mut tries = 0usize;
        let accepted = loop {
            tries += 1;
            let sent = http
                .post(format!("{}/v1/events", apis[(n + tries) % apis.len()]))
                .bearer_auth(&token)
                .json(&session.batch())
                .send()
                .await;
            if let Ok(answer) = sent
                && answer.status() == reqwest::StatusCode::ACCEPTED
            {
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                let dropped: Vec<usize> = body["dropped"]
                    .as_array()
                    .map(|d| {
                        d.iter()
                            .filter_map(|x| x["index"].as_u64())
                            .map(|i| i as usize)
                            .collect()
                    })
                    .unwrap_or_default();
                break Some(
                    ids.iter()
                        .enumerate()
                        .filter(|(i, _)| !dropped.contains(i))
                        .map(|(_, id)| *id)
                        .collect::<Vec<_>>(),
                );
            }
            if started.elapsed() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        match accepted {
            Some(ids) => played.accepted.extend(ids),
            None => played.unaccepted += 1,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    played
}

/// Waits until `until` for every accepted event to reach ClickHouse, then
/// counts those missing and those stored more than once.
async fn player_events(env: &TestEnv, played: Played, report: &mut ChaosReport, until: Instant) {
    report.player_events = played.accepted.len();
    report.player_batches_unaccepted = played.unaccepted;
    let accepted: std::collections::HashSet<Uuid> = played.accepted.iter().copied().collect();
    let mut stored: HashMap<Uuid, usize> = HashMap::new();
    loop {
        stored.clear();
        for id in env.stored_event_ids().await {
            *stored.entry(id).or_default() += 1;
        }
        let all = accepted.iter().all(|id| stored.contains_key(id));
        if all || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    report.player_events_missing = accepted
        .iter()
        .filter(|id| !stored.contains_key(id))
        .count();
    report.player_events_doubled = stored.values().filter(|n| **n > 1).count();
    if played.unaccepted > 0 {
        report.findings.push(format!(
            "{} player batches were never accepted",
            played.unaccepted
        ));
    }
    if report.player_events_missing > 0 {
        report.findings.push(format!(
            "{} accepted player events are not in ClickHouse",
            report.player_events_missing
        ));
    }
    if report.player_events_doubled > 0 {
        report.findings.push(format!(
            "{} player events are in ClickHouse more than once",
            report.player_events_doubled
        ));
    }
}

/// A rollout to every device of a fleet, over the fault window: the
/// scheduler's leader is killed under it, the broker, database and Redis
/// go away under it. Its device timeout is longer than any fault, so each
/// device must be asked exactly once and succeed.
struct Fleet {
    api: String,
    admin: String,
    rollout: String,
    devices: usize,
    http: reqwest::Client,
}

impl Fleet {
    async fn call(&self, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let method = match body {
            Some(_) => reqwest::Method::POST,
            None => reqwest::Method::GET,
        };
        let (status, answer) =
            call_json(&self.http, &self.api, method, Some(&self.admin), path, body).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// A firmware, its file through tus, `config.devices` devices and a
    /// started rollout paced to last most of the fault window.
    async fn start(env: &TestEnv, api: &str, config: &ChaosConfig) -> Self {
        let mut fleet = Self {
            api: api.to_owned(),
            admin: env.token_with_role(Uuid::new_v4(), Role::Admin),
            rollout: String::new(),
            devices: config.devices,
            http: reqwest::Client::new(),
        };
        let firmware = fleet
            .call(
                "/v1/fleet/firmware",
                Some(serde_json::json!({
                    "hardware_type": "audio_lock", "version": "2.0", "version_num": 2
                })),
            )
            .await;
        let id = firmware["id"].as_str().expect("an id").to_owned();
        let file = crate::random_bytes(100_000);
        let tus = Tus::new(api, fleet.admin.clone());
        let metadata = firmware["upload"]["upload_metadata"]
            .as_str()
            .expect("metadata");
        let upload = tus.create_with_metadata(file.len() as u64, metadata).await;
        tus.upload_from(upload, &file, 0, file.len()).await;
        let available = crate::wait_until(Duration::from_secs(60), || async {
            fleet.call(&format!("/v1/fleet/firmware/{id}"), None).await["status"] == "available"
        })
        .await;
        assert!(available, "the firmware is sealed");
        let names: Vec<String> = (0..config.devices)
            .map(|i| format!("chaos-{i:05}"))
            .collect();
        let service = env.token_with_role(Uuid::new_v4(), Role::Service);
        for chunk in names.chunks(1000) {
            let devices: Vec<serde_json::Value> = chunk
                .iter()
                .map(|d| serde_json::json!({ "external_id": d, "model": "v2" }))
                .collect();
            let (status, body) = call_json(
                &fleet.http,
                api,
                reqwest::Method::POST,
                Some(&service),
                "/v1/fleet/devices",
                Some(serde_json::json!({ "devices": devices })),
            )
            .await;
            assert!(status.is_success(), "devices: {status} {body}");
        }
        let over = config.fault_window.as_secs_f64() * 0.7;
        let rate = ((config.devices as f64 / over).ceil() as u32).max(1);
        let rollout = fleet
            .call(
                "/v1/fleet/rollouts",
                Some(serde_json::json!({
                    "targets": [id],
                    "devices": names,
                    "waves": [10, 40, 50],
                    "max_in_flight": 20,
                    "rate_per_sec": rate,
                    "device_timeout_secs": 3600,
                })),
            )
            .await;
        fleet.rollout = rollout["id"].as_str().expect("an id").to_owned();
        fleet
            .call(
                &format!("/v1/fleet/rollouts/{}/start", fleet.rollout),
                Some(serde_json::json!({})),
            )
            .await;
        fleet
    }

    /// Waits until `until` for the rollout to complete; counts what is not
    /// exact.
    async fn check(&self, backend: &FleetBackend, report: &mut ChaosReport, until: Instant) {
        let path = format!("/v1/fleet/rollouts/{}", self.rollout);
        let mut view = serde_json::Value::Null;
        while Instant::now() < until {
            let (status, answer) = call_json(
                &self.http,
                &self.api,
                reqwest::Method::GET,
                Some(&self.admin),
                &path,
                None,
            )
            .await;
            if status.is_success() {
                view = answer;
                if view["state"] == "completed" {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        report.rollout_devices = self.devices;
        report.rollout_succeeded = view["counts"]["succeeded"].as_u64().unwrap_or(0) as usize;
        // A call repeated under its update's key (a worker killed before
        // it recorded the answer) is one request to the backend.
        let asked = backend
            .arrivals()
            .iter()
            .map(|a| a.update_id.clone())
            .collect::<std::collections::HashSet<_>>()
            .len();
        report.duplicate_update_requests =
            asked.saturating_sub(self.devices) + backend.devices_with_several_keys().len();
        let mut inexact = Vec::new();
        if view["state"] != "completed" {
            inexact.push(format!("it is {}", view["state"]));
        }
        if report.rollout_succeeded != self.devices {
            inexact.push(format!("counts {}", view["counts"]));
        }
        if asked != self.devices {
            inexact.push(format!("the backend got {asked} distinct requests"));
        }
        for several in backend.devices_with_several_keys() {
            inexact.push(format!("{several} was asked under several keys"));
        }
        for violation in backend.violations() {
            inexact.push(format!("fleet backend: {violation}"));
        }
        report.rollout_exact = inexact.is_empty();
        for what in inexact {
            report
                .findings
                .push(format!("rollout of {} devices: {what}", self.devices));
        }
    }
}

/// How the encoders' failures that are not about the file begin (fflow
/// and the worker's encode job): a file that failed so was failed by a
/// fault, not refused.
const INFRASTRUCTURE: [&str; 8] = [
    "no encoder replica",
    "reading the original from S3",
    "storing ",
    "reading /",
    "creating the output folder",
    "ffmpeg did not run",
    "ffprobe did not run",
    "waiting for ffmpeg",
];

/// The devices the uploader registers, one per push provider.
const PUSH_DEVICES: [(&str, &str); 3] = [
    ("fcm", "chaos-fcm-device"),
    (
        "apns",
        "c4a05d1e9b3f6a7288d1e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f",
    ),
    ("webhook", "chaos-webhook-device"),
];

/// Checks the pushes: each video that ended UPLOADED, READY or FAILED has
/// a notification per device for that state, and each notification
/// written reached its device's receiver and was taken (200) there, once
/// or (a sender killed before it recorded the send) more.
async fn pushes(env: &TestEnv, push: &PushReceivers, report: &mut ChaosReport, until: Instant) {
    let pool = env.store.pool();
    let unwritten: Vec<(Uuid, VideoStatus)> = sqlx::query_as(
        "SELECT v.id, v.status FROM videos v WHERE v.status IN ('UPLOADED', 'READY', 'FAILED') \
         AND (SELECT count(*) FROM notifications n WHERE n.video_id = v.id AND n.state = v.status) \
             < (SELECT count(*) FROM devices d WHERE d.user_id = v.owner_id)",
    )
    .fetch_all(pool)
    .await
    .expect("notifications");
    for (id, status) in unwritten {
        report.pushes_missing += 1;
        report.findings.push(format!(
            "video {id} is {status:?}, but not every device was to hear of it"
        ));
    }
    loop {
        let (pending,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM notifications WHERE status = 'pending'")
                .fetch_one(pool)
                .await
                .expect("notifications");
        if pending == 0 || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let due: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT n.id, n.status::text FROM notifications n ORDER BY n.created_at")
            .fetch_all(pool)
            .await
            .expect("notifications");
    let mut taken: HashMap<String, usize> = HashMap::new();
    for received in push.received() {
        if received.answered == 200 {
            *taken.entry(received.idempotency_key).or_default() += 1;
        }
    }
    report.pushes_due = due.len();
    for (id, status) in due {
        match taken.get(&id.to_string()) {
            None => {
                report.pushes_missing += 1;
                report.findings.push(format!(
                    "notification {id} ({status}) never reached its device"
                ));
            }
            Some(n) => report.duplicate_notifications += n - 1,
        }
    }
    for violation in push.violations() {
        report.findings.push(format!("push receiver: {violation}"));
        report.pushes_missing += 1;
    }
}

/// Every message in the dead-letter queues, read without taking it (the
/// channel closes unacked, so each goes back).
async fn dead_letters(env: &TestEnv) -> Vec<(String, lapin::BasicProperties)> {
    let queues: std::collections::BTreeSet<String> = reelay_shared::queues(&env.topology)
        .into_iter()
        .filter_map(|spec| spec.dead_letter)
        .collect();
    let connection = reelay_shared::mq::connect(&env.amqp.url, "chaos-dlq")
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let mut found = Vec::new();
    for queue in queues {
        while let Some(message) = channel
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions::default(),
            )
            .await
            .expect("basic.get")
        {
            found.push((queue.clone(), message.delivery.properties.clone()));
        }
    }
    let _ = connection.close(200, "read".into()).await;
    found
}

/// The run.
pub async fn run(config: ChaosConfig) -> ChaosReport {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut services, urls) = Services::start(&env, config.real_services).await;
    let push = PushReceivers::start().await;
    let (mut system, apis, backend) = System::start(&env, &urls, &push, dir.path()).await;
    let fleet = Fleet::start(&env, &apis[0], &config).await;

    let files = make_files(&mut rng, dir.path(), &config);
    let uploader = Uuid::new_v4();
    let token = env.token(uploader);
    // The uploader's phone, tablet and a webhook-pushed device.
    for (platform, device) in PUSH_DEVICES {
        let registered = reqwest::Client::new()
            .post(format!("{}/v1/devices", apis[0]))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "platform": platform, "token": device }))
            .send()
            .await
            .expect("POST /v1/devices");
        assert_eq!(registered.status(), reqwest::StatusCode::CREATED);
    }
    // Two of the uploader's videos, watched all through the faults.
    let watched = vec![
        env.ready_video(uploader, 60_000).await,
        env.ready_video(uploader, 60_000).await,
    ];
    // Four clients: tuspy and tus-js-client, each on both api replicas.
    let mut groups: Vec<(&str, usize, Vec<serde_json::Value>)> = vec![
        ("tuspy", 0, vec![]),
        ("tuspy", 1, vec![]),
        ("tusjs", 0, vec![]),
        ("tusjs", 1, vec![]),
    ];
    for (i, file) in files.iter().enumerate() {
        let chunk_size = 1u64 << rng.random_range(config.chunk_log2.0..=config.chunk_log2.1);
        let pause_ms = rng.random_range(0..=config.max_pause.as_millis() as u64);
        // Uploads start over the first part of the fault window, so the
        // faults meet uploads in flight all along.
        let start_ms = rng.random_range(0..=(config.fault_window.as_millis() as u64 * 6 / 10));
        let group = &mut groups[i % 4];
        group.2.push(serde_json::json!({
            "path": file.path,
            "chunk_size": chunk_size,
            "checksum": group.0 == "tuspy" && rng.random_bool(0.5),
            "pause_ms": pause_ms,
            "start_ms": start_ms,
        }));
    }
    let clients: Vec<Child> = groups
        .into_iter()
        .enumerate()
        .map(|(n, (kind, api, items))| {
            start_client(
                kind,
                &apis[api],
                &token,
                items,
                config.client_deadline,
                dir.path(),
                n,
            )
        })
        .collect();
    let readers = clients.into_iter().map(|mut child| {
        let stdout = child.stdout.take().expect("piped");
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut results = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(result) = serde_json::from_str::<ClientResult>(&line) {
                    results.push(result);
                }
            }
            let _ = child.wait().await;
            results
        })
    });
    let readers: Vec<_> = readers.collect();
    let player = tokio::spawn(play(
        apis.clone(),
        token.clone(),
        watched,
        config.fault_window,
        config.client_deadline,
    ));

    // The faults, one at a time, at random moments over the window.
    let mut report = ChaosReport {
        seed: config.seed,
        uploads: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
        ..Default::default()
    };
    let gap = config.fault_window / (config.faults.max(1) as u32);
    let mut kinds: Vec<&str> = Vec::new();
    for _ in 0..config.faults {
        tokio::time::sleep(gap.mul_f64(rng.random_range(0.3..1.0))).await;
        if readers.iter().any(|r| !r.is_finished()) {
            report.faults_during_uploads += 1;
        }
        // Every kind once, in a random order, then again.
        if kinds.is_empty() {
            kinds = FAULTS.to_vec();
            kinds.shuffle(&mut rng);
        }
        let kind = kinds.pop().expect("refilled");
        let down = config.max_down.mul_f64(rng.random_range(0.2..1.0));
        // What was done, as it was done (a leader kill with no leader is a
        // worker's kill).
        let done = match kind {
            "kill api" => {
                let i = rng.random_range(0..system.apis.len());
                kill(&mut system.apis[i]).await;
                tokio::time::sleep(down).await;
                system.restart_api(&env, i).await;
                kind
            }
            "kill fflow" => {
                let i = rng.random_range(0..system.fflows.len());
                kill(&mut system.fflows[i]).await;
                tokio::time::sleep(down).await;
                system.restart_fflow(&env, i).await;
                kind
            }
            "kill worker" | "kill scheduler leader" => {
                // The holder is `<replica>/<term id>`.
                let leader = env.lease_holder().await;
                let leader = leader.as_deref().and_then(|h| h.split('/').next());
                let leader = WORKERS.iter().position(|w| leader == Some(*w));
                let (i, done) = match (kind, leader) {
                    ("kill scheduler leader", Some(i)) => (i, kind),
                    _ => (rng.random_range(0..WORKERS.len()), "kill worker"),
                };
                kill(&mut system.workers[i]).await;
                tokio::time::sleep(down).await;
                system.restart_worker(&env, i);
                done
            }
            service => {
                services.outage(service, down).await;
                service
            }
        };
        *report.faults.entry(done).or_default() += 1;
    }

    // The clients end (done, told the upload failed, or out of time).
    // A client past its deadline (a request that hangs) is killed.
    let mut results: HashMap<PathBuf, ClientResult> = HashMap::new();
    let until = tokio::time::Instant::now() + config.client_deadline + Duration::from_secs(60);
    for mut reader in readers {
        match tokio::time::timeout_at(until, &mut reader).await {
            Ok(found) => {
                for result in found.expect("a client reader") {
                    results.insert(result.path.clone(), result);
                }
            }
            Err(_) => {
                reader.abort();
                report
                    .findings
                    .push("a client did not end by its deadline: killed".into());
            }
        }
    }

    // The system settles: every video it has reaches an end.
    let settle_until = Instant::now() + config.settle;
    let unsettled = loop {
        let open: Vec<(Uuid, VideoStatus)> = sqlx::query_as(
            // Every whole upload is encoded: UPLOADED is on the way (but
            // for the firmware's file, which is sealed instead).
            "SELECT id, status FROM videos WHERE status NOT IN ('READY', 'FAILED', 'DELETED') \
             AND NOT (status = 'UPLOADED' AND firmware_id IS NOT NULL)",
        )
        .fetch_all(env.store.pool())
        .await
        .expect("videos");
        if open.is_empty() || Instant::now() >= settle_until {
            break open;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    report.stuck = unsettled.len();
    for (id, status) in &unsettled {
        report
            .findings
            .push(format!("video {id} is still {status:?} after settling"));
    }

    // What follows waits for the system too: the rest of the settle
    // window, and no less than half a minute.
    let settle_until = settle_until.max(Instant::now() + Duration::from_secs(30));
    // Every push due reaches its device.
    pushes(&env, &push, &mut report, settle_until).await;

    // Every player event the api accepted is in ClickHouse once.
    let played = match player.await {
        Ok(played) => played,
        Err(e) => panic!("the player: {e}"),
    };
    player_events(&env, played, &mut report, settle_until).await;

    // The rollout ends completed, each device asked once.
    fleet.check(&backend, &mut report, settle_until).await;

    // Every byte, upload by upload.
    for file in &files {
        let Some(result) = results.get(&file.path) else {
            report
                .findings
                .push(format!("{}: its client never said", file.path.display()));
            report.gave_up += 1;
            continue;
        };
        let id = result.id.as_deref().and_then(VideoId::parse);
        let video = match id {
            Some(id) => env.store.video(id).await.expect("database"),
            None => None,
        };
        if result.ok {
            report.acknowledged += 1;
        }
        if result.regressed > 0 {
            report.lost_bytes += result.regressed;
            report.findings.push(format!(
                "{}: {} acknowledged bytes were asked for again",
                file.path.display(),
                result.regressed
            ));
        }
        let told_gone = result
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("404") || e.starts_with("410"));
        match video {
            // Whole: its bytes are exactly the file's, whatever the encoders
            // made of them. A real video must end READY; random bytes end
            // FAILED with the encoder's reason (or READY, should ffmpeg
            // find a stream in them).
            Some(v) if v.sha256.is_some() && v.status != VideoStatus::Deleted => {
                let refused = v
                    .failure_reason
                    .as_deref()
                    .is_some_and(|r| !INFRASTRUCTURE.iter().any(|p| r.starts_with(p)));
                match (file.video, v.status) {
                    (_, VideoStatus::Ready) => report.ready += 1,
                    (false, VideoStatus::Failed) if refused => report.refused_by_encoder += 1,
                    (_, status) => {
                        report.videos_not_ready += 1;
                        report.findings.push(format!(
                            "video {}: a {} ended {status:?} ({:?})",
                            v.id,
                            if file.video { "real video" } else { "file" },
                            v.failure_reason
                        ));
                    }
                }
                let stored = env
                    .object_bytes(&env.storage.original_key(v.id))
                    .await
                    .map(|b| (b.len() as u64, hex::encode(Sha256::digest(&b))));
                match stored {
                    Some((_, sha)) if sha == file.sha256 && v.sha256.as_deref() == Some(&sha) => {}
                    Some((len, sha)) => {
                        report.corrupted += 1;
                        report.findings.push(format!(
                            "video {}: stored {len} bytes {sha}, recorded {:?}, file {} bytes {}",
                            v.id, v.sha256, file.size, file.sha256
                        ));
                    }
                    None => {
                        report.lost_bytes += file.size;
                        report
                            .findings
                            .push(format!("video {}: UPLOADED without its object", v.id));
                    }
                }
            }
            Some(v) if v.status == VideoStatus::Failed && told_gone => {
                report.failed_told += 1;
            }
            Some(v) if result.ok => {
                report.lost_bytes += file.size;
                report.findings.push(format!(
                    "video {}: its client was told it is whole, yet it is {:?} ({:?})",
                    v.id, v.status, v.failure_reason
                ));
            }
            Some(_) | None => {
                report.gave_up += 1;
                report.findings.push(format!(
                    "{}: the client gave up ({:?})",
                    file.path.display(),
                    result.error
                ));
            }
        }
    }

    // The system stops before the last checks: nothing writes meanwhile.
    for child in system
        .apis
        .iter_mut()
        .chain(system.workers.iter_mut())
        .chain(system.fflows.iter_mut())
    {
        kill(child).await;
    }
    report.orphaned = open_multipart_uploads(&env).await;
    // Each dead letter, one by one: a video's job is explained by its video
    // having FAILED; nothing else is.
    for (queue, properties) in dead_letters(&env).await {
        report.dead_letters += 1;
        let video = JobHeader::parse(&properties).map(|h| h.video);
        let failed = match video {
            Some(id) => env
                .store
                .video(id)
                .await
                .expect("database")
                .is_some_and(|v| v.status == VideoStatus::Failed),
            None => false,
        };
        if !failed {
            report.unexplained_dead_letters += 1;
            let what = match (video, FleetJob::parse(&properties)) {
                (Some(id), _) => format!("a job of video {id}, which did not fail"),
                (None, Some(job)) => format!("fleet job {job:?}"),
                (None, None) => "an unrecognised message".into(),
            };
            report
                .findings
                .push(format!("dead letter in {queue}: {what}"));
        }
    }
    let live = env.projections_snapshot().await;
    env.rebuild_projections().await;
    report.rebuild_matches = env.projections_snapshot().await == live;
    drop(services);
    report.wall = started.elapsed();
    report
}

//! A chaos run: real tus clients (tuspy, and tus-js-client under Node.js)
//! upload many files at once to two api replicas while a fault driver kills
//! processes (an api replica, a worker, the scheduler's leader) and takes
//! the services away (PostgreSQL, RabbitMQ, Redis, Garage: each reached
//! through a harness [`Proxy`] that is cut and restored, so the machine's
//! services and the tests beside the run are untouched). Once the faults
//! stop and the system settles, it checks every byte: each upload is
//! UPLOADED with the exact SHA-256 of its file, or FAILED with its client
//! told; nothing is left half-way; no multipart upload is left open in
//! Garage; nothing is dead-lettered but for a failed video; and rebuilding
//! the projections from the log gives the live ones.
//!
//! `reelay-chaos` (`make chaos`) runs it at size; `tests/integration/chaos.rs`
//! runs a short one in `make test`.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use reelay_api::config::ApiConfig;
use reelay_scheduler::config::SchedulerConfig;
use reelay_shared::{VideoId, VideoStatus, config::Vars};
use reelay_worker::config::WorkerConfig;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::process::Child;
use uuid::Uuid;

use crate::{TestEnv, proxy::Proxy};

/// What a run does.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub uploads: usize,
    pub faults: usize,
    pub seed: u64,
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
            faults: 6,
            seed,
            max_size: 16 << 20,
            max_pause: Duration::from_millis(600),
            chunk_log2: (15, 20),
            max_down: Duration::from_secs(4),
            fault_window: Duration::from_secs(20),
            client_deadline: Duration::from_secs(180),
            settle: Duration::from_secs(90),
            real_services: false,
        }
    }
}

/// The kinds of fault the driver injects.
pub const FAULTS: [&str; 7] = [
    "kill api",
    "kill worker",
    "kill scheduler leader",
    "postgres down",
    "rabbitmq down",
    "redis down",
    "garage down",
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
    /// Dead-lettered messages while no video failed.
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
        row("failed, client told", self.failed_told.to_string());
        row("clients that gave up", self.gave_up.to_string());
        row("lost bytes", self.lost_bytes.to_string());
        row("corrupted objects", self.corrupted.to_string());
        row("stuck uploads", self.stuck.to_string());
        row("orphaned multipart uploads", self.orphaned.to_string());
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

    async fn start(env: &TestEnv, real: bool) -> (Self, [(String, String); 4]) {
        let pairs = [
            ("postgres down", env.database_url.clone()),
            ("rabbitmq down", env.amqp.url.clone()),
            ("redis down", env.redis.url.clone()),
            ("garage down", env.s3.endpoint.clone()),
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
        let urls: [(String, String); 4] = urls.try_into().expect("four services");
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
    worker_vars: Vec<Vars>,
    workers: Vec<Child>,
}

const WORKERS: [&str; 2] = ["chaos-w1", "chaos-w2"];

impl System {
    async fn start(env: &TestEnv, urls: &[(String, String); 4]) -> (Self, Vec<String>) {
        let [database, amqp, redis, s3] = urls.clone().map(|(_, proxied)| proxied);
        let mut api = env.api_config();
        api.database.url = database.clone();
        api.amqp.url = amqp.clone();
        api.redis.url = redis.clone();
        api.s3.endpoint = s3.clone();
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
        let worker_vars: Vec<Vars> = WORKERS
            .iter()
            .map(|replica| {
                let mut worker: WorkerConfig = env.worker_config();
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
        let mut system = Self {
            api_configs: Vec::new(),
            apis: Vec::new(),
            worker_vars,
            workers: Vec::new(),
        };
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
        for vars in &system.worker_vars {
            system
                .workers
                .push(env.spawn_process("reelay-worker", vars.clone()));
        }
        (system, addresses)
    }

    async fn restart_api(&mut self, env: &TestEnv, i: usize) {
        let (child, _) = env.spawn_api_process(&self.api_configs[i]).await;
        self.apis[i] = child;
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
fn make_files(rng: &mut StdRng, dir: &Path, n: usize, max_size: u64) -> Vec<Upload> {
    (0..n)
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
            }
        })
        .collect()
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

/// The run.
pub async fn run(config: ChaosConfig) -> ChaosReport {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut services, urls) = Services::start(&env, config.real_services).await;
    let (mut system, apis) = System::start(&env, &urls).await;

    let files = make_files(&mut rng, dir.path(), config.uploads, config.max_size);
    let token = env.token(Uuid::new_v4());
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

    // The faults, one at a time, at random moments over the window.
    let mut report = ChaosReport {
        seed: config.seed,
        uploads: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
        ..Default::default()
    };
    let gap = config.fault_window / (config.faults.max(1) as u32);
    for _ in 0..config.faults {
        tokio::time::sleep(gap.mul_f64(rng.random_range(0.3..1.0))).await;
        if readers.iter().any(|r| !r.is_finished()) {
            report.faults_during_uploads += 1;
        }
        let kind = FAULTS[rng.random_range(0..FAULTS.len())];
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
            "SELECT id, status FROM videos WHERE status NOT IN ('UPLOADED', 'READY', 'FAILED', 'DELETED')",
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
            Some(v) if matches!(v.status, VideoStatus::Uploaded | VideoStatus::Ready) => {
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
    for child in system.apis.iter_mut().chain(system.workers.iter_mut()) {
        kill(child).await;
    }
    report.orphaned = open_multipart_uploads(&env).await;
    let failed: (i64,) = sqlx::query_as("SELECT count(*) FROM videos WHERE status = 'FAILED'")
        .fetch_one(env.store.pool())
        .await
        .expect("count");
    let mut dead_letters = 0;
    let queues: std::collections::BTreeSet<String> = reelay_shared::queues(&env.topology)
        .into_iter()
        .filter_map(|spec| spec.dead_letter)
        .collect();
    for dlq in queues {
        dead_letters += env.queue_depth(&dlq).await;
    }
    if failed.0 == 0 {
        report.unexplained_dead_letters = dead_letters;
    }
    let live = env.projections_snapshot().await;
    env.rebuild_projections().await;
    report.rebuild_matches = env.projections_snapshot().await == live;
    drop(services);
    report.wall = started.elapsed();
    report
}

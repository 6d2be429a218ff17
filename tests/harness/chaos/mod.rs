//! A chaos run: real tus clients (tuspy, and tus-js-client under Node.js)
//! upload many files at once to two api replicas, while a rollout runs and
//! a player sends events, and a fault driver kills processes (an api
//! replica, a worker, an fflow replica, the scheduler's leader) and takes
//! the services away (PostgreSQL, RabbitMQ, Redis, Garage, ClickHouse:
//! each reached through a harness [`Proxy`] that is cut and restored in
//! `make test`, stopped and started for real in `make chaos`). Once the
//! faults stop and the system settles, it checks every byte (each whole
//! upload's object is its file's exact SHA-256; a real video ends READY, a
//! random file is refused by the encoder; an upload not whole is FAILED
//! with its client told), that nothing is stuck or left open in Garage,
//! that each dead letter belongs to a failed video, that every push due
//! was taken, that the rollout ended exact and every accepted player event
//! is in ClickHouse once, and that rebuilding the projections gives the
//! live ones.
//!
//! Here: the configuration, the report and [`run`]. `system` starts the
//! processes and does the faults, `clients` makes the files and runs the
//! tus clients, `player` and `fleet` are the workloads beside the uploads,
//! `checks` what is checked after. `reelay-chaos` (`make chaos`) runs it
//! at size; `tests/integration/chaos.rs` runs a short one in `make test`.

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

mod checks;
mod clients;
mod fleet;
mod player;
mod system;

use checks::{dead_letters, open_multipart_uploads, pushes};
use clients::{ClientResult, make_files, start_client};
use fleet::Fleet;
use player::{play, player_events};
use system::{Services, System, WORKERS, kill};

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

//! Encoding on fflow replicas: uploads end READY with HLS and DASH that a
//! standard player (ffprobe) opens through the playback URLs; ffmpeg's own
//! words when it can't; and READY anyway when the replica dies or the
//! route is lost (the encode reads the original from S3).

use std::time::Duration;

use redis::AsyncCommands;
use reelay_shared::{VideoId, VideoStatus, video::routing};
use reelay_tests::{TestEnv, TestFflow, client::Tus, media::Sample, proxy::Proxy, wait_until};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// ffprobe's JSON for a file or URL: the format's duration and each
/// stream's type and size.
fn ffprobe(input: &str) -> Result<Value, String> {
    let output = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_entries"])
        .arg("format=duration:stream=codec_type,width,height")
        .arg(input)
        .output()
        .expect("ffprobe runs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a duration")
}

fn video_sizes(probe: &Value) -> Vec<(u64, u64)> {
    probe["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .map(|s| {
            (
                s["width"].as_u64().unwrap_or(0),
                s["height"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// An api, two fflow replicas in the test process, and a worker that uses them.
struct Stage {
    api: reelay_tests::TestApi,
    fflows: Vec<TestFflow>,
    tus: Tus,
    _worker: reelay_tests::TestWorker,
    dir: tempfile::TempDir,
}

impl Stage {
    async fn start(env: &TestEnv) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let fflows = vec![
            env.spawn_fflow("r1", dir.path()).await,
            env.spawn_fflow("r2", dir.path()).await,
        ];
        let bases: Vec<String> = fflows.iter().map(|f| f.base.clone()).collect();
        let worker = env
            .spawn_worker_with(env.worker_config_with_fflow(&bases))
            .await;
        let api = env.spawn_api().await;
        let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
        Self {
            api,
            fflows,
            tus,
            _worker: worker,
            dir,
        }
    }

    /// Waits until no replica has a local file left. fflow removes an
    /// encode's files just after it reports the encode over, so the worker
    /// may record READY or FAILED first.
    async fn local_files_removed(&self) -> bool {
        wait_until(Duration::from_secs(10), || async {
            self.fflows.iter().all(|f| f.local_files() == 0)
        })
        .await
    }
}

/// The playback URLs of a READY video, as its owner gets them.
async fn playback(api: &str, tus: &Tus, id: VideoId) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{api}/v1/videos/{id}/playback"))
        .bearer_auth(&tus.token)
        .send()
        .await
        .expect("GET playback");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

/// The replica and source of the video's last `encoding_started` event.
async fn encoded_on(env: &TestEnv, id: VideoId) -> (String, String) {
    let events = env.store.events(id).await.expect("history");
    let started = events
        .iter()
        .rfind(|e| e.kind == "encoding_started")
        .expect("an encoding_started event");
    let field = |k: &str| started.payload[k].as_str().expect(k).to_owned();
    (field("replica"), field("source"))
}

/// Checks what a player would: both manifests open, every HLS rendition
/// plays as long as the source, none is larger than it.
async fn assert_playable(links: &Value, source: &Value) {
    let expected = duration(source);
    let (sw, sh) = video_sizes(source)[0];
    let hls = links["hls"].as_str().expect("hls");
    let master = reqwest::get(hls)
        .await
        .expect("GET master")
        .text()
        .await
        .expect("text");
    // Variant playlists are named relative to the master, as players resolve them.
    let folder = &hls[..hls.rfind('/').expect("a path") + 1];
    let variants: Vec<String> = master
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| format!("{folder}{}", l.trim()))
        .collect();
    assert!(variants.len() >= 2, "a ladder of at least two: {master}");
    let master_probe = ffprobe(hls).expect("ffprobe opens the HLS master playlist");
    assert!((duration(&master_probe) - expected).abs() <= 0.5);
    for variant in variants {
        let probe = ffprobe(&variant).expect("ffprobe opens a rendition");
        let got = duration(&probe);
        assert!(
            (got - expected).abs() <= 0.5,
            "a rendition lasts {got} s, the source {expected} s"
        );
        for (w, h) in video_sizes(&probe) {
            assert!(
                w <= sw && h <= sh,
                "{w}x{h} is larger than the source's {sw}x{sh}"
            );
        }
    }
    let dash =
        ffprobe(links["dash"].as_str().expect("dash")).expect("ffprobe opens the DASH manifest");
    assert!((duration(&dash) - expected).abs() <= 0.5);
    let sizes = video_sizes(&dash);
    assert!(sizes.len() >= 2, "DASH has every rendition: {sizes:?}");
    assert!(sizes.iter().all(|&(w, h)| w <= sw && h <= sh));
    let poster = reqwest::get(links["poster"].as_str().expect("poster"))
        .await
        .expect("GET poster");
    assert_eq!(poster.status(), StatusCode::OK, "the poster downloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp4_either_way_and_webm_end_ready_and_play_through_hls_and_dash() {
    let env = TestEnv::new().await;
    let stage = Stage::start(&env).await;
    for sample in [Sample::FastStart, Sample::MoovAtEnd, Sample::WebM] {
        let data = sample.make(stage.dir.path(), 3);
        let source_path = stage.dir.path().join(format!("{sample:?}"));
        std::fs::write(&source_path, &data).expect("write");
        let source = ffprobe(source_path.to_str().expect("utf-8")).expect("the source probes");

        let id = stage.tus.create(data.len() as u64).await;
        stage.tus.upload_from(id, &data, 0, 256 * 1024).await;
        let ready = env
            .wait_for_status(id, VideoStatus::Ready, Duration::from_secs(120))
            .await;
        assert_eq!(ready.encoding_percentage, 100, "{sample:?}");
        let links = playback(&stage.api.address, &stage.tus, id).await;
        assert_playable(&links, &source).await;
        let kinds = env.event_kinds(id).await;
        assert!(
            kinds.ends_with(&["encoded".to_owned()]),
            "{sample:?}: {kinds:?}"
        );
        let (_, source) = encoded_on(&env, id).await;
        assert_eq!(
            source, "local",
            "{sample:?}: encoded from the chunks fflow glued"
        );
    }
    assert!(
        stage.local_files_removed().await,
        "no local file outlives its encode"
    );
    let live = env.projections_snapshot().await;
    let renditions = live["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| f["kind"] == "rendition")
        .count();
    assert_eq!(renditions, 6, "two renditions a video, each a flow");
    env.rebuild_projections().await;
    assert_eq!(
        env.projections_snapshot().await,
        live,
        "encoded videos rebuild from the log exactly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_fails_with_ffmpegs_reason() {
    let env = TestEnv::new().await;
    let stage = Stage::start(&env).await;
    let data = Sample::Corrupt.make(stage.dir.path(), 0);
    let id = stage.tus.create(data.len() as u64).await;
    stage.tus.upload_from(id, &data, 0, data.len()).await;
    let failed = env
        .wait_for_status(id, VideoStatus::Failed, Duration::from_secs(60))
        .await;
    let reason = failed.failure_reason.unwrap_or_default();
    assert!(
        reason.contains("Invalid data found when processing input"),
        "ffmpeg's words: {reason}"
    );
    assert!(
        !reason.contains(&*stage.dir.path().to_string_lossy()),
        "the replica's paths stay inside: {reason}"
    );
    let response = reqwest::Client::new()
        .get(format!("{}/v1/videos/{id}/playback", stage.api.address))
        .bearer_auth(&stage.tus.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::CONFLICT, "nothing to play");
    assert!(
        stage.local_files_removed().await,
        "no local file outlives a failed encode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_session_still_ends_ready() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut first, r1) = env.spawn_fflow_process("r1", dir.path()).await;
    let (mut second, r2) = env.spawn_fflow_process("r2", dir.path()).await;
    let bases = vec![r1.base.clone(), r2.base.clone()];
    let _worker = env
        .spawn_worker_with(env.worker_config_with_fflow(&bases))
        .await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = Sample::FastStart.make(dir.path(), 4);
    let source_path = dir.path().join("source.mp4");
    std::fs::write(&source_path, &data).expect("write");
    let source = ffprobe(source_path.to_str().expect("utf-8")).expect("probes");

    let id = tus.create(data.len() as u64).await;
    let half = data.len() / 2;
    tus.upload_from(id, &data[..half], 0, 64 * 1024).await;
    let mut redis = env.redis().await;
    let key = routing::session_key(&env.redis.key_prefix, id);
    let routed = wait_until(Duration::from_secs(30), || async {
        redis.clone().exists::<_, bool>(&key).await.unwrap_or(false)
    })
    .await;
    assert!(routed, "the session was routed to a replica");
    let route: String = redis.get(&key).await.expect("GET");
    let (victim, survivor) = if route == r1.address {
        (&mut first, &r2)
    } else {
        (&mut second, &r1)
    };
    victim.start_kill().expect("SIGKILL the session's replica");
    victim.wait().await.expect("gone");

    tus.upload_from(id, &data, half, 64 * 1024).await;
    env.wait_for_status(id, VideoStatus::Ready, Duration::from_secs(120))
        .await;
    assert_eq!(
        encoded_on(&env, id).await,
        (survivor.address.clone(), "s3".to_owned()),
        "the survivor encoded it from the original in S3"
    );
    assert_playable(&playback(&api.address, &tus, id).await, &source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_key_deleted_mid_upload_still_ends_ready() {
    let env = TestEnv::new().await;
    let stage = Stage::start(&env).await;
    // The owner has a device: UPLOADED and READY each queue a push for it.
    let device = reqwest::Client::new()
        .post(format!("{}/v1/devices", stage.api.address))
        .bearer_auth(&stage.tus.token)
        .json(&serde_json::json!({ "platform": "webhook", "token": "phone" }))
        .send()
        .await
        .expect("POST /v1/devices");
    assert_eq!(device.status(), StatusCode::CREATED);
    let data = Sample::FastStart.make(stage.dir.path(), 3);
    let id = stage.tus.create(data.len() as u64).await;
    let half = data.len() / 2;
    stage.tus.upload_from(id, &data[..half], 0, 64 * 1024).await;
    let mut redis = env.redis().await;
    let key = routing::session_key(&env.redis.key_prefix, id);
    let routed = wait_until(Duration::from_secs(30), || async {
        redis.clone().exists::<_, bool>(&key).await.unwrap_or(false)
    })
    .await;
    assert!(routed);
    let _: () = redis.del(&key).await.expect("DEL");

    stage.tus.upload_from(id, &data, half, 64 * 1024).await;
    let ready = env
        .wait_for_status(id, VideoStatus::Ready, Duration::from_secs(120))
        .await;
    assert!(ready.playback.is_some());
    assert_eq!(
        encoded_on(&env, id).await.1,
        "s3",
        "the route was lost: from S3"
    );
    let queued: Vec<(String,)> = sqlx::query_as(
        "SELECT state::text FROM notifications WHERE video_id = $1 ORDER BY event_seq",
    )
    .bind(id)
    .fetch_all(env.store.pool())
    .await
    .expect("notifications");
    assert_eq!(
        queued,
        vec![("UPLOADED".to_owned(),), ("READY".to_owned(),)],
        "the outbox has a push for each"
    );
    // The worker forgets the route just after it records the encode.
    let forgotten = wait_until(Duration::from_secs(10), || async {
        !redis.clone().exists::<_, bool>(&key).await.unwrap_or(true)
    })
    .await;
    assert!(forgotten, "the route is gone once the encode is recorded");
    // The session the lost route named is no one's now: its replica drops
    // it once idle for its session TTL (see fflow's sessions tests).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uploads_at_once_land_on_different_replicas() {
    let env = TestEnv::new().await;
    let stage = Stage::start(&env).await;
    let data = Sample::FastStart.make(stage.dir.path(), 3);
    let first = stage.tus.create(data.len() as u64).await;
    let second = stage.tus.create(data.len() as u64).await;
    tokio::join!(
        stage.tus.upload_from(first, &data, 0, 64 * 1024),
        stage.tus.upload_from(second, &data, 0, 64 * 1024),
    );
    for id in [first, second] {
        env.wait_for_status(id, VideoStatus::Ready, Duration::from_secs(120))
            .await;
    }
    let replicas = (
        encoded_on(&env, first).await.0,
        encoded_on(&env, second).await.0,
    );
    assert_ne!(replicas.0, replicas.1, "one upload a replica");
    let ours: Vec<&str> = stage.fflows.iter().map(|f| f.address.as_str()).collect();
    assert!(ours.contains(&replicas.0.as_str()) && ours.contains(&replicas.1.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_away_from_the_encoder_delays_the_video_but_does_not_fail_it() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s3 = Proxy::start("127.0.0.1:3900").await;
    let mut config = env.fflow_config("r1", dir.path());
    config.s3.endpoint = format!("http://127.0.0.1:{}", s3.port);
    let (mut replica, fflow) = env.spawn_fflow_process_with(&config).await;
    let _worker = env
        .spawn_worker_with(env.worker_config_with_fflow(std::slice::from_ref(&fflow.base)))
        .await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = Sample::FastStart.make(dir.path(), 2);

    // The encoder can't store its renditions, then can't read the original.
    s3.cut().await;
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data, 0, data.len()).await;
    let met_outage = wait_until(Duration::from_secs(60), || async {
        reqwest::get(format!("{}/metrics", fflow.base))
            .await
            .expect("metrics")
            .text()
            .await
            .is_ok_and(|m| m.contains("reelay_fflow_encodes_total{outcome=\"s3_away\"}"))
    })
    .await;
    assert!(met_outage, "an encode met S3 away");
    let video = env.video(id).await;
    assert_ne!(
        video.status,
        VideoStatus::Failed,
        "{:?}",
        video.failure_reason
    );

    s3.restore().await;
    env.wait_for_status(id, VideoStatus::Ready, Duration::from_secs(90))
        .await;
    let history = env.store.events(id).await.expect("history");
    assert!(history.iter().all(|e| e.kind != "failed"), "never failed");
    replica.start_kill().expect("stop the replica");
}

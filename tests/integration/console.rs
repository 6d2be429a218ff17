//! The web console in a real browser: headless Chromium (Debian's, driven
//! by Selenium) uses `/console/` as a person would, through the public API
//! only (tests/browser/console.py). A user signs in with a token in the
//! fragment, uploads a clip through Uppy, watches it play to the end, likes
//! and comments, and sees the view in the statistics; a new admin signs in
//! with the development button, approves the video and starts, pauses and
//! resumes a rollout while its counts move.

use std::time::Duration;

use reelay_api::auth::Role;
use reelay_shared::{VideoId, video::Verification};
use reelay_tests::{
    TestEnv,
    client::{Tus, call_json},
    fleet_backend::FleetBackend,
    media::Sample,
    proxy::Proxy,
    sha256_hex, wait_until,
};
use reelay_worker::config::FleetBackend as BackendConfig;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

/// Where the screenshots go (the README shows some of them, copied to
/// docs/screenshots/).
fn screenshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
}

/// Two onboarding videos an admin uploaded, in their order, once listed.
async fn onboarding_videos(
    env: &TestEnv,
    api: &str,
    admin: &str,
    dir: &std::path::Path,
) -> Vec<String> {
    use base64::Engine;
    let clip = Sample::FastStart.make(dir, 1);
    let tus = Tus::new(api, admin.to_owned());
    let mut ids = Vec::new();
    for title in ["Welcome", "How to upload"] {
        let name = base64::engine::general_purpose::STANDARD.encode(title);
        let id = tus
            .create_with_metadata(clip.len() as u64, &format!("onboarding,name {name}"))
            .await;
        tus.upload_from(id, &clip, 0, clip.len()).await;
        env.wait_for_status(
            id,
            reelay_shared::VideoStatus::Ready,
            Duration::from_secs(60),
        )
        .await;
        ids.push(id.to_string());
    }
    ids
}

/// tests/browser/console.py running on `plan`.
struct Browser {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

async fn browse(plan: &Value) -> Browser {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/browser/console.py"))
        .arg(plan.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().expect("stdout");
    Browser {
        child,
        lines: tokio::io::BufReader::new(stdout).lines(),
    }
}

impl Browser {
    /// The next line the script prints.
    async fn line(&mut self) -> Option<String> {
        self.lines
            .next_line()
            .await
            .expect("read the script's output")
    }

    /// The script's report: its last line, within five minutes (a hung
    /// browser fails the test rather than the whole run).
    async fn report(mut self) -> Value {
        let mut last = None;
        let read = async {
            while let Some(line) = self.line().await {
                last = Some(line);
            }
        };
        if tokio::time::timeout(Duration::from_secs(300), read)
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
            panic!("the browser run took more than five minutes");
        }
        let status = self.child.wait().await.expect("the script ends");
        assert!(status.success(), "the browser run failed ({status})");
        serde_json::from_str(&last.expect("a report")).expect("the report is JSON")
    }
}

/// A draft rollout of a new `iot` firmware to `devices` cabinets that run
/// 1.0.0, two waves, two updates a second.
async fn draft_rollout(http: &reqwest::Client, api: &str, admin: &str, service: &str) -> String {
    let (status, firmware) = call_json(
        http,
        api,
        Method::POST,
        Some(admin),
        "/v1/fleet/firmware",
        Some(json!({ "hardware_type": "iot", "version": "2.0.0", "version_num": 2 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{firmware}");
    let id = firmware["id"].as_str().expect("an id").to_owned();
    let data = reelay_tests::random_bytes(64 * 1024);
    let tus = Tus::new(api, admin.to_owned());
    let metadata = firmware["upload"]["upload_metadata"]
        .as_str()
        .expect("metadata");
    let upload = tus.create_with_metadata(data.len() as u64, metadata).await;
    tus.upload_from(upload, &data, 0, data.len()).await;
    let available = wait_until(Duration::from_secs(30), || async {
        let (_, f) = call_json(
            http,
            api,
            Method::GET,
            Some(admin),
            &format!("/v1/fleet/firmware/{id}"),
            None,
        )
        .await;
        f["status"] == "available"
    })
    .await;
    assert!(available, "the firmware is signed and available");

    let devices: Vec<String> = (0..30).map(|i| format!("cabinet-{i:03}")).collect();
    let registered: Vec<Value> = devices
        .iter()
        .map(|d| json!({ "external_id": d, "model": "cabinet" }))
        .collect();
    let reports: Vec<Value> = devices
        .iter()
        .map(|d| json!({ "device": d, "component": "iot", "version": "1.0.0" }))
        .collect();
    for (path, body) in [
        ("/v1/fleet/devices", json!({ "devices": registered })),
        ("/v1/fleet/reports", json!({ "reports": reports })),
    ] {
        let (status, answer) =
            call_json(http, api, Method::POST, Some(service), path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }
    let (status, rollout) = call_json(
        http,
        api,
        Method::POST,
        Some(admin),
        "/v1/fleet/rollouts",
        Some(json!({
            "name": "iot 2.0.0 to the cabinets",
            "targets": [id],
            "devices": devices,
            "waves": [50, 50],
            "rate_per_sec": 2,
            "max_in_flight": 2,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rollout}");
    rollout["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uploads_watches_moderates_and_steers_a_rollout_in_the_console() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fflow = env.spawn_fflow("r1", dir.path()).await;
    let mut api_config = env.api_config();
    api_config.dev_tokens = true;
    let api = env.spawn_api_with(api_config).await;
    let service = env.token_with_role(Uuid::new_v4(), Role::Service);
    let backend =
        FleetBackend::start(&api.address, service.clone(), Duration::from_millis(200)).await;
    let mut worker = env.worker_config_with_fflow(std::slice::from_ref(&fflow.base));
    worker.etl.enabled = true;
    worker.fleet.backend = Some(BackendConfig {
        url: backend.url.clone(),
        secret: backend.secret.clone(),
    });
    let _worker = env.spawn_worker_with(worker).await;
    let _scheduler = env.spawn_scheduler(env.scheduler_config()).await;
    let http = reqwest::Client::new();

    // What the browser relies on, checked where a failure says most.
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/", api.address))
        .send()
        .await
        .expect("GET /");
    assert!(root.status().is_redirection(), "GET / redirects");
    assert_eq!(root.headers()[header::LOCATION], "/console/");
    let page = http
        .get(format!("{}/console/", api.address))
        .send()
        .await
        .expect("the console");
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "the console's bundle is built (`make web`, which `make test` runs)"
    );
    let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(
        policy.contains("script-src 'self'"),
        "scripts only from the api: {policy}"
    );
    assert!(
        !page.text().await.expect("html").contains("http"),
        "the page loads nothing from another origin"
    );

    let admin = env.token_with_role(Uuid::new_v4(), Role::Admin);
    let rollout = draft_rollout(&http, &api.address, &admin, &service).await;
    let welcome = onboarding_videos(&env, &api.address, &admin, dir.path()).await;
    let clip = Sample::FastStart.make(dir.path(), 4);
    let clip_path = dir.path().join("clip.mp4");
    std::fs::write(&clip_path, &clip).expect("write the clip");
    let shots = screenshots();
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let plan = json!({
        "console": format!("{}/console/", api.address),
        "user_token": env.token(Uuid::new_v4()),
        "clip": clip_path,
        "rollout": rollout,
        "onboarding": welcome,
        "screenshots": shots,
    });
    let report = browse(&plan).await.report().await;
    assert_eq!(
        report["error"],
        Value::Null,
        "every step passed: {report:#}"
    );
    assert_eq!(report["console"], json!([]), "no console error: {report:#}");
    assert_eq!(report["fragment_left_url"], json!(true), "{report:#}");

    // The upload went through Uppy byte for byte and the page followed it.
    let id = VideoId::parse(report["video_id"].as_str().expect("a video id")).expect("an id");
    assert_eq!(env.original_sha256(id).await, sha256_hex(&clip));
    let seen = report["statuses_seen"].to_string();
    assert!(seen.contains("READY"), "the page saw READY: {seen}");
    assert!(
        report["poster_loads"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    assert_eq!(report["played_past_2s"], json!(true), "{report:#}");
    assert!(
        report["current_time"].as_f64().unwrap_or(0.0) > 3.5,
        "played to the end of the 4 s clip: {report:#}"
    );
    assert_eq!(
        report["comment_shown"],
        json!("Lovely clip <b>not bold</b>"),
        "a comment is shown as text, never as HTML"
    );
    assert!(
        report["views"].as_u64().unwrap_or(0) >= 1,
        "the player's events made a view in the statistics: {report:#}"
    );

    // The admin's decisions reached the log.
    let video = env.video(id).await;
    assert_eq!(video.verification, Verification::Verified);
    let engagement = env.store.engagement(id, None).await.expect("engagement");
    assert_eq!((engagement.likes, engagement.comments), (1, 1));
    let at_pause = report["succeeded_at_pause"].as_i64().expect("a count");
    assert!(
        at_pause >= 2,
        "devices succeeded before the pause: {report:#}"
    );
    assert_eq!(
        report["succeeded_while_paused"], at_pause,
        "nothing new was sent while paused: {report:#}"
    );
    assert!(
        report["succeeded_after_resume"].as_i64().unwrap_or(0) > at_pause,
        "the counts moved after the resume: {report:#}"
    );
    let (_, order) = call_json(
        &http,
        &api.address,
        Method::GET,
        None,
        "/v1/onboarding",
        None,
    )
    .await;
    let order: Vec<&str> = order["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .map(|v| v["video_id"].as_str().expect("an id"))
        .collect();
    assert_eq!(
        order,
        [&welcome[1], &welcome[0]],
        "the admin moved the first one down"
    );
    let (_, view) = call_json(
        &http,
        &api.address,
        Method::GET,
        Some(&admin),
        &format!("/v1/fleet/rollouts/{rollout}/events"),
        None,
    )
    .await;
    let kinds = view.to_string();
    for kind in ["started", "paused", "resumed"] {
        assert!(
            kinds.to_ascii_lowercase().contains(kind),
            "the log has the rollout {kind}: {kinds}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_tokens_are_minted_only_when_switched_on_and_never_for_services() {
    let env = TestEnv::new().await;
    let mut config = env.api_config();
    config.dev_tokens = true;
    let api = env.spawn_api_with(config).await;
    let http = reqwest::Client::new();
    let mint = |role: &str| {
        call_json(
            &http,
            &api.address,
            Method::POST,
            None,
            "/v1/dev/tokens",
            Some(json!({ "role": role })),
        )
    };
    let (status, minted) = mint("admin").await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let token = minted["token"].as_str().expect("a token");
    let (status, queue) = call_json(
        &http,
        &api.address,
        Method::GET,
        Some(token),
        "/v1/moderation",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the minted admin token works: {queue}"
    );
    let (status, user) = mint("user").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(
        user["user_id"], minted["user_id"],
        "each token is a new user"
    );
    let (status, refused) = mint("service").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, offered) = call_json(
        &http,
        &api.address,
        Method::GET,
        None,
        "/v1/dev/tokens",
        None,
    )
    .await;
    assert_eq!(
        (status, offered),
        (StatusCode::OK, json!({ "roles": ["user", "admin"] }))
    );

    // Another site's page may not ask (CORS is open by default).
    let cross_site = http
        .post(format!("{}/v1/dev/tokens", api.address))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);

    // Off by default: 404, and the console shows no buttons.
    let production = env.spawn_api().await;
    for method in [Method::GET, Method::POST] {
        let (status, _) = call_json(
            &http,
            &production.address,
            method,
            None,
            "/v1/dev/tokens",
            Some(json!({ "role": "admin" })),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_the_console_resumes_by_itself_after_the_connection_breaks() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    // The browser reaches the api through a proxy that cuts every
    // connection once 8 of the 48 MiB went through.
    let upstream: &'static str = Box::leak(api.address.trim_start_matches("http://").into());
    let mut proxy = Proxy::cutting_after(upstream, 8 * reelay_tests::MIB as u64).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = reelay_tests::random_bytes(48 * reelay_tests::MIB);
    let path = dir.path().join("long.mp4");
    std::fs::write(&path, &data).expect("write the file");
    let token = env.token(Uuid::new_v4());
    let plan = json!({
        "mode": "resume",
        "console": format!("http://127.0.0.1:{}/console/", proxy.port),
        "user_token": token,
        "clip": path,
        "screenshots": screenshots(),
    });
    let browser = browse(&plan).await;
    let cut = wait_until(Duration::from_secs(60), || async { proxy.tripped() }).await;
    assert!(cut, "the upload began");
    let http = reqwest::Client::new();
    let (_, page) = call_json(
        &http,
        &api.address,
        Method::GET,
        Some(&token),
        "/v1/videos",
        None,
    )
    .await;
    let received = page["videos"][0]["received_bytes"]
        .as_u64()
        .expect("the upload exists");
    assert!(
        received < data.len() as u64,
        "cut in the middle: {received} of {} bytes were in",
        data.len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore().await;

    let report = browser.report().await;
    assert_eq!(
        report["error"],
        Value::Null,
        "the upload went on: {report:#}"
    );
    let id = VideoId::parse(report["video_id"].as_str().expect("a video id")).expect("an id");
    env.wait_for_status(
        id,
        reelay_shared::VideoStatus::Uploaded,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        env.original_sha256(id).await,
        sha256_hex(&data),
        "byte for byte across the break"
    );
}

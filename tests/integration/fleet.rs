//! The fleet product end to end: firmware through tus into S3, hashed and
//! signed; devices registered and reporting in bulk; rollouts in waves
//! driven by the scheduler, sent by workers to a stand-in fleet backend
//! that plays the devices, and succeeding only when a device reports the
//! target version.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::STANDARD};
use reelay_api::auth::Role;
use reelay_tests::{
    TestApi, TestEnv, TestScheduler, TestWorker,
    client::{Tus, call_json},
    fleet_backend::{FleetBackend, Play},
    proxy::Proxy,
    random_bytes, sha256_hex, wait_until,
};
use reelay_worker::config::FleetBackend as BackendConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// An api, a worker and a scheduler that talk to a stand-in fleet backend.
struct Fleet {
    env: TestEnv,
    api: TestApi,
    backend: FleetBackend,
    _worker: TestWorker,
    _scheduler: Option<TestScheduler>,
    admin: String,
    service: String,
    http: reqwest::Client,
}

impl Fleet {
    /// Devices report `delay` after the backend took their update.
    async fn start(delay: Duration) -> Self {
        Self::start_with(delay, true).await
    }

    async fn start_with(delay: Duration, scheduler: bool) -> Self {
        let env = TestEnv::new().await;
        let api = env.spawn_api().await;
        let service = env.token_with_role(Uuid::new_v4(), Role::Service);
        let backend = FleetBackend::start(&api.address, service.clone(), delay).await;
        let mut config = env.worker_config();
        config.fleet.backend = Some(BackendConfig {
            url: backend.url.clone(),
            secret: backend.secret.clone(),
        });
        let worker = env.spawn_worker_with(config).await;
        let scheduler = match scheduler {
            true => Some(env.spawn_scheduler(env.scheduler_config()).await),
            false => None,
        };
        Self {
            admin: env.token_with_role(Uuid::new_v4(), Role::Admin),
            service,
            env,
            api,
            backend,
            _worker: worker,
            _scheduler: scheduler,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call_json(&self.http, &self.api.address, method, token, path, body).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, Some(token), path, Some(body))
            .await
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, Some(token), path, None)
            .await
    }

    /// Creates a firmware and uploads `data` as its file with the raw tus
    /// client; waits until it is available.
    async fn firmware(&self, hardware_type: &str, version: &str, num: i64, data: &[u8]) -> Value {
        let (status, created) = self
            .post(
                &self.admin,
                "/v1/fleet/firmware",
                json!({ "hardware_type": hardware_type, "version": version, "version_num": num }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().expect("an id").to_owned();
        let tus = Tus::new(&self.api.address, self.admin.clone());
        let metadata = created["upload"]["upload_metadata"]
            .as_str()
            .expect("metadata");
        let upload = tus.create_with_metadata(data.len() as u64, metadata).await;
        tus.upload_from(upload, data, 0, 1 << 20).await;
        self.available(&id).await
    }

    async fn available(&self, id: &str) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let became = wait_until(Duration::from_secs(30), || async {
            let (_, f) = self
                .get(&self.admin, &format!("/v1/fleet/firmware/{id}"))
                .await;
            let available = f["status"] == "available";
            *last.lock().unwrap() = f;
            available
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(became, "firmware {id} became available: {last}");
        last
    }

    /// Registers `count` devices `<prefix>-0000`… of `model`.
    async fn devices(&self, prefix: &str, count: usize, model: &str) -> Vec<String> {
        let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:04}")).collect();
        for chunk in ids.chunks(1000) {
            let devices: Vec<Value> = chunk
                .iter()
                .map(|d| json!({ "external_id": d, "model": model }))
                .collect();
            let (status, body) = self
                .post(
                    &self.service,
                    "/v1/fleet/devices",
                    json!({ "devices": devices }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        ids
    }

    /// Every device reports `component` at `version`.
    async fn report(&self, devices: &[String], component: &str, version: &str) {
        for chunk in devices.chunks(1000) {
            let reports: Vec<Value> = chunk
                .iter()
                .map(|d| json!({ "device": d, "component": component, "version": version }))
                .collect();
            let (status, body) = self
                .post(
                    &self.service,
                    "/v1/fleet/reports",
                    json!({ "reports": reports }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }

    /// Creates and starts a rollout; its id.
    async fn rollout(&self, body: Value) -> String {
        let (status, created) = self.post(&self.admin, "/v1/fleet/rollouts", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().expect("an id").to_owned();
        let (status, started) = self
            .post(
                &self.admin,
                &format!("/v1/fleet/rollouts/{id}/start"),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{started}");
        id
    }

    async fn view(&self, id: &str) -> Value {
        let (status, view) = self
            .get(&self.admin, &format!("/v1/fleet/rollouts/{id}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        view
    }

    /// Waits until the rollout is in `state`; its view then.
    async fn wait_state(&self, id: &str, state: &str, within: Duration) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let reached = wait_until(within, || async {
            let view = self.view(id).await;
            let there = view["state"] == state;
            *last.lock().unwrap() = view;
            there
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(reached, "rollout did not reach {state}: {last}");
        last
    }
}

fn count(view: &Value, state: &str) -> i64 {
    view["counts"][state].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_goes_through_tus_is_hashed_signed_and_downloads_with_ranges() {
    let fleet = Fleet::start_with(Duration::from_millis(10), false).await;
    let data = random_bytes(3 * 1024 * 1024 + 123);
    let (status, created) = fleet
        .post(
            &fleet.admin,
            "/v1/fleet/firmware",
            json!({ "hardware_type": "vega_mcu", "version": "2.4.1", "version_num": 241,
                    "comment": "brakes", "models": ["v1", "v2"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "pending");
    let id = created["id"].as_str().expect("id").to_owned();
    // The real tus client (tuspy) sends the file with the firmware flag.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("firmware.bin");
    std::fs::write(&path, &data).expect("write");
    let metadata = json!({ "firmware": id, "filename": "mcu-2.4.1.bin" }).to_string();
    let output = tokio::process::Command::new("python3")
        .arg(reelay_tests::tus_script())
        .arg(fleet.api.files_url())
        .arg(&fleet.admin)
        .arg(&path)
        .arg((512 * 1024).to_string())
        .arg(metadata)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "tuspy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let firmware = fleet.available(&id).await;
    assert_eq!(firmware["sha256"], sha256_hex(&data));
    assert_eq!(firmware["size_bytes"], data.len() as u64);
    // A firmware's file is not one of the admin's videos.
    let (_, videos) = fleet.get(&fleet.admin, "/v1/videos").await;
    assert_eq!(videos["videos"], json!([]), "{videos}");

    // The link serves exactly those bytes, and ranges of them.
    let (status, link) = fleet
        .get(&fleet.service, &format!("/v1/fleet/firmware/{id}/link"))
        .await;
    assert_eq!(status, StatusCode::OK, "{link}");
    let url = link["url"].as_str().expect("url");
    assert_eq!(reelay_tests::download_sha256(url).await, sha256_hex(&data));
    let part = fleet
        .http
        .get(url)
        .header("range", "bytes=1000000-1000999")
        .send()
        .await
        .expect("a range request");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.bytes().await.expect("bytes").as_ref(),
        &data[1_000_000..1_001_000]
    );

    // The manifest says what the file is, and an independent Ed25519
    // implementation (Python's cryptography) verifies its signature with
    // the served public key.
    let manifest = STANDARD
        .decode(firmware["manifest"].as_str().expect("manifest"))
        .expect("base64");
    let fields: Value = serde_json::from_slice(&manifest).expect("JSON");
    assert_eq!(
        fields,
        json!({ "hardware_type": "vega_mcu", "version": "2.4.1", "version_num": 241,
                "size": data.len(), "sha256": sha256_hex(&data) })
    );
    let (status, key) = fleet
        .call(reqwest::Method::GET, None, "/v1/fleet/signing-key", None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the public key needs no token: {key}"
    );
    assert_eq!(key["key_id"], firmware["key_id"]);
    let verify = |signature: &str| {
        let script = "import base64,sys\n\
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey\n\
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(sys.argv[1]))\n\
            key.verify(base64.b64decode(sys.argv[3]), base64.b64decode(sys.argv[2]))\n\
            print('ok')";
        std::process::Command::new("python3")
            .args(["-c", script])
            .arg(key["public_key"].as_str().expect("key"))
            .arg(firmware["manifest"].as_str().expect("manifest"))
            .arg(signature)
            .output()
            .expect("python3 runs")
    };
    let good = verify(firmware["signature"].as_str().expect("signature"));
    assert!(
        good.status.success(),
        "the signature verifies: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    let forged = STANDARD.encode([0u8; 64]);
    assert!(!verify(&forged).status.success(), "a forged one does not");

    // Available firmware is immutable: no second upload.
    let response = fleet
        .http
        .post(fleet.api.files_url())
        .bearer_auth(&fleet.admin)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 10)
        .header(
            "upload-metadata",
            format!("firmware {}", STANDARD.encode(&id)),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_2000_devices_in_three_waves_succeeds_within_its_rate_and_in_flight_limits() {
    let fleet = Fleet::start(Duration::from_millis(100)).await;
    let devices = fleet.devices("scooter", 2000, "v2").await;
    let old = fleet
        .firmware("vega_mcu", "1.0", 10, &random_bytes(2048))
        .await;
    fleet.report(&devices, "vega_mcu", "1.0").await;
    let new = fleet
        .firmware("vega_mcu", "2.0", 20, &random_bytes(4096))
        .await;
    let (_, before) = fleet.get(&fleet.service, "/v1/fleet/versions").await;
    assert_eq!(
        before["versions"],
        json!([{ "hardware_type": "vega_mcu", "version": "1.0", "version_num": 10,
                 "firmware_id": old["id"], "devices": 2000 }])
    );
    let started = Instant::now();
    let id = fleet
        .rollout(json!({
            "targets": [new["id"]],
            "filter": { "models": ["v2"], "version_below": 20 },
            "waves": [10, 40, 50],
            "max_in_flight": 150,
            "rate_per_sec": 400,
            "success_threshold": 0.95,
            "error_threshold": { "share": 0.05 },
            "device_timeout_secs": 60,
        }))
        .await;
    let done = fleet
        .wait_state(&id, "completed", Duration::from_secs(120))
        .await;
    let took = started.elapsed();
    assert_eq!(count(&done, "succeeded"), 2000, "{done}");
    let sizes: Vec<i64> = done["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| w["size"].as_i64().expect("size"))
        .collect();
    assert_eq!(sizes, [200, 800, 1000]);
    let (_, after) = fleet.get(&fleet.service, "/v1/fleet/versions").await;
    assert_eq!(
        after["versions"],
        json!([{ "hardware_type": "vega_mcu", "version": "2.0", "version_num": 20,
                 "firmware_id": new["id"], "devices": 2000 }])
    );
    let arrivals = fleet.backend.arrivals();
    assert_eq!(arrivals.len(), 2000, "one request per device");
    assert!(
        fleet.backend.max_per_second() <= 400,
        "the backend saw {} requests in one second",
        fleet.backend.max_per_second()
    );
    assert!(
        fleet.backend.max_in_flight() <= 150,
        "the backend held {} updates at once",
        fleet.backend.max_in_flight()
    );
    assert_eq!(fleet.backend.violations(), Vec::<String>::new());
    assert_eq!(
        fleet.backend.devices_with_several_keys(),
        Vec::<String>::new()
    );
    let a = &arrivals[0];
    assert_eq!(a.version, "2.0");
    assert_eq!(a.sha256, new["sha256"].as_str().expect("sha"));
    assert_eq!(a.signature, new["signature"].as_str().expect("signature"));
    assert_eq!(
        reelay_tests::download_sha256(&a.url).await,
        a.sha256,
        "the link works"
    );
    println!("2000 devices at 400/s took {took:?} (ideal 5 s)");

    // A device's history shows every step, in order.
    let (_, device) = fleet
        .get(&fleet.service, "/v1/fleet/devices/scooter-0042")
        .await;
    assert_eq!(device["components"][0]["version"], "2.0", "{device}");
    let (_, history) = fleet
        .get(&fleet.service, "/v1/fleet/devices/scooter-0042/events")
        .await;
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default())
        .collect();
    // The device reports 100 ms after the backend took the update; on a
    // busy machine its report can be recorded before the worker records
    // the backend's answer, and an update that succeeded is not
    // acknowledged after the fact: then the history has no acknowledgement.
    let expected: &[&str] = if kinds.contains(&"update_acknowledged") {
        &[
            "device_registered",
            "version_reported",
            "update_requested",
            "update_acknowledged",
            "version_reported",
            "update_succeeded",
        ]
    } else {
        &[
            "device_registered",
            "version_reported",
            "update_requested",
            "version_reported",
            "update_succeeded",
        ]
    };
    assert_eq!(kinds, expected);
    // The projections are the log's: a rebuild gives the same rows.
    let live = fleet.env.projections_snapshot().await;
    fleet.env.rebuild_projections().await;
    assert_eq!(fleet.env.projections_snapshot().await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_threshold_pauses_in_its_wave_resume_continues_and_cancel_stops_the_queue() {
    let fleet = Fleet::start(Duration::from_millis(50)).await;
    let devices = fleet.devices("dev", 100, "v1").await;
    // Devices 30–32 (in the second wave) refuse the update: exactly the
    // threshold, so the rollout pauses once and, the failures accepted by
    // the resume, goes on. (With more refusing than the threshold, those
    // not yet released when it paused would cross it again after resume.)
    for d in &devices[30..33] {
        fleet.backend.play(d, Play::Reject);
    }
    let firmware = fleet
        .firmware("vega_gsm", "7", 7, &random_bytes(1000))
        .await;
    let id = fleet
        .rollout(json!({
            "targets": [firmware["id"]],
            "devices": devices,
            "waves": [20, 80],
            "max_in_flight": 5,
            "rate_per_sec": 100,
            "error_threshold": { "count": 3 },
        }))
        .await;
    let paused = fleet
        .wait_state(&id, "paused", Duration::from_secs(60))
        .await;
    assert_eq!(
        paused["current_wave"], 1,
        "crossed in the second wave: {paused}"
    );
    assert!(
        paused["paused_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("error threshold"),
        "{paused}"
    );
    assert!(count(&paused, "failed") >= 3, "{paused}");
    assert_eq!(
        paused["waves"][0]["counts"]["succeeded"], 20,
        "the first wave was whole: {paused}"
    );
    // Paused: nothing new reaches the backend.
    let sent = fleet.backend.arrivals().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, still) = fleet
        .get(&fleet.admin, &format!("/v1/fleet/rollouts/{id}"))
        .await;
    let in_flight_then = count(&still, "requested") + count(&still, "acknowledged");
    assert!(
        fleet.backend.arrivals().len() <= sent + in_flight_then as usize,
        "a paused rollout releases nothing new"
    );
    // Resume continues (the failures so far are accepted)…
    let (status, resumed) = fleet
        .post(
            &fleet.admin,
            &format!("/v1/fleet/rollouts/{id}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    let more = wait_until(Duration::from_secs(30), || async {
        count(&fleet.view(&id).await, "succeeded") >= 50
    })
    .await;
    assert!(more, "the rollout goes on after resume");
    // …and cancel stops every queued update.
    let (status, cancelled) = fleet
        .post(
            &fleet.admin,
            &format!("/v1/fleet/rollouts/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(count(&cancelled, "queued"), 0, "{cancelled}");
    assert_eq!(count(&cancelled, "requested"), 0);
    assert!(count(&cancelled, "cancelled") > 0, "{cancelled}");
    let total: i64 = ["succeeded", "failed", "timed_out", "cancelled"]
        .iter()
        .map(|s| count(&cancelled, s))
        .sum();
    assert_eq!(total, 100, "every device is accounted for: {cancelled}");
    // A request already on its way when the cancel committed may still
    // arrive; it is withdrawn after it, and nothing else is sent.
    let arrived = fleet.backend.arrivals().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let late: Vec<_> = fleet.backend.arrivals()[arrived..].to_vec();
    assert!(late.len() <= 5, "more than were in flight: {late:?}");
    let withdrawn = wait_until(Duration::from_secs(10), || async {
        late.iter().all(|a| fleet.backend.withdrawn(a))
    })
    .await;
    assert!(
        withdrawn,
        "a request that arrived late is withdrawn: {late:?}"
    );
    let settled = fleet.backend.arrivals().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fleet.backend.arrivals().len(),
        settled,
        "nothing is sent after cancel"
    );
    let (status, _) = fleet
        .post(
            &fleet.admin,
            &format!("/v1/fleet/rollouts/{id}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a cancelled rollout stays cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_scheduler_leader_is_replaced_and_the_counts_end_exact() {
    let fleet = Fleet::start_with(Duration::from_millis(50), false).await;
    let config = fleet.env.scheduler_config();
    let mut first = fleet.env.spawn_scheduler_process("fleet-a", &config);
    let leading = wait_until(Duration::from_secs(20), || async {
        fleet
            .env
            .lease_holder()
            .await
            .is_some_and(|h| h.starts_with("fleet-a/"))
    })
    .await;
    assert!(leading, "the first scheduler leads");
    let _second = fleet.env.spawn_scheduler_process("fleet-b", &config);
    let devices = fleet.devices("kill", 400, "v2").await;
    let firmware = fleet
        .firmware("audio_lock", "b", 2, &random_bytes(500))
        .await;
    let id = fleet
        .rollout(json!({
            "targets": [firmware["id"]],
            "devices": devices,
            "waves": [50, 50],
            "max_in_flight": 40,
            "rate_per_sec": 100,
            "device_timeout_secs": 120,
        }))
        .await;
    let midway = wait_until(Duration::from_secs(30), || async {
        count(&fleet.view(&id).await, "succeeded") >= 100
    })
    .await;
    assert!(midway, "the rollout got going");
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    let done = fleet
        .wait_state(&id, "completed", Duration::from_secs(120))
        .await;
    assert!(
        fleet
            .env
            .lease_holder()
            .await
            .is_some_and(|h| h.starts_with("fleet-b/")),
        "the standby took over"
    );
    assert_eq!(count(&done, "succeeded"), 400, "{done}");
    assert_eq!(
        fleet.backend.arrivals().len(),
        400,
        "one request per device"
    );
    assert_eq!(
        fleet.backend.devices_with_several_keys(),
        Vec::<String>::new(),
        "no device got requests under two keys"
    );
    assert!(fleet.backend.max_in_flight() <= 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_jobs_a_dead_leader_could_not_publish_are_sent_by_the_next_once() {
    let fleet = Fleet::start_with(Duration::from_millis(20), false).await;
    let mut broker = Proxy::start("127.0.0.1:5672").await;
    let mut config = fleet.env.scheduler_config();
    config.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.port);
    let first = fleet.env.spawn_scheduler(config).await;
    let devices = fleet.devices("outbox", 30, "v2").await;
    let firmware = fleet
        .firmware("audio_lock", "c", 3, &random_bytes(300))
        .await;
    // The leader records its releases but can't publish them.
    broker.cut().await;
    let id = fleet
        .rollout(json!({
            "targets": [firmware["id"]],
            "devices": devices,
            "max_in_flight": 10,
            "rate_per_sec": 100,
            "device_timeout_secs": 600,
        }))
        .await;
    let released = wait_until(Duration::from_secs(20), || async {
        count(&fleet.view(&id).await, "requested") == 10
    })
    .await;
    assert!(released, "the leader released: {}", fleet.view(&id).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fleet.backend.arrivals().len(), 0, "nothing was published");
    // It dies; the next leader sends what it left, and the rest.
    drop(first);
    let _second = fleet
        .env
        .spawn_scheduler(fleet.env.scheduler_config())
        .await;
    let done = fleet
        .wait_state(&id, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(count(&done, "succeeded"), 30, "{done}");
    assert_eq!(
        count(&done, "timed_out"),
        0,
        "no device waited out a lost job"
    );
    assert_eq!(fleet.backend.arrivals().len(), 30, "one request per device");
    assert_eq!(
        fleet.backend.devices_with_several_keys(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_named_query_is_shown_like_any_other() {
    let fleet = Fleet::start_with(Duration::from_millis(20), false).await;
    let (status, body) = fleet
        .post(
            &fleet.service,
            "/v1/fleet/devices",
            json!({ "devices": [{ "external_id": "query", "model": "v2" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, device) = fleet.get(&fleet.service, "/v1/fleet/devices/query").await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(device["external_id"], "query");
    let (status, history) = fleet
        .get(&fleet.service, "/v1/fleet/devices/query/events")
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["external_id"], "query");
    // The bulk lookup on the same path still answers its POST.
    let (status, found) = fleet
        .post(
            &fleet.service,
            "/v1/fleet/devices/query",
            json!({ "external_ids": ["query"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["devices"][0]["model"], "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_times_out_and_is_retried_and_one_that_stays_silent_fails() {
    let fleet = Fleet::start(Duration::from_millis(20)).await;
    let devices = fleet.devices("quiet", 6, "iot").await;
    fleet.backend.play(&devices[1], Play::SilentOnce);
    fleet.backend.play(&devices[2], Play::Silent);
    let firmware = fleet.firmware("iot", "3.1", 31, &random_bytes(800)).await;
    let id = fleet
        .rollout(json!({
            "targets": [firmware["id"]],
            "devices": devices,
            "device_timeout_secs": 2,
            "retries": 1,
            "retry_backoff_secs": 1,
            "error_threshold": { "count": 5 },
        }))
        .await;
    let done = fleet
        .wait_state(&id, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(count(&done, "succeeded"), 5, "{done}");
    assert_eq!(count(&done, "timed_out"), 1, "{done}");
    let (_, once) = fleet
        .get(&fleet.service, &format!("/v1/fleet/devices/{}", devices[1]))
        .await;
    let attempts: Vec<&str> = once["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|u| u["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(attempts, ["timed_out", "succeeded"], "{once}");
    let (_, never) = fleet
        .get(&fleet.service, &format!("/v1/fleet/devices/{}", devices[2]))
        .await;
    assert_eq!(
        never["updates"].as_array().expect("updates").len(),
        2,
        "first try and one retry"
    );
    // The backend was told to drop what timed out: by a job a worker
    // runs, the last of them queued with the rollout's completion.
    let told = wait_until(Duration::from_secs(10), || async {
        fleet.backend.cancels().len() >= 3
    })
    .await;
    let cancelled = fleet.backend.cancels();
    assert!(told, "{cancelled:?}");
    assert_eq!(cancelled.len(), 3, "{cancelled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_firmware_pauses_its_rollout_and_a_downgrade_is_refused() {
    let fleet = Fleet::start(Duration::from_secs(2)).await;
    let devices = fleet.devices("w", 30, "v1").await;
    let v5 = fleet
        .firmware("audio_unlock", "5", 5, &random_bytes(100))
        .await;
    let v6 = fleet
        .firmware("audio_unlock", "6", 6, &random_bytes(100))
        .await;
    fleet.report(&devices[..1], "audio_unlock", "6").await;
    // Device w-0000 runs 6: taking it to 5 is a downgrade.
    let (status, refused) = fleet
        .post(
            &fleet.admin,
            "/v1/fleet/rollouts",
            json!({ "targets": [v5["id"]], "devices": devices }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("downgrade")
    );
    let (status, _) = fleet
        .post(
            &fleet.admin,
            "/v1/fleet/rollouts",
            json!({ "targets": [v5["id"]], "devices": devices, "allow_downgrade": true }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "unless the rollout allows it");

    let id = fleet
        .rollout(json!({ "targets": [v6["id"]], "devices": devices[1..], "max_in_flight": 3, "rate_per_sec": 5 }))
        .await;
    let (status, withdrawn) = fleet
        .post(
            &fleet.admin,
            &format!(
                "/v1/fleet/firmware/{}/withdraw",
                v6["id"].as_str().expect("id")
            ),
            json!({ "reason": "bricks the lock" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{withdrawn}");
    assert_eq!(withdrawn["status"], "withdrawn");
    let paused = fleet.view(&id).await;
    assert_eq!(paused["state"], "paused", "{paused}");
    let (status, _) = fleet
        .post(
            &fleet.admin,
            &format!("/v1/fleet/rollouts/{id}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "it can't resume with withdrawn firmware"
    );
    let (status, _) = fleet
        .post(
            &fleet.admin,
            "/v1/fleet/rollouts",
            json!({ "targets": [v6["id"]], "devices": devices }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "no new rollout may use it");
    let (status, _) = fleet
        .get(
            &fleet.service,
            &format!("/v1/fleet/firmware/{}/link", v6["id"].as_str().expect("id")),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_as_of_a_past_instant_come_from_the_log() {
    let fleet = Fleet::start_with(Duration::from_millis(10), false).await;
    let devices = fleet.devices("hist", 10, "v2").await;
    fleet.report(&devices, "vega_gsm", "a").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    fleet.report(&devices[..4], "vega_gsm", "b").await;
    let (_, now) = fleet.get(&fleet.service, "/v1/fleet/versions").await;
    assert_eq!(
        now["versions"],
        json!([
            { "hardware_type": "vega_gsm", "version": "a", "version_num": null, "firmware_id": null, "devices": 6 },
            { "hardware_type": "vega_gsm", "version": "b", "version_num": null, "firmware_id": null, "devices": 4 },
        ]),
        "unknown versions are recorded as such"
    );
    let at = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (status, then) = fleet
        .get(
            &fleet.service,
            &format!("/v1/fleet/versions?at={}", at.replace('+', "%2B")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(
        then["versions"],
        json!([{ "hardware_type": "vega_gsm", "version": "a", "version_num": null, "firmware_id": null, "devices": 10 }])
    );
    let (_, before_any) = fleet
        .get(&fleet.service, "/v1/fleet/versions?at=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(before_any["versions"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_register_during_a_filtered_rollout_join_its_last_wave() {
    let fleet = Fleet::start(Duration::from_millis(300)).await;
    let early = fleet.devices("early", 20, "cabinet").await;
    let firmware = fleet.firmware("iot", "9", 9, &random_bytes(100)).await;
    let id = fleet
        .rollout(json!({
            "targets": [firmware["id"]],
            "filter": { "models": ["cabinet"] },
            "waves": [50, 50],
            "max_in_flight": 2,
            "rate_per_sec": 20,
        }))
        .await;
    let late = fleet.devices("late", 5, "cabinet").await;
    let _others = fleet.devices("other", 3, "v1").await;
    let done = fleet
        .wait_state(&id, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(count(&done, "succeeded"), 25, "{done}");
    assert_eq!(
        done["waves"][1]["size"], 15,
        "the late ones joined the last wave: {done}"
    );
    let updated: Vec<String> = fleet
        .backend
        .arrivals()
        .into_iter()
        .map(|a| a.device)
        .collect();
    for d in early.iter().chain(&late) {
        assert!(updated.contains(d), "{d} was updated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fleet_endpoint_answers_each_role_as_documented() {
    let fleet = Fleet::start_with(Duration::from_millis(10), false).await;
    let user = fleet.env.token(Uuid::new_v4());
    fleet.devices("auth", 1, "v1").await;
    let firmware = fleet
        .firmware("audio_locate", "1", 1, &random_bytes(10))
        .await;
    let f = firmware["id"].as_str().expect("id").to_owned();
    let (_, rollout) = fleet
        .post(
            &fleet.admin,
            "/v1/fleet/rollouts",
            json!({ "targets": [f], "devices": ["auth-0000"] }),
        )
        .await;
    let r = rollout["id"].as_str().expect("id").to_owned();
    use reqwest::Method as M;
    // (method, path, body, who may: "admin", "service+admin", or "anyone")
    let endpoints: Vec<(M, String, Option<Value>, &str)> = vec![
        (
            M::GET,
            "/v1/fleet/hardware-types".into(),
            None,
            "service+admin",
        ),
        (
            M::POST,
            "/v1/fleet/hardware-types".into(),
            Some(json!({ "name": "x_new" })),
            "admin",
        ),
        (M::GET, "/v1/fleet/models".into(), None, "service+admin"),
        (
            M::POST,
            "/v1/fleet/models".into(),
            Some(json!({ "name": "m_new", "components": ["iot"] })),
            "admin",
        ),
        (M::GET, "/v1/fleet/signing-key".into(), None, "anyone"),
        (
            M::POST,
            "/v1/fleet/firmware".into(),
            Some(json!({ "hardware_type": "iot", "version": "z", "version_num": 1 })),
            "admin",
        ),
        (
            M::GET,
            "/v1/fleet/firmware?hardware_type=audio_locate".into(),
            None,
            "service+admin",
        ),
        (
            M::GET,
            format!("/v1/fleet/firmware/{f}"),
            None,
            "service+admin",
        ),
        (
            M::GET,
            format!("/v1/fleet/firmware/{f}/link"),
            None,
            "service+admin",
        ),
        (
            M::POST,
            "/v1/fleet/devices".into(),
            Some(json!({ "devices": [] })),
            "service+admin",
        ),
        (
            M::GET,
            "/v1/fleet/devices/auth-0000".into(),
            None,
            "service+admin",
        ),
        (
            M::GET,
            "/v1/fleet/devices/auth-0000/events".into(),
            None,
            "service+admin",
        ),
        (
            M::POST,
            "/v1/fleet/devices/query".into(),
            Some(json!({ "external_ids": ["auth-0000"] })),
            "service+admin",
        ),
        (
            M::POST,
            "/v1/fleet/reports".into(),
            Some(
                json!({ "reports": [{ "device": "auth-0000", "component": "vega_mcu", "version": "q" }] }),
            ),
            "service+admin",
        ),
        (M::GET, "/v1/fleet/versions".into(), None, "service+admin"),
        (M::GET, "/v1/fleet/rollouts".into(), None, "admin"),
        (
            M::POST,
            "/v1/fleet/rollouts".into(),
            Some(json!({ "targets": [f], "devices": ["auth-0000"] })),
            "admin",
        ),
        (M::GET, format!("/v1/fleet/rollouts/{r}"), None, "admin"),
        (
            M::GET,
            format!("/v1/fleet/rollouts/{r}/events"),
            None,
            "admin",
        ),
        (
            M::POST,
            format!("/v1/fleet/rollouts/{r}/pause"),
            Some(json!({})),
            "admin",
        ),
        (
            M::POST,
            format!("/v1/fleet/rollouts/{r}/resume"),
            Some(json!({})),
            "admin",
        ),
        (
            M::POST,
            format!("/v1/fleet/rollouts/{r}/approve"),
            Some(json!({})),
            "admin",
        ),
        (
            M::POST,
            format!("/v1/fleet/rollouts/{r}/start"),
            Some(json!({})),
            "admin",
        ),
        (
            M::POST,
            format!("/v1/fleet/rollouts/{r}/cancel"),
            Some(json!({})),
            "admin",
        ),
        (
            M::POST,
            format!("/v1/fleet/firmware/{f}/withdraw"),
            Some(json!({})),
            "admin",
        ),
    ];
    for (method, path, body, who) in endpoints {
        for (role, token) in [
            ("anonymous", None),
            ("user", Some(user.as_str())),
            ("service", Some(fleet.service.as_str())),
            ("admin", Some(fleet.admin.as_str())),
        ] {
            let (status, answer) = fleet.call(method.clone(), token, &path, body.clone()).await;
            let allowed = match who {
                "anyone" => true,
                "service+admin" => matches!(role, "service" | "admin"),
                _ => role == "admin",
            };
            let expected_refusal = match role {
                "anonymous" => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            if allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && !status.is_server_error(),
                    "{role} {method} {path}: {status} {answer}"
                );
            } else {
                assert_eq!(status, expected_refusal, "{role} {method} {path}: {answer}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fleet_input_is_refused_and_changes_nothing() {
    let fleet = Fleet::start_with(Duration::from_millis(10), false).await;
    let devices = fleet.devices("bad", 2, "v1").await;
    fleet.firmware("vega_mcu", "3", 3, &random_bytes(10)).await;
    let events_before: (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(fleet.env.store.pool())
        .await
        .expect("count");
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "/v1/fleet/firmware",
            json!({ "hardware_type": "toaster", "version": "1", "version_num": 9 }),
            StatusCode::NOT_FOUND,
            "unknown hardware type",
        ),
        (
            "/v1/fleet/firmware",
            json!({ "hardware_type": "vega_mcu", "version": "4", "version_num": 3 }),
            StatusCode::CONFLICT,
            "version_num",
        ),
        (
            "/v1/fleet/firmware",
            json!({ "hardware_type": "vega_mcu", "version": "4", "version_num": 2 }),
            StatusCode::CONFLICT,
            "version_num",
        ),
        (
            "/v1/fleet/firmware",
            json!({ "hardware_type": "vega_mcu", "version": "3", "version_num": 30 }),
            StatusCode::CONFLICT,
            "version '3'",
        ),
        (
            "/v1/fleet/firmware",
            json!({ "hardware_type": "vega_mcu", "version": "4", "version_num": 4, "models": ["cabinet"] }),
            StatusCode::CONFLICT,
            "no vega_mcu",
        ),
        (
            "/v1/fleet/firmware",
            json!({ "hardware_type": "vega_mcu", "version_num": 4 }),
            StatusCode::BAD_REQUEST,
            "version",
        ),
        (
            "/v1/fleet/devices",
            json!({ "devices": (0..1001).map(|i| json!({ "external_id": format!("x{i}"), "model": "v1" })).collect::<Vec<_>>() }),
            StatusCode::BAD_REQUEST,
            "at most 1000",
        ),
        (
            "/v1/fleet/devices",
            json!({ "devices": [{ "external_id": "ok", "model": "v1" }, { "external_id": "x", "model": "v9" }] }),
            StatusCode::NOT_FOUND,
            "unknown model",
        ),
        (
            "/v1/fleet/reports",
            json!({ "reports": (0..1001).map(|_| json!({ "device": "bad-0000", "component": "vega_mcu", "version": "1" })).collect::<Vec<_>>() }),
            StatusCode::BAD_REQUEST,
            "1000",
        ),
        (
            "/v1/fleet/reports",
            json!({ "reports": [{ "device": "bad-0000", "component": "vega_mcu", "version": "1" }, { "device": "ghost", "component": "vega_mcu", "version": "1" }] }),
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            "/v1/fleet/reports",
            json!({ "reports": [{ "device": "bad-0000", "component": "iot", "version": "1" }] }),
            StatusCode::CONFLICT,
            "no component",
        ),
        (
            "/v1/fleet/devices/query",
            json!({ "external_ids": (0..1001).map(|i| format!("q{i}")).collect::<Vec<_>>() }),
            StatusCode::BAD_REQUEST,
            "1000",
        ),
        (
            "/v1/fleet/rollouts",
            json!({ "targets": [Uuid::new_v4()], "devices": devices }),
            StatusCode::NOT_FOUND,
            "unknown firmware",
        ),
        (
            "/v1/fleet/rollouts",
            json!({ "targets": ["nope"], "devices": devices }),
            StatusCode::BAD_REQUEST,
            "not a firmware id",
        ),
        (
            "/v1/fleet/rollouts",
            json!({ "targets": [], "devices": devices }),
            StatusCode::BAD_REQUEST,
            "targets",
        ),
        (
            "/v1/fleet/rollouts",
            json!({ "targets": [Uuid::new_v4()], "filter": { "models": "v1" } }),
            StatusCode::BAD_REQUEST,
            "filter",
        ),
        (
            "/v1/fleet/rollouts",
            json!({ "targets": [Uuid::new_v4()], "filter": { "colour": "red" } }),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            "/v1/fleet/rollouts",
            json!({ "targets": [Uuid::new_v4()], "devices": ["ghost"] }),
            StatusCode::NOT_FOUND,
            "firmware",
        ),
        (
            "/v1/fleet/rollouts",
            json!({ "targets": [Uuid::new_v4()] }),
            StatusCode::NOT_FOUND,
            "firmware",
        ),
    ];
    for (path, body, status, says) in cases {
        let (got, answer) = fleet.post(&fleet.admin, path, body).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert!(
            answer["detail"].as_str().unwrap_or_default().contains(says),
            "{path}: the detail names the problem ({says}): {answer}"
        );
    }
    // Waves that don't add up, given a real firmware.
    let (_, page) = fleet
        .get(&fleet.admin, "/v1/fleet/firmware?hardware_type=vega_mcu")
        .await;
    let f = page["firmware"][0]["id"].clone();
    for (body, status, says) in [
        (
            json!({ "targets": [f], "devices": devices, "waves": [50, 40] }),
            StatusCode::BAD_REQUEST,
            "add up to 100",
        ),
        (
            // u32 waves that wrap around to 100 do not add up either.
            json!({ "targets": [f], "devices": devices, "waves": [4294967295u32, 101] }),
            StatusCode::BAD_REQUEST,
            "add up to 100",
        ),
        (
            json!({ "targets": [f], "devices": devices, "rate_per_sec": 0 }),
            StatusCode::BAD_REQUEST,
            "rate_per_sec",
        ),
        (
            json!({ "targets": [f], "devices": devices, "error_threshold": { "share": 2.0 } }),
            StatusCode::BAD_REQUEST,
            "error_threshold",
        ),
        (
            json!({ "targets": [f], "devices": ["ghost"] }),
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            json!({ "targets": [f], "devices": devices, "filter": {} }),
            StatusCode::BAD_REQUEST,
            "either",
        ),
    ] {
        let (got, answer) = fleet.post(&fleet.admin, "/v1/fleet/rollouts", body).await;
        assert_eq!(got, status, "{answer}");
        assert!(
            answer["detail"].as_str().unwrap_or_default().contains(says),
            "{answer}"
        );
    }
    let events_after: (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(fleet.env.store.pool())
        .await
        .expect("count");
    assert_eq!(
        events_after, events_before,
        "no refused request recorded anything"
    );
    let (_, versions) = fleet.get(&fleet.service, "/v1/fleet/versions").await;
    assert_eq!(versions["versions"], json!([]), "no report was recorded");
}

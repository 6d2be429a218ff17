//! Devices and push notifications: one push per device when a video is
//! done, through FCM v1, APNs and a webhook (local receivers that check what
//! the real ones check), retried on errors, at least once with a stable
//! idempotency key even across a scheduler failover.

use std::{collections::HashMap, time::Duration};

use reelay_api::auth::{Role, issue_with_role};
use reelay_scheduler::config::SchedulerConfig;
use reelay_shared::{VideoId, VideoStatus};
use reelay_tests::{
    TestEnv,
    client::Tus,
    push::{Answer, PushReceivers},
    random_bytes, wait_until,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const APNS_TOKEN: &str = "6a1f2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

struct Devices {
    api: String,
    token: String,
}

impl Devices {
    async fn register(&self, platform: &str, device: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/devices", self.api))
            .bearer_auth(&self.token)
            .json(&json!({ "platform": platform, "token": device }))
            .send()
            .await
            .expect("POST /v1/devices");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn list(&self) -> Vec<String> {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/v1/devices", self.api))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET /v1/devices")
            .json()
            .await
            .expect("JSON");
        body["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["token"].as_str().expect("token").to_owned())
            .collect()
    }
}

/// What every push test runs: receivers, an api and a worker; a user with
/// `devices` registered.
struct Stage {
    receivers: PushReceivers,
    dir: tempfile::TempDir,
    api: reelay_tests::TestApi,
    worker: reelay_tests::TestWorker,
    owner: Devices,
}

impl Stage {
    async fn start(env: &TestEnv, devices: &[(&str, &str)]) -> Self {
        let receivers = PushReceivers::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let api = env.spawn_api().await;
        let worker = env.spawn_worker().await;
        let owner = Devices {
            api: api.address.clone(),
            token: env.token(Uuid::new_v4()),
        };
        for (platform, token) in devices {
            assert_eq!(owner.register(platform, token).await.0, StatusCode::CREATED);
        }
        Self {
            receivers,
            dir,
            api,
            worker,
            owner,
        }
    }

    fn scheduler_config(&self, env: &TestEnv) -> SchedulerConfig {
        pushing(env, &self.receivers, self.dir.path())
    }

    /// Uploads a small video of the owner's until it is UPLOADED.
    async fn upload(&self, env: &TestEnv) -> VideoId {
        upload(env, &self.api.address, &self.owner.token).await
    }
}

/// A scheduler that pushes through the receivers.
fn pushing(env: &TestEnv, receivers: &PushReceivers, dir: &std::path::Path) -> SchedulerConfig {
    let mut config = env.scheduler_config();
    env.point_push_at(&mut config, receivers, dir);
    config
}

async fn upload(env: &TestEnv, api: &str, token: &str) -> VideoId {
    let tus = Tus::new(api, token.to_owned());
    let data = random_bytes(100_000);
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data, 0, data.len()).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(30))
        .await;
    id
}

/// `(status, attempts)` of every notification, by device token.
async fn notifications(env: &TestEnv) -> HashMap<String, (String, i32)> {
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT d.token, n.status::text, n.attempts FROM notifications n JOIN devices d ON d.id = n.device_id",
    )
    .fetch_all(env.store.pool())
    .await
    .expect("notifications");
    rows.into_iter().map(|(t, s, a)| (t, (s, a))).collect()
}

async fn all_settled(env: &TestEnv) -> bool {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT status::text FROM notifications")
        .fetch_all(env.store.pool())
        .await
        .expect("notifications");
    !rows.is_empty() && rows.iter().all(|(s,)| s != "pending")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_registered_checked_listed_and_removed_per_user() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let alice = Devices {
        api: api.address.clone(),
        token: env.token(Uuid::new_v4()),
    };
    let bob = Devices {
        api: api.address.clone(),
        token: env.token(Uuid::new_v4()),
    };

    let (status, device) = alice.register("apns", APNS_TOKEN).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(device["platform"], "apns");
    assert_eq!(
        alice.register("apns", APNS_TOKEN).await.0,
        StatusCode::OK,
        "again: the same device"
    );
    assert_eq!(
        alice.register("fcm", "fcm-token:1").await.0,
        StatusCode::CREATED
    );
    for (platform, token, why) in [
        ("apns", "not-hex", "an APNs token is hex"),
        ("sms", "x", "an unknown platform"),
        ("fcm", "", "an empty token"),
        ("fcm", "two words", "a token with a space"),
    ] {
        let (status, body) = alice.register(platform, token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
        assert!(body["detail"].is_string(), "{why}: a problem body");
    }
    assert_eq!(
        alice.list().await,
        vec![APNS_TOKEN.to_owned(), "fcm-token:1".to_owned()]
    );

    let anonymous = reqwest::Client::new()
        .post(format!("{}/v1/devices", api.address))
        .json(&json!({ "platform": "fcm", "token": "x" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let service = Devices {
        api: api.address.clone(),
        token: issue_with_role(&env.jwt_secret, Uuid::new_v4(), Role::Service, 600).expect("token"),
    };
    assert_eq!(service.register("fcm", "x").await.0, StatusCode::FORBIDDEN);

    let id = device["id"].as_str().expect("id");
    let remove = |who: &Devices| {
        reqwest::Client::new()
            .delete(format!("{}/v1/devices/{id}", api.address))
            .bearer_auth(who.token.clone())
            .send()
    };
    assert_eq!(
        remove(&bob).await.expect("DELETE").status(),
        StatusCode::NOT_FOUND,
        "not bob's"
    );
    assert_eq!(alice.list().await.len(), 2, "bob removed nothing");
    assert_eq!(
        remove(&alice).await.expect("DELETE").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        remove(&alice).await.expect("DELETE").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(alice.list().await, vec!["fcm-token:1".to_owned()]);

    // The phone changes hands: its token is bob's now, not alice's.
    assert_eq!(
        bob.register("fcm", "fcm-token:1").await.0,
        StatusCode::CREATED
    );
    assert_eq!(alice.list().await, Vec::<String>::new());
    assert_eq!(bob.list().await, vec!["fcm-token:1".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_upload_pushes_once_to_each_device_of_its_owner() {
    let env = TestEnv::new().await;
    let stage = Stage::start(
        &env,
        &[
            ("fcm", "fcm-owner"),
            ("apns", APNS_TOKEN),
            ("webhook", "hook-owner"),
        ],
    )
    .await;
    let (receivers, api) = (&stage.receivers, &stage.api);
    let _scheduler = env.spawn_scheduler(stage.scheduler_config(&env)).await;
    let stranger = Devices {
        api: api.address.clone(),
        token: env.token(Uuid::new_v4()),
    };
    assert_eq!(
        stranger.register("fcm", "fcm-stranger").await.0,
        StatusCode::CREATED
    );

    let id = stage.upload(&env).await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            all_settled(&env).await
        })
        .await,
        "every notification was sent: {:?}",
        notifications(&env).await
    );
    assert_eq!(receivers.violations(), Vec::<String>::new());
    let mut received = receivers.received();
    received.sort_by(|a, b| a.platform.cmp(b.platform));
    let summary: Vec<(&str, &str, &str, &str, &str)> = received
        .iter()
        .map(|r| {
            (
                r.platform,
                r.token.as_str(),
                r.video_id.as_str(),
                r.state.as_str(),
                r.message_key.as_str(),
            )
        })
        .collect();
    let video = id.to_string();
    assert_eq!(
        summary,
        vec![
            (
                "apns",
                APNS_TOKEN,
                video.as_str(),
                "UPLOADED",
                "video_uploaded"
            ),
            (
                "fcm",
                "fcm-owner",
                video.as_str(),
                "UPLOADED",
                "video_uploaded"
            ),
            (
                "webhook",
                "hook-owner",
                video.as_str(),
                "UPLOADED",
                "video_uploaded"
            ),
        ],
        "exactly one push per device of the owner, none to anyone else"
    );
    let keys: Vec<(String,)> = sqlx::query_as("SELECT id::text FROM notifications ORDER BY id")
        .fetch_all(env.store.pool())
        .await
        .expect("ids");
    let mut sent_keys: Vec<String> = received.iter().map(|r| r.idempotency_key.clone()).collect();
    sent_keys.sort();
    assert_eq!(
        sent_keys,
        keys.into_iter().map(|(k,)| k).collect::<Vec<_>>(),
        "each carries its row's key"
    );
    stage.worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_retried_and_an_unregistered_token_removes_its_device() {
    let env = TestEnv::new().await;
    let stage = Stage::start(
        &env,
        &[
            ("fcm", "fcm-flaky"),
            ("fcm", "fcm-uninstalled"),
            ("apns", APNS_TOKEN),
            ("webhook", "hook-gone"),
        ],
    )
    .await;
    let (receivers, devices) = (&stage.receivers, &stage.owner);
    let _scheduler = env.spawn_scheduler(stage.scheduler_config(&env)).await;
    receivers.script("fcm-flaky", &[Answer::ServerError, Answer::ServerError]);
    receivers.script("fcm-uninstalled", &[Answer::Unregistered]);
    receivers.script(APNS_TOKEN, &[Answer::Unregistered]);
    receivers.script("hook-gone", &[Answer::Unregistered]);

    stage.upload(&env).await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            devices.list().await == vec!["fcm-flaky".to_owned()] && all_settled(&env).await
        })
        .await,
        "the flaky device got its push and the others were removed: {:?}",
        notifications(&env).await
    );
    assert_eq!(receivers.violations(), Vec::<String>::new());
    let attempts: Vec<(u16, String)> = receivers
        .received()
        .into_iter()
        .filter(|r| r.token == "fcm-flaky")
        .map(|r| (r.answered, r.idempotency_key))
        .collect();
    let answers: Vec<u16> = attempts.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        answers,
        vec![500, 500, 200],
        "retried until it went through"
    );
    assert!(
        attempts.iter().all(|(_, k)| *k == attempts[0].1),
        "every retry with the same key"
    );
    assert_eq!(
        notifications(&env).await,
        HashMap::from([("fcm-flaky".to_owned(), ("sent".to_owned(), 3))]),
        "the removed devices' notifications went with them"
    );
    stage.worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_mid_dispatch_sends_no_duplicate_under_another_key() {
    let env = TestEnv::new().await;
    let stage = Stage::start(
        &env,
        &[
            ("webhook", "hook-1"),
            ("webhook", "hook-2"),
            ("fcm", "fcm-1"),
        ],
    )
    .await;
    let receivers = &stage.receivers;
    let mut config = stage.scheduler_config(&env);
    // Room for a push to be held (2 s) inside one attempt's limit.
    config.lease_ttl = Duration::from_secs(6);
    config.push.timeout = Duration::from_millis(2500);
    let mut first = env.spawn_scheduler_process("push-a", &config);
    let leading = wait_until(Duration::from_secs(30), || async {
        env.lease_holder()
            .await
            .is_some_and(|h| h.starts_with("push-a/"))
    })
    .await;
    assert!(leading, "the first scheduler leads");
    let mut second = env.spawn_scheduler_process("push-b", &config);

    // The receiver sits on the first push: the leader dies while it waits.
    receivers.script("hook-1", &[Answer::Hold(Duration::from_secs(2))]);
    stage.upload(&env).await;
    let in_flight = wait_until(Duration::from_secs(30), || async {
        receivers.arrived("hook-1") > 0
    })
    .await;
    assert!(in_flight, "the push is in flight");
    first.start_kill().expect("SIGKILL the leader");
    first.wait().await.expect("gone");

    assert!(
        wait_until(Duration::from_secs(30), || async {
            all_settled(&env).await
        })
        .await,
        "the new leader finished the job: {:?}",
        notifications(&env).await
    );
    assert!(
        env.lease_holder()
            .await
            .is_some_and(|h| h.starts_with("push-b/"))
    );
    second.start_kill().expect("stop");
    assert_eq!(receivers.violations(), Vec::<String>::new());

    let mut keys_by_device: HashMap<String, Vec<String>> = HashMap::new();
    for r in receivers.arrivals() {
        keys_by_device
            .entry(r.token)
            .or_default()
            .push(r.idempotency_key);
    }
    assert_eq!(keys_by_device.len(), 3, "every device got its push");
    for (device, keys) in &keys_by_device {
        assert!(
            keys.iter().all(|k| k == &keys[0]),
            "{device} got pushes under different keys: {keys:?}"
        );
    }
    assert_eq!(
        keys_by_device["hook-1"].len(),
        2,
        "the interrupted push was sent again, same key"
    );
    stage.worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_appended_with_the_creation_still_notify_the_owner() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let owner = Uuid::new_v4();
    let devices = Devices {
        api: api.address.clone(),
        token: env.token(owner),
    };
    assert_eq!(
        devices.register("webhook", "one-append").await.0,
        StatusCode::CREATED
    );
    // Created, Uploaded, …, Ready in one append.
    let video = env.ready_video(owner, 1000).await;
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT state::text FROM notifications WHERE video_id = $1 ORDER BY event_seq",
    )
    .bind(video)
    .fetch_all(env.store.pool())
    .await
    .expect("notifications");
    assert_eq!(states, ["UPLOADED", "READY"]);
}

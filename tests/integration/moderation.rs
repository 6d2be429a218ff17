//! Moderation end to end against a local moderation service that checks
//! signatures: verified, rejected, decided later by callback, by an admin,
//! and the webhook down.

use std::time::Duration;

use reelay_api::auth::{Role, issue_with_role};
use reelay_shared::{VideoId, VideoStatus, signing, video::Verification};
use reelay_tests::{
    TestEnv,
    client::Tus,
    random_bytes, sha256_hex, wait_until,
    webhook::{Answer, ModerationService},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// Fields drop in order: the api and worker stop before the environment
/// (its database, queues, keys) is removed, so nothing re-declares a queue.
struct Setup {
    api: reelay_tests::TestApi,
    _worker: reelay_tests::TestWorker,
    moderation: ModerationService,
    tus: Tus,
    secret: String,
    env: TestEnv,
}

async fn setup(answer: Answer) -> Setup {
    let env = TestEnv::new().await;
    let secret = env
        .api_config()
        .moderation_secret
        .expect("the harness sets a secret");
    let moderation = ModerationService::start(&secret, answer).await;
    let api = env.spawn_api().await;
    let mut config = env.worker_config();
    config.moderation = Some(reelay_worker::config::ModerationConfig {
        webhook_url: moderation.url.clone(),
        secret: secret.clone(),
        retries: 2,
        retry_base: Duration::from_millis(50),
        link_ttl: Duration::from_secs(600),
    });
    let worker = env.spawn_worker_with(config).await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    Setup {
        env,
        api,
        _worker: worker,
        moderation,
        tus,
        secret,
    }
}

async fn upload(s: &Setup) -> (VideoId, Vec<u8>) {
    let data = random_bytes(4000);
    let id = s.tus.create(data.len() as u64).await;
    s.tus.upload_from(id, &data, 0, data.len()).await;
    s.env
        .wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    (id, data)
}

async fn wait_for_verification(s: &Setup, id: VideoId, expected: Verification) {
    let reached = wait_until(Duration::from_secs(20), || async {
        s.env.video(id).await.verification == expected
    })
    .await;
    assert!(
        reached,
        "expected {expected:?}, got {:?}",
        s.env.video(id).await.verification
    );
}

/// The service's batch link for the owner of `tus` (who made `id` their profile video).
async fn service_link(s: &Setup, user: Uuid) -> Value {
    let service =
        issue_with_role(&s.env.jwt_secret, Uuid::new_v4(), Role::Service, 60).expect("token");
    let body: Value = reqwest::Client::new()
        .post(format!("{}/v1/links", s.api.address))
        .bearer_auth(service)
        .json(&json!({ "user_ids": [user] }))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    body["links"][0]["url"].clone()
}

async fn make_profile(s: &Setup, id: VideoId) {
    let response = s
        .tus
        .raw()
        .put(format!("{}/v1/profile/video", s.api.address))
        .bearer_auth(&s.tus.token)
        .json(&json!({ "video_id": id }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::OK);
}

fn user_of(token: &str, secret: &str) -> Uuid {
    let claims = reelay_api::auth::Verifier::new(secret, None, std::time::Duration::ZERO)
        .expect("verifier")
        .verify(token)
        .expect("claims");
    claims.sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_the_webhook_verifies_is_verified_and_its_link_works() {
    let s = setup(Answer::Decide("verified", None)).await;
    let (id, data) = upload(&s).await;
    wait_for_verification(&s, id, Verification::Verified).await;

    let received = s.moderation.received();
    assert_eq!(received.len(), 1, "one signed request per video");
    assert_eq!(received[0].video_id, id.to_string());
    assert_eq!(s.moderation.forged(), 0);
    assert_eq!(
        reelay_tests::download_sha256(&received[0].url).await,
        sha256_hex(&data),
        "the webhook's link downloads the video"
    );

    make_profile(&s, id).await;
    assert!(
        service_link(&s, user_of(&s.tus.token, &s.env.jwt_secret))
            .await
            .is_string()
    );
    let history = s.env.store.events(id).await.expect("history");
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
    let at = |kind: &str| kinds.iter().position(|k| *k == kind);
    assert!(
        matches!((at("uploaded"), at("review_requested"), at("moderated")), (Some(u), Some(r), Some(m)) if u < r && r < m),
        "uploaded, then sent for review, then decided: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_video_links_only_for_its_owner_and_admins() {
    let s = setup(Answer::Decide("rejected", Some("not allowed"))).await;
    let (id, _) = upload(&s).await;
    wait_for_verification(&s, id, Verification::Rejected).await;
    assert_eq!(
        s.env.video(id).await.verification_reason.as_deref(),
        Some("not allowed")
    );

    make_profile(&s, id).await;
    assert_eq!(
        service_link(&s, user_of(&s.tus.token, &s.env.jwt_secret)).await,
        Value::Null,
        "no link for the service"
    );
    let owner = s
        .tus
        .get(&format!("/v1/videos/{id}/link"))
        .send()
        .await
        .expect("GET");
    assert_eq!(owner.status(), StatusCode::OK, "the owner still gets one");
    let admin = issue_with_role(&s.env.jwt_secret, Uuid::new_v4(), Role::Admin, 60).expect("token");
    let by_admin = reqwest::Client::new()
        .get(format!("{}/v1/videos/{id}/link", s.api.address))
        .bearer_auth(admin)
        .send()
        .await
        .expect("GET");
    assert_eq!(by_admin.status(), StatusCode::OK, "an admin gets one");
    let stranger = Tus::new(&s.api.address, s.env.token(Uuid::new_v4()));
    assert_eq!(
        stranger
            .get(&format!("/v1/videos/{id}/link"))
            .send()
            .await
            .expect("GET")
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_comes_later_by_signed_callback_or_from_an_admin_is_recorded() {
    let s = setup(Answer::Later).await;
    let (id, _) = upload(&s).await;
    wait_for_verification(&s, id, Verification::PendingReview).await;
    // The worker records the review as requested before it sends it: the
    // webhook may not have the request yet when pending_review is visible.
    let sent = wait_until(Duration::from_secs(20), || async {
        !s.moderation.received().is_empty()
    })
    .await;
    assert!(sent, "the webhook is asked");
    assert_eq!(s.moderation.received().len(), 1, "asked once");

    let callback = |body: Value, signature: Option<String>| {
        let bytes = serde_json::to_vec(&body).expect("JSON");
        let signature = signature.unwrap_or_else(|| signing::sign(&s.secret, &bytes));
        reqwest::Client::new()
            .post(format!("{}/v1/moderation/{id}", s.api.address))
            .header(signing::SIGNATURE_HEADER, signature)
            .body(bytes)
            .send()
    };
    let forged = callback(
        json!({"decision": "verified"}),
        Some(signing::sign("wrong secret", b"{}")),
    )
    .await
    .expect("POST");
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let unsigned = reqwest::Client::new()
        .post(format!("{}/v1/moderation/{id}", s.api.address))
        .body(r#"{"decision":"verified"}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let nonsense = callback(json!({"decision": "maybe"}), None)
        .await
        .expect("POST");
    assert_eq!(nonsense.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        s.env.video(id).await.verification,
        Verification::PendingReview,
        "refused callbacks change nothing"
    );

    let accepted = callback(json!({"decision": "verified"}), None)
        .await
        .expect("POST");
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(s.env.video(id).await.verification, Verification::Verified);

    // An admin can overrule; a user can't.
    let decide = |token: String| {
        reqwest::Client::new()
            .post(format!("{}/v1/videos/{id}/moderation", s.api.address))
            .bearer_auth(token)
            .json(&json!({"decision": "rejected", "reason": "reported"}))
            .send()
    };
    assert_eq!(
        decide(s.tus.token.clone()).await.expect("POST").status(),
        StatusCode::FORBIDDEN
    );
    let admin = issue_with_role(&s.env.jwt_secret, Uuid::new_v4(), Role::Admin, 60).expect("token");
    assert_eq!(decide(admin).await.expect("POST").status(), StatusCode::OK);
    let video = s.env.video(id).await;
    assert_eq!(
        (video.verification, video.verification_reason.as_deref()),
        (Verification::Rejected, Some("reported"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_webhook_is_down_the_request_is_retried_and_the_video_stays_pending() {
    let s = setup(Answer::Down).await;
    let (id, _) = upload(&s).await;
    let dead = wait_until(Duration::from_secs(20), || async {
        s.env
            .queue_depth(&s.env.topology.verify_dead_letter_queue())
            .await
            >= 1
    })
    .await;
    assert!(dead, "after its retries the verify job is dead-lettered");
    assert_eq!(
        s.moderation.attempts(),
        3,
        "the first try and 2 retries with backoff"
    );
    assert_eq!(s.moderation.forged(), 0, "every try was signed");
    assert_eq!(
        s.env.video(id).await.verification,
        Verification::PendingReview
    );
    assert_eq!(
        s.env.video(id).await.status,
        VideoStatus::Uploaded,
        "the upload itself is unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_lists_whole_undecided_videos_of_every_user_oldest_first_in_pages() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let admin = issue_with_role(&env.jwt_secret, Uuid::new_v4(), Role::Admin, 60).expect("token");
    let http = reqwest::Client::new();
    let queue = |query: String| {
        let request = http
            .get(format!("{}/v1/moderation{query}", api.address))
            .bearer_auth(&admin);
        async move {
            let response = request.send().await.expect("GET");
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.expect("JSON")
        }
    };
    // Three users' whole videos, one still uploading, one decided.
    let mut whole = Vec::new();
    for _ in 0..3 {
        let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
        let data = random_bytes(1000);
        let id = tus.create(data.len() as u64).await;
        tus.upload_from(id, &data, 0, data.len()).await;
        env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
            .await;
        whole.push(id.to_string());
    }
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let _uploading = tus.create(100).await;
    let decided = http
        .post(format!("{}/v1/videos/{}/moderation", api.address, whole[1]))
        .bearer_auth(&admin)
        .json(&json!({"decision": "verified"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(decided.status(), StatusCode::OK);

    let first = queue("?limit=1".into()).await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = queue(format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(second["next_cursor"], Value::Null, "{second}");
    let ids: Vec<&str> = [&first, &second]
        .iter()
        .flat_map(|page| page["videos"].as_array().expect("videos"))
        .map(|v| v["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(
        ids,
        [whole[0].as_str(), whole[2].as_str()],
        "whole, undecided, oldest first"
    );
    assert_eq!(second["videos"][0]["verification"], "unverified");
}

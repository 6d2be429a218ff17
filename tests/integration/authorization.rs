//! The authorization matrix: every endpoint × {anonymous, another user, a
//! service, an admin, the owner}, each answer checked. The owner goes last
//! in each row, so its changes don't affect the others' answers.

use std::time::Duration;

use reelay_api::auth::{Role, issue_with_role};
use reelay_shared::VideoStatus;
use reelay_tests::{TestEnv, client::Tus, random_bytes};
use reqwest::{Method, RequestBuilder};
use serde_json::json;
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    Other,
    Service,
    Admin,
    Owner,
}

const ORDER: [Who; 5] = [
    Who::Anonymous,
    Who::Other,
    Who::Service,
    Who::Admin,
    Who::Owner,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_each_kind_of_caller_as_it_should() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let owner_id = Uuid::new_v4();
    let owner = Tus::new(&api.address, env.token(owner_id));
    let token = |who: Who| match who {
        Who::Anonymous => None,
        Who::Other => Some(env.token(Uuid::new_v4())),
        Who::Service => Some(
            issue_with_role(&env.jwt_secret, Uuid::new_v4(), Role::Service, 600).expect("token"),
        ),
        Who::Admin => {
            Some(issue_with_role(&env.jwt_secret, Uuid::new_v4(), Role::Admin, 600).expect("token"))
        }
        Who::Owner => Some(owner.token.clone()),
    };

    // An uploaded video, one still uploading, and one to delete.
    let data = random_bytes(2000);
    let uploaded = owner.create(data.len() as u64).await;
    owner.upload_from(uploaded, &data, 0, data.len()).await;
    env.wait_for_status(uploaded, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    let uploading = owner.create(100).await;
    let doomed = owner.create(100).await;
    let terminated = owner.create(100).await;

    let http = reqwest::Client::new();
    let base = api.address.clone();
    // A comment of the owner's on the uploaded video.
    let posted: serde_json::Value = http
        .post(format!("{base}/v1/videos/{uploaded}/comments"))
        .bearer_auth(&owner.token)
        .json(&json!({"text": "first"}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("a comment");
    let comment = posted["id"].as_str().expect("an id").to_owned();
    let tus = |method: Method, path: String| {
        http.request(method, format!("{base}{path}"))
            .header("tus-resumable", "1.0.0")
    };
    let rest = |method: Method, path: String| http.request(method, format!("{base}{path}"));
    type Row<'a> = (&'a str, Box<dyn Fn() -> RequestBuilder + 'a>, [u16; 5]);
    //                                                    anon other service admin owner
    let rows: Vec<Row> = vec![
        (
            "OPTIONS /files/",
            Box::new(|| tus(Method::OPTIONS, "/files/".into())),
            [204, 204, 204, 204, 204],
        ),
        (
            "POST /files/",
            Box::new(|| tus(Method::POST, "/files/".into()).header("upload-length", 10)),
            [401, 201, 403, 201, 201],
        ),
        (
            "HEAD /files/{id}",
            Box::new(|| tus(Method::HEAD, format!("/files/{uploading}"))),
            [401, 404, 403, 404, 200],
        ),
        (
            "PATCH /files/{id}",
            Box::new(|| {
                tus(Method::PATCH, format!("/files/{uploading}"))
                    .header("content-type", "application/offset+octet-stream")
                    .header("upload-offset", 0)
                    .body(vec![1u8; 10])
            }),
            [401, 404, 403, 404, 204],
        ),
        (
            "DELETE /files/{id}",
            Box::new(|| tus(Method::DELETE, format!("/files/{terminated}"))),
            [401, 404, 403, 404, 204],
        ),
        (
            "GET /v1/videos",
            Box::new(|| rest(Method::GET, "/v1/videos".into())),
            [401, 200, 403, 200, 200],
        ),
        (
            "GET /v1/videos/{id}",
            Box::new(|| rest(Method::GET, format!("/v1/videos/{uploaded}"))),
            // Anyone may see a video they may watch; an admin sees all.
            [401, 200, 403, 200, 200],
        ),
        (
            "GET /v1/videos/{id} (still uploading)",
            Box::new(|| rest(Method::GET, format!("/v1/videos/{uploading}"))),
            [401, 404, 403, 200, 200],
        ),
        (
            "PUT /v1/videos/{id}/reaction",
            Box::new(|| {
                rest(Method::PUT, format!("/v1/videos/{uploaded}/reaction"))
                    .json(&json!({"reaction": "like"}))
            }),
            [401, 200, 403, 200, 200],
        ),
        (
            "DELETE /v1/videos/{id}/reaction",
            Box::new(|| rest(Method::DELETE, format!("/v1/videos/{uploaded}/reaction"))),
            [401, 200, 403, 200, 200],
        ),
        (
            "PUT /v1/videos/{id}/engagement",
            Box::new(|| {
                rest(Method::PUT, format!("/v1/videos/{uploaded}/engagement"))
                    .json(&json!({"comments": true}))
            }),
            [401, 404, 403, 404, 200],
        ),
        (
            "PUT /v1/bookmarks/{video_id}",
            Box::new(|| rest(Method::PUT, format!("/v1/bookmarks/{uploaded}"))),
            [401, 204, 403, 204, 204],
        ),
        (
            "DELETE /v1/bookmarks/{video_id}",
            Box::new(|| rest(Method::DELETE, format!("/v1/bookmarks/{uploaded}"))),
            [401, 204, 403, 204, 204],
        ),
        (
            "GET /v1/bookmarks",
            Box::new(|| rest(Method::GET, "/v1/bookmarks".into())),
            [401, 200, 403, 200, 200],
        ),
        (
            "POST /v1/videos/{id}/comments",
            Box::new(|| {
                rest(Method::POST, format!("/v1/videos/{uploaded}/comments"))
                    .json(&json!({"text": "nice"}))
            }),
            [401, 201, 403, 201, 201],
        ),
        (
            "GET /v1/videos/{id}/comments",
            Box::new(|| rest(Method::GET, format!("/v1/videos/{uploaded}/comments"))),
            [200, 200, 200, 200, 200],
        ),
        (
            "DELETE /v1/comments/{id} (the owner's)",
            Box::new(|| rest(Method::DELETE, format!("/v1/comments/{comment}"))),
            [401, 403, 403, 204, 204],
        ),
        (
            "POST /v1/events",
            Box::new(|| {
                rest(Method::POST, "/v1/events".into()).json(&json!({"events": [{
                    "event_id": Uuid::new_v4(), "session_id": Uuid::new_v4(),
                    "video_id": uploaded, "type": "open", "playhead_ms": 0,
                    "client_time": chrono::Utc::now().to_rfc3339(),
                }]}))
            }),
            [202, 202, 202, 202, 202],
        ),
        (
            "GET /v1/videos/{id}/stats",
            Box::new(|| rest(Method::GET, format!("/v1/videos/{uploaded}/stats"))),
            [401, 404, 403, 200, 200],
        ),
        (
            "GET /v1/stats/top",
            Box::new(|| rest(Method::GET, "/v1/stats/top".into())),
            [401, 403, 403, 200, 403],
        ),
        (
            "GET /v1/videos/{id}/position",
            Box::new(|| rest(Method::GET, format!("/v1/videos/{uploaded}/position"))),
            [401, 200, 403, 200, 200],
        ),
        (
            "GET /v1/history",
            Box::new(|| rest(Method::GET, "/v1/history".into())),
            [401, 200, 403, 200, 200],
        ),
        (
            "DELETE /v1/history",
            Box::new(|| rest(Method::DELETE, "/v1/history".into())),
            [401, 200, 403, 200, 200],
        ),
        (
            "PATCH /v1/videos/{id}",
            Box::new(|| {
                rest(Method::PATCH, format!("/v1/videos/{uploaded}")).json(&json!({"title": "t"}))
            }),
            [401, 404, 403, 404, 200],
        ),
        (
            "GET /v1/videos/{id}/events",
            Box::new(|| rest(Method::GET, format!("/v1/videos/{uploaded}/events"))),
            [401, 404, 403, 404, 200],
        ),
        (
            "GET /v1/videos/{id}/link",
            Box::new(|| rest(Method::GET, format!("/v1/videos/{uploaded}/link"))),
            [401, 404, 403, 200, 200],
        ),
        (
            "DELETE /v1/videos/{id}",
            Box::new(|| rest(Method::DELETE, format!("/v1/videos/{doomed}"))),
            [401, 404, 403, 404, 202],
        ),
        (
            "PUT /v1/profile/video",
            Box::new(|| {
                rest(Method::PUT, "/v1/profile/video".into()).json(&json!({"video_id": uploaded}))
            }),
            [401, 404, 403, 404, 200],
        ),
        (
            "GET /v1/profile/video",
            Box::new(|| rest(Method::GET, "/v1/profile/video".into())),
            [401, 404, 403, 404, 200],
        ),
        (
            "POST /v1/links",
            Box::new(|| {
                rest(Method::POST, "/v1/links".into()).json(&json!({"user_ids": [owner_id]}))
            }),
            [401, 403, 200, 200, 403],
        ),
        (
            "POST /v1/videos/{id}/moderation",
            Box::new(|| {
                rest(Method::POST, format!("/v1/videos/{uploaded}/moderation"))
                    .json(&json!({"decision": "verified"}))
            }),
            [401, 403, 403, 200, 403],
        ),
        (
            "GET /v1/moderation",
            Box::new(|| rest(Method::GET, "/v1/moderation".into())),
            [401, 403, 403, 200, 403],
        ),
        (
            "POST /v1/dev/tokens while REELAY_DEV_TOKENS is off",
            Box::new(|| {
                rest(Method::POST, "/v1/dev/tokens".into()).json(&json!({"role": "admin"}))
            }),
            [404, 404, 404, 404, 404],
        ),
        (
            "POST /v1/moderation/{id} without a signature",
            Box::new(|| {
                rest(Method::POST, format!("/v1/moderation/{uploaded}"))
                    .json(&json!({"decision": "verified"}))
            }),
            [401, 401, 401, 401, 401],
        ),
        (
            "GET /v1/onboarding",
            Box::new(|| rest(Method::GET, "/v1/onboarding".into())),
            [200, 200, 200, 200, 200],
        ),
        (
            "GET /v1/onboarding/members",
            Box::new(|| rest(Method::GET, "/v1/onboarding/members".into())),
            [401, 403, 403, 200, 403],
        ),
        (
            "PUT /v1/onboarding",
            Box::new(|| rest(Method::PUT, "/v1/onboarding".into()).json(&json!({"video_ids": []}))),
            [401, 403, 403, 200, 403],
        ),
        (
            "GET /healthz",
            Box::new(|| rest(Method::GET, "/healthz".into())),
            [200, 200, 200, 200, 200],
        ),
        (
            "GET /readyz",
            Box::new(|| rest(Method::GET, "/readyz".into())),
            [200, 200, 200, 200, 200],
        ),
        (
            "GET /metrics",
            Box::new(|| rest(Method::GET, "/metrics".into())),
            [200, 200, 200, 200, 200],
        ),
    ];
    let mut failures = Vec::new();
    for (endpoint, request, expected) in &rows {
        for (who, want) in ORDER.iter().zip(expected) {
            let mut builder = request();
            if let Some(t) = token(*who) {
                builder = builder.bearer_auth(t);
            }
            let got = builder.send().await.expect("answered").status().as_u16();
            if got != *want {
                failures.push(format!("{endpoint} as {who:?}: {got}, expected {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

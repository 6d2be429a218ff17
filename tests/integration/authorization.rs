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
            [401, 404, 403, 404, 200],
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

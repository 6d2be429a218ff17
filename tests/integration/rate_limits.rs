//! The endpoints anyone may call without a token keep each caller to its
//! rate: 429 with Retry-After past it, before the body is read, a signed-in
//! user and each client address counted apart.

use std::{num::NonZeroU32, time::Duration};

use reelay_api::config::PublicRate;
use reelay_tests::{TestEnv, client::call_json};
use reqwest::{Method, StatusCode, header};
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_answer_429_with_retry_after_per_user_and_per_address() {
    let env = TestEnv::new().await;
    let mut config = env.api_config();
    config.public_rate = Some(PublicRate {
        per_sec: NonZeroU32::new(1).expect("1"),
        burst: NonZeroU32::new(3).expect("3"),
    });
    config.client_ip_header = Some("x-forwarded-for".into());
    let api = env.spawn_api_with(config).await;
    let http = reqwest::Client::new();
    let onboarding = |forwarded: Option<&str>| {
        let request = http.get(format!("{}/v1/onboarding", api.address));
        match forwarded {
            Some(address) => request.header("x-forwarded-for", format!("10.0.0.1, {address}")),
            None => request,
        }
        .send()
    };

    // The burst of 3 goes through, then (within a second, or a little
    // later on a slow machine) the caller is refused.
    let mut allowed = 0;
    let refused = loop {
        let answer = onboarding(None).await.expect("GET");
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            break answer;
        }
        assert_eq!(answer.status(), StatusCode::OK);
        allowed += 1;
        assert!(allowed <= 10, "refused at some point");
    };
    assert!(allowed >= 3, "the burst of 3 went through: {allowed}");
    // Every public endpoint shares the caller's budget, and a batch of
    // events is refused before it is read (an empty one would be a 400).
    let (status, _) = call_json(
        &http,
        &api.address,
        Method::POST,
        None,
        "/v1/events",
        Some(json!({ "events": [] })),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        refused.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );

    // Another address behind the proxy, and a signed-in user, are counted
    // apart.
    let elsewhere = onboarding(Some("203.0.113.7")).await.expect("GET");
    assert_eq!(elsewhere.status(), StatusCode::OK);
    let token = env.token(Uuid::new_v4());
    let (status, body) = call_json(
        &http,
        &api.address,
        Method::POST,
        Some(&token),
        "/v1/events",
        Some(json!({ "events": [] })),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the user's own budget lets the request reach its check: {body}"
    );

    // The budget comes back at its rate.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        onboarding(None).await.expect("GET").status(),
        StatusCode::OK
    );
}

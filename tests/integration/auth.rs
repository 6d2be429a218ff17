//! Roles and token algorithms.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reelay_api::auth::{Claims, Role, issue_with_role};
use reelay_tests::TestEnv;
use reqwest::StatusCode;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_token_may_not_use_user_endpoints_and_an_admin_token_may() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let http = reqwest::Client::new();
    let token = |role| issue_with_role(&env.jwt_secret, Uuid::new_v4(), role, 60).expect("token");
    let create = |token: String| {
        http.post(format!("{}/files/", api.address))
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", 10)
            .send()
    };
    assert_eq!(
        create(token(Role::Service)).await.expect("POST").status(),
        StatusCode::FORBIDDEN
    );
    let list = http
        .get(format!("{}/v1/videos", api.address))
        .bearer_auth(token(Role::Service))
        .send()
        .await
        .expect("GET");
    assert_eq!(list.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        create(token(Role::Admin)).await.expect("POST").status(),
        StatusCode::CREATED
    );
    assert_eq!(
        create(token(Role::User)).await.expect("POST").status(),
        StatusCode::CREATED
    );
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM videos")
        .fetch_one(env.store.pool())
        .await
        .expect("count");
    assert_eq!(count, 2, "the refused service request created nothing");
}

/// A fresh RSA key pair (private PEM, public PEM).
fn rsa_key_pair() -> (String, String) {
    reelay_tests::push::openssl_key_pair(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_verify_against_the_configured_public_key_only() {
    let env = TestEnv::new().await;
    let (private, public) = rsa_key_pair();
    let mut config = env.api_config();
    config.jwt_public_key = Some(public);
    let with_key = env.spawn_api_with(config).await;
    let without_key = env.spawn_api().await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = Claims {
        sub: Uuid::new_v4(),
        iat: Some(now),
        exp: now + 60,
        role: Role::User,
    };
    let key = EncodingKey::from_rsa_pem(private.as_bytes()).expect("private key");
    let rs256 = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign");
    let (other_private, _) = rsa_key_pair();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(other_private.as_bytes()).expect("key"),
    )
    .expect("sign");
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &Claims {
            exp: now - 120,
            iat: Some(now - 180),
            ..claims
        },
        &key,
    )
    .expect("sign");

    let get = |base: &str, token: &str| {
        reqwest::Client::new()
            .get(format!("{base}/v1/videos"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        get(&with_key.address, &rs256).await.expect("GET").status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&with_key.address, &forged).await.expect("GET").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&with_key.address, &expired)
            .await
            .expect("GET")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&with_key.address, "not.a.token")
            .await
            .expect("GET")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&without_key.address, &rs256)
            .await
            .expect("GET")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let hs256 = env.token(Uuid::new_v4());
    assert_eq!(
        get(&with_key.address, &hs256).await.expect("GET").status(),
        StatusCode::OK,
        "HS256 still works"
    );
}

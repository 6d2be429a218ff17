//! What an attacker would try, class by class, each refused (or, for text,
//! kept verbatim as data) and changing nothing else: SQL metacharacters in
//! user text, path traversal in ids, fflow session ids and object keys,
//! oversized and too many headers, a slow-loris PATCH, forged, expired and
//! misused tokens, and playback and link tokens used for another video or
//! past their expiry.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reelay_api::auth::{Role, issue_with_role};
use reelay_shared::VideoStatus;
use reelay_tests::{
    MIB, TestEnv,
    client::{Tus, call_json},
    media::Sample,
    random_bytes, sha256_hex,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const SQL: [&str; 4] = [
    "'; DROP TABLE videos; --",
    "\" OR 1=1 --",
    "x'); DELETE FROM events WHERE ('1'='1",
    "\\'; SELECT pg_sleep(10); --",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_metacharacters_in_user_text_are_kept_as_text() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let http = reqwest::Client::new();
    let data = random_bytes(1000);
    let metadata = format!(
        "filename {},title {}",
        base64::engine::general_purpose::STANDARD.encode(SQL[0]),
        base64::engine::general_purpose::STANDARD.encode(SQL[1]),
    );
    let id = tus.create_with_metadata(data.len() as u64, &metadata).await;
    tus.upload_from(id, &data, 0, data.len()).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    let path = format!("/v1/videos/{id}");
    let (status, _) = call_json(
        &http,
        &api.address,
        Method::PATCH,
        Some(&tus.token),
        &path,
        Some(json!({ "description": SQL[2] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, comment) = call_json(
        &http,
        &api.address,
        Method::POST,
        Some(&tus.token),
        &format!("/v1/videos/{id}/comments"),
        Some(json!({ "text": SQL[3] })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{comment}");

    let (_, video) = call_json(
        &http,
        &api.address,
        Method::GET,
        Some(&tus.token),
        &path,
        None,
    )
    .await;
    assert_eq!(
        (&video["filename"], &video["title"], &video["description"]),
        (&json!(SQL[0]), &json!(SQL[1]), &json!(SQL[2])),
        "kept verbatim"
    );
    let (_, comments) = call_json(
        &http,
        &api.address,
        Method::GET,
        None,
        &format!("/v1/videos/{id}/comments"),
        None,
    )
    .await;
    assert_eq!(comments["comments"][0]["text"], SQL[3]);
    let (status, listed) = call_json(
        &http,
        &api.address,
        Method::GET,
        Some(&tus.token),
        "/v1/videos",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed["videos"][0]["id"],
        id.to_string(),
        "the tables are whole"
    );
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_in_ids_session_ids_and_file_names_goes_nowhere() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fflow = env.spawn_fflow("r1", dir.path()).await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let http = reqwest::Client::new();

    // A file name that climbs is a title, not a key.
    let data = random_bytes(1000);
    let metadata = format!(
        "filename {}",
        base64::engine::general_purpose::STANDARD.encode("../../../../etc/passwd")
    );
    let id = tus.create_with_metadata(data.len() as u64, &metadata).await;
    tus.upload_from(id, &data, 0, data.len()).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    let keys = env.object_keys().await;
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(
            key.contains(&format!("videos/{id}/")) && !key.contains(".."),
            "object keys come from ids only: {key}"
        );
    }

    for (method, path) in [
        (Method::GET, "/v1/videos/..%2F..%2Fetc%2Fpasswd".to_owned()),
        (Method::HEAD, "/files/..%2F..%2Fetc%2Fpasswd".to_owned()),
        (Method::PATCH, "/files/..%2F..%2Fetc%2Fpasswd".to_owned()),
        (Method::GET, "/v1/videos/%2e%2e%2fvideos/link".to_owned()),
        (
            Method::GET,
            format!("/v1/playback/{id}.1.00/..%2F..%2Fmaster.m3u8"),
        ),
    ] {
        let status = http
            .request(method.clone(), format!("{}{path}", api.address))
            .bearer_auth(&tus.token)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .send()
            .await
            .expect("answered")
            .status();
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{method} {path}: {status}"
        );
    }

    // Literal dots, which an HTTP client would resolve before sending.
    let host = api.address.trim_start_matches("http://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    raw.write_all(
        format!(
            "GET /v1/videos/../../etc/passwd HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            tus.token
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // %2F keeps the climb inside one segment, so it reaches the handlers.
    let before = fflow.local_files();
    for id in ["..%2F..%2Ftmp%2Freelay-escape", "%2E%2E%2F%2E%2E%2Ftmp"] {
        let glued = http
            .put(format!("{}/sessions/{id}/chunks?offset=0", fflow.address))
            .body(vec![1u8; 100])
            .send()
            .await
            .expect("PUT");
        assert!(glued.status().is_client_error(), "{id}: {}", glued.status());
        let dropped = http
            .delete(format!("{}/sessions/{id}", fflow.address))
            .send()
            .await
            .expect("DELETE");
        assert!(
            dropped.status().is_client_error(),
            "{id}: {}",
            dropped.status()
        );
    }
    assert_eq!(fflow.local_files(), before, "no file written");
    assert!(!std::path::Path::new("/tmp/reelay-escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_a_slow_loris_patch_are_cut_off_and_the_upload_goes_on() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(MIB);
    let id = tus.create(data.len() as u64).await;

    // Far too many headers: refused before any handler runs.
    let mut crowded = tus
        .raw()
        .head(format!("{}/files/{id}", api.address))
        .bearer_auth(&tus.token)
        .header("tus-resumable", "1.0.0");
    for i in 0..200 {
        crowded = crowded.header(format!("x-filler-{i}"), "x");
    }
    let status = crowded.send().await.map(|r| r.status());
    assert!(
        matches!(
            status,
            Ok(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) | Err(_)
        ),
        "{status:?}"
    );

    // A PATCH announcing 1 MiB that sends 100 bytes and then nothing is
    // ended by the idle timeout (3 s here), not held open.
    let host = api.address.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let head = format!(
        "PATCH /files/{id} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        tus.token,
        data.len()
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    slow.write_all(&data[..100]).await.expect("a little");
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(
        ended.is_ok(),
        "the server let go of a stalled PATCH within 10 s"
    );

    // The upload is not locked by it: a client resumes from HEAD.
    let offset = tus.offset(id).await;
    assert!(offset <= 100, "{offset}");
    tus.upload_from(id, &data, offset as usize, 256 * 1024)
        .await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));
}

/// What was tried, with which token, the request, and the status it gets.
type Attempt = (
    &'static str,
    String,
    Method,
    String,
    Option<Value>,
    StatusCode,
);

/// A JWT signed with nothing: `alg: none`.
fn unsigned(user: Uuid, role: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let exp = chrono::Utc::now().timestamp() + 600;
    let claims =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{user}","exp":{exp},"role":"{role}"}}"#));
    format!("{header}.{claims}.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misused_tokens_are_refused_and_change_nothing() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fflow = env.spawn_fflow("r1", dir.path()).await;
    let _worker = env
        .spawn_worker_with(env.worker_config_with_fflow(std::slice::from_ref(&fflow.base)))
        .await;
    let api = env.spawn_api().await;
    let owner = Uuid::new_v4();
    let tus = Tus::new(&api.address, env.token(owner));
    let http = reqwest::Client::new();
    let clip = Sample::FastStart.make(dir.path(), 2);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = tus.create(clip.len() as u64).await;
        tus.upload_from(id, &clip, 0, clip.len()).await;
        ids.push(id);
    }
    for &id in &ids {
        env.wait_for_status(id, VideoStatus::Ready, Duration::from_secs(60))
            .await;
    }
    let [a, b] = [ids[0], ids[1]];
    let before = env.projections_snapshot().await;

    let now = chrono::Utc::now().timestamp() as u64;
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &reelay_api::auth::Claims {
            sub: owner,
            iat: Some(now - 600),
            exp: now - 300,
            role: Role::User,
        },
        &jsonwebtoken::EncodingKey::from_secret(env.jwt_secret.as_bytes()),
    )
    .expect("sign");
    let cases: [Attempt; 6] = [
        (
            "alg none as the owner",
            unsigned(owner, "user"),
            Method::DELETE,
            format!("/v1/videos/{a}"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "alg none as an admin",
            unsigned(Uuid::new_v4(), "admin"),
            Method::POST,
            format!("/v1/videos/{a}/moderation"),
            Some(json!({ "decision": "rejected" })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signed with another key",
            issue_with_role("not the secret", owner, Role::Admin, 600).expect("token"),
            Method::PATCH,
            format!("/v1/videos/{a}"),
            Some(json!({ "title": "pwned" })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired five minutes ago",
            expired,
            Method::DELETE,
            format!("/v1/videos/{a}"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a user deciding moderation",
            env.token(owner),
            Method::POST,
            format!("/v1/videos/{a}/moderation"),
            Some(json!({ "decision": "verified" })),
            StatusCode::FORBIDDEN,
        ),
        (
            "another user deleting",
            env.token(Uuid::new_v4()),
            Method::DELETE,
            format!("/v1/videos/{a}"),
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (what, token, method, path, body, expected) in cases {
        let (status, answer) =
            call_json(&http, &api.address, method, Some(&token), &path, body).await;
        assert_eq!(status, expected, "{what}: {answer}");
    }

    // A playback token names its video: another video's id in it, or a
    // changed expiry, fails its signature; past its expiry it is refused.
    let (_, playback) = call_json(
        &http,
        &api.address,
        Method::GET,
        Some(&tus.token),
        &format!("/v1/videos/{a}/playback?ttl=5"),
        None,
    )
    .await;
    let hls = playback["hls"].as_str().expect("hls").to_owned();
    let swapped = hls.replace(&a.to_string(), &b.to_string());
    assert_eq!(
        http.get(&hls).send().await.expect("GET").status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(&swapped).send().await.expect("GET").status(),
        StatusCode::NOT_FOUND,
        "A's playback token does not open B"
    );
    // A presigned link signs its object's key: pointed at B, S3 refuses.
    let (_, link) = call_json(
        &http,
        &api.address,
        Method::GET,
        Some(&tus.token),
        &format!("/v1/videos/{a}/link"),
        None,
    )
    .await;
    let url = link["url"].as_str().expect("url");
    assert_eq!(
        http.get(url).send().await.expect("GET").status(),
        StatusCode::OK
    );
    let elsewhere = http
        .get(url.replace(&a.to_string(), &b.to_string()))
        .send()
        .await
        .expect("GET")
        .status();
    assert!(
        elsewhere.is_client_error(),
        "S3 refuses a link moved to another key: {elsewhere}"
    );
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(playback["expires_at"].clone()).expect("expires_at");
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_secs(1)).await;
    assert_eq!(
        http.get(&hls).send().await.expect("GET").status(),
        StatusCode::NOT_FOUND,
        "past its expiry"
    );

    assert_eq!(
        env.projections_snapshot().await,
        before,
        "no refused request changed a projection"
    );
}

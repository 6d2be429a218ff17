//! Every malformed request gets its tus or HTTP status and changes nothing.

use base64::Engine;
use reelay_shared::VideoId;
use reelay_tests::{MIB, TestEnv, client::Tus, random_bytes};
use reqwest::StatusCode;
use uuid::Uuid;

/// What a bad request must leave alone: the offset, the history, the queues.
async fn state(env: &TestEnv, tus: &Tus, id: VideoId) -> (u64, usize, u32) {
    let offset = tus.offset(id).await;
    let events = env.store.events(id).await.expect("history").len();
    let queued = env.queue_depth(&env.topology.chunk_queue_of(id)).await;
    (offset, events, queued)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_their_status_and_change_nothing() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    // 2000 bytes short of the end, so "past Upload-Length" needs only a
    // small body (a large one can meet a closed connection instead of 413).
    let id = tus.create(MIB as u64 + 2000).await;
    tus.upload_from(id, &random_bytes(MIB), 0, MIB).await;
    let before = state(&env, &tus, id).await;
    assert_eq!(before.0, MIB as u64);
    let body = || vec![7u8; 1000];
    let other = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let forged = Tus::new(
        &api.address,
        reelay_api::auth::issue("another secret", Uuid::new_v4(), 60).expect("token"),
    );
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);

    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "offset mismatch",
            tus.patch(id, 0, body()),
            StatusCode::CONFLICT,
        ),
        (
            "checksum mismatch",
            tus.patch(id, MIB as u64, body())
                .header("upload-checksum", format!("sha1 {}", b64(&[0u8; 20]))),
            StatusCode::from_u16(460).expect("460"),
        ),
        (
            "unknown checksum algorithm",
            tus.patch(id, MIB as u64, body())
                .header("upload-checksum", format!("md5 {}", b64(&[0u8; 16]))),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong content type",
            tus.raw()
                .patch(tus.url(id))
                .bearer_auth(&tus.token)
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/json")
                .header("upload-offset", MIB)
                .body(body()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "past Upload-Length",
            tus.patch(id, MIB as u64, vec![0u8; 2001]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "wrong Tus-Resumable",
            tus.raw()
                .patch(tus.url(id))
                .bearer_auth(&tus.token)
                .header("tus-resumable", "0.2.2")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", MIB)
                .body(body()),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            "no Upload-Offset",
            tus.raw()
                .patch(tus.url(id))
                .bearer_auth(&tus.token)
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
                .body(body()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no token",
            tus.raw()
                .patch(tus.url(id))
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", MIB)
                .body(body()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a forged token",
            forged.patch(id, MIB as u64, body()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another user's upload",
            other.patch(id, MIB as u64, body()),
            StatusCode::NOT_FOUND,
        ),
        (
            "another user's DELETE",
            tus.raw()
                .delete(tus.url(id))
                .bearer_auth(env.token(Uuid::new_v4()))
                .header("tus-resumable", "1.0.0"),
            StatusCode::NOT_FOUND,
        ),
        (
            "another user's status",
            other.get(&format!("/v1/videos/{id}")),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (what, request, expected) in cases {
        let response = request.send().await.expect("the request is answered");
        let status = response.status();
        let is_problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{what}: {text}");
        assert!(
            is_problem && text.contains("detail"),
            "{what}: a problem body says what was wrong: {text}"
        );
        assert_eq!(state(&env, &tus, id).await, before, "{what} changed state");
    }

    // A checksum that matches is accepted.
    let good = body();
    let sha = <sha2::Sha256 as sha2::Digest>::digest(&good);
    let response = tus
        .patch(id, MIB as u64, good.clone())
        .header("upload-checksum", format!("sha256 {}", b64(&sha)))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.offset(id).await, MIB as u64 + good.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_rejects_what_it_cannot_store() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let post = || {
        tus.raw()
            .post(format!("{}/files/", api.address))
            .bearer_auth(&tus.token)
            .header("tus-resumable", "1.0.0")
    };
    let cases = [
        (
            "over Tus-Max-Size",
            post().header("upload-length", (1u64 << 30) + 1),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("no Upload-Length", post(), StatusCode::BAD_REQUEST),
        (
            "deferred length",
            post().header("upload-defer-length", "1"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad metadata",
            post()
                .header("upload-length", 10)
                .header("upload-metadata", "filename %%%"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no token",
            tus.raw()
                .post(format!("{}/files/", api.address))
                .header("tus-resumable", "1.0.0")
                .header("upload-length", 10),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, request, expected) in cases {
        assert_eq!(
            request.send().await.expect("answered").status(),
            expected,
            "{what}"
        );
    }
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(env.store.pool())
        .await
        .expect("count");
    assert_eq!(count, 0, "no rejected creation left an event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_advertises_the_protocol_without_a_token() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/files/", api.address))
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let h = response.headers();
    assert_eq!(h["tus-version"], "1.0.0");
    assert_eq!(h["tus-resumable"], "1.0.0");
    assert_eq!(h["tus-max-size"], (1u64 << 30).to_string().as_str());
    assert_eq!(h["tus-checksum-algorithm"], "sha1,sha256");
    let extensions = h["tus-extension"].to_str().expect("ascii");
    for ext in [
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    ] {
        assert!(
            extensions.split(',').any(|e| e == ext),
            "{ext} missing from {extensions}"
        );
    }
    // A browser's preflight is answered for any origin.
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/files/", api.address))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "upload-offset,tus-resumable,authorization",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_user_text_is_a_400_naming_the_field_and_changes_nothing() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let owner = Uuid::new_v4();
    let tus = Tus::new(&api.address, env.token(owner));
    let admin = env.token_with_role(Uuid::new_v4(), reelay_api::auth::Role::Admin);
    let http = reqwest::Client::new();
    // "title a\0b" in Upload-Metadata: no video is created.
    let response = tus
        .raw()
        .post(format!("{}/files/", api.address))
        .bearer_auth(&tus.token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 10)
        .header("upload-metadata", "filename YS5tcDQ=,title YQBi")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let said = response.text().await.expect("body");
    assert!(said.contains("'title'") && said.contains("NUL"), "{said}");
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(env.store.pool())
        .await
        .expect("count");
    assert_eq!(count, 0, "the refused creation left no event");

    let id = tus.create(10).await;
    let before = env.projections_snapshot().await;
    let cases = [
        (
            http.patch(format!("{}/v1/videos/{id}", api.address))
                .bearer_auth(&tus.token)
                .json(&serde_json::json!({ "title": "a\u{0}b" })),
            "title",
        ),
        (
            http.patch(format!("{}/v1/videos/{id}", api.address))
                .bearer_auth(&tus.token)
                .json(&serde_json::json!({ "title": "fine", "description": "\u{0}" })),
            "description",
        ),
        (
            http.post(format!("{}/v1/videos/{id}/moderation", api.address))
                .bearer_auth(&admin)
                .json(&serde_json::json!({ "decision": "rejected", "reason": "bad\u{0}" })),
            "reason",
        ),
    ];
    for (request, field) in cases {
        let response = request.send().await.expect("answered");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{field}");
        assert!(
            response
                .headers()
                .get("content-type")
                .is_some_and(|t| t == "application/problem+json"),
            "{field}: problem+json"
        );
        let said = response.text().await.expect("body");
        assert!(
            said.contains(&format!("{field} must not contain NUL")),
            "{field}: {said}"
        );
    }
    assert_eq!(
        env.projections_snapshot().await,
        before,
        "no refused request changed a projection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_and_query_strings_are_checked_and_refused_as_problems() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let id = tus.create(10).await;
    let before = env.projections_snapshot().await;
    let http = reqwest::Client::new();
    let json = |method: reqwest::Method, path: &str, body: Vec<u8>| {
        http.request(method, format!("{}{path}", api.address))
            .bearer_auth(&tus.token)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases = [
        (
            "an array for an object, by position",
            json(
                reqwest::Method::PATCH,
                &format!("/v1/videos/{id}"),
                b"[\"a title\", null]".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "must be a JSON object",
        ),
        (
            "an array of events' batch",
            json(reqwest::Method::POST, "/v1/events", b"[[]]".to_vec()),
            StatusCode::BAD_REQUEST,
            "must be a JSON object",
        ),
        (
            "a query parameter that does not parse",
            http.get(format!("{}/v1/videos?limit=many", api.address))
                .bearer_auth(&tus.token),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
    ];
    for (what, request, status, says) in cases {
        let response = request.send().await.expect("answered");
        assert_eq!(response.status(), status, "{what}");
        assert!(
            response
                .headers()
                .get("content-type")
                .is_some_and(|t| t == "application/problem+json"),
            "{what}: problem+json, not {:?}",
            response.headers().get("content-type")
        );
        let body = response.text().await.expect("body");
        assert!(body.contains(says), "{what}: {body}");
    }
    let answer = oversized_json(&api.address, &tus.token, "/v1/profile/video").await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "10 MiB of JSON: {answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "10 MiB of JSON: {answer}"
    );
    assert_eq!(
        env.projections_snapshot().await,
        before,
        "no refused request changed a projection"
    );
}

/// Announces 10 MiB of JSON, sends a little more than the 2 MiB limit and
/// reads the answer. Through an HTTP client the rest of the body can meet the
/// connection the server closed after its 413 (a broken pipe, not an answer).
async fn oversized_json(address: &str, token: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"video_id\": \"",
        10 * MIB
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&vec![b' '; 2 * MIB + 4096])
        .await
        .expect("the server reads up to its limit");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // The answer is small; it is complete once its body has arrived or the
    // server has closed the connection.
    while !String::from_utf8_lossy(&answer).contains("}") {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("an answer within 10 s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

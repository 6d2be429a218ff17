//! `/v1/videos`: listing, details, temporary links.

use std::time::Duration;

use reelay_shared::{VideoId, VideoStatus};
use reelay_tests::{TestEnv, client::Tus, random_bytes, sha256_hex};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

async fn get_json(tus: &Tus, path: &str) -> (StatusCode, Value) {
    let response = tus.get(path).send().await.expect("GET");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `kind` of each event in a `GET /v1/videos/{id}/events` answer.
fn event_kinds(history: &Value) -> Vec<&str> {
    history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_lists_their_videos_newest_first_in_pages_and_by_status() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let mut created: Vec<VideoId> = Vec::new();
    for _ in 0..5 {
        created.push(tus.create(1000).await);
    }
    tus.upload_from(created[1], &random_bytes(1000), 0, 1000)
        .await;
    env.wait_for_status(created[1], VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    let deleted = tus
        .raw()
        .delete(tus.url(created[0]))
        .bearer_auth(&tus.token)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/videos?limit=2&cursor={c}"),
            None => "/v1/videos?limit=2".to_owned(),
        };
        let (status, page) = get_json(&tus, &path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = created[1..].iter().rev().map(|id| id.to_string()).collect();
    assert_eq!(
        seen, expected,
        "every live video once, newest first, the deleted one left out"
    );

    let (_, uploaded) = get_json(&tus, "/v1/videos?status=uploaded").await;
    assert_eq!(ids(&uploaded), vec![created[1].to_string()]);
    let (_, gone) = get_json(&tus, "/v1/videos?status=DELETED").await;
    assert_eq!(ids(&gone), vec![created[0].to_string()]);

    let other = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let (_, theirs) = get_json(&other, "/v1/videos").await;
    assert!(ids(&theirs).is_empty(), "nobody sees another user's videos");
    for bad in [
        "/v1/videos?status=NOPE",
        "/v1/videos?cursor=%%%",
        "/v1/videos?cursor=bm90LWEtY3Vyc29y",
        "/v1/videos?limit=0",
    ] {
        assert_eq!(
            get_json(&tus, bad).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let anonymous = reqwest::get(format!("{}/v1/videos", api.address))
        .await
        .expect("GET");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_updates_title_and_description_and_the_history_shows_it() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let id = tus.create(10).await;
    let url = format!("{}/v1/videos/{id}", api.address);
    let patch = |token: &str, body: Value| {
        tus.raw()
            .patch(&url)
            .bearer_auth(token.to_owned())
            .json(&body)
            .send()
    };

    let response = patch(
        &tus.token,
        json!({"title": "Holiday", "description": "At the sea"}),
    )
    .await
    .expect("PATCH");
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.expect("JSON");
    assert_eq!(
        (view["title"].as_str(), view["description"].as_str()),
        (Some("Holiday"), Some("At the sea"))
    );

    // Absent fields stay; null clears.
    let view: Value = patch(&tus.token, json!({"description": null}))
        .await
        .expect("PATCH")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        (view["title"].as_str(), view["description"].as_str()),
        (Some("Holiday"), None)
    );

    let events_before = env.store.events(id).await.expect("history").len();
    let too_long = patch(&tus.token, json!({"title": "x".repeat(201)}))
        .await
        .expect("PATCH");
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    let not_json = tus
        .raw()
        .patch(&url)
        .bearer_auth(&tus.token)
        .body("title=x")
        .send()
        .await
        .expect("PATCH");
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let stranger = patch(&env.token(Uuid::new_v4()), json!({"title": "mine now"}))
        .await
        .expect("PATCH");
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        env.store.events(id).await.expect("history").len(),
        events_before,
        "refused updates change nothing"
    );

    let (_, history) = get_json(&tus, &format!("/v1/videos/{id}/events")).await;
    let kinds = event_kinds(&history);
    assert_eq!(kinds, vec!["created", "details_updated", "details_updated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_link_downloads_the_original_until_it_expires() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(300_000);
    let id = tus.create(data.len() as u64).await;
    let (status, _) = get_json(&tus, &format!("/v1/videos/{id}/link")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "no link before the upload is whole"
    );

    tus.upload_from(id, &data, 0, data.len()).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;

    let (status, link) = get_json(&tus, &format!("/v1/videos/{id}/link")).await;
    assert_eq!(status, StatusCode::OK);
    let downloaded = reqwest::get(link["url"].as_str().expect("url"))
        .await
        .expect("GET the link");
    assert_eq!(downloaded.status(), StatusCode::OK);
    assert_eq!(
        sha256_hex(&downloaded.bytes().await.expect("body")),
        sha256_hex(&data)
    );

    let (_, capped) = get_json(&tus, &format!("/v1/videos/{id}/link?ttl=999999999")).await;
    let expires: chrono::DateTime<chrono::Utc> = capped["expires_at"]
        .as_str()
        .expect("expiry")
        .parse()
        .expect("a time");
    assert!(
        expires <= chrono::Utc::now() + chrono::Duration::hours(24),
        "a link lives at most 24 h"
    );

    let (_, short) = get_json(&tus, &format!("/v1/videos/{id}/link?ttl=1")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = reqwest::get(short["url"].as_str().expect("url"))
        .await
        .expect("GET the link");
    // Garage answers an expired presigned URL with 400 "Date is too old"
    // (AWS S3 says 403 "Request has expired").
    let status = expired.status();
    let body = expired.text().await.unwrap_or_default();
    assert!(
        status.is_client_error(),
        "Garage refuses an expired link, got {status}"
    );
    assert!(
        body.contains("too old") || body.contains("expired"),
        "{body}"
    );
    let (_, fresh) = get_json(&tus, &format!("/v1/videos/{id}/link?ttl=60")).await;
    let again = reqwest::get(fresh["url"].as_str().expect("url"))
        .await
        .expect("GET the link");
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "it was the expiry, not the link, that was refused"
    );

    let other = Tus::new(&api.address, env.token(Uuid::new_v4()));
    assert_eq!(
        get_json(&other, &format!("/v1/videos/{id}/link")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_json(&tus, &format!("/v1/videos/{id}/link?ttl=0"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get_json(&tus, &format!("/v1/videos/{id}/link?ttl=abc"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_video_removes_its_objects_and_personal_metadata_and_keeps_a_tombstone() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(200_000);
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data, 0, data.len()).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    let url = format!("{}/v1/videos/{id}", api.address);
    let patched = tus
        .raw()
        .patch(&url)
        .bearer_auth(&tus.token)
        .json(&json!({"description": "private words"}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), StatusCode::OK);
    let (_, link) = get_json(&tus, &format!("/v1/videos/{id}/link")).await;
    let old_link = link["url"].as_str().expect("url").to_owned();

    let delete = || tus.raw().delete(&url).bearer_auth(&tus.token).send();
    let first = delete().await.expect("DELETE");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("JSON");
    assert_eq!(first["status"], "DELETED");

    let gone = reelay_tests::wait_until(Duration::from_secs(20), || async {
        env.object_bytes(&env.storage.original_key(id))
            .await
            .is_none()
    })
    .await;
    assert!(gone, "the original is gone from Garage");
    // The worker records the removal after every object is gone (the
    // original may go before the rest of them): wait for the record.
    let recorded = env.wait_for_event(id, "objects_removed").await;
    assert!(recorded, "the removal is in the video's history");
    assert!(
        env.object_keys().await.is_empty(),
        "no object of the video is left"
    );
    assert_eq!(
        reqwest::get(&old_link).await.expect("GET").status(),
        StatusCode::NOT_FOUND,
        "an old link finds nothing"
    );
    assert_eq!(
        get_json(&tus, &format!("/v1/videos/{id}/link")).await.0,
        StatusCode::NOT_FOUND
    );

    let (title, description, filename, filetype): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as("SELECT title, description, filename, filetype FROM videos WHERE id = $1")
        .bind(id)
        .fetch_one(env.store.pool())
        .await
        .expect("row");
    assert_eq!(
        (title, description, filename, filetype),
        (None, None, None, None),
        "no personal metadata in the projection"
    );
    let (_, history) = get_json(&tus, &format!("/v1/videos/{id}/events")).await;
    let kinds = event_kinds(&history);
    assert_eq!(
        &kinds[kinds.len() - 2..],
        &["deleted", "objects_removed"],
        "the history ends with the deletion"
    );

    let second = delete().await.expect("DELETE again");
    assert_eq!(
        second.status(),
        StatusCode::ACCEPTED,
        "a second delete answers the same"
    );
    let second: Value = second.json().await.expect("JSON");
    assert_eq!(second["status"], "DELETED");
    let stranger = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let theirs = stranger
        .raw()
        .delete(&url)
        .bearer_auth(&stranger.token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_an_unchanged_video_is_a_304_and_any_change_a_new_answer() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(1000);
    let id = tus.create(data.len() as u64).await;
    let path = format!("/v1/videos/{id}");
    let poll = |etag: Option<String>| {
        let mut request = tus.get(&path);
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        async move {
            let response = request.send().await.expect("GET");
            let status = response.status();
            let etag = response.headers()["etag"]
                .to_str()
                .expect("text")
                .to_owned();
            let body = response.text().await.expect("body");
            (status, etag, body)
        }
    };
    let (status, pending, body) = poll(None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("PENDING"), "{body}");
    let (status, same, body) = poll(Some(pending.clone())).await;
    assert_eq!(
        (status, &same, body.as_str()),
        (StatusCode::NOT_MODIFIED, &pending, "")
    );

    // The upload moves on: the same tag now gets the new state.
    tus.upload_from(id, &data, 0, data.len()).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    let (status, uploaded, body) = poll(Some(pending)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(uploaded, same);
    assert!(body.contains("UPLOADED"), "{body}");

    // A count that is not the video's own (another user's like) changes it too.
    let other = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let liked = other
        .raw()
        .put(format!("{}/v1/videos/{id}/reaction", api.address))
        .bearer_auth(&other.token)
        .json(&json!({ "reaction": "like" }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(liked.status(), StatusCode::OK);
    let (status, _, body) = poll(Some(uploaded)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["likes"],
        1
    );
}

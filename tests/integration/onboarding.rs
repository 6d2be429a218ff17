//! Onboarding content: uploaded by admins, listed in order for anyone.

use std::time::Duration;

use reelay_api::auth::{Role, issue_with_role};
use reelay_shared::{VideoId, VideoStatus};
use reelay_tests::{TestEnv, client::Tus, random_bytes, sha256_hex};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// POST /files with the onboarding flag; the status and, on 201, the id.
async fn create_onboarding(api: &str, token: &str, length: usize) -> (StatusCode, Option<VideoId>) {
    let response = reqwest::Client::new()
        .post(format!("{api}/files/"))
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length)
        .header("upload-metadata", "onboarding,title V2VsY29tZQ==")
        .send()
        .await
        .expect("POST");
    let id = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .and_then(|l| VideoId::parse(l.rsplit('/').next()?));
    (response.status(), id)
}

async fn collection(api: &str) -> Vec<Value> {
    let response = reqwest::get(format!("{api}/v1/onboarding"))
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "no token is needed");
    let body: Value = response.json().await.expect("JSON");
    body["videos"].as_array().expect("videos").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_upload_onboarding_content_that_anyone_lists_in_order() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let admin = issue_with_role(&env.jwt_secret, Uuid::new_v4(), Role::Admin, 600).expect("token");
    let user = env.token(Uuid::new_v4());

    let (status, id) = create_onboarding(&api.address, &user, 10).await;
    assert_eq!(
        (status, id),
        (StatusCode::FORBIDDEN, None),
        "users can't add onboarding content"
    );

    let admin_tus = Tus::new(&api.address, admin.clone());
    let mut videos = Vec::new();
    for _ in 0..3 {
        let data = random_bytes(3000);
        let (status, id) = create_onboarding(&api.address, &admin, data.len()).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = id.expect("an id");
        admin_tus.upload_from(id, &data, 0, data.len()).await;
        env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
            .await;
        videos.push((id, data));
    }
    let listed = collection(&api.address).await;
    let order: Vec<&str> = listed
        .iter()
        .map(|v| v["video_id"].as_str().expect("id"))
        .collect();
    let created: Vec<String> = videos.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(order, created, "in the order they were added");
    assert_eq!(listed[0]["title"], "Welcome");
    assert_eq!(
        reelay_tests::download_sha256(listed[0]["url"].as_str().expect("url")).await,
        sha256_hex(&videos[0].1),
        "anyone can play it"
    );

    let put = |token: &str, ids: Vec<String>| {
        reqwest::Client::new()
            .put(format!("{}/v1/onboarding", api.address))
            .bearer_auth(token.to_owned())
            .json(&json!({ "video_ids": ids }))
            .send()
    };
    let reversed: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(
        put(&user, reversed.clone()).await.expect("PUT").status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(&admin, reversed[..2].to_vec())
            .await
            .expect("PUT")
            .status(),
        StatusCode::CONFLICT,
        "every member once"
    );
    assert_eq!(
        put(&admin, reversed.clone()).await.expect("PUT").status(),
        StatusCode::OK
    );
    let order: Vec<String> = collection(&api.address)
        .await
        .iter()
        .map(|v| v["video_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(order, reversed);

    let deleted = reqwest::Client::new()
        .delete(format!("{}/v1/videos/{}", api.address, videos[1].0))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    let order: Vec<String> = collection(&api.address)
        .await
        .iter()
        .map(|v| v["video_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        order,
        vec![created[2].clone(), created[0].clone()],
        "a deleted video leaves the collection"
    );

    env.rebuild_projections().await;
    let after: Vec<String> = collection(&api.address)
        .await
        .iter()
        .map(|v| v["video_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(after, order, "the order is rebuilt from the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_every_member_also_those_the_public_list_leaves_out() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let admin = issue_with_role(&env.jwt_secret, Uuid::new_v4(), Role::Admin, 600).expect("token");
    let admin_tus = Tus::new(&api.address, admin.clone());
    let data = random_bytes(3000);
    let (_, whole) = create_onboarding(&api.address, &admin, data.len()).await;
    let whole = whole.expect("an id");
    admin_tus.upload_from(whole, &data, 0, data.len()).await;
    env.wait_for_status(whole, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    let (_, uploading) = create_onboarding(&api.address, &admin, 10).await;
    let uploading = uploading.expect("an id");

    let public: Vec<String> = collection(&api.address)
        .await
        .iter()
        .map(|v| v["video_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(public, [whole.to_string()], "only what plays is public");
    let members: Value = reqwest::Client::new()
        .get(format!("{}/v1/onboarding/members", api.address))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let listed: Vec<(&str, &str)> = members["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .map(|v| {
            (
                v["video_id"].as_str().expect("id"),
                v["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (whole.to_string().as_str(), "UPLOADED"),
            (uploading.to_string().as_str(), "PENDING")
        ]
    );
    // What the members list names is what a reorder must name.
    let reorder = reqwest::Client::new()
        .put(format!("{}/v1/onboarding", api.address))
        .bearer_auth(&admin)
        .json(&json!({ "video_ids": [uploading.to_string(), whole.to_string()] }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(reorder.status(), StatusCode::OK);
}

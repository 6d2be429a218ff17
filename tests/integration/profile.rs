//! The profile video and the batch links a feed service fetches.

use std::time::Duration;

use reelay_api::auth::{Role, issue_with_role};
use reelay_shared::{VideoId, VideoStatus};
use reelay_tests::{TestEnv, client::Tus, random_bytes, sha256_hex, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

async fn uploaded(env: &TestEnv, tus: &Tus, len: usize) -> (VideoId, Vec<u8>) {
    let data = random_bytes(len);
    let id = tus.create(len as u64).await;
    tus.upload_from(id, &data, 0, len).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    (id, data)
}

async fn set_profile(api: &str, tus: &Tus, video: VideoId) -> reqwest::Response {
    tus.raw()
        .put(format!("{api}/v1/profile/video"))
        .bearer_auth(&tus.token)
        .json(&json!({ "video_id": video }))
        .send()
        .await
        .expect("PUT")
}

async fn current_profile(tus: &Tus) -> Option<String> {
    let response = tus.get("/v1/profile/video").send().await.expect("GET");
    if response.status() == StatusCode::NOT_FOUND {
        return None;
    }
    let view: Value = response.json().await.expect("JSON");
    view["id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_profile_video_deletes_the_previous_one() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let (first, _) = uploaded(&env, &tus, 2000).await;
    let (second, _) = uploaded(&env, &tus, 3000).await;
    let unfinished = tus.create(10).await;

    assert_eq!(current_profile(&tus).await, None);
    let set: Value = set_profile(&api.address, &tus, first)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(set["previous_video_id"], Value::Null);
    assert_eq!(current_profile(&tus).await, Some(first.to_string()));

    let response = set_profile(&api.address, &tus, second).await;
    assert_eq!(response.status(), StatusCode::OK);
    let set: Value = response.json().await.expect("JSON");
    assert_eq!(set["previous_video_id"], first.to_string().as_str());
    assert_eq!(current_profile(&tus).await, Some(second.to_string()));
    assert_eq!(env.video(first).await.status, VideoStatus::Deleted);
    let removed = wait_until(Duration::from_secs(20), || async {
        env.object_bytes(&env.storage.original_key(first))
            .await
            .is_none()
    })
    .await;
    assert!(removed, "the previous profile video's objects are removed");

    assert_eq!(
        set_profile(&api.address, &tus, unfinished).await.status(),
        StatusCode::CONFLICT
    );
    let stranger = Tus::new(&api.address, env.token(Uuid::new_v4()));
    assert_eq!(
        set_profile(&api.address, &stranger, second).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        current_profile(&tus).await,
        Some(second.to_string()),
        "refusals change nothing"
    );

    let history = env.event_kinds(second).await;
    assert!(
        history.contains(&"profile_video_set".to_owned()),
        "the video's history shows it became the profile video: {history:?}"
    );

    // Deleting the current profile video leaves the user without one.
    let deleted = tus
        .raw()
        .delete(format!("{}/v1/videos/{second}", api.address))
        .bearer_auth(&tus.token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    assert_eq!(current_profile(&tus).await, None);
    let history = env.event_kinds(second).await;
    let at = |kind: &str| history.iter().position(|k| k == kind);
    assert!(
        matches!((at("deleted"), at("profile_video_cleared")), (Some(d), Some(c)) if d < c),
        "the deletion, then the profile cleared: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_replacements_leave_exactly_one_current_profile_video() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let (a, _) = uploaded(&env, &tus, 1000).await;
    let (b, _) = uploaded(&env, &tus, 1000).await;
    let (c, _) = uploaded(&env, &tus, 1000).await;
    assert_eq!(
        set_profile(&api.address, &tus, a).await.status(),
        StatusCode::OK
    );

    let (rb, rc) = tokio::join!(
        set_profile(&api.address, &tus, b),
        set_profile(&api.address, &tus, c)
    );
    // Each wins, or is refused (409) because the other already replaced and
    // deleted its video: never two current ones.
    for status in [rb.status(), rc.status()] {
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "got {status}"
        );
    }
    assert!(rb.status() == StatusCode::OK || rc.status() == StatusCode::OK);
    let current = current_profile(&tus)
        .await
        .expect("a current profile video");
    let mut alive = Vec::new();
    for id in [a, b, c] {
        if env.video(id).await.status != VideoStatus::Deleted {
            alive.push(id.to_string());
        }
    }
    assert_eq!(
        alive,
        vec![current],
        "exactly one of the three is left, and it is the current one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_gets_500_users_profile_links_in_one_request() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;

    // Two users upload for real, so their links can be downloaded.
    let mut real = Vec::new();
    for _ in 0..2 {
        let user = Uuid::new_v4();
        let tus = Tus::new(&api.address, env.token(user));
        let (video, data) = uploaded(&env, &tus, 5000).await;
        assert_eq!(
            set_profile(&api.address, &tus, video).await.status(),
            StatusCode::OK
        );
        real.push((user, video, data));
    }
    // 248 more with an uploaded profile video recorded straight in the log,
    // and 250 with none.
    let mut with_profile: Vec<(Uuid, VideoId)> = real.iter().map(|(u, v, _)| (*u, *v)).collect();
    for _ in 0..248 {
        let user = Uuid::new_v4();
        let video = env.record_profile_video(user).await;
        with_profile.push((user, video));
    }
    let without: Vec<Uuid> = (0..250).map(|_| Uuid::new_v4()).collect();
    let mut asked: Vec<Uuid> = Vec::new();
    for (i, user) in without.iter().enumerate() {
        asked.push(with_profile[i].0);
        asked.push(*user);
    }
    assert_eq!(asked.len(), 500);

    let service =
        issue_with_role(&env.jwt_secret, Uuid::new_v4(), Role::Service, 60).expect("token");
    let http = reqwest::Client::new();
    let post = |token: String, ids: Vec<Uuid>| {
        http.post(format!("{}/v1/links", api.address))
            .bearer_auth(token)
            .json(&json!({ "user_ids": ids }))
            .send()
    };
    let response = post(service.clone(), asked.clone()).await.expect("POST");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    let links = body["links"].as_array().expect("links");
    assert_eq!(links.len(), 500);
    for (i, link) in links.iter().enumerate() {
        assert_eq!(
            link["user_id"],
            asked[i].to_string().as_str(),
            "answers keep the order asked"
        );
        if i % 2 == 0 {
            assert_eq!(link["video_id"], with_profile[i / 2].1.to_string().as_str());
            assert!(
                link["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("X-Amz-Signature"))
            );
        } else {
            assert_eq!(
                link["url"],
                Value::Null,
                "a user without a profile video gets none"
            );
        }
    }
    for (i, (_, _, data)) in real.iter().enumerate() {
        let url = links[i * 2]["url"].as_str().expect("url");
        assert_eq!(
            reelay_tests::download_sha256(url).await,
            sha256_hex(data),
            "the link downloads that user's video"
        );
    }

    let user_token = env.token(Uuid::new_v4());
    assert_eq!(
        post(user_token, vec![Uuid::new_v4()])
            .await
            .expect("POST")
            .status(),
        StatusCode::FORBIDDEN
    );
    let too_many: Vec<Uuid> = (0..501).map(|_| Uuid::new_v4()).collect();
    assert_eq!(
        post(service, too_many).await.expect("POST").status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_the_profile_while_the_video_is_deleted_never_leaves_a_deleted_profile() {
    const RACES: usize = 150;
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let owner = Uuid::new_v4();
    let tus = Tus::new(&api.address, env.token(owner));
    let kept = env.ready_video(owner, 1000).await;
    assert_eq!(
        set_profile(&api.address, &tus, kept).await.status(),
        StatusCode::OK
    );
    let mut deleted_first = 0;
    for _ in 0..RACES {
        let video = env.ready_video(owner, 1000).await;
        let delete = tus
            .raw()
            .delete(format!("{}/v1/videos/{video}", api.address))
            .bearer_auth(&tus.token)
            .send();
        let (set, deleted) = tokio::join!(set_profile(&api.address, &tus, video), delete);
        assert!(deleted.expect("DELETE").status().is_success());
        if set.status() != StatusCode::OK {
            deleted_first += 1;
        }
        // Whatever won, there is no profile video (the set won, then the
        // delete cleared it) or one that is not deleted.
        let response = tus.get("/v1/profile/video").send().await.expect("GET");
        if response.status() == StatusCode::NOT_FOUND {
            continue;
        }
        assert_eq!(response.status(), StatusCode::OK);
        let view: Value = response.json().await.expect("JSON");
        assert!(
            !view["status"]
                .as_str()
                .unwrap_or_default()
                .eq_ignore_ascii_case("deleted"),
            "a deleted profile video: {view}"
        );
        let links = tus
            .raw()
            .post(format!("{}/v1/links", api.address))
            .bearer_auth(env.token_with_role(Uuid::new_v4(), Role::Service))
            .json(&json!({ "user_ids": [owner] }))
            .send()
            .await
            .expect("links");
        let links: Value = links.json().await.expect("JSON");
        assert!(
            !links["links"][0]["url"].is_null(),
            "the feed gets a link for the profile video: {links}"
        );
    }
    println!("{deleted_first} of {RACES} sets lost to the delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sets_at_once_leave_one_profile_video_and_delete_every_other() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let owner = Uuid::new_v4();
    let tus = Tus::new(&api.address, env.token(owner));
    let mut all = vec![env.ready_video(owner, 1000).await];
    assert_eq!(
        set_profile(&api.address, &tus, all[0]).await.status(),
        StatusCode::OK
    );
    for _ in 0..20 {
        let (a, b) = (
            env.ready_video(owner, 1000).await,
            env.ready_video(owner, 1000).await,
        );
        all.extend([a, b]);
        let (first, second) = tokio::join!(
            set_profile(&api.address, &tus, a),
            set_profile(&api.address, &tus, b)
        );
        assert_eq!(first.status(), StatusCode::OK, "both sets happen");
        assert_eq!(second.status(), StatusCode::OK, "both sets happen");
        let current = current_profile(&tus).await.expect("a profile video");
        for id in &all {
            let status = env
                .store
                .video(*id)
                .await
                .expect("read")
                .expect("video")
                .status;
            match id.to_string() == current {
                true => assert_ne!(status, VideoStatus::Deleted, "the profile video lives"),
                false => assert_eq!(status, VideoStatus::Deleted, "every other one is deleted"),
            }
        }
    }
}

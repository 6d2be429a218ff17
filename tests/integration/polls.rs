//! The status poll answers from each api replica's cache, and the cache is
//! exact: a change committed before a poll is in its answer, on every
//! replica, whoever wrote it (`reelay_shared::fresh`).

use reelay_shared::{VideoId, video::VideoEvent};
use reelay_tests::{TestEnv, apps::TestApi};
use serde_json::Value;
use uuid::Uuid;

async fn poll(api: &TestApi, token: &str, video: VideoId) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/videos/{video}", api.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn retitle(env: &TestEnv, video: VideoId, title: &str) {
    let title = Some(title.to_owned());
    env.store
        .append(video, |_| {
            Ok((
                vec![VideoEvent::DetailsUpdated {
                    title,
                    description: None,
                }],
                (),
            ))
        })
        .await
        .expect("append");
}

/// The polls this api answered from its cache, as its metrics count them.
async fn hits(api: &TestApi) -> f64 {
    let page = reelay_tests::metrics_page(&api.address).await;
    reelay_tests::metric(
        &page,
        "reelay_cache_reads_total{cache=\"polls\",outcome=\"hit\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_answers_a_poll_with_every_change_committed_before_it() {
    let env = TestEnv::new().await;
    let (a, b) = (env.spawn_api().await, env.spawn_api().await);
    let owner = Uuid::new_v4();
    let token = env.token(owner);
    let video = env.record_profile_video(owner).await;

    // Each round: both replicas hold the answer, then a change commits
    // (an append, as a worker's, on neither replica), and the very next
    // poll of each must show it.
    let hits_before = hits(&a).await + hits(&b).await;
    for round in 0..40 {
        for api in [&a, &b] {
            poll(api, &token, video).await;
            poll(api, &token, video).await;
        }
        let title = format!("round {round}");
        retitle(&env, video, &title).await;
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        for api in [first, second] {
            assert_eq!(
                poll(api, &token, video).await["title"],
                title.as_str(),
                "round {round}: a poll after the commit shows it"
            );
        }
    }
    let hits_after = hits(&a).await + hits(&b).await;
    assert!(
        hits_after >= hits_before + 80.0,
        "unchanged videos are answered from the cache ({hits_before} → {hits_after} hits)"
    );

    // A reaction through one replica is in the other's next answer, in the
    // counts and as the caller's own.
    let reacted = reqwest::Client::new()
        .put(format!("{}/v1/videos/{video}/reaction", b.address))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "reaction": "like" }))
        .send()
        .await
        .expect("react");
    assert_eq!(reacted.status(), 200);
    let shown = poll(&a, &token, video).await;
    assert_eq!(shown["likes"], 1, "{shown}");
    assert_eq!(shown["my_reaction"], "like", "{shown}");

    // Views, as the playback ETL writes them (not an event of the log).
    sqlx::query("INSERT INTO video_views (video_id, views, updated_at) VALUES ($1, 7, now())")
        .bind(video)
        .execute(env.store.pool())
        .await
        .expect("views");
    assert_eq!(poll(&b, &token, video).await["views"], 7);

    // Someone else asking sees the public view, with their own reaction.
    let other = env.token(Uuid::new_v4());
    let public = poll(&a, &other, video).await;
    assert!(
        public.get("object_key").is_none() && public.get("owner_id").is_none(),
        "{public}"
    );
    assert_eq!(public["my_reaction"], Value::Null, "{public}");
    assert_eq!(public["likes"], 1, "{public}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listening_connection_never_serves_a_stale_answer() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let owner = Uuid::new_v4();
    let token = env.token(owner);
    let video = env.record_profile_video(owner).await;
    poll(&api, &token, video).await;
    poll(&api, &token, video).await;

    // The listener's connection dies; changes go on committing meanwhile.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(reelay_shared::fresh::LISTENER_NAME)
    .fetch_all(env.store.pool())
    .await
    .expect("terminate");
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k),
        "every listening connection ended: {killed:?}"
    );
    for round in 0..10 {
        let title = format!("while relistening {round}");
        retitle(&env, video, &title).await;
        assert_eq!(poll(&api, &token, video).await["title"], title.as_str());
    }

    // It listens again, and answers from the cache again.
    let listening = reelay_tests::wait_until(std::time::Duration::from_secs(10), || async {
        let before = hits(&api).await;
        poll(&api, &token, video).await;
        poll(&api, &token, video).await;
        hits(&api).await > before
    })
    .await;
    assert!(listening, "the cache answers again once it listens again");
    retitle(&env, video, "after").await;
    assert_eq!(poll(&api, &token, video).await["title"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_links_follow_profile_and_video_changes_at_once_on_every_replica() {
    let env = TestEnv::new().await;
    let (a, b) = (env.spawn_api().await, env.spawn_api().await);
    let service = env.token_with_role(Uuid::new_v4(), reelay_api::auth::Role::Service);
    let (linked, later) = (Uuid::new_v4(), Uuid::new_v4());
    let video = env.record_profile_video(linked).await;
    let links = |api: &TestApi| {
        let request = reqwest::Client::new()
            .post(format!("{}/v1/links", api.address))
            .bearer_auth(&service)
            .json(&serde_json::json!({ "user_ids": [linked, later] }));
        async move {
            let response = request.send().await.expect("links");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("json");
            let ids: Vec<Value> = body["links"]
                .as_array()
                .expect("links")
                .iter()
                .map(|l| l["video_id"].clone())
                .collect();
            ids
        }
    };
    for api in [&a, &b] {
        for _ in 0..2 {
            assert_eq!(
                links(api).await,
                [Value::from(video.to_string()), Value::Null]
            );
        }
    }

    // A new profile: in the next answer of both.
    let later_video = env.record_profile_video(later).await;
    for api in [&b, &a] {
        assert_eq!(
            links(api).await,
            [
                Value::from(video.to_string()),
                Value::from(later_video.to_string())
            ]
        );
    }
    // The profile's video deleted (its status, not the profile row): no link.
    env.store
        .append(video, |_| Ok((vec![VideoEvent::Deleted], ())))
        .await
        .expect("delete");
    for api in [&a, &b] {
        assert_eq!(
            links(api).await,
            [Value::Null, Value::from(later_video.to_string())]
        );
    }
}

/// A verdict on a video and the video becoming someone's profile video,
/// committed at the same time, cannot leave a link to the rejected video
/// in a cache (the profile's trigger waits for the video's row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_racing_a_new_profile_still_reaches_batch_links() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let service = env.token_with_role(Uuid::new_v4(), reelay_api::auth::Role::Service);
    let user = Uuid::new_v4();
    // A video that is no one's profile video yet.
    let video = {
        let other = env.record_profile_video(Uuid::new_v4()).await;
        sqlx::query("DELETE FROM profiles WHERE video_id = $1")
            .bind(other)
            .execute(env.store.pool())
            .await
            .expect("unlink");
        other
    };
    let link = || {
        let request = reqwest::Client::new()
            .post(format!("{}/v1/links", api.address))
            .bearer_auth(&service)
            .json(&serde_json::json!({ "user_ids": [user] }));
        async move {
            let body: Value = request
                .send()
                .await
                .expect("links")
                .json()
                .await
                .expect("json");
            body["links"][0]["video_id"].clone()
        }
    };
    assert_eq!(link().await, Value::Null);

    // The verdict's transaction holds the video's row, and has looked for
    // profiles pointing at it (none yet).
    let mut verdict = env.store.pool().begin().await.expect("begin");
    sqlx::query("UPDATE videos SET verification = 'rejected' WHERE id = $1")
        .bind(video)
        .execute(&mut *verdict)
        .await
        .expect("reject");
    let store = env.store.clone();
    let profile = tokio::spawn(async move {
        let set = reelay_shared::video::ProfileEvent::VideoSet {
            video_id: video,
            previous: None,
        };
        store
            .append(
                reelay_shared::video::ProfileId(reelay_shared::UserId(user)),
                |_| Ok((vec![set], ())),
            )
            .await
            .expect("set the profile")
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !profile.is_finished(),
        "the new profile waits for the verdict's commit"
    );
    // What a read sees meanwhile (and may keep): no profile yet.
    assert_eq!(link().await, Value::Null);
    verdict.commit().await.expect("commit");
    profile.await.expect("profile");
    assert_eq!(link().await, Value::Null, "no link to a rejected video");
}

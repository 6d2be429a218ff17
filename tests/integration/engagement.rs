//! The engagement product end to end: reactions, bookmarks and comments as
//! events with exact counts; player events through the playback stream
//! and the ETL into ClickHouse; statistics, views and resume from there.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{TimeDelta, Utc};
use reelay_api::auth::Role;
use reelay_shared::{VideoId, engagement::SettingsId};
use reelay_tests::{
    TestApi, TestEnv, TestWorker, client::call_json, engagement::Session, proxy::Proxy, wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// How long the ETL may take to show events in the tests (it flushes every
/// 200 ms here).
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);

struct App {
    env: TestEnv,
    api: TestApi,
    _worker: Option<TestWorker>,
    http: reqwest::Client,
}

impl App {
    /// An api, and a worker reading the streams into ClickHouse if `etl`.
    async fn start(etl: bool) -> Self {
        let env = TestEnv::new().await;
        let api = env.spawn_api().await;
        let worker = match etl {
            true => Some(env.spawn_worker_with(env.worker_config_with_etl()).await),
            false => None,
        };
        Self {
            env,
            api,
            _worker: worker,
            http: reqwest::Client::new(),
        }
    }

    fn user(&self) -> (Uuid, String) {
        let id = Uuid::new_v4();
        (id, self.env.token(id))
    }

    fn role(&self, role: Role) -> String {
        self.env.token_with_role(Uuid::new_v4(), role)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call_json(&self.http, &self.api.address, method, token, path, body).await
    }

    async fn send(&self, token: Option<&str>, batch: Value) -> (StatusCode, Value) {
        self.call(Method::POST, token, "/v1/events", Some(batch))
            .await
    }

    /// The video's statistics once `ready` holds of them.
    async fn stats_when(
        &self,
        token: &str,
        video: VideoId,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/v1/videos/{video}/stats");
        let deadline = tokio::time::Instant::now() + VISIBLE_WITHIN;
        loop {
            let (status, body) = self.call(Method::GET, Some(token), &path, None).await;
            if status == StatusCode::OK && ready(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "statistics never got there: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// open, play after 400 ms, heartbeats, a quality change, a 2 s stall,
/// and complete: 60 s played of a 60 s video.
fn full_session(video: VideoId) -> Session {
    Session::new(video, Utc::now() - TimeDelta::minutes(2))
        .at(0, "open", 0)
        .at(400, "play", 0)
        .at(5_400, "position", 5_000)
        .at(6_400, "quality_change", 6_000)
        .at(10_400, "position", 10_000)
        .at(12_400, "rebuffer_start", 12_000)
        .at(14_400, "rebuffer_end", 12_000)
        .at(22_400, "position", 20_000)
        .at(32_400, "position", 30_000)
        .at(42_400, "position", 40_000)
        .at(52_400, "position", 50_000)
        .at(62_400, "complete", 60_000)
}

/// Five seconds of play, then a pause.
fn short_session(video: VideoId) -> Session {
    Session::new(video, Utc::now() - TimeDelta::minutes(1))
        .at(0, "open", 0)
        .at(300, "play", 0)
        .at(5_300, "pause", 5_000)
}

#[tokio::test]
async fn a_scripted_session_is_one_view_with_its_watch_time_startup_and_stalls() {
    let app = App::start(true).await;
    let (owner, owner_token) = app.user();
    let (_, viewer) = app.user();
    let video = app.env.ready_video(owner, 60_000).await;

    let full = full_session(video);
    let (status, body) = app.send(Some(&viewer), full.batch()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 12);
    let (status, _) = app.send(Some(&viewer), short_session(video).batch()).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let stats = app
        .stats_when(&owner_token, video, |s| s["watch_time_ms"] == 65_000)
        .await;
    assert_eq!(stats["views"], 1, "the 5 s session is no view: {stats}");
    assert_eq!(stats["unique_viewers"], 1);
    assert_eq!(stats["average_view_duration_ms"], 60_000);
    assert_eq!(stats["completion_rate"], 1.0);
    assert_eq!(stats["startup_time_ms"]["p50"], 300);
    assert_eq!(stats["startup_time_ms"]["p95"], 400);
    assert_eq!(stats["quality_changes"], 1);
    let ratio = stats["rebuffer_ratio"].as_f64().unwrap();
    assert!((ratio - 2_000.0 / 67_000.0).abs() < 1e-9, "{ratio}");
    assert_eq!(stats["days"][0]["views"], 1);
    // Both sessions played; only the full one reached the end.
    assert_eq!(stats["retention"][0]["share"], 1.0);
    assert_eq!(stats["retention"][10]["share"], 0.5);

    // The same events again (a player retrying) change nothing.
    let (status, _) = app.send(Some(&viewer), full.batch()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // An anonymous viewer's 12 s session is a view too.
    let anonymous = Session::new(video, Utc::now() - TimeDelta::seconds(30))
        .at(0, "open", 0)
        .at(500, "play", 0)
        .at(12_500, "pause", 12_000);
    let (status, _) = app.send(None, anonymous.batch()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let stats = app
        .stats_when(&owner_token, video, |s| s["views"] == 2)
        .await;
    assert_eq!(
        stats["watch_time_ms"], 77_000,
        "duplicates count once: {stats}"
    );
    assert_eq!(stats["unique_viewers"], 2);
    // The raw rows are a flush's last insert, after the summaries.
    let stored = wait_until(VISIBLE_WITHIN, || async {
        app.env.stored_events().await.1 >= 12 + 3 + 3
    })
    .await;
    assert!(stored, "every event is stored");
    let (rows, ids) = app.env.stored_events().await;
    assert_eq!((rows, ids), (12 + 3 + 3, 12 + 3 + 3), "each event once");

    // The count on the video, as the owner and as anyone sees it.
    let (status, shown) = app
        .call(
            Method::GET,
            Some(&viewer),
            &format!("/v1/videos/{video}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["views"], 2, "{shown}");
    assert!(
        shown.get("size_bytes").is_none(),
        "a viewer sees the public view"
    );
    let (_, shown) = app
        .call(
            Method::GET,
            Some(&owner_token),
            &format!("/v1/videos/{video}"),
            None,
        )
        .await;
    assert_eq!(shown["views"], 2);
    assert_eq!(shown["size_bytes"], 1000);
}

#[tokio::test]
async fn reactions_are_one_per_user_and_counts_stay_exact_under_concurrency() {
    let app = App::start(false).await;
    let (owner, _) = app.user();
    let video = app.env.ready_video(owner, 30_000).await;
    let path = format!("/v1/videos/{video}/reaction");
    let app = Arc::new(app);

    // 50 users, each toggling like/dislike a few times at once with the
    // others; each one's last word counts.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (app, path) = (app.clone(), path.clone());
        tasks.spawn(async move {
            let (_, token) = app.user();
            let steps = 1 + i % 4;
            let mut last = "";
            for step in 0..steps {
                last = if (i + step) % 2 == 0 {
                    "like"
                } else {
                    "dislike"
                };
                let (status, body) = app
                    .call(
                        Method::PUT,
                        Some(&token),
                        &path,
                        Some(json!({ "reaction": last })),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(body["my_reaction"], last);
            }
            last
        });
    }
    let lasts = tasks.join_all().await;
    let likes = lasts.iter().filter(|r| **r == "like").count();
    let (_, viewer) = app.user();
    let (status, shown) = app
        .call(
            Method::GET,
            Some(&viewer),
            &format!("/v1/videos/{video}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["likes"], likes);
    assert_eq!(shown["dislikes"], 50 - likes);
    assert_eq!(shown["my_reaction"], Value::Null);

    // One user's like, ten times at once, counts once.
    let (_, token) = app.user();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (app, path, token) = (app.clone(), path.clone(), token.clone());
        tasks.spawn(async move {
            app.call(
                Method::PUT,
                Some(&token),
                &path,
                Some(json!({ "reaction": "like" })),
            )
            .await
            .0
        });
    }
    assert!(tasks.join_all().await.iter().all(|s| *s == StatusCode::OK));
    let (_, shown) = app
        .call(
            Method::GET,
            Some(&token),
            &format!("/v1/videos/{video}"),
            None,
        )
        .await;
    assert_eq!(shown["likes"], likes + 1);
    assert_eq!(shown["my_reaction"], "like");
    // Taking it back, twice, leaves the counts as they were.
    for _ in 0..2 {
        let (status, body) = app.call(Method::DELETE, Some(&token), &path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["likes"], likes);
    }
    // The counts are a projection of the log: rebuilt, they are the same.
    let live = app.env.projections_snapshot().await;
    app.env.rebuild_projections().await;
    assert_eq!(app.env.projections_snapshot().await, live);
}

#[tokio::test]
async fn a_session_that_falls_under_the_threshold_and_crosses_again_counts_once() {
    let app = App::start(true).await;
    let (owner, owner_token) = app.user();
    let (_, viewer) = app.user();
    let video = app.env.ready_video(owner, 600_000).await;
    let session = Session::new(video, Utc::now() - TimeDelta::minutes(5))
        .at(0, "play", 0)
        .at(5_000, "position", 5_000)
        .at(15_000, "position", 15_000)
        // Late: a pause at 5.5 s leaves 5.5 s played, under the threshold…
        .at(6_000, "pause", 5_500)
        // …until playing on from 15 s makes it 15.5 s again.
        .at(25_000, "position", 25_000);
    let views = || async {
        let (_, shown) = app
            .call(
                Method::GET,
                Some(&owner_token),
                &format!("/v1/videos/{video}"),
                None,
            )
            .await;
        shown["views"].as_i64().unwrap_or(-1)
    };
    let send = |range: std::ops::Range<usize>| {
        let events = session.events[range].to_vec();
        app.send(Some(&viewer), json!({ "events": events }))
    };
    // Each step is stored whole (the raw rows are a flush's last insert,
    // after the views) before the next.
    for (step, stored) in [(0..3, 3), (3..4, 4), (4..5, 5)] {
        let (status, body) = send(step.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let done = wait_until(VISIBLE_WITHIN, || async {
            app.env.stored_events().await.1 >= stored
        })
        .await;
        assert!(done, "events {step:?} stored");
        if step.start == 0 {
            assert_eq!(views().await, 1, "15 s played: a view");
        }
    }
    assert_eq!(views().await, 1, "the same session counts once");
}

#[tokio::test]
async fn anonymous_viewers_send_events_but_cannot_react() {
    let app = App::start(false).await;
    let (owner, _) = app.user();
    let video = app.env.ready_video(owner, 30_000).await;
    let (status, body) = app.send(None, short_session(video).batch()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let path = format!("/v1/videos/{video}/reaction");
    let like = Some(json!({ "reaction": "like" }));
    let (status, body) = app.call(Method::PUT, None, &path, like.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
    let service = app.role(Role::Service);
    let (status, _) = app.call(Method::PUT, Some(&service), &path, like).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A bad token is refused, not taken for anonymous.
    let (status, _) = app
        .send(Some("nonsense"), short_session(video).batch())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bookmarks_comments_and_the_owners_switches() {
    let app = App::start(false).await;
    let (owner, owner_token) = app.user();
    let (_, alice) = app.user();
    let (_, bob) = app.user();
    let admin = app.role(Role::Admin);
    let first = app.env.ready_video(owner, 30_000).await;
    let second = app.env.ready_video(owner, 30_000).await;

    for video in [first, second, second] {
        let (status, _) = app
            .call(
                Method::PUT,
                Some(&alice),
                &format!("/v1/bookmarks/{video}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, page) = app
        .call(Method::GET, Some(&alice), "/v1/bookmarks?limit=1", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["bookmarks"][0]["video_id"], second.to_string());
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, page) = app
        .call(
            Method::GET,
            Some(&alice),
            &format!("/v1/bookmarks?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(page["bookmarks"][0]["video_id"], first.to_string());
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, shown) = app
        .call(
            Method::GET,
            Some(&alice),
            &format!("/v1/videos/{first}"),
            None,
        )
        .await;
    assert_eq!(shown["bookmarked"], true);
    app.call(
        Method::DELETE,
        Some(&alice),
        &format!("/v1/bookmarks/{first}"),
        None,
    )
    .await;
    let (_, page) = app
        .call(Method::GET, Some(&alice), "/v1/bookmarks", None)
        .await;
    assert_eq!(page["bookmarks"].as_array().unwrap().len(), 1);

    // Comments: newest first, with a cursor; the count follows.
    let comments = format!("/v1/videos/{first}/comments");
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let (status, c) = app
            .call(
                Method::POST,
                Some(&alice),
                &comments,
                Some(json!({ "text": text })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
        assert_eq!(c["text"], text);
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    let (status, page) = app
        .call(Method::GET, None, &format!("{comments}?limit=2"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "anyone who may watch reads comments"
    );
    let texts: Vec<&str> = page["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["three", "two"]);
    // Someone else's comment: 403, and it stays.
    let (status, body) = app
        .call(
            Method::DELETE,
            Some(&bob),
            &format!("/v1/comments/{}", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Its author and an admin may.
    for (token, id) in [(&alice, &ids[0]), (&admin, &ids[1])] {
        let (status, _) = app
            .call(
                Method::DELETE,
                Some(token),
                &format!("/v1/comments/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (_, shown) = app
        .call(
            Method::GET,
            Some(&bob),
            &format!("/v1/videos/{first}"),
            None,
        )
        .await;
    assert_eq!(shown["comments"], 1);

    // The owner turns comments and reactions off: 409 for new ones.
    let switches = format!("/v1/videos/{first}/engagement");
    let (status, _) = app
        .call(
            Method::PUT,
            Some(&alice),
            &switches,
            Some(json!({ "comments": false })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "only the owner switches");
    let (status, body) = app
        .call(
            Method::PUT,
            Some(&owner_token),
            &switches,
            Some(json!({ "comments": false, "reactions": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["comments_enabled"], false);
    let (status, body) = app
        .call(
            Method::POST,
            Some(&bob),
            &comments,
            Some(json!({ "text": "hi" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["detail"].as_str().unwrap().contains("comments off"),
        "{body}"
    );
    let (status, _) = app
        .call(
            Method::PUT,
            Some(&bob),
            &format!("/v1/videos/{first}/reaction"),
            Some(json!({ "reaction": "like" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, shown) = app
        .call(
            Method::GET,
            Some(&bob),
            &format!("/v1/videos/{first}"),
            None,
        )
        .await;
    assert_eq!(
        (&shown["comments"], &shown["reactions_enabled"]),
        (&json!(1), &json!(false))
    );

    // A deleted video's switches are gone with it: 410, nothing recorded.
    let (status, _) = app
        .call(
            Method::DELETE,
            Some(&owner_token),
            &format!("/v1/videos/{first}"),
            None,
        )
        .await;
    assert!(status.is_success(), "deleted: {status}");
    let settings = SettingsId::of(first);
    let events = app
        .env
        .store
        .history(settings)
        .await
        .expect("history")
        .len();
    let (status, body) = app
        .call(
            Method::PUT,
            Some(&owner_token),
            &switches,
            Some(json!({ "comments": true, "reactions": true })),
        )
        .await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(
        app.env
            .store
            .history(settings)
            .await
            .expect("history")
            .len(),
        events,
        "nothing recorded"
    );
}

#[tokio::test]
async fn rejected_and_unfinished_videos_are_not_for_other_viewers() {
    let app = App::start(false).await;
    let (owner, owner_token) = app.user();
    let (_, viewer) = app.user();
    let admin = app.role(Role::Admin);
    let video = app.env.ready_video(owner, 30_000).await;
    let (status, body) = app
        .call(
            Method::POST,
            Some(&admin),
            &format!("/v1/videos/{video}/moderation"),
            Some(json!({ "decision": "rejected", "reason": "spam" })),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let like = Some(json!({ "reaction": "like" }));
    let path = format!("/v1/videos/{video}/reaction");
    let (status, _) = app
        .call(Method::PUT, Some(&viewer), &path, like.clone())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.call(Method::PUT, Some(&owner_token), &path, like).await;
    assert_eq!(status, StatusCode::OK, "the owner still may");
    let (status, body) = app.send(Some(&viewer), short_session(video).batch()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["detail"].as_str().unwrap().starts_with("events[0]"),
        "{body}"
    );
    let (status, _) = app
        .call(
            Method::GET,
            Some(&viewer),
            &format!("/v1/videos/{video}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An upload still on its way is nobody's to watch, not even the owner's.
    let client = reelay_tests::client::Tus::new(&app.api.address, owner_token.clone());
    let pending = client.create(1000).await;
    let (status, _) = app
        .send(Some(&owner_token), short_session(pending).batch())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn resume_follows_heartbeats_resets_near_the_end_and_history_is_newest_first() {
    let app = App::start(true).await;
    let (owner, _) = app.user();
    let (_, viewer) = app.user();
    let first = app.env.ready_video(owner, 100_000).await;
    let second = app.env.ready_video(owner, 100_000).await;
    let position = |video: VideoId| format!("/v1/videos/{video}/position");

    let (status, body) = app
        .call(Method::GET, Some(&viewer), &position(first), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&body["position_ms"], &body["updated_at"]),
        (&json!(0), &Value::Null)
    );

    let start = Utc::now() - TimeDelta::minutes(5);
    let watching = Session::new(first, start)
        .at(0, "play", 0)
        .at(10_000, "position", 10_000)
        .at(20_000, "position", 20_000);
    app.send(Some(&viewer), watching.batch()).await;
    let at = |video: VideoId, want: i64| {
        let path = position(video);
        let viewer = viewer.clone();
        let app = &app;
        async move {
            wait_until(VISIBLE_WITHIN, || async {
                let (_, body) = app.call(Method::GET, Some(&viewer), &path, None).await;
                body["position_ms"] == want
            })
            .await
        }
    };
    assert!(at(first, 20_000).await, "the newest heartbeat wins");
    // An older heartbeat arriving late does not move it back.
    let late = Session::new(first, start).at(15_000, "position", 15_000);
    app.send(Some(&viewer), late.batch()).await;
    let later = Session::new(second, start + TimeDelta::minutes(1))
        .at(0, "play", 0)
        .at(30_000, "position", 30_000);
    app.send(Some(&viewer), later.batch()).await;
    assert!(at(second, 30_000).await);
    let (_, body) = app
        .call(Method::GET, Some(&viewer), &position(first), None)
        .await;
    assert_eq!(body["position_ms"], 20_000);

    let (status, history) = app
        .call(Method::GET, Some(&viewer), "/v1/history", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let order: Vec<&str> = history["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["video_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [second.to_string(), first.to_string()]);

    // Within 10 s of the end (of a 100 s video): back to the start.
    let near_end = Session::new(first, start + TimeDelta::minutes(2)).at(0, "position", 92_000);
    app.send(Some(&viewer), near_end.batch()).await;
    let updated = wait_until(VISIBLE_WITHIN, || async {
        let (_, body) = app
            .call(Method::GET, Some(&viewer), &position(first), None)
            .await;
        body["position_ms"] == 0 && !body["updated_at"].is_null()
    })
    .await;
    assert!(updated, "a finished video resumes from the start");
    let (_, history) = app
        .call(Method::GET, Some(&viewer), "/v1/history", None)
        .await;
    assert_eq!(history["videos"][0]["video_id"], first.to_string());

    let (status, body) = app
        .call(Method::DELETE, Some(&viewer), "/v1/history", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["removed"], 2);
    let (_, history) = app
        .call(Method::GET, Some(&viewer), "/v1/history", None)
        .await;
    assert_eq!(history["videos"], json!([]));
}

#[tokio::test]
async fn every_accepted_event_lands_once_across_a_sigkill_and_a_clickhouse_outage() {
    let app = App::start(false).await;
    let (owner, _) = app.user();
    let video = app.env.ready_video(owner, 600_000).await;
    // The ETL reaches ClickHouse through a proxy this test can cut.
    let mut clickhouse = Proxy::start("127.0.0.1:8123").await;
    let mut config = app.env.worker_config_with_etl();
    config.etl.clickhouse.url = format!("http://127.0.0.1:{}", clickhouse.port);
    config.etl.flush = Duration::from_millis(1_000);
    let mut first = app.env.spawn_worker_process_with(&config);

    // Players send small batches without a pause, all along.
    let sending = Arc::new(AtomicBool::new(true));
    let accepted_count = Arc::new(AtomicUsize::new(0));
    let app = Arc::new(app);
    let sender = tokio::spawn({
        let (app, sending, count) = (app.clone(), sending.clone(), accepted_count.clone());
        async move {
            let mut accepted = HashSet::new();
            let session = Uuid::new_v4();
            let mut n = 0u64;
            while sending.load(Ordering::Relaxed) {
                let events: Vec<Value> = (0..5)
                    .map(|_| {
                        n += 1;
                        json!({
                            "event_id": Uuid::new_v4(), "session_id": session, "video_id": video,
                            "type": "position", "playhead_ms": n * 100,
                            "client_time": (Utc::now() - TimeDelta::seconds(1)).to_rfc3339(),
                        })
                    })
                    .collect();
                let ids: Vec<Uuid> = events
                    .iter()
                    .map(|e| e["event_id"].as_str().unwrap().parse().unwrap())
                    .collect();
                let (status, _) = app.send(None, json!({ "events": events })).await;
                if status == StatusCode::ACCEPTED {
                    accepted.extend(ids);
                    count.store(accepted.len(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            accepted
        }
    });

    // Let the first reader get going, then kill it mid-batch.
    let started = wait_until(VISIBLE_WITHIN, || async {
        app.env.stored_events().await.1 > 0
    })
    .await;
    assert!(started, "the first reader stores events");
    tokio::time::sleep(Duration::from_millis(600)).await;
    first.kill().await.expect("SIGKILL the worker");
    let (at_kill, _) = app.env.stored_events().await;
    let mut second = app.env.spawn_worker_process_with(&config);
    let took_over = wait_until(VISIBLE_WITHIN, || async {
        app.env.stored_events().await.0 > at_kill + 50
    })
    .await;
    assert!(
        took_over,
        "the second reader takes over once the lease lapses"
    );

    // ClickHouse goes away for 30 s while the reader holds a batch and
    // events keep coming.
    clickhouse.cut().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (frozen, _) = app.env.stored_events().await;
    let accepted_before = accepted_count.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(
        app.env.stored_events().await.0,
        frozen,
        "nothing is stored while ClickHouse is away from the reader"
    );
    assert!(
        accepted_count.load(Ordering::Relaxed) > accepted_before + 500,
        "the api takes events all along"
    );
    clickhouse.restore().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sending.store(false, Ordering::Relaxed);
    let accepted = sender.await.unwrap();
    assert!(
        accepted.len() > 1_000,
        "events flowed all along: {}",
        accepted.len()
    );

    let caught_up = wait_until(Duration::from_secs(60), || async {
        app.env.stored_events().await.1 as usize >= accepted.len()
    })
    .await;
    let stored = app.env.stored_event_ids().await;
    let _ = second.kill().await;
    assert!(caught_up, "stored {} of {}", stored.len(), accepted.len());
    let distinct: HashSet<Uuid> = stored.iter().copied().collect();
    assert_eq!(stored.len(), distinct.len(), "no event is stored twice");
    assert_eq!(distinct, accepted, "every accepted event, and only those");
    // One session, read in pieces by two readers and retried: one view.
    let owner_token = app.env.token(owner);
    let (_, shown) = app
        .call(
            Method::GET,
            Some(&owner_token),
            &format!("/v1/videos/{video}"),
            None,
        )
        .await;
    assert_eq!(shown["views"], 1, "{shown}");
    let stats = app.stats_when(&owner_token, video, |_| true).await;
    assert_eq!(stats["views"], 1);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let app = App::start(true).await;
    let (owner, owner_token) = app.user();
    let (_, alice) = app.user();
    let (_, bob) = app.user();
    let video = app.env.ready_video(owner, 30_000).await;
    let comments = format!("/v1/videos/{video}/comments");
    let (_, posted) = app
        .call(
            Method::POST,
            Some(&alice),
            &comments,
            Some(json!({ "text": "mine" })),
        )
        .await;
    let comment = posted["id"].as_str().unwrap().to_owned();
    app.call(
        Method::PUT,
        Some(&alice),
        &format!("/v1/videos/{video}/reaction"),
        Some(json!({ "reaction": "like" })),
    )
    .await;
    let before = app.env.projections_snapshot().await;

    let too_long = "é".repeat(2001);
    // (method, token, path, body, status, what the problem says)
    type Case<'a> = (Method, &'a str, String, Option<Value>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            &alice,
            comments.clone(),
            Some(json!({ "text": too_long })),
            StatusCode::BAD_REQUEST,
            "at most 2000",
        ),
        (
            Method::POST,
            &alice,
            comments.clone(),
            Some(json!({ "text": "  " })),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            Method::POST,
            &alice,
            comments.clone(),
            Some(json!({ "text": "a\u{0}b" })),
            StatusCode::BAD_REQUEST,
            "NUL",
        ),
        (
            Method::POST,
            &alice,
            comments.clone(),
            Some(json!({ "words": "hi" })),
            StatusCode::BAD_REQUEST,
            "text",
        ),
        (
            Method::DELETE,
            &bob,
            format!("/v1/comments/{comment}"),
            None,
            StatusCode::FORBIDDEN,
            "author",
        ),
        (
            Method::DELETE,
            &bob,
            format!("/v1/comments/{}", Uuid::new_v4()),
            None,
            StatusCode::NOT_FOUND,
            "comment",
        ),
        (
            Method::PUT,
            &alice,
            format!("/v1/videos/{video}/reaction"),
            Some(json!({ "reaction": "love" })),
            StatusCode::BAD_REQUEST,
            "unknown variant",
        ),
        (
            Method::PUT,
            &alice,
            format!("/v1/videos/{}/reaction", VideoId::new()),
            Some(json!({ "reaction": "like" })),
            StatusCode::NOT_FOUND,
            "no such video",
        ),
        (
            Method::PUT,
            &owner_token,
            format!("/v1/videos/{video}/engagement"),
            Some(json!({ "comments": "off" })),
            StatusCode::BAD_REQUEST,
            "boolean",
        ),
        (
            Method::GET,
            &alice,
            "/v1/bookmarks?cursor=garbage".into(),
            None,
            StatusCode::BAD_REQUEST,
            "cursor",
        ),
        (
            Method::GET,
            &alice,
            "/v1/history?limit=1000".into(),
            None,
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            &owner_token,
            format!("/v1/videos/{video}/stats?from=yesterday"),
            None,
            StatusCode::BAD_REQUEST,
            "RFC 3339",
        ),
    ];
    // A range that ends before it starts is empty, not an error.
    let (status, empty) = app
        .call(
            Method::GET,
            Some(&owner_token),
            &format!("/v1/videos/{video}/stats?from=2026-02-01&to=2026-01-01"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty["views"], 0, "{empty}");
    for (method, token, path, body, want, says) in cases {
        let (status, problem) = app.call(method.clone(), Some(token), &path, body).await;
        assert_eq!(status, want, "{method} {path}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(says),
            "{method} {path}: '{detail}' should say '{says}'"
        );
    }
    let admin = app.role(Role::Admin);
    let (status, _) = app
        .call(
            Method::GET,
            Some(&admin),
            "/v1/stats/top?period=decade",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.env.projections_snapshot().await,
        before,
        "nothing changed"
    );

    // Bad batches: each holds a good event too, and none of it is
    // published.
    let good = || Session::new(video, Utc::now()).at(0, "open", 0).events[0].clone();
    let mut unknown = good();
    unknown["type"] = json!("teleport");
    let mut elsewhere = good();
    elsewhere["video_id"] = json!(VideoId::new());
    let mut no_session = good();
    no_session.as_object_mut().unwrap().remove("session_id");
    let mut refused = Vec::new();
    for (bad, status, says) in [
        (
            unknown,
            StatusCode::BAD_REQUEST,
            "unknown variant `teleport`",
        ),
        (elsewhere, StatusCode::NOT_FOUND, "may watch"),
        (no_session, StatusCode::BAD_REQUEST, "session_id"),
    ] {
        let first = good();
        refused.push(first["event_id"].as_str().unwrap().to_owned());
        let (got, problem) = app.send(None, json!({ "events": [first, bad] })).await;
        assert_eq!(got, status, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("events[1]: ") && detail.contains(says),
            "{detail}"
        );
    }
    // An event the player's clock puts out of the window is dropped and
    // named; the rest of its batch goes on.
    let mut future = good();
    future["client_time"] = json!((Utc::now() + TimeDelta::minutes(10)).to_rfc3339());
    let mut stale = good();
    stale["client_time"] = json!((Utc::now() - TimeDelta::days(31)).to_rfc3339());
    refused.push(future["event_id"].as_str().unwrap().to_owned());
    refused.push(stale["event_id"].as_str().unwrap().to_owned());
    let kept = good();
    let (status, answer) = app
        .send(None, json!({ "events": [future, kept.clone(), stale] }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let dropped = answer["dropped"].as_array().expect("dropped");
    assert_eq!(
        dropped
            .iter()
            .map(|d| d["index"].clone())
            .collect::<Vec<_>>(),
        vec![json!(0), json!(2)]
    );
    assert!(
        dropped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("ahead of the server's clock")
    );
    assert!(
        dropped[1]["reason"]
            .as_str()
            .unwrap()
            .contains("30 days old")
    );
    let many: Vec<Value> = (0..101).map(|_| good()).collect();
    refused.push(many[0]["event_id"].as_str().unwrap().to_owned());
    let (status, problem) = app.send(None, json!({ "events": many })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("1 to 100 events")
    );
    let (status, _) = app.send(None, json!({ "events": [] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let response = app
        .http
        .post(format!("{}/v1/events", app.api.address))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A good batch after them lands; none of theirs did (the kept event
    // of the batch with a bad clock did).
    let (status, _) = app.send(None, json!({ "events": [good()] })).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(
        wait_until(VISIBLE_WITHIN, || async {
            app.env.stored_events().await.1 == 2
        })
        .await
    );
    let stored: HashSet<String> = app
        .env
        .stored_event_ids()
        .await
        .iter()
        .map(Uuid::to_string)
        .collect();
    assert!(
        refused.iter().all(|id| !stored.contains(id)),
        "a refused batch was published"
    );
    assert!(
        stored.contains(kept["event_id"].as_str().unwrap()),
        "the good event beside the bad clocks was kept"
    );
}

#[tokio::test]
async fn reactions_and_comments_reach_clickhouse_through_the_outbox() {
    let app = App::start(true).await;
    let _scheduler = app.env.spawn_scheduler(app.env.scheduler_config()).await;
    let (owner, owner_token) = app.user();
    let (_, alice) = app.user();
    let video = app.env.ready_video(owner, 30_000).await;
    app.call(
        Method::PUT,
        Some(&alice),
        &format!("/v1/videos/{video}/reaction"),
        Some(json!({ "reaction": "dislike" })),
    )
    .await;
    app.call(
        Method::POST,
        Some(&alice),
        &format!("/v1/videos/{video}/comments"),
        Some(json!({ "text": "hello" })),
    )
    .await;
    app.call(
        Method::PUT,
        Some(&owner_token),
        &format!("/v1/videos/{video}/engagement"),
        Some(json!({ "reactions": false })),
    )
    .await;

    #[derive(serde::Deserialize)]
    struct Row {
        seq: u64,
        kind: String,
        video_id: Uuid,
    }
    let ch = app.env.analytics();
    let query = format!(
        "SELECT seq, kind, video_id FROM {}.ugc_events ORDER BY seq",
        ch.database()
    );
    let arrived = wait_until(VISIBLE_WITHIN, || async {
        ch.query::<Row>(&query)
            .await
            .is_ok_and(|rows| rows.len() == 3)
    })
    .await;
    assert!(arrived, "the three events reach ClickHouse");
    let rows: Vec<Row> = ch.query(&query).await.unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["reacted", "comment_posted", "reactions_set"]);
    assert!(rows.iter().all(|r| r.video_id == video.0));
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq), "in log order");
    // The relay deletes the rows once the broker confirms them, which
    // can be after the ETL has stored them in ClickHouse.
    let emptied = wait_until(VISIBLE_WITHIN, || async {
        let (waiting,): (i64,) = sqlx::query_as("SELECT count(*) FROM ugc_outbox")
            .fetch_one(app.env.store.pool())
            .await
            .unwrap();
        waiting == 0
    })
    .await;
    assert!(emptied, "the outbox is emptied once relayed");
}

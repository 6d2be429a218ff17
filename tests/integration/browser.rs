//! Playback in a real browser: headless Chromium (Debian's, driven by
//! Selenium) on a page served from an origin of its own plays a READY
//! video's HLS with hls.js and DASH with dash.js (bundled from npm by
//! `make test`), shows its poster, and plays and seeks the original's
//! presigned link in a plain `<video>`. Every request the page makes to the
//! api or to S3 is cross-origin, so this checks both sides' CORS.

use std::time::Duration;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    routing::get,
};
use reelay_shared::VideoStatus;
use reelay_tests::{TestEnv, client::Tus, media::Sample};
use serde_json::{Value, json};
use uuid::Uuid;

/// The origin the player page is served from: neither the api's nor S3's.
const PAGE_ORIGIN_HOST: &str = "127.0.0.1";

/// Serves `web/dist/` (the player page and its bundle) on a port of its own.
async fn serve_page() -> String {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist");
    let read = |name: &str| {
        std::fs::read(dist.join(name)).unwrap_or_else(|e| {
            panic!("web/dist/{name} is missing ({e}): `make test` builds it (make web)")
        })
    };
    let (html, js) = (read("player.html"), read("player.js"));
    let app = Router::new()
        .route(
            "/player.html",
            get(move || async move { ([(header::CONTENT_TYPE, "text/html")], html) }),
        )
        .route(
            "/player.js",
            get(move || async move { ([(header::CONTENT_TYPE, "text/javascript")], js) }),
        );
    let listener = tokio::net::TcpListener::bind((PAGE_ORIGIN_HOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{PAGE_ORIGIN_HOST}:{port}")
}

/// What a browser sees of a cross-origin GET from `origin`.
async fn cors_get(url: &str, origin: &str) -> (StatusCode, Option<HeaderValue>) {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(url)
        .header(header::ORIGIN, origin)
        .send()
        .await
        .expect("GET");
    let allowed = response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .cloned();
    (response.status(), allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_dash_js_and_a_plain_video_element_play_from_another_origin() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fflow = env.spawn_fflow("r1", dir.path()).await;
    let _worker = env
        .spawn_worker_with(env.worker_config_with_fflow(std::slice::from_ref(&fflow.base)))
        .await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = Sample::FastStart.make(dir.path(), 8);
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data, 0, 1 << 20).await;
    env.wait_for_status(id, VideoStatus::Ready, Duration::from_secs(120))
        .await;
    let links: Value = tus
        .get(&format!("/v1/videos/{id}/playback"))
        .send()
        .await
        .expect("playback")
        .json()
        .await
        .expect("json");
    let link: Value = tus
        .get(&format!("/v1/videos/{id}/link"))
        .send()
        .await
        .expect("link")
        .json()
        .await
        .expect("json");
    let page = serve_page().await;

    // What the browser needs, checked first where a failure says most.
    let (status, allowed) = cors_get(links["poster"].as_str().expect("poster"), &page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        allowed.is_some(),
        "S3 answers a cross-origin GET with Access-Control-Allow-Origin (the bucket's CORS rule, scripts/bucket-cors.sh)"
    );
    let dash = links["dash"].as_str().expect("dash");
    let segment = format!(
        "{}init-0.m4s",
        &dash[..dash.rfind('/').expect("a path") + 1]
    );
    let (status, allowed) = cors_get(&segment, &page).await;
    assert_eq!(status, StatusCode::FOUND, "a DASH segment redirects to S3");
    assert!(allowed.is_some(), "the api's 302 carries CORS headers");

    let plan = json!({
        "hls": links["hls"],
        "dash": links["dash"],
        "poster": links["poster"],
        "link": link["url"],
    });
    let output = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/browser/play.py"))
        .arg(format!("{page}/player.html"))
        .arg(plan.to_string())
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the browser run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the report is JSON");
    for player in ["hls", "dash"] {
        let run = &report[player];
        assert_eq!(run["errors"], json!([]), "{player}: {run}");
        assert!(
            run["current_time"].as_f64().unwrap_or(0.0) > 2.0,
            "{player} played past 2 s: {run}"
        );
    }
    let poster = &report["poster"];
    assert!(
        poster["width"].as_u64().unwrap_or(0) > 0,
        "the poster loads: {report}"
    );
    let original = &report["link"];
    assert_eq!(original["errors"], json!([]), "{original}");
    assert_eq!(
        original["seeked"],
        json!(true),
        "the original plays and seeks: {original}"
    );
    assert_eq!(report["console"], json!([]), "no console error");
}

//! The integration-test harness, also used by the benchmarks. Each
//! [`TestEnv`] has its own database, queue prefix, Redis key prefix and S3
//! key prefix against the real PostgreSQL, RabbitMQ, Redis and Garage, and
//! removes all of it on drop (also when the test panics), so tests run in
//! parallel.
//!
//! - `env`: the environment, the settings of every process in it, and what
//!   tests read of its state;
//! - `apps`: the api, workers, schedulers and fflow replicas in-process;
//! - `processes`: the same as real binaries, started from the settings'
//!   `to_env`;
//! - `media`: test videos from ffmpeg;
//! - `engagement`: videos to watch, a scripted player, ClickHouse reads;
//! - `chaos`: many real tus clients against a system under faults;
//! - `client`: a raw tus client; `proxy`, `push`, `webhook`,
//!   `fleet_backend`: stand-ins and fault injection.

pub mod apps;
pub mod chaos;
pub mod client;
pub mod engagement;
pub mod env;
pub mod fleet_backend;
pub mod media;
pub mod processes;
pub mod proxy;
pub mod push;
pub mod webhook;

use std::{
    future::Future,
    path::PathBuf,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

pub use apps::{TestApi, TestFflow, TestScheduler, TestWorker};
pub use env::TestEnv;

pub const MIB: usize = 1024 * 1024;

/// Where the workspace's binaries are: beside the running executable (a
/// benchmark in `target/release/`), or one level up from a test's `deps/`.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable");
    let dir = exe.parent().expect("a folder").to_path_buf();
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().expect("target/<profile>").to_path_buf(),
        _ => dir,
    }
}

/// Polls `check` every 20 ms until it is true or `within` passes.
///
/// Wait for each effect you assert on, not only for the state you saw
/// first: much of the system acts after an event is visible (a webhook is
/// posted after `review_requested`, an outbox row deleted after the
/// broker's confirm, fflow's files removed after READY).
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `len` random bytes (fresh every run: Garage deduplicates blocks).
pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of what a (presigned) URL serves; panics unless it answers 200.
pub async fn download_sha256(url: &str) -> String {
    let response = reqwest::get(url).await.expect("GET the link");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "the link downloads"
    );
    sha256_hex(&response.bytes().await.expect("the body"))
}

/// The Prometheus page a process serves at `{base}/metrics`.
pub async fn metrics_page(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("the metrics page")
}

/// The value of `series` on a Prometheus `page` (its name, and its labels
/// as the page writes them: `name{label="value"}`); 0 when absent.
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The tests' Python tus client script.
pub fn tus_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tus_upload.py")
}

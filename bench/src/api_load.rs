//! Read-path load: `POST /v1/links` for 500 users a request (service
//! token) and `GET /v1/videos/{id}` status polling (owner token, plain
//! and with the `If-None-Match` of the last answer), each driven by wrk
//! over loopback for a fixed time against a release api, beside the same
//! api's `/healthz` (the limit of this machine and HTTP stack in the same
//! run). Prints requests/s and latency percentiles as wrk measured them,
//! then the ratios the read path is judged by.
//!
//! The videos and profiles are recorded straight in the event log (the
//! read path does not care how they got there); links are presigned
//! locally, so Garage is not involved.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use reelay_api::auth::Role;
use reelay_bench::{millis, wrk};
use reelay_tests::TestEnv;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "reelay read-path load: batch links and status polling, with wrk")]
struct Args {
    /// Seconds of load per endpoint.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Open connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Users per batch-link request.
    #[arg(long, default_value_t = 500)]
    users: usize,
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut env = TestEnv::for_benchmark(&args.postgres).await;
    env.binaries = PathBuf::from(&args.bin_dir);
    let (mut api, base) = env.spawn_api_process(&env.api_config()).await;
    let result = async {
        let mut users = Vec::with_capacity(args.users);
        for _ in 0..args.users {
            let user = Uuid::new_v4();
            users.push((user, env.record_profile_video(user).await));
        }
        let service = env.token_with_role(Uuid::new_v4(), Role::Service);
        let (owner, video) = users[0];
        let owner_token = env.token(owner);

        let ids: Vec<String> = users.iter().map(|(u, _)| format!("\"{u}\"")).collect();
        let links_script = format!(
            "wrk.method = \"POST\"\nwrk.body = '{{\"user_ids\":[{}]}}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {service}\"\n",
            ids.join(",")
        );
        let status_script = format!("wrk.headers[\"Authorization\"] = \"Bearer {owner_token}\"\n");
        let http = reqwest::Client::new();
        let poll = || http.get(format!("{base}/v1/videos/{video}")).bearer_auth(&owner_token);
        let etag = poll()
            .send()
            .await?
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .context("the poll answers with an ETag")?
            .to_owned();
        let again = poll().header("if-none-match", &etag).send().await?.status();
        anyhow::ensure!(again == 304, "the poll with its ETag is a 304, not {again}");
        let etag = etag.replace('"', "\\\"");
        let unchanged_script = format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {owner_token}\"\nwrk.headers[\"If-None-Match\"] = \"{etag}\"\n"
        );
        println!(
            "endpoint                               requests/s      p50       p99   non-2xx   (wrk, {} connections, {} s, 2 threads)",
            args.connections, args.seconds
        );
        let mut runs = Vec::new();
        for (name, path, script) in [
            ("GET /healthz".to_owned(), "/healthz".to_owned(), String::new()),
            ("GET /v1/videos/{id}".to_owned(), format!("/v1/videos/{video}"), status_script),
            ("GET /v1/videos/{id} (304)".to_owned(), format!("/v1/videos/{video}"), unchanged_script),
            (format!("POST /v1/links ({} users)", users.len()), "/v1/links".to_owned(), links_script),
        ] {
            let run = wrk(&format!("{base}{path}"), &script, args.connections, args.seconds).await?;
            println!(
                "{name:<36} {:>12.1} {:>8} {:>9} {:>9}",
                run.requests_per_sec, run.p50, run.p99, run.non_2xx
            );
            runs.push(run);
        }
        let [healthz, poll, unchanged, links] = &runs[..] else {
            unreachable!("four runs")
        };
        println!("poll/healthz: {:.2}", poll.requests_per_sec / healthz.requests_per_sec);
        println!("poll p99 ms: {:.2}", millis(&poll.p99));
        println!(
            "poll 304/healthz: {:.2}",
            unchanged.requests_per_sec / healthz.requests_per_sec
        );
        println!("links req/s: {:.1}", links.requests_per_sec);
        println!("links p99 ms: {:.1}", millis(&links.p99));
        // How the caches answered over the whole run (hits, misses, syncs).
        let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
        for line in metrics.lines().filter(|l| l.starts_with("reelay_cache_")) {
            println!("  {line}");
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = api.kill().await;
    result
}

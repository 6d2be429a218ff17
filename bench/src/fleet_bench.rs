//! Fleet benchmark, release builds, everything on this machine:
//!
//! 1. device reports under load (wrk): one report a request, and 1,000 a
//!    request; the version query for 1,000 devices a request;
//! 2. a rollout of `--devices` devices at `--rate` update requests a second
//!    against the stand-in fleet backend (devices report `--report-ms`
//!    after the backend took their update): time from the start request to
//!    `completed`, against the ideal devices ÷ rate.
//!
//! `make bench-fleet` (= `cargo build --release --bins &&
//! ./target/release/reelay-fleet-bench`)

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use reelay_api::auth::Role;
use reelay_bench::wrk;
use reelay_tests::{TestEnv, client::Tus, fleet_backend::FleetBackend, random_bytes};
use reelay_worker::config::FleetBackend as BackendConfig;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    about = "reelay fleet: reports and queries under load, and a rollout against its ideal time"
)]
struct Args {
    /// Devices in the fleet and in the rollout.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// The rollout's rate limit, update requests per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// The rollout's in-flight limit.
    #[arg(long, default_value_t = 1000)]
    max_in_flight: u32,
    /// The scheduler's rollout driver tick (REELAY_FLEET_TICK_MS).
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
    /// The rollout's waves, percentages.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 30, 60])]
    waves: Vec<u32>,
    /// How long a device takes to report the new version.
    #[arg(long, default_value_t = 200)]
    report_ms: u64,
    /// Seconds of wrk load per endpoint.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Open connections for wrk.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Skip the wrk loads (just the rollout).
    #[arg(long)]
    rollout_only: bool,
    /// Print the rollout's counts every 2 s.
    #[arg(long)]
    progress: bool,
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
    let service = env.token_with_role(Uuid::new_v4(), Role::Service);
    let admin = env.token_with_role(Uuid::new_v4(), Role::Admin);
    let backend = FleetBackend::start(
        &base,
        service.clone(),
        Duration::from_millis(args.report_ms),
    )
    .await;
    let mut worker = env.worker_config();
    worker.fleet.backend = Some(BackendConfig {
        url: backend.url.clone(),
        secret: backend.secret.clone(),
    });
    let mut worker = env.spawn_worker_process_with(&worker);
    let mut scheduler_config = env.scheduler_config();
    scheduler_config.fleet_tick = Duration::from_millis(args.tick_ms);
    scheduler_config.lease_ttl = Duration::from_secs(15);
    scheduler_config.push.timeout = Duration::from_secs(5);
    let mut scheduler = env.spawn_scheduler_process("bench-scheduler", &scheduler_config);
    let http = reqwest::Client::new();
    let result = async {
        let ids: Vec<String> = (0..args.devices).map(|i| format!("s{i:06}")).collect();
        for chunk in ids.chunks(1000) {
            let devices: Vec<Value> = chunk
                .iter()
                .map(|d| json!({ "external_id": d, "model": "v2" }))
                .collect();
            post(
                &http,
                &base,
                &service,
                "/v1/fleet/devices",
                json!({ "devices": devices }),
            )
            .await?;
            let reports: Vec<Value> = chunk
                .iter()
                .map(|d| json!({ "device": d, "component": "vega_mcu", "version": "1.0" }))
                .collect();
            post(
                &http,
                &base,
                &service,
                "/v1/fleet/reports",
                json!({ "reports": reports }),
            )
            .await?;
        }
        println!(
            "{} devices registered and reporting vega_mcu 1.0",
            args.devices
        );
        if !args.rollout_only {
            load(&args, &base, &service, &ids).await?;
        }
        rollout(&args, &http, &base, &admin, &backend).await
    }
    .await;
    let _ = api.kill().await;
    let _ = worker.kill().await;
    let _ = scheduler.kill().await;
    result
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST {path}: {status} {body}");
    }
    Ok(body)
}

/// wrk against the report and query endpoints.
async fn load(args: &Args, base: &str, token: &str, ids: &[String]) -> anyhow::Result<()> {
    let n = ids.len();
    // One report a request, a random device each time (wrk's Lua).
    let single = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n\
         request = function()\n  local d = string.format(\"s%06d\", math.random(0, {}))\n\
           local v = tostring(math.random(1, 5))\n\
           return wrk.format(nil, nil, nil, '{{\"reports\":[{{\"device\":\"' .. d .. '\",\"component\":\"vega_gsm\",\"version\":\"' .. v .. '\"}}]}}')\nend\n",
        n - 1
    );
    let bulk_reports: Vec<Value> = ids
        .iter()
        .take(1000)
        .map(|d| json!({ "device": d, "component": "vega_gsm", "version": "7" }))
        .collect();
    let bulk = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {token}\"\nwrk.body = '{}'\n",
        json!({ "reports": bulk_reports })
    );
    let query_ids: Vec<&String> = ids.iter().take(1000).collect();
    let query = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {token}\"\nwrk.body = '{}'\n",
        json!({ "external_ids": query_ids })
    );
    println!(
        "endpoint                                 requests/s      p50       p99   non-2xx   (wrk, {} connections, {} s)",
        args.connections, args.seconds
    );
    for (name, path, script) in [
        (
            "POST /v1/fleet/reports (1 report)",
            "/v1/fleet/reports",
            single,
        ),
        (
            "POST /v1/fleet/reports (1,000 reports)",
            "/v1/fleet/reports",
            bulk,
        ),
        (
            "POST /v1/fleet/devices/query (1,000)",
            "/v1/fleet/devices/query",
            query,
        ),
    ] {
        let run = wrk(
            &format!("{base}{path}"),
            &script,
            args.connections,
            args.seconds,
        )
        .await?;
        println!(
            "{name:<40} {:>10.1} {:>8} {:>9} {:>9}",
            run.requests_per_sec, run.p50, run.p99, run.non_2xx
        );
    }
    Ok(())
}

async fn rollout(
    args: &Args,
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    backend: &FleetBackend,
) -> anyhow::Result<()> {
    let created = post(
        http,
        base,
        admin,
        "/v1/fleet/firmware",
        json!({ "hardware_type": "vega_mcu", "version": "2.0", "version_num": 20 }),
    )
    .await?;
    let id = created["id"].as_str().context("a firmware id")?.to_owned();
    let data = random_bytes(64 * 1024);
    let tus = Tus::new(base, admin.to_owned());
    let metadata = created["upload"]["upload_metadata"]
        .as_str()
        .context("metadata")?;
    let upload = tus.create_with_metadata(data.len() as u64, metadata).await;
    tus.upload_from(upload, &data, 0, data.len()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let f: Value = http
            .get(format!("{base}/v1/fleet/firmware/{id}"))
            .bearer_auth(admin)
            .send()
            .await?
            .json()
            .await?;
        if f["status"] == "available" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the firmware did not become available: {f}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rollout = post(
        http,
        base,
        admin,
        "/v1/fleet/rollouts",
        json!({
            "targets": [id],
            "filter": { "models": ["v2"] },
            "waves": args.waves,
            "success_threshold": 0.9,
            "max_in_flight": args.max_in_flight,
            "rate_per_sec": args.rate,
            "device_timeout_secs": 300,
        }),
    )
    .await?;
    let rollout = rollout["id"].as_str().context("a rollout id")?.to_owned();
    let started = Instant::now();
    post(
        http,
        base,
        admin,
        &format!("/v1/fleet/rollouts/{rollout}/start"),
        json!({}),
    )
    .await?;
    let start_secs = started.elapsed().as_secs_f64();
    let mut shown = Instant::now();
    let view = loop {
        let view: Value = http
            .get(format!("{base}/v1/fleet/rollouts/{rollout}"))
            .bearer_auth(admin)
            .send()
            .await?
            .json()
            .await?;
        if view["state"] != "running" {
            break view;
        }
        if args.progress && shown.elapsed() >= Duration::from_secs(2) {
            shown = Instant::now();
            let c = &view["counts"];
            println!(
                "  {:>5.1} s: wave {} queued {} requested {} acknowledged {} succeeded {}",
                started.elapsed().as_secs_f64(),
                view["current_wave"],
                c["queued"],
                c["requested"],
                c["acknowledged"],
                c["succeeded"]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed().as_secs_f64();
    let ideal = args.devices as f64 / f64::from(args.rate);
    println!(
        "rollout: {} devices at {}/s, in flight ≤ {}, waves {:?}: {} succeeded, state {}",
        args.devices,
        args.rate,
        args.max_in_flight,
        args.waves,
        view["counts"]["succeeded"],
        view["state"]
    );
    println!(
        "rollout: start {start_secs:.2} s, start to completed {took:.1} s, ideal {ideal:.1} s, ratio {:.2}",
        took / ideal
    );
    println!(
        "backend: {} requests, most in one second {}, most in flight {}, violations {}",
        backend.arrivals().len(),
        backend.max_per_second(),
        backend.max_in_flight(),
        backend.violations().len()
    );
    Ok(())
}

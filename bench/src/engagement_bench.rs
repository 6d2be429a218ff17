//! Engagement benchmark, release builds, everything on this machine (api,
//! worker with the ETL, PostgreSQL, RabbitMQ, ClickHouse and the load):
//!
//! 1. lag: a steady `--rate` requests/s of single player events (paced
//!    here, not by wrk) for `--lag-seconds`, from players heartbeating
//!    every 10 s; one request in 30 is about a video of its own, whose rows
//!    in ClickHouse are polled every 50 ms all along: the lag from each 202
//!    to its row being there (the ETL's last insert of a flush: summaries,
//!    views and positions of that flush are visible by then);
//! 2. wrk against `POST /v1/events` with one event a request and with 50,
//!    from 30,000 players' sessions, and against `PUT
//!    /v1/videos/{id}/reaction` from 1,000 users; `GET /healthz` on the
//!    same api is the reference (the floor of an HTTP request here);
//! 3. how long the ETL takes to store everything the loads were accepted.
//!
//! `make bench-engagement` (= `cargo build --release --bins &&
//! ./target/release/reelay-engagement-bench`)

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Parser;
use reelay_bench::{WrkRun, cpu_by_name, pids_named, wrk};
use reelay_shared::VideoId;
use reelay_tests::TestEnv;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    about = "reelay engagement: player events and reactions under load, and the lag to ClickHouse"
)]
struct Args {
    /// The steady rate of the lag measurement, requests/s.
    #[arg(long, default_value_t = 3000)]
    rate: u32,
    /// Seconds of the steady rate.
    #[arg(long, default_value_t = 20)]
    lag_seconds: u64,
    /// Seconds of wrk load per endpoint.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Open connections for wrk (a busy fleet of players).
    #[arg(long, default_value_t = 64)]
    connections: u32,
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
    let mut worker = env.spawn_worker_process_with(&env.worker_config_with_etl());
    let result = async {
        let owner = Uuid::new_v4();
        let video = env.ready_video(owner, 600_000).await;
        let probe = env.ready_video(owner, 600_000).await;
        let steady = lag(&args, &env, &base, video, probe).await?;
        drain(&env, steady, false).await?;
        let processes = [
            ("api", api.id().unwrap_or_default()),
            ("worker", worker.id().unwrap_or_default()),
        ];
        let accepted = load(&args, &env, &base, video, &processes).await?;
        drain(&env, steady + accepted, true).await
    }
    .await;
    let _ = api.kill().await;
    let _ = worker.kill().await;
    result
}

/// A player event now, of `session` on `video`.
fn event(video: VideoId, session: Uuid, playhead_ms: u64) -> (Uuid, serde_json::Value) {
    let id = Uuid::new_v4();
    let event = json!({
        "event_id": id, "session_id": session, "video_id": video, "type": "position",
        "playhead_ms": playhead_ms, "client_time": Utc::now().to_rfc3339(),
    });
    (id, event)
}

/// Steady single-event requests; the 202-to-stored lag of the probe
/// video's events.
async fn lag(
    args: &Args,
    env: &TestEnv,
    base: &str,
    video: VideoId,
    probe: VideoId,
) -> anyhow::Result<u64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("{base}/v1/events");
    let sent: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = u64::from(args.rate) * args.lag_seconds;
    let every = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    // Players heartbeat about every 10 s: at the rate, this many at once.
    let sessions: Vec<Uuid> = (0..args.rate as usize * 10)
        .map(|_| Uuid::new_v4())
        .collect();
    // ClickHouse is polled for the probe video's rows all along.
    let seen: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = tokio::spawn({
        let (ch, seen, polling) = (env.analytics(), seen.clone(), polling.clone());
        async move {
            #[derive(Deserialize)]
            struct Row {
                event_id: Uuid,
            }
            let query = format!(
                "SELECT event_id FROM {}.playback_events WHERE video_id = toUUID('{probe}')",
                ch.database()
            );
            while polling.load(std::sync::atomic::Ordering::Relaxed) {
                let rows: Vec<Row> = ch.query(&query).await.unwrap_or_default();
                let now = Instant::now();
                let mut seen = seen.lock().await;
                for row in rows {
                    seen.entry(row.event_id).or_insert(now);
                }
                drop(seen);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..total {
        // Paced by the clock: request i leaves at i × every.
        let due = started + every * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let probing = i % 30 == 0;
        let (id, body) = event(
            if probing { probe } else { video },
            sessions[i as usize % sessions.len()],
            i * 10,
        );
        let (http, url, sent, latencies, failures) = (
            http.clone(),
            url.clone(),
            sent.clone(),
            latencies.clone(),
            failures.clone(),
        );
        requests.spawn(async move {
            let at = Instant::now();
            let ok = http
                .post(&url)
                .json(&json!({ "events": [body] }))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 202);
            let done = Instant::now();
            latencies.lock().await.push(done - at);
            match ok {
                true if probing => {
                    sent.lock().await.insert(id, done);
                }
                true => {}
                false => {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        while requests.try_join_next().is_some() {}
    }
    requests.join_all().await;
    let elapsed = started.elapsed();

    let sent = sent.lock().await.clone();
    let probes = sent.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().await.len() < probes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    polling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = poller.await;
    let seen = seen.lock().await;
    let mut lags: Vec<Duration> = Vec::with_capacity(probes);
    for (id, at) in &sent {
        match seen.get(id) {
            Some(stored) => lags.push(stored.saturating_duration_since(*at)),
            None => bail!("probe event {id} never reached ClickHouse"),
        }
    }
    let mut latencies = latencies.lock().await.clone();
    latencies.sort();
    lags.sort();
    let pct =
        |v: &[Duration], p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "steady load: {total} single-event requests in {:.1} s = {:.0} requests/s (asked {}), {} failed; \
         latency p50 {:.1} ms, p99 {:.1} ms",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        args.rate,
        failures.load(std::sync::atomic::Ordering::Relaxed),
        pct(&latencies, 0.5).as_secs_f64() * 1e3,
        pct(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "lag from 202 to stored in ClickHouse ({probes} probe events): p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        pct(&lags, 0.5).as_secs_f64(),
        pct(&lags, 0.99).as_secs_f64(),
        lags.last().context("lags")?.as_secs_f64(),
    );
    Ok(total - failures.load(std::sync::atomic::Ordering::Relaxed))
}

/// Lua that makes wrk's random numbers differ per thread (each thread's
/// Lua state would start from the same seed) and makes UUIDs.
const LUA_PRELUDE: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + id * 7919)
  sessions = {}
  for i = 1, 30000 do sessions[i] = random_uuid() end
  -- Event ids, cheap to make: a counter, scrambled into the first eight
  -- digits too (ClickHouse 18.16 hashes a UUID by one half: ids alike in
  -- it make its GROUP BY and uniqExact quadratic), a random middle per
  -- thread.
  middle = string.sub(random_uuid(), 9, 24)
  counter = 0
end
local hexdigits = "0123456789abcdef"
function hex(n)
  local t = {}
  for i = 1, n do
    local r = math.random(1, 16)
    t[i] = hexdigits:sub(r, r)
  end
  return table.concat(t)
end
function random_uuid()
  return hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-a" .. hex(3) .. "-" .. hex(12)
end
function uuid()
  counter = counter + 1
  return string.format("%08x", (counter * 2654435761) % 4294967296) .. middle .. string.format("%012x", counter)
end
"#;

/// wrk against the events (1 and 50 a request), reactions and the
/// reference; how many events the api accepted.
async fn load(
    args: &Args,
    env: &TestEnv,
    base: &str,
    video: VideoId,
    processes: &[(&str, u32)],
) -> anyhow::Result<u64> {
    let event_lua = format!(
        "function event()\n  return '{{\"event_id\":\"' .. uuid() .. '\",\"session_id\":\"' .. sessions[math.random(1, 30000)] .. \
         '\",\"video_id\":\"{video}\",\"type\":\"position\",\"playhead_ms\":' .. math.random(0, 600000) .. \
         ',\"client_time\":\"' .. os.date(\"!%Y-%m-%dT%H:%M:%SZ\") .. '\"}}'\nend\n"
    );
    let headers = "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n";
    let single = format!(
        "{LUA_PRELUDE}{event_lua}{headers}request = function()\n  return wrk.format(nil, nil, nil, '{{\"events\":[' .. event() .. ']}}')\nend\n"
    );
    let batch = format!(
        "{LUA_PRELUDE}{event_lua}{headers}request = function()\n  local t = {{}}\n  for i = 1, 50 do t[i] = event() end\n  \
         return wrk.format(nil, nil, nil, '{{\"events\":[' .. table.concat(t, ',') .. ']}}')\nend\n"
    );
    let tokens: Vec<String> = (0..1000)
        .map(|_| format!("\"{}\"", env.token(Uuid::new_v4())))
        .collect();
    let reactions = format!(
        "{LUA_PRELUDE}tokens = {{{}}}\nkinds = {{\"like\", \"dislike\"}}\n\
         request = function()\n  local h = {{[\"Content-Type\"] = \"application/json\", [\"Authorization\"] = \"Bearer \" .. tokens[math.random(1, #tokens)]}}\n  \
         return wrk.format(\"PUT\", nil, h, '{{\"reaction\":\"' .. kinds[math.random(1, 2)] .. '\"}}')\nend\n",
        tokens.join(",")
    );
    println!(
        "endpoint                                  requests/s   events/s      p50       p99   non-2xx   vs /healthz   (wrk, {} connections, {} s, 2 threads)",
        args.connections, args.seconds
    );
    let reference = wrk(
        &format!("{base}/healthz"),
        "",
        args.connections,
        args.seconds,
    )
    .await?;
    row("GET /healthz (reference)", &reference, 0, &reference);
    let mut accepted = 0;
    let mut cpu = Vec::new();
    for (name, path, script, events) in [
        (
            "POST /v1/events (1 event)",
            "/v1/events".to_owned(),
            single,
            1u64,
        ),
        (
            "POST /v1/events (50 events)",
            "/v1/events".to_owned(),
            batch,
            50,
        ),
        (
            "PUT /v1/videos/{id}/reaction",
            format!("/v1/videos/{video}/reaction"),
            reactions,
            0,
        ),
    ] {
        let watched = watched(processes);
        let mut before = cpu_by_name(&watched);
        before.push(("all (wrk too)".into(), machine_busy()));
        let run = wrk(
            &format!("{base}{path}"),
            &script,
            args.connections,
            args.seconds,
        )
        .await?;
        let mut after = cpu_by_name(&watched);
        after.push(("all (wrk too)".into(), machine_busy()));
        cpu.push((name, before, after));
        if run.non_2xx > 0 && events > 0 {
            bail!("{name}: {} requests failed", run.non_2xx);
        }
        accepted += run.requests * events;
        row(name, &run, events, &reference);
    }
    println!("cores busy during each load (of 2):");
    for (name, before, after) in cpu {
        let busy: Vec<String> = after
            .iter()
            .map(|(process, secs)| {
                let start = before
                    .iter()
                    .find(|(p, _)| p == process)
                    .map_or(0.0, |(_, s)| *s);
                format!("{process} {:.2}", (secs - start) / args.seconds as f64)
            })
            .collect();
        println!("  {name:<38} {}", busy.join(", "));
    }
    Ok(accepted)
}

/// CPU seconds the whole machine was busy so far (/proc/stat).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    busy / 100.0
}

/// The processes whose CPU a load is split by: ours, and the services'.
fn watched(ours: &[(&str, u32)]) -> Vec<(String, u32)> {
    let mut watched: Vec<(String, u32)> = ours.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect();
    for (name, command) in [
        ("rabbitmq", "beam.smp"),
        ("clickhouse", "clickhouse-serv"),
        ("postgres", "postgres"),
    ] {
        watched.extend(
            pids_named(command)
                .into_iter()
                .map(|p| (name.to_owned(), p)),
        );
    }
    watched
}

fn row(name: &str, run: &WrkRun, events: u64, reference: &WrkRun) {
    println!(
        "{name:<40} {:>12.1} {:>10.0} {:>8} {:>9} {:>9} {:>12.2}",
        run.requests_per_sec,
        run.requests_per_sec * events as f64,
        run.p50,
        run.p99,
        run.non_2xx,
        run.requests_per_sec / reference.requests_per_sec
    );
}

/// Waits until ClickHouse holds `expected` distinct events; prints how
/// long the ETL took after the load, and whether any event is stored
/// twice.
async fn drain(env: &TestEnv, expected: u64, report: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let at_start = env.stored_events().await.1;
    let deadline = started + Duration::from_secs(600);
    loop {
        let (rows, distinct) = env.stored_events().await;
        if distinct >= expected {
            if report {
                println!(
                    "ETL: all {distinct} accepted events stored, {} rows; the last {} took {:.1} s after the load ended",
                    rows,
                    expected.saturating_sub(at_start),
                    started.elapsed().as_secs_f64()
                );
            }
            if rows != distinct {
                bail!("{} events are stored more than once", rows - distinct);
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the ETL stored {distinct} of {expected} events within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

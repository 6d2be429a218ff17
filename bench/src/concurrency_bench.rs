//! Many uploads at once through 1, 2 and 4 workers. For each load (N
//! uploads of S MiB, fresh random bytes) it first uploads the same bytes
//! straight to Garage, N multipart uploads at once (the reference), then,
//! for each number of workers, starts a fresh api and workers (release
//! builds, production defaults, their own database, queues and prefixes),
//! waits until the workers split the shards, runs the N uploads through
//! reelay until every one is UPLOADED, and prints: aggregate MB/s and its
//! ratio to the reference, each worker's share of the chunk messages
//! (from its `reelay_chunks_received_total`) and the largest deviation from
//! an even share, and the peak and after-load (10 s idle) RSS of the api
//! and of each worker.

use std::{path::PathBuf, time::Duration, time::Instant};

use bytes::Bytes;
use clap::Parser;
use reelay_bench::{MIB, direct_multipart, peak_rss_mib, random_bytes, rss_mib};
use reelay_shared::VideoStatus;
use reelay_tests::{TestEnv, client::Tus, wait_until};
use reelay_worker::config::WorkerConfig;
use tokio::process::Child;

#[derive(Parser)]
#[command(about = "reelay with many concurrent uploads and several workers")]
struct Args {
    /// Loads as <uploads>x<MiB each>.
    #[arg(long = "load", default_values_t = ["50x20".to_owned(), "200x5".to_owned()])]
    loads: Vec<String>,
    /// Worker counts to measure each load with.
    #[arg(long = "workers", default_values_t = [1usize, 2, 4])]
    workers: Vec<usize>,
    /// Bytes per tus PATCH, in MiB.
    #[arg(long, default_value_t = 8)]
    patch_mib: u64,
    /// Where reelay-api and reelay-worker are.
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
    /// PostgreSQL server (a database is created for each run).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
}

struct Run {
    mbps: f64,
    /// Each worker's share of the chunk messages, as a fraction.
    shares: Vec<f64>,
    api_rss: (f64, f64),
    worker_rss: Vec<(f64, f64)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "uploads  MiB_each  workers  MB/s   direct_MB/s  reelay/direct  chunk_shares_%            max_dev_%  api_rss_MiB(peak/after)  worker_rss_MiB(peak/after)"
    );
    for load in &args.loads {
        let (n, mib) = load
            .split_once('x')
            .and_then(|(n, m)| Some((n.parse::<usize>().ok()?, m.parse::<u64>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--load {load}: want <uploads>x<MiB>"))?;
        let direct = direct_reference(&args, n, mib * MIB).await?;
        for &workers in &args.workers {
            let run = measure(&args, n, mib * MIB, workers).await?;
            let even = 1.0 / workers as f64;
            let max_dev = run
                .shares
                .iter()
                .map(|s| (s - even).abs() / even * 100.0)
                .fold(0.0, f64::max);
            let shares: Vec<String> = run
                .shares
                .iter()
                .map(|s| format!("{:.0}", s * 100.0))
                .collect();
            let rss: Vec<String> = run
                .worker_rss
                .iter()
                .map(|(p, a)| format!("{p:.0}/{a:.0}"))
                .collect();
            println!(
                "{n:>7}  {mib:>8}  {workers:>7}  {:>5.1}  {direct:>11.1}  {:>13.2}  {:<24}  {max_dev:>9.0}  {:>23}  {}",
                run.mbps,
                run.mbps / direct,
                shares.join(" "),
                format!("{:.0}/{:.0}", run.api_rss.0, run.api_rss.1),
                rss.join(" "),
            );
        }
    }
    Ok(())
}

/// MB/s of `n` multipart uploads of `size` at once straight to Garage
/// (8 MiB parts, 4 in flight each).
async fn direct_reference(args: &Args, n: usize, size: u64) -> anyhow::Result<f64> {
    let env = TestEnv::for_benchmark(&args.postgres).await;
    let uploads: Vec<Bytes> = (0..n).map(|_| random_bytes(size)).collect();
    let started = Instant::now();
    futures_util::future::try_join_all(uploads.into_iter().enumerate().map(|(i, data)| {
        direct_multipart(
            &env.storage,
            format!("{}direct-{i}", env.s3.key_prefix),
            data,
        )
    }))
    .await?;
    Ok((n as u64 * size) as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// A free port on 127.0.0.1 for a worker's `/metrics`.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn measure(args: &Args, n: usize, size: u64, workers: usize) -> anyhow::Result<Run> {
    let mut env = TestEnv::for_benchmark(&args.postgres).await;
    env.binaries = PathBuf::from(&args.bin_dir);
    let mut api_config = env.api_config();
    api_config.upload.max_upload_size = size * 2;
    let (mut api, base) = env.spawn_api_process(&api_config).await;
    let mut replicas: Vec<(Child, u16)> = Vec::new();
    for i in 0..workers {
        let port = free_port()?;
        let child = env.spawn_worker_process_with(&WorkerConfig {
            replica: format!("worker-{i}"),
            http_addr: Some(format!("127.0.0.1:{port}").parse()?),
            ..env.worker_config()
        });
        replicas.push((child, port));
    }
    let result = async {
        let shards = usize::from(env.topology.shards);
        let settled = wait_until(Duration::from_secs(60), || async {
            let owners = env.shard_owners().await;
            owners.len() == workers && owners.values().sum::<usize>() == shards
        })
        .await;
        anyhow::ensure!(
            settled,
            "the workers did not split the shards: {:?}",
            env.shard_owners().await
        );
        let uploads: Vec<Bytes> = (0..n).map(|_| random_bytes(size)).collect();
        let tus = Tus::new(&base, env.token(uuid::Uuid::new_v4()));
        let patch = (args.patch_mib * MIB) as usize;
        let started = Instant::now();
        let ids =
            futures_util::future::join_all(uploads.iter().map(|data| tus.upload(data, patch)))
                .await;
        for id in ids {
            env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(3600))
                .await;
        }
        let mbps = (n as u64 * size) as f64 / 1e6 / started.elapsed().as_secs_f64();
        // Idle staging and the allocator's chance to give memory back.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let http = reqwest::Client::new();
        let mut chunks = Vec::new();
        for (_, port) in &replicas {
            chunks.push(chunks_received(&http, *port).await?);
        }
        let total: f64 = chunks.iter().sum::<f64>().max(1.0);
        let rss = |child: &Child| -> anyhow::Result<(f64, f64)> {
            Ok((peak_rss_mib(child)?, rss_mib(child)?))
        };
        Ok::<_, anyhow::Error>(Run {
            mbps,
            shares: chunks.iter().map(|c| c / total).collect(),
            api_rss: rss(&api)?,
            worker_rss: replicas
                .iter()
                .map(|(child, _)| rss(child))
                .collect::<anyhow::Result<_>>()?,
        })
    }
    .await;
    let _ = api.kill().await;
    for (child, _) in &mut replicas {
        let _ = child.kill().await;
    }
    result
}

/// The worker's `reelay_chunks_received_total` from its `/metrics`.
async fn chunks_received(http: &reqwest::Client, port: u16) -> anyhow::Result<f64> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("reelay_chunks_received_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum())
}

//! Upload benchmark. In one run, for each size: uploads fresh random bytes
//! (a) through reelay end to end (a tus client → api → RabbitMQ → workers →
//! Garage) until the video is UPLOADED, and (b) directly to the same Garage
//! bucket as a multipart upload with 4 parts in flight. Prints MB/s for
//! each, the ratio a/b, and the peak RSS (VmHWM) of the api and the workers;
//! then the CPU per GiB of each process, and of two bare socket relays
//! with a hash (a floor under the api and worker) measured after it.
//!
//! It starts its own api and workers from `--bin-dir` (release builds)
//! through the test harness, with their own database, queues and key
//! prefixes, and removes them after. The tus client is the harness's raw one
//! in Rust (POST, then sequential PATCHes of slices), so the client spends
//! little of the 2 cores being measured.

use std::{path::PathBuf, time::Instant};

use bytes::Bytes;
use clap::Parser;
use reelay_bench::{
    MIB, cpu_by_name, direct_multipart, peak_rss_mib, pids_named, random_bytes,
    relay_floor_cpu_per_gib,
};
use reelay_shared::VideoStatus;
use reelay_tests::{TestEnv, client::Tus};
use reelay_worker::config::WorkerConfig;

#[derive(Parser)]
#[command(about = "reelay upload throughput against direct multipart to Garage")]
struct Args {
    /// Upload sizes in MiB; each is measured with fresh processes.
    #[arg(long = "size-mib", default_values_t = [1024u64])]
    sizes: Vec<u64>,
    /// Bytes per tus PATCH, in MiB.
    #[arg(long, default_value_t = 8)]
    patch_mib: u64,
    /// Worker replicas to start.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Uploads at once, each of the size (and as many direct uploads at
    /// once for the reference); the figures are aggregates.
    #[arg(long, default_value_t = 1)]
    concurrent: usize,
    /// The api's budget of buffered body bytes (REELAY_API_BUFFER_MIB).
    #[arg(long, default_value_t = 32)]
    api_buffer_mib: usize,
    /// Where reelay-api and reelay-worker are.
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
    /// PostgreSQL server (a database is created for the run).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
}

struct Run {
    size: u64,
    direct_mbps: f64,
    reelay_mbps: f64,
    /// Until the last PATCH was acknowledged (bytes durable in the broker).
    ingest_mbps: f64,
    api_peak_rss_mib: f64,
    worker_peak_rss_mib: f64,
    /// CPU seconds per GiB uploaded through reelay, by process.
    cpu_per_gib: Vec<(String, f64)>,
    /// The same for two bare relays and a hash, in this run.
    floor_cpu_per_gib: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "size_mib  direct_MB/s  reelay_MB/s  ratio  ingest_MB/s  api_peak_rss_MiB  worker_peak_rss_MiB"
    );
    for &size_mib in &args.sizes {
        let run = measure(&args, size_mib * MIB).await?;
        println!(
            "{:>8}  {:>11.1}  {:>11.1}  {:>5.2}  {:>11.1}  {:>16.1}  {:>19.1}",
            run.size / MIB,
            run.direct_mbps,
            run.reelay_mbps,
            run.reelay_mbps / run.direct_mbps,
            run.ingest_mbps,
            run.api_peak_rss_mib,
            run.worker_peak_rss_mib
        );
        let cpu: Vec<String> = run
            .cpu_per_gib
            .iter()
            .map(|(name, s)| format!("{name} {s:.1}"))
            .collect();
        println!("          CPU s/GiB through reelay: {}", cpu.join(", "));
        // The lines issue 13 judges the ingest path by: what our own
        // processes spend, and the end-to-end rate against direct.
        let ours: f64 = run
            .cpu_per_gib
            .iter()
            .filter(|(name, _)| name == "api" || name.starts_with("worker"))
            .map(|(_, s)| s)
            .sum();
        println!("api+worker CPU s/GiB: {ours:.2}");
        // What a bare read/write relay pair spends on the same bytes (the
        // kernel's four socket crossings and SHA-256,
        // `relay_floor_cpu_per_gib`), measured now.
        println!("relay floor CPU s/GiB: {:.2}", run.floor_cpu_per_gib);
        println!(
            "api+worker over the floor CPU s/GiB: {:.2}",
            ours - run.floor_cpu_per_gib
        );
        println!("reelay/direct: {:.2}", run.reelay_mbps / run.direct_mbps);
    }
    Ok(())
}

async fn measure(args: &Args, size: u64) -> anyhow::Result<Run> {
    let mut env = TestEnv::for_benchmark(&args.postgres).await;
    env.binaries = PathBuf::from(&args.bin_dir);
    let mut api_config = env.api_config();
    api_config.upload.max_upload_size = size * 2;
    api_config.buffer_budget = args.api_buffer_mib << 20;
    let (mut api, base) = env.spawn_api_process(&api_config).await;
    let mut workers: Vec<_> = (0..args.workers)
        .map(|i| {
            env.spawn_worker_process_with(&WorkerConfig {
                replica: format!("worker-{i}"),
                ..env.worker_config()
            })
        })
        .collect();
    let result = async {
        let n = args.concurrent.max(1);
        let started = Instant::now();
        futures_util::future::try_join_all((0..n).map(|i| {
            direct_multipart(
                &env.storage,
                format!("{}direct-{i}", env.s3.key_prefix),
                random_bytes(size),
            )
        }))
        .await?;
        let direct_secs = started.elapsed().as_secs_f64();
        let uploads: Vec<Bytes> = (0..n).map(|_| random_bytes(size)).collect();
        let tus = Tus::new(&base, env.token(uuid::Uuid::new_v4()));
        let mut watched: Vec<(String, u32)> = vec![("api".into(), api.id().unwrap_or_default())];
        for (i, w) in workers.iter().enumerate() {
            watched.push((format!("worker-{i}"), w.id().unwrap_or_default()));
        }
        for (name, command) in [
            ("rabbitmq", "beam.smp"),
            ("garage", "garage"),
            ("postgres", "postgres"),
        ] {
            watched.extend(
                pids_named(command)
                    .into_iter()
                    .map(|p| (name.to_owned(), p)),
            );
        }
        let before = cpu_by_name(&watched);
        let (ingest_secs, reelay_secs) =
            through_reelay(&env, &tus, uploads, (args.patch_mib * MIB) as usize).await;
        let after = cpu_by_name(&watched);
        let total = size * n as u64;
        let floor_cpu_per_gib =
            tokio::task::spawn_blocking(move || relay_floor_cpu_per_gib(total)).await??;
        let gib = total as f64 / (1024.0 * MIB as f64);
        let cpu_per_gib = after
            .into_iter()
            .map(|(name, secs)| {
                let start = before
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0.0, |(_, s)| *s);
                (name, (secs - start) / gib)
            })
            .collect();
        Ok::<_, anyhow::Error>(Run {
            size,
            direct_mbps: total as f64 / 1e6 / direct_secs,
            reelay_mbps: total as f64 / 1e6 / reelay_secs,
            ingest_mbps: total as f64 / 1e6 / ingest_secs,
            api_peak_rss_mib: peak_rss_mib(&api)?,
            cpu_per_gib,
            floor_cpu_per_gib,
            worker_peak_rss_mib: workers
                .iter()
                .map(peak_rss_mib)
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .fold(0.0, f64::max),
        })
    }
    .await;

    let _ = api.kill().await;
    for w in &mut workers {
        let _ = w.kill().await;
    }
    result
}

/// Each upload: POST, sequential PATCHes, then wait until UPLOADED, all
/// at once; seconds from the start to the last PATCH's answer, and to the
/// last UPLOADED.
async fn through_reelay(env: &TestEnv, tus: &Tus, uploads: Vec<Bytes>, patch: usize) -> (f64, f64) {
    let started = Instant::now();
    let ids =
        futures_util::future::join_all(uploads.iter().map(|data| tus.upload(data, patch))).await;
    let ingested = started.elapsed().as_secs_f64();
    for id in ids {
        env.wait_for_status(
            id,
            VideoStatus::Uploaded,
            std::time::Duration::from_secs(3600),
        )
        .await;
    }
    (ingested, started.elapsed().as_secs_f64())
}

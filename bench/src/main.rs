//! Upload benchmark. In one run, for each size: uploads fresh random bytes
//! (a) through reelay end to end (a tus client → api → RabbitMQ → workers →
//! Garage) until the video is UPLOADED, and (b) directly to the same Garage
//! bucket as a multipart upload with 4 parts in flight. Prints MB/s for
//! each, the ratio a/b, and the peak RSS (VmHWM) of the api and the workers.
//!
//! It starts its own api and workers from `--bin-dir` (release builds) with
//! their own database, queues and key prefixes, and removes them after.
//! The tus client here is a minimal one in Rust (POST, then sequential
//! PATCHes), so the client spends little of the 2 cores being measured.

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use object_store::{ObjectStoreExt, WriteMultipart, path::Path};
use rand::RngCore;
use reelay_bench::{BenchEnv, spawn, token, wait_ready};
use reelay_shared::storage::Storage;
use tokio::process::Child;

const MIB: u64 = 1024 * 1024;

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
    }
    Ok(())
}

async fn measure(args: &Args, size: u64) -> anyhow::Result<Run> {
    let bench = BenchEnv::create(&args.postgres).await?;
    let mut env = bench.process_env();
    env.push(("REELAY_MAX_UPLOAD_SIZE", (size * 2).to_string()));
    let mut api = spawn(&format!("{}/reelay-api", args.bin_dir), &env, "api")?;
    let mut workers = Vec::new();
    for i in 0..args.workers {
        workers.push(spawn(
            &format!("{}/reelay-worker", args.bin_dir),
            &env,
            &format!("worker-{i}"),
        )?);
    }
    let base = bench.base_url();
    let result = async {
        wait_ready(&base).await?;
        let direct = random_bytes(size);
        let direct_secs = direct_multipart(
            &bench.storage,
            &format!("{}direct", bench.s3_prefix),
            direct,
        )
        .await?;
        let data = random_bytes(size);
        let token = token(&args.bin_dir, &bench.secret, "user", uuid::Uuid::new_v4()).await?;
        let mut watched: Vec<(String, u32)> = vec![("api".into(), api.id().unwrap_or_default())];
        for (i, w) in workers.iter().enumerate() {
            watched.push((format!("worker-{i}"), w.id().unwrap_or_default()));
        }
        watched.extend(
            pids_named("beam.smp")
                .into_iter()
                .map(|p| ("rabbitmq".to_owned(), p)),
        );
        watched.extend(
            pids_named("garage")
                .into_iter()
                .map(|p| ("garage".to_owned(), p)),
        );
        watched.extend(
            pids_named("postgres")
                .into_iter()
                .map(|p| ("postgres".to_owned(), p)),
        );
        let before = cpu_by_name(&watched);
        let (ingest_secs, reelay_secs) =
            through_reelay(&base, &token, data, args.patch_mib * MIB).await?;
        let after = cpu_by_name(&watched);
        let gib = size as f64 / (1024.0 * MIB as f64);
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
            direct_mbps: size as f64 / 1e6 / direct_secs,
            reelay_mbps: size as f64 / 1e6 / reelay_secs,
            ingest_mbps: size as f64 / 1e6 / ingest_secs,
            api_peak_rss_mib: peak_rss_mib(&api)?,
            cpu_per_gib,
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
    bench.cleanup().await;
    result
}

fn random_bytes(size: u64) -> Bytes {
    let mut data = vec![0u8; size as usize];
    rand::rng().fill_bytes(&mut data);
    Bytes::from(data)
}

/// The reference: 8 MiB parts, 4 in flight, straight to Garage.
async fn direct_multipart(storage: &Storage, key: &str, data: Bytes) -> anyhow::Result<f64> {
    let started = Instant::now();
    let upload = storage.s3.put_multipart(&Path::from(key)).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * MIB as usize);
    for piece in data.chunks(8 * MIB as usize) {
        writer.wait_for_capacity(4).await?;
        writer.put(data.slice_ref(piece));
    }
    writer.finish().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// POST, sequential PATCHes, then poll until UPLOADED; seconds from the
/// POST to the last PATCH's answer, and to UPLOADED.
async fn through_reelay(
    base: &str,
    token: &str,
    data: Bytes,
    patch: u64,
) -> anyhow::Result<(f64, f64)> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let id = reelay_bench::tus_upload(&http, base, token, data, patch as usize).await?;
    let ingested = started.elapsed().as_secs_f64();
    reelay_bench::wait_for_status(&http, base, token, &id, "UPLOADED").await?;
    Ok((ingested, started.elapsed().as_secs_f64()))
}

/// Pids whose command name is `name` (for the services the run leans on).
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// CPU seconds (user + system) so far, summed by name.
fn cpu_by_name(watched: &[(String, u32)]) -> Vec<(String, f64)> {
    let mut totals: Vec<(String, f64)> = Vec::new();
    for (name, pid) in watched {
        let secs = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the parenthesised command: utime and stime are 12th and 13th.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks: f64 =
                    fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
                Some(ticks / 100.0)
            });
        let secs = secs.unwrap_or(0.0);
        match totals.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += secs,
            None => totals.push((name.clone(), secs)),
        }
    }
    totals
}

/// Peak resident set size of a running child, from /proc (VmHWM).
fn peak_rss_mib(child: &Child) -> anyhow::Result<f64> {
    let pid = child.id().context("the process is running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}

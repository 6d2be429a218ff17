//! Time to playable: seconds from the last byte of an upload acknowledged
//! to READY through reelay (api, a worker, two fflow replicas; release
//! builds), against ffmpeg alone encoding the same file to the same ladder
//! with the same command, alternated in one run on the same machine.
//!
//! `cargo build --release --bins && ./target/release/reelay-encode-bench`

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::Parser;
use reelay_bench::{BenchEnv, free_port, spawn, token, wait_ready};
use reelay_fflow::encode;

#[derive(Parser)]
#[command(about = "Time to playable through reelay against ffmpeg alone")]
struct Args {
    /// Length of the test video, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u32,
    /// Its height (16:9); the ladder follows from it.
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Measurements of each.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// The x264 preset of both (fflow's default).
    #[arg(long, default_value = "veryfast")]
    preset: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source.mp4");
    make_source(&source, args.seconds, args.height)?;
    let size = std::fs::metadata(&source)?.len();
    let probe = encode::probe(&source)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let rungs = encode::ladder(&probe);
    println!(
        "source: {} s of {}x{} with noise, {:.1} MiB; ladder {:?}; preset {}",
        args.seconds,
        probe.width,
        probe.height,
        size as f64 / 1048576.0,
        rungs,
        args.preset
    );

    let env = BenchEnv::create(&args.postgres).await?;
    let result = run(&args, &env, dir.path(), &source, &probe, &rungs).await;
    env.cleanup().await;
    result
}

async fn run(
    args: &Args,
    env: &BenchEnv,
    dir: &Path,
    source: &Path,
    probe: &encode::Probe,
    rungs: &[u32],
) -> anyhow::Result<()> {
    let fflow_ports = [free_port()?, free_port()?];
    let mut process_env = env.process_env();
    process_env.push(("REELAY_FFLOW_PRESET", args.preset.clone()));
    let mut children = Vec::new();
    for (i, port) in fflow_ports.iter().enumerate() {
        let mut fflow_env = process_env.clone();
        fflow_env.push(("REELAY_FFLOW_ADDR", format!("127.0.0.1:{port}")));
        fflow_env.push(("REELAY_FFLOW_REPLICA", format!("r{}", i + 1)));
        fflow_env.push((
            "REELAY_FFLOW_DATA_DIR",
            dir.join(format!("fflow-{i}")).display().to_string(),
        ));
        children.push(spawn(
            &format!("{}/reelay-fflow", args.bin_dir),
            &fflow_env,
            &format!("fflow-r{}", i + 1),
        )?);
    }
    let urls = fflow_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    process_env.push(("REELAY_FFLOW_URLS", urls));
    children.push(spawn(
        &format!("{}/reelay-api", args.bin_dir),
        &process_env,
        "bench-api",
    )?);
    children.push(spawn(
        &format!("{}/reelay-worker", args.bin_dir),
        &process_env,
        "bench-worker",
    )?);
    let base = env.base_url();
    wait_ready(&base).await?;
    let token = token(&args.bin_dir, &env.secret, "user", uuid::Uuid::new_v4()).await?;
    let data = bytes::Bytes::from(std::fs::read(source)?);

    println!("| run | ffmpeg alone s | reelay last byte → READY s | ratio |");
    println!("| ---: | ---: | ---: | ---: |");
    let (mut alone_all, mut reelay_all) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let out = dir.join(format!("alone-{run}"));
        std::fs::create_dir_all(&out)?;
        let alone = ffmpeg_alone(source, &out, probe, rungs, &args.preset)?;
        let reelay = to_playable(&base, &token, data.clone()).await?;
        println!(
            "| {run} | {alone:.2} | {reelay:.2} | {:.2} |",
            reelay / alone
        );
        alone_all.push(alone);
        reelay_all.push(reelay);
    }
    let (a, r) = (median(&mut alone_all), median(&mut reelay_all));
    println!(
        "median: ffmpeg alone {a:.2} s, reelay {r:.2} s, ratio {:.2}",
        r / a
    );
    drop(children);
    Ok(())
}

/// A test video: testsrc2 with noise (so it costs what camera footage
/// costs to encode) and a tone.
fn make_source(path: &PathBuf, seconds: u32, height: u32) -> anyhow::Result<()> {
    let width = (height * 16 / 9) & !1;
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "testsrc2=size={width}x{height}:rate=30:duration={seconds},noise=alls=12:allf=t+u"
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
        ])
        .args(["-c:a", "aac", "-movflags", "+faststart", "-shortest"])
        .arg(path)
        .status()
        .context("running ffmpeg")?
        .success();
    if !ok {
        bail!("ffmpeg could not make the test video");
    }
    Ok(())
}

/// The command fflow runs, timed.
fn ffmpeg_alone(
    source: &Path,
    out: &Path,
    probe: &encode::Probe,
    rungs: &[u32],
    preset: &str,
) -> anyhow::Result<f64> {
    let args = encode::ffmpeg_args(source, out, probe, rungs, preset);
    let started = Instant::now();
    let status = std::process::Command::new("ffmpeg")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("ffmpeg alone failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Uploads `data` (8 MiB PATCHes) and returns the seconds from the last
/// PATCH's answer to READY.
async fn to_playable(base: &str, token: &str, data: bytes::Bytes) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let id = reelay_bench::tus_upload(&http, base, token, data, 8 << 20).await?;
    let acknowledged = Instant::now();
    reelay_bench::wait_for_status(&http, base, token, &id, "READY").await?;
    Ok(acknowledged.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

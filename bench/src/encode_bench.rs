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
use reelay_fflow::encode;
use reelay_shared::VideoStatus;
use reelay_tests::{TestEnv, client::Tus};

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

    let mut env = TestEnv::for_benchmark(&args.postgres).await;
    env.binaries = PathBuf::from(&args.bin_dir);
    run(&args, &env, dir.path(), &source, &probe, &rungs).await
}

async fn run(
    args: &Args,
    env: &TestEnv,
    dir: &Path,
    source: &Path,
    probe: &encode::Probe,
    rungs: &[u32],
) -> anyhow::Result<()> {
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for i in 1..=2 {
        let config = reelay_fflow::config::FflowConfig {
            preset: args.preset.clone(),
            ..env.fflow_config(&format!("r{i}"), dir)
        };
        let (child, fflow) = env.spawn_fflow_process_with(&config).await;
        children.push(child);
        urls.push(fflow.base.clone());
    }
    let (api, base) = env.spawn_api_process(&env.api_config()).await;
    children.push(api);
    children.push(env.spawn_worker_process_with(&env.worker_config_with_fflow(&urls)));
    let tus = Tus::new(&base, env.token(uuid::Uuid::new_v4()));
    let data = bytes::Bytes::from(std::fs::read(source)?);

    println!("| run | ffmpeg alone s | reelay last byte → READY s | ratio |");
    println!("| ---: | ---: | ---: | ---: |");
    let (mut alone_all, mut reelay_all) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let out = dir.join(format!("alone-{run}"));
        std::fs::create_dir_all(&out)?;
        let alone = ffmpeg_alone(source, &out, probe, rungs, &args.preset)?;
        let reelay = to_playable(env, &tus, &data).await;
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
async fn to_playable(env: &TestEnv, tus: &Tus, data: &bytes::Bytes) -> f64 {
    let id = tus.upload(data, 8 << 20).await;
    let acknowledged = Instant::now();
    env.wait_for_status(id, VideoStatus::Ready, std::time::Duration::from_secs(3600))
        .await;
    acknowledged.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

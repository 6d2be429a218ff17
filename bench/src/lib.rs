//! What the benchmarks share beyond the test harness (which gives each run
//! its own database, queues and key prefixes, and starts the release
//! binaries from the settings it built): reading what processes cost.

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use object_store::{ObjectStoreExt, WriteMultipart, path::Path};
use rand::RngCore;
use reelay_shared::storage::Storage;
use tokio::process::{Child, Command};

pub const MIB: u64 = 1024 * 1024;

/// `size` fresh random bytes (nothing for S3 or the broker to compress).
pub fn random_bytes(size: u64) -> Bytes {
    let mut data = vec![0u8; size as usize];
    rand::rng().fill_bytes(&mut data);
    Bytes::from(data)
}

/// The reference of the upload benches: `data` straight to Garage as a
/// multipart upload under `key`, 8 MiB parts, 4 in flight; seconds taken.
pub async fn direct_multipart(storage: &Storage, key: String, data: Bytes) -> anyhow::Result<f64> {
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

/// Pids whose command name is `name` (for the services a run leans on).
pub fn pids_named(name: &str) -> Vec<u32> {
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
pub fn cpu_by_name(watched: &[(String, u32)]) -> Vec<(String, f64)> {
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
pub fn peak_rss_mib(child: &Child) -> anyhow::Result<f64> {
    status_mib(child, "VmHWM:")
}

/// Resident set size of a running child now, from /proc (VmRSS).
pub fn rss_mib(child: &Child) -> anyhow::Result<f64> {
    status_mib(child, "VmRSS:")
}

fn status_mib(child: &Child, field: &str) -> anyhow::Result<f64> {
    let pid = child.id().context("the process is running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/<pid>/status"))?;
    Ok(kib / 1024.0)
}

/// What wrk measured.
pub struct WrkRun {
    /// Requests completed in the run.
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50: String,
    pub p99: String,
    pub non_2xx: u64,
}

/// A wrk latency (`850.00us`, `6.12ms`, `1.02s`) in milliseconds.
pub fn millis(latency: &str) -> f64 {
    let split = latency
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(latency.len());
    let (number, unit) = latency.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1000.0,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => number,
    }
}

/// Runs wrk (2 threads, `connections`, `seconds`, latency percentiles)
/// with the Lua `script` against `url`.
pub async fn wrk(
    url: &str,
    script: &str,
    connections: u32,
    seconds: u64,
) -> anyhow::Result<WrkRun> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), script)?;
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(file.path())
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk (make bench-api installs it)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
    };
    // Let the server settle before the next load.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .context("wrk printed how many requests it made")?
        .parse()?;
    Ok(WrkRun {
        requests,
        requests_per_sec: field("Requests/sec:")
            .context("wrk printed Requests/sec")?
            .parse()?,
        p50: field("50%").context("wrk printed the 50% latency")?,
        p99: field("99%").context("wrk printed the 99% latency")?,
        non_2xx: field("Non-2xx or 3xx responses:").map_or(Ok(0), |n| n.parse())?,
    })
}

//! What the benchmarks share beyond the test harness (which gives each run
//! its own database, queues and key prefixes, and starts the release
//! binaries from the settings it built): reading what processes cost.

use std::{
    io::{self, Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::Instant,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use object_store::{ObjectStoreExt, WriteMultipart, path::Path};
use rand::RngCore;
use reelay_shared::storage::Storage;
use sha2::{Digest, Sha256};
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

/// A floor under an api and a worker that read each byte from a client
/// and write it to a broker, then read it from the broker, hash it and
/// write it to S3, measured on this machine now:
/// CPU seconds per GiB of two relay threads, the first receiving `size`
/// bytes from one loopback socket and sending them on through another, the
/// second doing the same and hashing them (SHA-256) on the way. No
/// protocol, no framing, no copy of their own: the kernel's four socket
/// crossings and the hash. The sending and the sinking threads are not
/// counted (they stand for the client, the broker and S3).
pub fn relay_floor_cpu_per_gib(size: u64) -> anyhow::Result<f64> {
    let block = random_bytes(8 * MIB);
    let (mut client, api_in) = loopback_pair()?;
    let (api_out, worker_in) = loopback_pair()?;
    let (worker_out, mut sink) = loopback_pair()?;
    let sender = thread::spawn(move || -> io::Result<()> {
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            client.write_all(&block[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    let api = thread::spawn(move || relay(api_in, api_out, None));
    let worker = thread::spawn(move || relay(worker_in, worker_out, Some(Sha256::new())));
    let sinking = thread::spawn(move || io::copy(&mut sink, &mut io::sink()));
    let joined = |name: &str| anyhow::anyhow!("the {name} thread panicked");
    // The relays first: a relay's error is the cause of the sender's.
    let cpu = api.join().map_err(|_| joined("first relay"))??
        + worker.join().map_err(|_| joined("second relay"))??;
    sender.join().map_err(|_| joined("sending"))??;
    let sunk = sinking.join().map_err(|_| joined("sink"))??;
    if sunk != size {
        bail!("the relays lost bytes: {sunk} of {size} arrived");
    }
    Ok(cpu / (size as f64 / (1024.0 * MIB as f64)))
}

/// Copies `from` to `to` until `from` ends, hashing on the way if asked;
/// the CPU seconds this thread spent.
fn relay(mut from: TcpStream, mut to: TcpStream, mut hash: Option<Sha256>) -> io::Result<f64> {
    let started = thread_cpu_secs()?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(hash) = &mut hash {
            hash.update(&buf[..n]);
        }
        to.write_all(&buf[..n])?;
    }
    std::hint::black_box(hash.map(Sha256::finalize));
    to.shutdown(std::net::Shutdown::Write)?;
    Ok(thread_cpu_secs()? - started)
}

/// Two ends of one loopback TCP connection.
fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let near = TcpStream::connect(listener.local_addr()?)?;
    Ok((near, listener.accept()?.0))
}

/// CPU seconds (user + system) of the calling thread so far.
fn thread_cpu_secs() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    stat_cpu_secs(&stat).ok_or_else(|| io::Error::other("unreadable /proc/thread-self/stat"))
}

/// utime + stime of a `/proc/…/stat` line, in seconds.
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command: utime and stime are 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
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
            .and_then(|stat| stat_cpu_secs(&stat))
            .unwrap_or(0.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte gets through both relays, and their CPU is counted.
    #[test]
    fn the_relay_floor_carries_every_byte_and_counts_its_cpu() {
        let per_gib = relay_floor_cpu_per_gib(64 * MIB).expect("relays");
        assert!(per_gib.is_finite() && per_gib > 0.0, "CPU s/GiB: {per_gib}");
    }
}

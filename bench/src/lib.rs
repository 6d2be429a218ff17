//! What the benchmarks share beyond the test harness (which gives each run
//! its own database, queues and key prefixes, and starts the release
//! binaries from the settings it built): reading what processes cost.

use anyhow::Context;
use tokio::process::Child;

pub const MIB: u64 = 1024 * 1024;

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
    let pid = child.id().context("the process is running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}

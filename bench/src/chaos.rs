//! `make chaos`: the chaos run at size (tests/harness/chaos/). Prints the
//! table and ends with `chaos: <U> uploads, <F> faults, lost <n>,
//! corrupted <n>, stuck <n>, orphaned <n>`; exits non-zero unless the run
//! was clean.
//!
//! CHAOS_UPLOADS (100), CHAOS_FAULTS (20), CHAOS_SEED (random, printed),
//! CHAOS_DEVICES (400: the rollout that runs through the faults),
//! CHAOS_VIDEOS (10 of the uploads are real videos, up to CHAOS_VIDEO_SECS
//! 20 s long, which must end READY; the rest are random bytes),
//! CHAOS_MAX_MIB (200), CHAOS_MAX_DOWN_SECS (30), CHAOS_MAX_PAUSE_MS (200:
//! the longest pause a client makes between chunks), CHAOS_REAL_SERVICES
//! (1: stop and start this machine's PostgreSQL, RabbitMQ, Redis and Garage;
//! 0: cut their proxies instead, leaving them to other work).

use std::time::Duration;

use reelay_tests::chaos::{ChaosConfig, run};

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let seed = var("CHAOS_SEED", rand::random::<u32>() as u64);
    let uploads = var("CHAOS_UPLOADS", 100usize);
    let faults = var("CHAOS_FAULTS", 20usize);
    let max_down = Duration::from_secs(var("CHAOS_MAX_DOWN_SECS", 30u64));
    let config = ChaosConfig {
        uploads,
        faults,
        seed,
        devices: var("CHAOS_DEVICES", 400usize),
        videos: var("CHAOS_VIDEOS", 10usize),
        video_secs: var("CHAOS_VIDEO_SECS", 20u32),
        max_size: var("CHAOS_MAX_MIB", 200u64) << 20,
        max_pause: Duration::from_millis(var("CHAOS_MAX_PAUSE_MS", 200u64)),
        // 256 KiB to 16 MiB.
        chunk_log2: (18, 24),
        max_down,
        // Faults spread over about as long as they take at most.
        fault_window: max_down * faults as u32,
        client_deadline: max_down * faults as u32 * 2 + Duration::from_secs(300),
        settle: Duration::from_secs(180),
        real_services: var("CHAOS_REAL_SERVICES", 1u8) == 1,
    };
    println!("chaos run: {config:?} (CHAOS_SEED={seed} replays it)");
    let report = run(config).await;
    print!("{}", report.render());
    if !report.clean() {
        std::process::exit(1);
    }
}

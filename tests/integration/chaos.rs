//! The short chaos run of `make test`: 20 uploads from tuspy and
//! tus-js-client while processes are killed and services taken away, then
//! every byte checked (`tests/harness/chaos/`; `make chaos` runs it at
//! size). The seed is printed: `CHAOS_SEED=<seed>` replays a run.

use reelay_tests::chaos::{ChaosConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_under_faults_lose_corrupt_and_strand_nothing() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261206);
    println!("chaos seed {seed} (CHAOS_SEED={seed} replays it)");
    let report = run(ChaosConfig::short(seed)).await;
    println!("{}", report.render());
    assert!(
        report.fault_count() >= 5,
        "the faults ran: {}",
        report.render()
    );
    assert!(
        report.faults_during_uploads >= 3,
        "the faults met uploads in flight: {}",
        report.render()
    );
    assert!(report.clean(), "{}", report.render());
    assert!(
        report.acknowledged >= report.uploads - 1,
        "nearly every client finished: {}",
        report.render()
    );
}

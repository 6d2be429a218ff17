//! Exactly one scheduler acts at a time, and another takes over when it dies.

use std::time::{Duration, Instant};

use reelay_tests::{TestEnv, wait_until};

/// `(holder, started_at, finished_at)` of every recorded pass, oldest first.
async fn passes(env: &TestEnv) -> Vec<(String, f64, Option<f64>)> {
    sqlx::query_as(
        "SELECT holder, extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8 \
         FROM scheduler_passes ORDER BY started_at, id",
    )
    .fetch_all(env.store.pool())
    .await
    .expect("passes")
}

async fn leader(env: &TestEnv) -> Option<(String, i64)> {
    sqlx::query_as(
        "SELECT holder, term FROM leases WHERE name = 'scheduler' AND expires_at > now()",
    )
    .fetch_optional(env.store.pool())
    .await
    .expect("lease")
}

async fn passes_by(env: &TestEnv, replica: &str) -> usize {
    passes(env)
        .await
        .iter()
        .filter(|(holder, _, finished)| holder.starts_with(replica) && finished.is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_elect_one_leader_and_the_other_takes_over_after_a_kill() {
    let env = TestEnv::new().await;
    let config = env.scheduler_config();
    let replicas = ["sched-a", "sched-b"];
    let mut workers: Vec<_> = replicas
        .iter()
        .map(|name| env.spawn_scheduling_worker_process(name, &config))
        .collect();

    let elected = wait_until(Duration::from_secs(30), || async {
        leader(&env).await.is_some()
    })
    .await;
    assert!(elected, "one of the two leads");
    let (first, term) = leader(&env).await.expect("a leader");
    let leading = replicas
        .iter()
        .position(|r| first.starts_with(&format!("{r}/")))
        .expect("the leader is one of ours");
    let standby = 1 - leading;

    // Both campaign the whole time; over ten passes the lease never moves.
    let worked = wait_until(Duration::from_secs(30), || async {
        passes_by(&env, replicas[leading]).await >= 10
    })
    .await;
    assert!(worked, "the leader runs passes");
    assert_eq!(
        leader(&env).await,
        Some((first.clone(), term)),
        "the lease stayed put"
    );
    assert_eq!(
        passes_by(&env, replicas[standby]).await,
        0,
        "the standby did nothing"
    );

    workers[leading].start_kill().expect("SIGKILL the leader");
    workers[leading].wait().await.expect("the leader is gone");
    let killed_at = Instant::now();
    let took_over = wait_until(Duration::from_secs(30), || async {
        leader(&env)
            .await
            .is_some_and(|(holder, _)| holder.starts_with(&format!("{}/", replicas[standby])))
    })
    .await;
    assert!(took_over, "the standby leads within 30 s of the kill");
    let takeover = killed_at.elapsed();
    let (_, new_term) = leader(&env).await.expect("a leader");
    assert_eq!(new_term, term + 1, "a new term");
    let worked = wait_until(Duration::from_secs(30), || async {
        passes_by(&env, replicas[standby]).await >= 3
    })
    .await;
    assert!(worked, "the new leader runs passes");
    workers[standby].start_kill().expect("stop the other");

    // No pass of one holder overlaps a pass of another. A pass cut short by
    // the kill has no end: it ended when its process did, before the kill.
    let all = passes(&env).await;
    for (i, (holder, start, end)) in all.iter().enumerate() {
        let end = end.unwrap_or(*start);
        for (other, other_start, other_end) in &all[i + 1..] {
            if other != holder {
                let other_end = other_end.unwrap_or(*other_start);
                assert!(
                    end <= *other_start || other_end <= *start,
                    "passes of {holder} and {other} overlap: [{start}, {end}] and [{other_start}, {other_end}]"
                );
            }
        }
    }
    println!("takeover after the kill: {takeover:?}");
}

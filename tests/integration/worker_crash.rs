//! A worker killed with SIGKILL mid-upload loses and doubles nothing.

use std::time::Duration;

use reelay_shared::VideoStatus;
use reelay_tests::{MIB, TestEnv, client::Tus, random_bytes, sha256_hex, wait_until};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_upload_leaves_the_object_intact_after_another_takes_over() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let mut worker = env.spawn_worker_process();
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(40 * MIB + 4321);
    let id = tus.create(data.len() as u64).await;

    // Half the file, in 1 MiB PATCHes, then wait until some parts are stored
    // while more bytes sit unacked in the worker's buffer.
    let half = 20 * MIB + 3 * MIB / 2;
    tus.upload_from(id, &data[..half], 0, MIB).await;
    let stored_some = wait_until(Duration::from_secs(30), || async {
        env.video(id).await.stored() >= 10 * MIB as u64
    })
    .await;
    assert!(stored_some, "the worker stored parts before being killed");
    worker.start_kill().expect("SIGKILL the worker");
    worker.wait().await.expect("the worker is gone");
    let stored_at_kill = env.video(id).await.stored();
    assert!(stored_at_kill < data.len() as u64);

    // The api keeps accepting while no worker runs; the bytes wait in RabbitMQ.
    tus.upload_from(id, &data, half, MIB).await;
    let mut replacement = env.spawn_worker_process();
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(90))
        .await;
    replacement.start_kill().expect("stop the replacement");

    assert_eq!(
        env.original_sha256(id).await,
        sha256_hex(&data),
        "nothing lost or doubled"
    );
    let events = env.store.events(id).await.expect("history");
    let parts: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "part_stored")
        .map(|e| e.payload["part"]["number"].as_u64().expect("number"))
        .collect();
    let expected: Vec<u64> = (1..=parts.len() as u64).collect();
    assert_eq!(parts, expected, "each part recorded exactly once, in order");
    assert_eq!(events.iter().filter(|e| e.kind == "uploaded").count(), 1);
}

//! Chunks far smaller than a part, with pauses: buffers are staged to S3 so
//! no message waits unacked for long, and the parts still come out whole.

use std::time::Duration;

use reelay_shared::VideoStatus;
use reelay_tests::{MIB, TestEnv, client::Tus, random_bytes, sha256_hex};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_chunks_with_pauses_are_staged_and_still_form_whole_parts() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(11 * MIB + 5);
    let id = tus.create(data.len() as u64).await;

    // 1-byte and odd-sized chunks, pausing past the 1 s staging idle time.
    let mut offset = 0;
    for (i, size) in [1usize, 1, 3 * MIB, 17, MIB + 3].into_iter().enumerate() {
        let response = tus
            .patch(id, offset as u64, data[offset..offset + size].to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(response.status(), 204);
        offset += size;
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
    }
    tus.upload_from(id, &data, offset, 2 * MIB).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(60))
        .await;
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));

    let events = env.store.events(id).await.expect("history");
    assert!(
        events.iter().any(|e| e.kind == "segment_staged"),
        "idle buffers were staged"
    );
    let ends: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "part_stored")
        .map(|e| e.payload["stored_bytes"].as_u64().expect("bytes"))
        .collect();
    assert_eq!(
        ends,
        vec![5 * MIB as u64, 10 * MIB as u64, data.len() as u64],
        "fixed 5 MiB parts"
    );
    let leftovers: Vec<String> = env
        .object_keys()
        .await
        .into_iter()
        .filter(|k| k.contains("/staging/"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staged segments are removed once their part is stored: {leftovers:?}"
    );
}

//! An upload interrupted mid-body resumes from HEAD's offset.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reelay_shared::VideoStatus;
use reelay_tests::{MIB, TestEnv, client::Tus, random_bytes, sha256_hex};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_resumes_from_head_and_ends_identical() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(23 * MIB + 777);
    let id = tus.create(data.len() as u64).await;

    // A body that sends 10 MiB and then breaks off, as a dropped connection does.
    let mut pieces: Vec<Result<Bytes, std::io::Error>> = data[..10 * MIB]
        .chunks(MIB)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    pieces.push(Err(std::io::Error::other("connection dropped")));
    let body = futures_util::stream::iter(pieces);
    let interrupted = tus
        .patch(id, 0, reqwest::Body::wrap_stream(body))
        .send()
        .await;
    assert!(interrupted.is_err() || !interrupted.expect("a response").status().is_success());

    // The server settles the broken request (awaits confirms, records the
    // offset) a moment after the client saw its error.
    let kept = reelay_tests::wait_until(Duration::from_secs(5), || async {
        tus.offset(id).await > 0
    })
    .await;
    assert!(kept, "confirmed bytes before the break are kept");
    let offset = tus.offset(id).await;
    assert!(
        offset <= 10 * MIB as u64,
        "no byte past what was sent is counted"
    );
    assert_eq!(
        offset % env.upload.chunk_size as u64,
        0,
        "the offset ends at a confirmed chunk"
    );

    tus.upload_from(id, &data, offset as usize, 3 * MIB).await;
    let video = env
        .wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(60))
        .await;
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_patch_records_its_progress_as_it_goes() {
    let env = TestEnv::new().await;
    let mut config = env.api_config();
    // Room for a loaded machine: the body pauses until HEAD saw progress.
    config.lock.patch_idle_timeout = Duration::from_secs(20);
    let api = env.spawn_api_with(config).await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(40 * MIB);
    let id = tus.create(data.len() as u64).await;
    // The whole file in one PATCH (tus-js-client's default): 24 MiB at
    // once, then a pause before the rest.
    let (pause_tx, pause_rx) = tokio::sync::oneshot::channel::<()>();
    let head: Vec<Result<Bytes, std::io::Error>> = data[..24 * MIB]
        .chunks(MIB)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let tail = Bytes::copy_from_slice(&data[24 * MIB..]);
    let body = futures_util::stream::iter(head).chain(futures_util::stream::once(async move {
        let _ = pause_rx.await;
        Ok::<_, std::io::Error>(tail)
    }));
    let patch = tokio::spawn(tus.patch(id, 0, reqwest::Body::wrap_stream(body)).send());

    // While the PATCH is still open, HEAD already says how far it is.
    let every = 4 * env.upload.chunk_size as u64;
    let moved = reelay_tests::wait_until(Duration::from_secs(20), || async {
        tus.offset(id).await >= every
    })
    .await;
    assert!(moved, "progress is recorded before the PATCH ends");
    assert!(!patch.is_finished(), "the PATCH is still open");
    let offset = tus.offset(id).await;
    assert!(offset <= 24 * MIB as u64, "no more than was sent: {offset}");
    assert_eq!(offset % every, 0, "at a recorded step: {offset}");

    pause_tx.send(()).expect("the body waits");
    let response = patch.await.expect("joined").expect("answered");
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(60))
        .await;
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));
}

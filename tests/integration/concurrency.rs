//! Two api replicas receive PATCHes for one upload at once.

use std::time::Duration;

use bytes::Bytes;
use reelay_shared::{VideoId, VideoStatus};
use reelay_tests::{MIB, TestEnv, client::Tus, random_bytes, sha256_hex};
use reqwest::StatusCode;
use uuid::Uuid;

/// A body that trickles `data` out over about a second, so two requests overlap.
fn slow_body(data: Vec<u8>) -> reqwest::Body {
    let pieces: Vec<Bytes> = data
        .chunks(256 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    let stream = futures_util::stream::unfold(pieces.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(next), it))
    });
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_on_two_replicas_let_one_win_and_keep_the_object_intact() {
    let env = TestEnv::new().await;
    let first = env.spawn_api().await;
    let second = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let token = env.token(Uuid::new_v4());
    let a = Tus::new(&first.address, token.clone());
    let b = Tus::new(&second.address, token);
    let data = random_bytes(12 * MIB);
    let id = a.create(data.len() as u64).await;

    let piece = data[..5 * MIB].to_vec();
    let (ra, rb) = tokio::join!(a.patch(id, 0, slow_body(piece.clone())).send(), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.patch(id, 0, slow_body(piece.clone())).send().await
    });
    let mut statuses = [
        ra.expect("first PATCH").status(),
        rb.expect("second PATCH").status(),
    ];
    statuses.sort();
    assert_eq!(statuses[0], StatusCode::NO_CONTENT, "one PATCH wins");
    assert!(
        statuses[1] == StatusCode::CONFLICT || statuses[1] == StatusCode::LOCKED,
        "the other is refused, got {}",
        statuses[1]
    );
    assert_eq!(
        a.offset(id).await,
        5 * MIB as u64,
        "the winner's bytes count once"
    );

    b.upload_from(id, &data, 5 * MIB, 4 * MIB).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(60))
        .await;
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_its_connection_can_resume_at_once() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let id = tus.create(8 * MIB as u64).await;
    let body = futures_util::stream::iter(vec![
        Ok(Bytes::from(vec![1u8; 1024])),
        Err(std::io::Error::other("connection dropped")),
    ]);
    let _ = tus
        .patch(id, 0, reqwest::Body::wrap_stream(body))
        .send()
        .await;
    // The lock went with the connection, well before its 2 s expiry: a new
    // PATCH gets through within a moment.
    let resumed = reelay_tests::wait_until(Duration::from_millis(1500), || async {
        let offset = tus.offset(id).await;
        tus.patch(id, offset, vec![2u8; 1024])
            .send()
            .await
            .expect("PATCH")
            .status()
            == StatusCode::NO_CONTENT
    })
    .await;
    assert!(resumed, "the reconnecting client was locked out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_patches_stays_within_the_apis_buffer_budget_and_every_upload_is_exact() {
    let env = TestEnv::new().await;
    let mut config = env.api_config();
    config.buffer_budget = 8 * MIB;
    let api = env.spawn_api_with(config).await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    // 16 uploads of 3 MiB at once, each in one PATCH: 48 MiB wanting in
    // against a budget of 8 MiB (chunks are 4 MiB here).
    let uploads: Vec<(VideoId, Vec<u8>)> = futures_util::future::join_all((0..16).map(|_| {
        let tus = &tus;
        async move {
            let data = random_bytes(3 * MIB);
            let id = tus.create(data.len() as u64).await;
            (id, data)
        }
    }))
    .await;
    futures_util::future::join_all(
        uploads
            .iter()
            .map(|(id, data)| tus.upload_from(*id, data, 0, data.len())),
    )
    .await;
    for (id, data) in &uploads {
        env.wait_for_status(*id, VideoStatus::Uploaded, Duration::from_secs(60))
            .await;
        assert_eq!(env.original_sha256(*id).await, sha256_hex(data));
    }
    let metrics = reelay_tests::metrics_page(&api.address).await;
    let value = |name: &str| reelay_tests::metric(&metrics, name);
    let peak = value("reelay_api_buffered_bytes_peak");
    assert!(
        peak >= (4 * MIB) as f64,
        "the flood filled the budget (a chunk's room at least): {peak}"
    );
    assert!(
        value("reelay_api_budget_waits_total") >= 1.0,
        "the budget held PATCHes back"
    );
    assert_eq!(value("reelay_api_buffered_bytes "), 0.0, "all given back");
}

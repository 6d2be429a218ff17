//! tus termination removes the upload and its objects.

use std::time::Duration;

use reelay_shared::VideoStatus;
use reelay_tests::{MIB, TestEnv, client::Tus, random_bytes, wait_until};
use reqwest::StatusCode;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_an_upload_aborts_it_and_removes_its_objects() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let id = tus.create(20 * MIB as u64).await;
    tus.upload_from(id, &random_bytes(12 * MIB), 0, 4 * MIB)
        .await;
    let stored = wait_until(Duration::from_secs(20), || async {
        !env.object_keys().await.is_empty()
    })
    .await;
    assert!(stored, "a staged segment or part exists before the delete");

    let delete = || {
        tus.raw()
            .delete(tus.url(id))
            .bearer_auth(&tus.token)
            .header("tus-resumable", "1.0.0")
            .send()
    };
    assert_eq!(
        delete().await.expect("DELETE").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(env.video(id).await.status, VideoStatus::Deleted);
    assert_eq!(tus.head(id).await.status(), StatusCode::GONE);
    let patch = tus
        .patch(id, 12 * MIB as u64, vec![0u8; 10])
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patch.status(), StatusCode::GONE);

    let emptied = wait_until(Duration::from_secs(20), || async {
        env.object_keys().await.is_empty()
    })
    .await;
    assert!(
        emptied,
        "every object of the upload is gone: {:?}",
        env.object_keys().await
    );
    assert_eq!(
        delete().await.expect("DELETE again").status(),
        StatusCode::NO_CONTENT,
        "a second delete is a no-op"
    );
    // The worker records the removal after the objects are gone: the
    // listing above can see the one before the log has the other.
    let recorded = env.wait_for_event(id, "objects_removed").await;
    assert!(recorded, "the removal is in the video's history");
    let history = env.store.events(id).await.expect("history");
    assert!(history.iter().any(|e| e.kind == "deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_upload_is_stored_as_an_empty_object() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let id = tus.create(0).await;
    let video = env
        .wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    assert_eq!(
        video.sha256.as_deref(),
        Some(reelay_tests::sha256_hex(b"").as_str())
    );
    let object = env
        .object_bytes(&env.storage.original_key(id))
        .await
        .expect("the empty object exists");
    assert!(object.is_empty());
    assert_eq!(tus.offset(id).await, 0);
}

//! Rebuilding the projections from the event log gives the live rows.

use std::time::Duration;

use reelay_shared::{UserId, VideoId, VideoStatus, video::VideoEvent};
use reelay_tests::{MIB, TestEnv, client::Tus, random_bytes};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_projections_from_the_log_gives_exactly_the_live_ones() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));

    // One finished, one part-way (parts and a staged segment), one deleted,
    // one created and never written.
    let done = tus.create(7 * MIB as u64).await;
    tus.upload_from(done, &random_bytes(7 * MIB), 0, 2 * MIB)
        .await;
    let partial = tus.create(20 * MIB as u64).await;
    tus.upload_from(partial, &random_bytes(8 * MIB), 0, 4 * MIB)
        .await;
    let deleted = tus.create(3 * MIB as u64).await;
    tus.upload_from(deleted, &random_bytes(MIB), 0, MIB).await;
    let _pending = tus.create(MIB as u64).await;
    env.wait_for_status(done, VideoStatus::Uploaded, Duration::from_secs(60))
        .await;
    let staged = env.wait_for_event(partial, "segment_staged").await;
    assert!(staged, "the idle partial upload was staged");
    let response = tus
        .raw()
        .delete(tus.url(deleted))
        .bearer_auth(&tus.token)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status(), 204);
    assert!(env.wait_for_event(deleted, "objects_removed").await);
    worker.stop().await;

    let live = env.projections_snapshot().await;
    assert_eq!(live["videos"].as_array().expect("rows").len(), 4);
    let replayed = env.rebuild_projections().await;
    assert!(replayed > 10);
    let rebuilt = env.projections_snapshot().await;
    assert_eq!(rebuilt, live);
}

/// A rebuild used to take the log's lock and then the projections', while an
/// append takes its projection row and then the log: under load the two
/// deadlocked and one of them failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_while_videos_change_neither_deadlocks_nor_loses_an_event() {
    let env = TestEnv::new().await;
    let owner = UserId(Uuid::new_v4());
    let mut videos = Vec::new();
    for _ in 0..8 {
        let id = VideoId::new();
        env.store
            .append(id, |_| Ok((vec![created(owner)], ())))
            .await
            .expect("created");
        videos.push(id);
    }

    const EDITS: usize = 30;
    let writers = videos.iter().map(|&id| {
        let store = env.store.clone();
        tokio::spawn(async move {
            for n in 0..EDITS {
                let edit = VideoEvent::DetailsUpdated {
                    title: Some(format!("edit {n}")),
                    description: None,
                };
                store
                    .append(id, |_| Ok((vec![edit], ())))
                    .await
                    .expect("an append during a rebuild succeeds");
            }
        })
    });
    let writers: Vec<_> = writers.collect();
    for _ in 0..5 {
        env.store
            .rebuild_projections(reelay_shared::PROJECTIONS)
            .await
            .expect("a rebuild during appends succeeds");
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    for &id in &videos {
        let video = env.store.video(id).await.expect("read").expect("a row");
        assert_eq!(video.version as usize, 1 + EDITS, "every append counted");
        assert_eq!(video.title.as_deref(), Some("edit 29"));
    }
    let live = env.projections_snapshot().await;
    env.rebuild_projections().await;
    assert_eq!(env.projections_snapshot().await, live);
}

fn created(owner: UserId) -> VideoEvent {
    VideoEvent::Created {
        owner_id: owner,
        flow_id: Uuid::new_v4(),
        size_bytes: 10,
        part_size_bytes: 5 * MIB as u64,
        object_key: "unused".into(),
        title: None,
        filename: None,
        filetype: None,
        upload_metadata: None,
        expires_at: chrono::Utc::now(),
        onboarding_position: None,
        firmware_id: None,
    }
}

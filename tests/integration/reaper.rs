//! The reaper ends what no request or job will move on any more.

use std::time::Duration;

use chrono::Utc;
use object_store::{PutPayload, multipart::MultipartStore, path::Path};
use redis::AsyncCommands;
use reelay_shared::{
    VideoId, VideoStatus,
    video::{VideoEvent, routing},
};
use reelay_tests::{MIB, TestEnv, client::Tus, random_bytes, sha256_hex, wait_until};
use uuid::Uuid;

/// Records what the api records when the broker confirms bytes up to `end`.
async fn confirmed(env: &TestEnv, id: VideoId, end: u64) {
    let received = VideoEvent::BytesReceived {
        received_bytes: end,
        expires_at: Utc::now() + chrono::Duration::hours(1),
    };
    env.store
        .append(id, |_| Ok((vec![received], ())))
        .await
        .expect("received");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_session_is_reaped_with_its_multipart_upload_and_redis_keys() {
    let env = TestEnv::new().await;
    let mut api_config = env.api_config();
    api_config.upload.expiry = Duration::from_secs(3);
    let api = env.spawn_api_with(api_config).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fflow = env.spawn_fflow("r1", dir.path()).await;
    let worker = env
        .spawn_worker_with(env.worker_config_with_fflow(std::slice::from_ref(&fflow.base)))
        .await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));

    // One part stored, the rest of what was sent staged: a multipart upload
    // and staging objects exist in Garage.
    let data = random_bytes(12 * MIB);
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data[..7 * MIB], 0, MIB).await;
    assert!(env.wait_for_event(id, "segment_staged").await, "staged");
    let session = env
        .store
        .load(id)
        .await
        .expect("aggregate")
        .session
        .expect("an open session");
    let multipart_id = session.multipart_id.expect("a multipart upload");
    let original = Path::from(env.storage.original_key(id));
    assert!(
        !env.object_keys().await.is_empty(),
        "staged segments are in S3"
    );
    // The chunks went to an fflow replica too: a route and local files.
    let mut redis = env.redis().await;
    let route_key = routing::session_key(&env.redis.key_prefix, id);
    let route: Option<String> = redis.get(&route_key).await.expect("GET");
    assert_eq!(route.as_deref(), Some(fflow.address.as_str()));
    assert!(fflow.local_files() > 0, "the replica glued what came");

    // The client goes away; the session expires and the reaper takes it.
    let _scheduler = env.spawn_scheduler(env.scheduler_config()).await;
    let failed = env
        .wait_for_status(id, VideoStatus::Failed, Duration::from_secs(30))
        .await;
    assert_eq!(failed.failure_reason.as_deref(), Some("expired"));
    assert!(
        env.wait_for_event(id, "upload_aborted").await,
        "session closed"
    );

    let exists: bool = redis.exists(&route_key).await.expect("EXISTS");
    assert!(!exists, "the routing key is gone");
    assert_eq!(
        fflow.local_files(),
        0,
        "the replica dropped the session's files"
    );
    let lock_exists: bool = redis
        .exists(format!("{}upload-lock:{id}", env.redis.key_prefix))
        .await
        .expect("EXISTS");
    assert!(!lock_exists, "no lock is left");
    assert_eq!(
        env.object_keys().await,
        Vec::<String>::new(),
        "no object is left"
    );
    let part = env
        .storage
        .s3
        .put_part(&original, &multipart_id, 1, PutPayload::from(vec![0u8; 16]))
        .await;
    assert!(part.is_err(), "the multipart upload is gone from Garage");
    assert!(
        env.store
            .load(id)
            .await
            .expect("aggregate")
            .session
            .is_none(),
        "the session projection is gone"
    );

    let resumed = tus
        .raw()
        .head(tus.url(id))
        .bearer_auth(&tus.token)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(
        resumed.status(),
        410,
        "the client learns the upload is gone"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_never_gets_a_byte_fails_after_the_pending_timeout_and_not_before() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let timeout = Duration::from_secs(2);
    let old = tus.create(MIB as u64).await;
    let aged = wait_until(Duration::from_secs(10), || async {
        Utc::now() - env.video(old).await.created_at >= chrono::Duration::from_std(timeout).unwrap()
    })
    .await;
    assert!(aged);
    let young = tus.create(MIB as u64).await;

    let mut config = env.scheduler_config();
    config.rules.pending_timeout = timeout;
    let _scheduler = env.spawn_scheduler(config).await;
    let failed = env
        .wait_for_status(old, VideoStatus::Failed, Duration::from_secs(30))
        .await;
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("no bytes received within 2 s")
    );
    assert!(env.wait_for_event(old, "upload_aborted").await);

    // The young one fails too, in time, but never before its own timeout.
    env.wait_for_status(young, VideoStatus::Failed, Duration::from_secs(30))
        .await;
    for id in [old, young] {
        let events = env.store.events(id).await.expect("history");
        let created = events.first().expect("created").recorded_at;
        let failed = events
            .iter()
            .find(|e| e.kind == "failed")
            .expect("failed")
            .recorded_at;
        assert!(
            failed - created >= chrono::Duration::from_std(timeout).unwrap(),
            "{id} failed {:?} after creation",
            failed - created
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_video_whose_delete_job_died_is_swept() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(2 * MIB);
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data, 0, MIB).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(30))
        .await;
    worker.stop().await;

    // What a DELETE leaves when the api dies between committing the
    // deletion and publishing its job: the video DELETED, its object kept.
    env.store
        .append(id, |_| Ok((vec![VideoEvent::Deleted], ())))
        .await
        .expect("deleted");
    assert!(
        env.object_bytes(&env.storage.original_key(id))
            .await
            .is_some()
    );

    let mut config = env.scheduler_config();
    config.rules.delete_grace = Duration::ZERO;
    let _scheduler = env.spawn_scheduler(config).await;
    assert!(env.wait_for_event(id, "objects_removed").await, "swept");
    assert_eq!(env.object_keys().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_a_worker_holds_after_a_long_outage_are_not_taken_for_lost() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(6 * MIB);
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data[..3 * MIB], 0, MIB).await;

    // A consumer holds the chunks unacked, as a worker does that took them
    // as soon as the broker and the database were back: nothing is ready
    // in the shard.
    use futures_util::StreamExt;
    let queue = env.topology.chunk_queue_of(id);
    let holder = reelay_shared::mq::connect(&env.amqp.url, "holder")
        .await
        .expect("broker");
    let channel = holder.create_channel().await.expect("channel");
    let mut held = channel
        .basic_consume(
            queue.as_str().into(),
            "holder".into(),
            lapin::options::BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .expect("consume");
    held.next().await.expect("a chunk").expect("delivered");
    let all_held = wait_until(Duration::from_secs(10), || async {
        env.queue_depth(&queue).await == 0
    })
    .await;
    assert!(all_held, "nothing ready");

    // The upload made no progress for longer than the stall timeout (the
    // outage), and the reaper is back.
    let mut config = env.scheduler_config();
    config.rules.stall_timeout = Duration::from_secs(6);
    tokio::time::sleep(config.rules.stall_timeout + Duration::from_millis(500)).await;
    let _scheduler = env.spawn_scheduler(config).await;
    // A reaper pass saw the stall and chose to wait for it.
    let watched = wait_until(Duration::from_secs(10), || async {
        let waiting: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM scheduler_passes WHERE kind = 'reap' AND finished_at IS NOT NULL \
             AND (counts->>'stalls_waiting')::int >= 1 LIMIT 1",
        )
        .fetch_optional(env.store.pool())
        .await
        .expect("passes");
        waiting.is_some()
    })
    .await;
    assert!(watched, "a reaper pass watched the stall");
    let rewound = |events: &[reelay_shared::store::RecordedEvent]| {
        events.iter().any(|e| e.kind == "received_rewound")
    };
    assert!(
        !rewound(&env.store.events(id).await.expect("history")),
        "the offset stays while the chunks are held"
    );

    // The worker gets them and stores them: nothing was lost.
    let _ = holder.close(200, "done".into()).await;
    let _worker = env.spawn_worker().await;
    let stored = wait_until(Duration::from_secs(20), || async {
        env.video(id).await.stored() == 3 * MIB as u64
    })
    .await;
    assert!(stored, "the held chunks were stored");
    assert_eq!(tus.offset(id).await, 3 * MIB as u64);
    tus.upload_from(id, &data, 3 * MIB, MIB).await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(30))
        .await;
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));
    assert!(!rewound(&env.store.events(id).await.expect("history")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_whose_bytes_were_lost_resumes_and_ends_byte_identical() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(12 * MIB + 17);
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data[..6 * MIB], 0, 3 * MIB).await;
    assert!(env.wait_for_event(id, "segment_staged").await);
    let stored = env.video(id).await.stored();
    assert_eq!(stored, 6 * MIB as u64);

    // The broker confirmed 3 MiB more that never reached a worker (a
    // dead-lettered chunk): the offset the client sees is ahead of S3.
    confirmed(&env, id, 9 * MIB as u64).await;

    let mut config = env.scheduler_config();
    config.rules.stall_timeout = Duration::from_secs(1);
    let _scheduler = env.spawn_scheduler(config).await;
    assert!(env.wait_for_event(id, "received_rewound").await, "rewound");
    let offset = tus.offset(id).await;
    assert_eq!(offset, stored, "HEAD gives what is durable");

    tus.upload_from(id, &data, offset as usize, 4 * MIB).await;
    let video = env
        .wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(30))
        .await;
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_whose_object_is_whole_in_s3_is_recorded_uploaded() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(3 * MIB);
    let id = tus.create(data.len() as u64).await;
    // A worker that completed the multipart upload and died before it
    // recorded so, its last chunks dead-lettered: the api recorded every
    // byte, S3 has the whole object, PostgreSQL says nothing is stored.
    confirmed(&env, id, data.len() as u64).await;
    use object_store::ObjectStoreExt;
    env.storage
        .s3
        .put(
            &Path::from(env.storage.original_key(id)),
            PutPayload::from(data.clone()),
        )
        .await
        .expect("the object");

    let mut config = env.scheduler_config();
    config.rules.stall_timeout = Duration::from_secs(1);
    let _scheduler = env.spawn_scheduler(config).await;
    let video = env
        .wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(30))
        .await;
    assert_eq!(video.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert_eq!(video.uploaded_percentage(), 100);
}

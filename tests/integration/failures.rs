//! Failures are explicit: a broker outage is a 503 that moves nothing; S3
//! away, however long, is waited out with every acknowledged byte kept;
//! S3 refusing an upload fails the video and dead-letters its chunks.

use std::time::Duration;

use reelay_shared::VideoStatus;
use reelay_tests::{MIB, TestEnv, client::Tus, proxy::Proxy, random_bytes, sha256_hex, wait_until};
use reqwest::StatusCode;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_a_patch_gets_503_and_the_offset_stays() {
    let env = TestEnv::new().await;
    let mut proxy = Proxy::start("127.0.0.1:5672").await;
    let mut config = env.api_config();
    config.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let api = env.spawn_api_with(config).await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let id = tus.create(10 * MIB as u64).await;
    tus.upload_from(id, &random_bytes(MIB), 0, MIB).await;
    let events_before = env.store.events(id).await.expect("history").len();

    proxy.cut().await;
    let response = tus
        .patch(id, MIB as u64, random_bytes(2 * MIB))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(tus.offset(id).await, MIB as u64, "the offset did not move");
    assert_eq!(
        env.store.events(id).await.expect("history").len(),
        events_before
    );

    let ready = reqwest::get(format!("{}/readyz", api.address))
        .await
        .expect("readyz");
    assert_eq!(
        ready.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "readiness reports the broker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_away_longer_than_the_retries_fails_nothing_and_the_upload_completes_after() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let mut s3 = Proxy::start("127.0.0.1:3900").await;
    let mut config = env.worker_config();
    config.s3.endpoint = format!("http://127.0.0.1:{}", s3.port);
    let retries = config.s3_retry;
    let _worker = env.spawn_worker_with(config).await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(12 * MIB + 777);
    let id = tus.create(data.len() as u64).await;
    tus.upload_from(id, &data[..4 * MIB], 0, MIB).await;

    s3.cut().await;
    // Every byte is acknowledged while S3 is away: they wait in the broker.
    tus.upload_from(id, &data, 4 * MIB, MIB).await;
    assert_eq!(tus.offset(id).await, data.len() as u64);
    // Several times what the worker's retries last (3 × 50 ms doubling).
    tokio::time::sleep(retries.base * 2u32.pow(retries.attempts as u32) * 10).await;
    let video = env.video(id).await;
    assert_eq!(
        video.status,
        VideoStatus::Loading,
        "an outage fails no upload: {:?}",
        video.failure_reason
    );
    assert_eq!(
        env.queue_depth(&env.topology.dead_letter_queue()).await,
        0,
        "nothing dead-lettered"
    );

    s3.restore().await;
    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(60))
        .await;
    assert_eq!(env.original_sha256(id).await, sha256_hex(&data));
    let history = env.store.events(id).await.expect("history");
    assert!(history.iter().all(|e| e.kind != "failed"), "never failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_s3_refuses_the_upload_the_video_fails_and_its_chunks_are_dead_lettered() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let mut config = env.worker_config();
    config.s3.bucket = format!("no-such-bucket-{}", env.id);
    let _worker = env.spawn_worker_with(config).await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let id = tus.create(6 * MIB as u64).await;
    tus.upload_from(id, &random_bytes(6 * MIB), 0, 3 * MIB)
        .await;

    let video = env
        .wait_for_status(id, VideoStatus::Failed, Duration::from_secs(60))
        .await;
    let reason = video.failure_reason.expect("a reason");
    assert!(reason.contains("S3"), "the reason names S3: {reason}");
    let dead = wait_until(Duration::from_secs(10), || async {
        env.queue_depth(&env.topology.dead_letter_queue()).await >= 1
    })
    .await;
    assert!(dead, "the failed chunks are in the dead-letter queue");

    let head = tus.head(id).await;
    assert_eq!(
        head.status(),
        StatusCode::GONE,
        "a failed upload takes no more bytes"
    );
    let history = env.store.events(id).await.expect("history");
    assert_eq!(history.last().expect("events").kind, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_upload_created_while_the_broker_is_down_completes_on_its_empty_patch() {
    let env = TestEnv::new().await;
    let mut proxy = Proxy::start("127.0.0.1:5672").await;
    let mut config = env.api_config();
    config.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let api = env.spawn_api_with(config).await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));

    proxy.cut().await;
    let response = tus
        .raw()
        .post(format!("{}/files/", api.address))
        .bearer_auth(&tus.token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 0)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let id =
        reelay_tests::client::location_id(&response).expect("the upload's Location, to resume it");

    proxy.restore().await;
    // The broker is back: HEAD says 0 of 0, and the client's empty PATCH
    // finishes the upload.
    assert_eq!(tus.offset(id).await, 0);
    let patched = wait_until(Duration::from_secs(20), || async {
        tus.patch(id, 0, Vec::<u8>::new())
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::NO_CONTENT)
    })
    .await;
    assert!(patched, "the empty PATCH is taken once the broker is back");
    let video = env
        .wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(20))
        .await;
    assert_eq!(video.size_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_uploads_fail_fast_with_their_location_and_resume_after() {
    let env = TestEnv::new().await;
    let mut proxy = Proxy::start("127.0.0.1:6379").await;
    let mut config = env.api_config();
    config.redis.url = format!("redis://127.0.0.1:{}", proxy.port);
    let api = env.spawn_api_with(config).await;
    let _worker = env.spawn_worker().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let data = random_bytes(MIB);
    let id = tus.create(2 * MIB as u64).await;

    proxy.cut().await;
    // Requests answered before their body was read close their connection:
    // each of the outage's requests gets a client of its own.
    let outage = Tus::new(&api.address, tus.token.clone());
    // A PATCH needs the upload's lock: 503 at once, nothing moved.
    let started = std::time::Instant::now();
    let response = outage
        .patch(id, 0, data.clone())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "failed fast: {:?}",
        started.elapsed()
    );
    // Creation with the body: 503, but with the Location of the upload
    // that now exists, so the client can resume it.
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/files/", api.address))
        .bearer_auth(&tus.token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", MIB)
        .header("content-type", "application/offset+octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(4), "failed fast");
    let created = reelay_tests::client::location_id(&response)
        .expect("the Location of the upload that exists");

    proxy.restore().await;
    // Redis is back: both resume from 0 and finish.
    for (video, len) in [(id, 2 * MIB), (created, MIB)] {
        assert_eq!(tus.offset(video).await, 0);
        let resumed = wait_until(Duration::from_secs(20), || async {
            tus.patch(video, 0, data.clone())
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::NO_CONTENT)
        })
        .await;
        assert!(resumed, "the PATCH is taken once Redis is back");
        if len > MIB {
            tus.upload_from(video, &random_bytes(len), MIB, len).await;
        }
        env.wait_for_status(video, VideoStatus::Uploaded, Duration::from_secs(20))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_connection_comes_back_by_itself_after_a_long_outage() {
    let env = TestEnv::new().await;
    let mut proxy = Proxy::start("127.0.0.1:6379").await;
    let mut config = env.redis.clone();
    config.url = format!("redis://127.0.0.1:{}", proxy.port);
    // The connection every api, worker and scheduler makes.
    let mut redis = reelay_shared::lock::connect(&config)
        .await
        .expect("connect");
    let key = format!("{}comeback", config.key_prefix);
    let set = |mut redis: reelay_shared::lock::Redis, value: u32| {
        let key = key.clone();
        async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(&mut redis)
                .await
        }
    };
    set(redis.clone(), 1).await.expect("SET while up");

    proxy.cut().await;
    let started = std::time::Instant::now();
    assert!(set(redis.clone(), 2).await.is_err(), "Redis is away");
    assert!(started.elapsed() < Duration::from_secs(4), "failed fast");
    // Longer than every reconnect attempt: each command fails, and fast
    // (redis-rs's default settings held each for about 8 s).
    for _ in 0..8 {
        let started = std::time::Instant::now();
        assert!(set(redis.clone(), 3).await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "failed fast: {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    proxy.restore().await;
    let back = wait_until(Duration::from_secs(5), || async {
        set(redis.clone(), 4).await.is_ok()
    })
    .await;
    assert!(back, "commands work again within seconds of Redis's return");
    let value: u32 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("GET");
    assert_eq!(value, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_redis_command_after_a_restart_goes_through() {
    let env = TestEnv::new().await;
    let mut proxy = Proxy::start("127.0.0.1:6379").await;
    let mut config = env.redis.clone();
    config.url = format!("redis://127.0.0.1:{}", proxy.port);
    let mut redis = reelay_shared::lock::connect(&config)
        .await
        .expect("connect");
    let key = format!("{}restart", config.key_prefix);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .expect("SET while up");

    // Redis restarts while the connection is idle: it is closed under it.
    proxy.cut().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore().await;

    // The next command (an upload's lock, a worker's fflow route) finds
    // the old connection dead; it goes through on a new one instead of
    // failing (that was a 503 for the PATCH, a lost route for the encode).
    let value: Option<u32> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("the first command after the restart");
    assert_eq!(value, Some(1));
    let lock = reelay_shared::lock::Locks::new(
        redis.clone(),
        config.key_prefix.clone(),
        Duration::from_secs(5),
    );
    proxy.cut().await;
    proxy.restore().await;
    assert!(
        lock.acquire("after-restart")
            .await
            .expect("no error")
            .is_some(),
        "an upload lock is taken on the first try"
    );
}

//! Workers share the chunk shards: each live worker consumes its share,
//! one that joins takes its share from the others by hand-over, one that
//! is SIGKILLed has its shards taken over, and through all of it every
//! upload ends byte-exact.

use std::{collections::BTreeMap, time::Duration};

use reelay_shared::{
    VideoId, VideoStatus,
    config::AmqpConfig,
    mq::{self, Topology},
};
use reelay_tests::{MIB, TestEnv, client::Tus, metric, random_bytes, sha256_hex, wait_until};
use reelay_worker::config::WorkerConfig;
use tokio::{process::Child, sync::watch};
use uuid::Uuid;

const SHARDS: u16 = 8;

fn worker(env: &TestEnv, name: &str) -> (String, Child) {
    let replica = format!("worker-{name}-{}", env.id);
    let config = WorkerConfig {
        replica: replica.clone(),
        ..env.worker_config()
    };
    (replica, env.spawn_worker_process_with(&config))
}

/// Waits until the leases name exactly `shares` (replica → shards held).
async fn wait_for_shares(env: &TestEnv, shares: &[(&str, usize)], why: &str) {
    let want: BTreeMap<String, usize> = shares.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
    let settled = wait_until(Duration::from_secs(30), || async {
        env.shard_owners().await == want
    })
    .await;
    assert!(
        settled,
        "{why}: wanted {want:?}, the leases say {:?}",
        env.shard_owners().await
    );
}

/// Uploads `data` in 256 KiB PATCHes, one every 300 ms, holding at two
/// thirds until `go` says so: the upload lasts through the workers coming
/// and going, however slow the machine.
async fn paced_upload(tus: Tus, id: VideoId, data: Vec<u8>, mut go: watch::Receiver<bool>) {
    let mut offset = 0;
    while offset < data.len() {
        if offset >= data.len() * 2 / 3 {
            let _ = go.wait_for(|go| *go).await;
        }
        let end = (offset + 256 * 1024).min(data.len());
        let response = tus
            .patch(id, offset as u64, data[offset..end].to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(response.status(), 204, "PATCH at {offset} of {id}");
        offset = end;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_join_and_die_share_the_shards_and_every_upload_ends_byte_exact() {
    let mut env = TestEnv::new().await;
    env.set_shards(SHARDS);
    let api = env.spawn_api().await;
    let (a, _first) = worker(&env, "a");
    wait_for_shares(&env, &[(&a, 8)], "a lone worker takes every shard").await;

    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let (go, held) = watch::channel(false);
    let mut uploads = Vec::new();
    for _ in 0..8 {
        let data = random_bytes(6 * MIB + 12_345);
        let id = tus.create(data.len() as u64).await;
        let sha = sha256_hex(&data);
        let task = tokio::spawn(paced_upload(tus.clone(), id, data, held.clone()));
        uploads.push((id, sha, task));
    }

    let (b, mut second) = worker(&env, "b");
    wait_for_shares(&env, &[(&a, 4), (&b, 4)], "a second worker takes half").await;
    let (c, _third) = worker(&env, "c");
    // Members are ordered by name: a and b take the extra shard.
    wait_for_shares(
        &env,
        &[(&a, 3), (&b, 3), (&c, 2)],
        "a third takes its share",
    )
    .await;

    second.start_kill().expect("SIGKILL the second worker");
    let _ = second.wait().await;
    wait_for_shares(&env, &[(&a, 4), (&c, 4)], "the killed worker's shards move").await;
    let (d, _fourth) = worker(&env, "d");
    wait_for_shares(
        &env,
        &[(&a, 3), (&c, 3), (&d, 2)],
        "a fourth takes its share",
    )
    .await;
    // Every upload still has its last third to send: through the fourth.
    assert!(uploads.iter().all(|(_, _, task)| !task.is_finished()));
    go.send_replace(true);

    for (id, sha, task) in uploads {
        task.await.expect("the upload's PATCHes all succeed");
        env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(60))
            .await;
        assert_eq!(env.original_sha256(id).await, sha, "{id} is byte-exact");
    }
    let parts: Vec<(uuid::Uuid, i64, i64)> = sqlx::query_as(
        "SELECT aggregate_id, (payload->'part'->>'number')::bigint, count(*) FROM events \
         WHERE kind = 'part_stored' GROUP BY 1, 2 HAVING count(*) > 1",
    )
    .fetch_all(env.store.pool())
    .await
    .expect("read the event log");
    assert!(parts.is_empty(), "no part stored twice: {parts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_started_with_another_number_of_shards_refuses_to_start() {
    let env = TestEnv::new().await;
    let _api = env.spawn_api().await;
    let mut config = env.api_config();
    config.amqp.shards = env.topology.shards + 1;
    let refused = reelay_api::startup::Application::build(config)
        .await
        .err()
        .expect("another number of shards is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains(&format!("REELAY_SHARDS={}", env.topology.shards)),
        "the error names the number to use: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_queued_by_a_deployment_from_before_shard_counts_keep_their_number() {
    let env = TestEnv::new().await;
    // What a deployment of the old default left behind: 4 chunk queues
    // under the same prefix, one still holding a chunk, and no record.
    let legacy = Topology::new(&AmqpConfig {
        shards: 4,
        ..env.amqp.clone()
    });
    assert_ne!(legacy.shards, env.topology.shards);
    let connection = mq::connect(&env.amqp.url, "test-legacy")
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    mq::declare(&channel, &reelay_shared::video::jobs::queues(&legacy))
        .await
        .expect("declare the old queues");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    let confirm = channel
        .basic_publish(
            "".into(),
            legacy.chunk_queue(3).as_str().into(),
            Default::default(),
            b"a chunk",
            Default::default(),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
    let recorded = || async {
        sqlx::query_scalar::<_, i32>("SELECT shards FROM shard_counts")
            .fetch_optional(env.store.pool())
            .await
            .expect("read the record")
    };

    let refused = reelay_api::startup::Application::build(env.api_config())
        .await
        .err()
        .expect("another number while old queues hold chunks is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("REELAY_SHARDS=4"),
        "the error names the number the queues were made for: {message}"
    );
    assert_eq!(recorded().await, None, "a refused start records nothing");

    channel
        .queue_purge(legacy.chunk_queue(3).as_str().into(), Default::default())
        .await
        .expect("purge");
    // Drained, the old queues are no obstacle: the new number is recorded.
    let _api = env.spawn_api().await;
    assert_eq!(recorded().await, Some(i32::from(env.topology.shards)));

    // The environment deletes the queues of its own number only.
    for shard in env.topology.shards..legacy.shards {
        channel
            .queue_delete(
                legacy.chunk_queue(shard).as_str().into(),
                Default::default(),
            )
            .await
            .expect("delete an old queue");
    }
    let _ = connection.close(200, "done".into()).await;
}

/// A value from a Prometheus text page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holds_no_more_chunk_bytes_than_its_budget_and_says_which_shards_it_consumes() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    // 2 shards, 4 MiB chunks: a window of 2 chunks per shard.
    let budget = 16 * MIB;
    let worker = env
        .spawn_worker_with(WorkerConfig {
            buffer_budget: budget,
            http_addr: Some("127.0.0.1:0".parse().expect("an address")),
            ..env.worker_config()
        })
        .await;
    let ops = worker.ops.clone().expect("the worker listens");
    let http = reqwest::Client::new();
    let ready = wait_until(Duration::from_secs(10), || async {
        let ready: serde_json::Value = http
            .get(format!("{ops}/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        ready["shards"] == serde_json::json!([0, 1]) && ready["workers"] == 1
    })
    .await;
    assert!(ready, "/readyz names the shards the lone worker consumes");

    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    let datas: Vec<bytes::Bytes> = (0..12)
        .map(|_| random_bytes(9 * MIB + 777).into())
        .collect();
    let ids =
        futures_util::future::join_all(datas.iter().map(|data| tus.upload(data, 4 * MIB))).await;
    for (id, data) in ids.iter().zip(&datas) {
        env.wait_for_status(*id, VideoStatus::Uploaded, Duration::from_secs(120))
            .await;
        assert_eq!(env.original_sha256(*id).await, sha256_hex(data));
    }
    let page = reelay_tests::metrics_page(&ops).await;
    let peak = metric(&page, "reelay_worker_buffered_bytes_peak");
    assert!(
        peak >= 4.0 * MIB as f64,
        "the uploads filled the windows (a chunk at least): {peak}"
    );
    assert!(
        peak <= budget as f64,
        "the worker held {peak} bytes, past its budget of {budget}"
    );
    assert_eq!(
        metric(&page, "reelay_worker_buffered_bytes"),
        0.0,
        "all acked"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_reach_s3_gives_its_shards_to_one_that_can() {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let (a, b) = (
        format!("worker-a-{}", env.id),
        format!("worker-b-{}", env.id),
    );
    let _healthy = env
        .spawn_worker_with(WorkerConfig {
            replica: a.clone(),
            ..env.worker_config()
        })
        .await;
    let mut s3 = reelay_tests::proxy::Proxy::start("127.0.0.1:3900").await;
    let mut cut_off = WorkerConfig {
        replica: b.clone(),
        ..env.worker_config()
    };
    cut_off.s3.endpoint = format!("http://127.0.0.1:{}", s3.port);
    let _cut_off = env.spawn_worker_with(cut_off).await;
    wait_for_shares(&env, &[(&a, 1), (&b, 1)], "two workers, a shard each").await;

    s3.cut().await;
    let tus = Tus::new(&api.address, env.token(Uuid::new_v4()));
    // Uploads on both shards (an upload's shard is its id's).
    let (mut ids, mut datas) = (Vec::new(), Vec::new());
    let mut shards = std::collections::BTreeSet::new();
    while ids.len() < 4 || shards.len() < 2 {
        let data = random_bytes(6 * MIB + 99);
        let id = tus.create(data.len() as u64).await;
        shards.insert(env.topology.shard_of(id.0));
        ids.push(id);
        datas.push(data);
    }
    futures_util::future::join_all(
        ids.iter()
            .zip(&datas)
            .map(|(id, data)| tus.upload_from(*id, data, 0, 2 * MIB)),
    )
    .await;
    wait_for_shares(&env, &[(&a, 2)], "the worker without S3 lets its shard go").await;
    for (id, data) in ids.iter().zip(&datas) {
        env.wait_for_status(*id, VideoStatus::Uploaded, Duration::from_secs(60))
            .await;
        assert_eq!(env.original_sha256(*id).await, sha256_hex(data));
    }
    s3.restore().await;
}

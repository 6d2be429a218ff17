//! What is checked once the system settled, beyond each upload's bytes:
//! open multipart uploads, pushes, dead letters.

use super::*;

/// Multipart uploads still open under `prefix` in the bucket (S3
/// ListMultipartUploads, signed by curl).
pub(super) async fn open_multipart_uploads(env: &TestEnv) -> usize {
    let s3 = &env.s3;
    // SigV4 wants the query sorted and percent-encoded, and Garage the
    // payload's hash (of nothing).
    let prefix: String = s3
        .key_prefix
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let url = format!(
        "{}/{}?prefix={prefix}&uploads=",
        s3.endpoint.trim_end_matches('/'),
        s3.bucket,
    );
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--fail"])
        .arg("-H")
        .arg(format!(
            "x-amz-content-sha256: {}",
            hex::encode(Sha256::digest(b""))
        ))
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", s3.region))
        .arg("--user")
        .arg(format!("{}:{}", s3.access_key_id, s3.secret_access_key))
        .arg(&url)
        .output()
        .await
        .expect("curl runs");
    assert!(
        output.status.success(),
        "ListMultipartUploads: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .matches("<Upload>")
        .count()
}

/// Checks the pushes: each video that ended UPLOADED, READY or FAILED has
/// a notification per device for that state, and each notification
/// written reached its device's receiver and was taken (200) there, once
/// or (a sender killed before it recorded the send) more.
pub(super) async fn pushes(
    env: &TestEnv,
    push: &PushReceivers,
    report: &mut ChaosReport,
    until: Instant,
) {
    let pool = env.store.pool();
    let unwritten: Vec<(Uuid, VideoStatus)> = sqlx::query_as(
        "SELECT v.id, v.status FROM videos v WHERE v.status IN ('UPLOADED', 'READY', 'FAILED') \
         AND (SELECT count(*) FROM notifications n WHERE n.video_id = v.id AND n.state = v.status) \
             < (SELECT count(*) FROM devices d WHERE d.user_id = v.owner_id)",
    )
    .fetch_all(pool)
    .await
    .expect("notifications");
    for (id, status) in unwritten {
        report.pushes_missing += 1;
        report.findings.push(format!(
            "video {id} is {status:?}, but not every device was to hear of it"
        ));
    }
    loop {
        let (pending,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM notifications WHERE status = 'pending'")
                .fetch_one(pool)
                .await
                .expect("notifications");
        if pending == 0 || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let due: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT n.id, n.status::text FROM notifications n ORDER BY n.created_at")
            .fetch_all(pool)
            .await
            .expect("notifications");
    let mut taken: HashMap<String, usize> = HashMap::new();
    for received in push.received() {
        if received.answered == 200 {
            *taken.entry(received.idempotency_key).or_default() += 1;
        }
    }
    report.pushes_due = due.len();
    for (id, status) in due {
        match taken.get(&id.to_string()) {
            None => {
                report.pushes_missing += 1;
                report.findings.push(format!(
                    "notification {id} ({status}) never reached its device"
                ));
            }
            Some(n) => report.duplicate_notifications += n - 1,
        }
    }
    for violation in push.violations() {
        report.findings.push(format!("push receiver: {violation}"));
        report.pushes_missing += 1;
    }
}

/// Every message in the dead-letter queues, read without taking it (the
/// channel closes unacked, so each goes back).
pub(super) async fn dead_letters(env: &TestEnv) -> Vec<(String, lapin::BasicProperties)> {
    let queues: std::collections::BTreeSet<String> = reelay_shared::queues(&env.topology)
        .into_iter()
        .filter_map(|spec| spec.dead_letter)
        .collect();
    let connection = reelay_shared::mq::connect(&env.amqp.url, "chaos-dlq")
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let mut found = Vec::new();
    for queue in queues {
        while let Some(message) = channel
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions::default(),
            )
            .await
            .expect("basic.get")
        {
            found.push((queue.clone(), message.delivery.properties.clone()));
        }
    }
    let _ = connection.close(200, "read".into()).await;
    found
}

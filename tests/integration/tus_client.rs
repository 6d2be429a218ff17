//! A real tus client (tuspy) uploads through reelay end to end.

use std::time::Duration;

use reelay_shared::{VideoId, VideoStatus};
use reelay_tests::{MIB, TestEnv, random_bytes, sha256_hex, tus_script};
use uuid::Uuid;

async fn tuspy_upload_ends_byte_identical(chunk_size: usize) {
    let env = TestEnv::new().await;
    let api = env.spawn_api().await;
    let _worker = env.spawn_worker().await;
    let user = Uuid::new_v4();
    let token = env.token(user);

    let data = random_bytes(64 * MIB + 12_345);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &data).expect("write the source file");
    let output = tokio::process::Command::new("python3")
        .arg(tus_script())
        .arg(api.files_url())
        .arg(&token)
        .arg(file.path())
        .arg(chunk_size.to_string())
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "tuspy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = String::from_utf8(output.stdout).expect("utf-8");
    let id = VideoId::parse(url.trim().rsplit('/').next().expect("an id")).expect("a uuid");

    env.wait_for_status(id, VideoStatus::Uploaded, Duration::from_secs(120))
        .await;
    let expected = sha256_hex(&data);
    assert_eq!(
        env.original_sha256(id).await,
        expected,
        "the object in Garage is the file sent"
    );

    let status: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/videos/{id}", api.address))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["status"], "UPLOADED");
    assert_eq!(status["uploaded_percentage"], 100);
    assert_eq!(status["sha256"], expected.as_str());
    assert_eq!(status["size_bytes"], data.len() as u64);
    assert_eq!(status["filename"], "clip.mp4");
    assert_eq!(status["title"], "A test clip");

    // Every part but the last is at least S3's 5 MiB, whatever the chunks.
    let events = env.store.events(id).await.expect("history");
    let parts: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "part_stored")
        .map(|e| e.payload["stored_bytes"].as_u64().expect("stored_bytes"))
        .collect();
    let mut previous = 0;
    for (i, end) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            assert!(
                end - previous >= 5 * MIB as u64,
                "part {} is {} bytes",
                i + 1,
                end - previous
            );
        }
        previous = *end;
    }
    assert_eq!(previous, data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_64_mib_in_1_mib_chunks_byte_identical() {
    tuspy_upload_ends_byte_identical(MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_64_mib_in_5_mib_chunks_byte_identical() {
    tuspy_upload_ends_byte_identical(5 * MIB).await;
}

//! The uploads and the tus client processes that send them.

use super::*;

/// One file to upload, and what its client said in the end.
pub(super) struct Upload {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) sha256: String,
    /// A real video, which must end READY.
    pub(super) video: bool,
}

#[derive(Deserialize)]
pub(super) struct ClientResult {
    pub(super) path: PathBuf,
    pub(super) id: Option<String>,
    pub(super) ok: bool,
    pub(super) error: Option<String>,
    /// Acknowledged bytes the server later asked for again.
    pub(super) regressed: u64,
}

/// Random files under `dir`, 1 byte to `max_size`, fresh bytes each.
pub(super) fn make_files(rng: &mut StdRng, dir: &Path, config: &ChaosConfig) -> Vec<Upload> {
    let samples = [Sample::FastStart, Sample::MoovAtEnd, Sample::WebM];
    let (n, max_size) = (config.uploads, config.max_size);
    let videos = (0..config.videos.min(n)).map(|i| {
        let seconds = rng.random_range(1..=config.video_secs.max(1));
        let bytes = samples[i % samples.len()].make(dir, seconds);
        let path = dir.join(format!("video-{i}.bin"));
        std::fs::write(&path, &bytes).expect("write a video");
        Upload {
            path,
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            video: true,
        }
    });
    let videos: Vec<Upload> = videos.collect();
    let random = (videos.len()..n)
        .map(|i| {
            // Small and large alike: sizes spread over orders of magnitude,
            // with a few on a part boundary.
            let size = match i % 7 {
                0 => 1,
                1 => (5 << 20).min(max_size),
                _ => {
                    let exp = rng.random_range(0.0..(max_size as f64).log2());
                    (2f64.powf(exp) as u64).clamp(1, max_size)
                }
            };
            let mut bytes = vec![0u8; size as usize];
            rng.fill_bytes(&mut bytes);
            let path = dir.join(format!("file-{i}.bin"));
            std::fs::write(&path, &bytes).expect("write a file");
            Upload {
                path,
                size,
                sha256: hex::encode(Sha256::digest(&bytes)),
                video: false,
            }
        })
        .collect::<Vec<_>>();
    videos.into_iter().chain(random).collect()
}

/// Starts one client process over `items`, pinned to `api`.
pub(super) fn start_client(
    kind: &str,
    api: &str,
    token: &str,
    items: Vec<serde_json::Value>,
    deadline: Duration,
    dir: &Path,
    n: usize,
) -> Child {
    let spec = serde_json::json!({
        "endpoint": format!("{api}/files/"),
        "token": token,
        "deadline_secs": deadline.as_secs(),
        "uploads": items,
    });
    let spec_path = dir.join(format!("spec-{kind}-{n}.json"));
    std::fs::write(&spec_path, spec.to_string()).expect("write the spec");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("chaos");
    let mut command = match kind {
        "tuspy" => {
            let mut c = tokio::process::Command::new("python3");
            c.arg(scripts.join("tuspy_uploads.py"));
            c
        }
        _ => {
            let mut c = tokio::process::Command::new("node");
            c.arg(scripts.join("tusjs_uploads.mjs"));
            c
        }
    };
    command
        .arg(&spec_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("the {kind} client starts: {e}"))
}

//! One encode: probe the source, pick the ladder, run ffmpeg once into HLS
//! and DASH over the same fMP4 segments (CMAF: one encode, two manifests),
//! grab a poster, and put every file in S3.
//!
//! The manifests list each segment by a short relative name (`SegmentList`,
//! `init-0.m4s`, `0-1.m4s`): the api presigns the HLS ones in place and
//! answers the DASH ones with a redirect to a presigned URL, because
//! ffmpeg's DASH reader can't take a segment URL much longer than the
//! manifest's own.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::Stdio,
};

use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload, path::Path as ObjectPath};
use reelay_shared::{
    VideoId,
    retry::RetryPolicy,
    storage::Storage,
    video::{domain::Rendition, fflow::Encoded},
};
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::Command,
};
use uuid::Uuid;

/// Segment length, seconds; keyframes are forced on this grid so every
/// rendition switches at the same instants.
const SEGMENT_SECS: u32 = 2;
/// Lines of ffmpeg's stderr kept for a failure's reason.
const STDERR_TAIL: usize = 8;

/// What ffprobe says of a source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    /// As displayed (rotation applied).
    pub width: u32,
    pub height: u32,
    pub duration_secs: f64,
    pub audio: bool,
}

impl Probe {
    fn short_side(&self) -> u32 {
        self.width.min(self.height)
    }

    fn portrait(&self) -> bool {
        self.height > self.width
    }

    /// The size a rendition whose shorter side is `short` gets (even
    /// numbers, aspect kept, as ffmpeg's `scale=-2` computes it).
    pub fn scaled(&self, short: u32) -> (u32, u32) {
        let long = (f64::from(short) * f64::from(self.width.max(self.height))
            / f64::from(self.short_side()))
        .round() as u32;
        let long = long - long % 2;
        if self.portrait() {
            (short, long)
        } else {
            (long, short)
        }
    }
}

/// The rungs, by shorter side: 1080, 720 and 360 where the source has as
/// many lines, never more than it has. A source under two rungs gets its
/// own size and half of it, so there are always at least two.
pub fn ladder(probe: &Probe) -> Vec<u32> {
    let source = probe.short_side() - probe.short_side() % 2;
    let mut rungs: Vec<u32> = [1080, 720, 360]
        .into_iter()
        .filter(|&r| r <= source)
        .collect();
    if rungs.len() < 2 && !rungs.contains(&source) {
        rungs.insert(0, source);
    }
    if rungs.len() < 2 {
        let half = (source / 2).max(2);
        rungs.push(half - half % 2);
    }
    rungs
}

/// The bitrate asked for a rung (bits per second): about 0.06 bits per pixel
/// at 30 fps, within sane bounds.
pub fn bandwidth(short: u32) -> u64 {
    (u64::from(short) * u64::from(short) * 1000 / 180).clamp(150_000, 6_000_000)
}

/// The ffmpeg arguments that encode `source` into `out` (HLS and DASH) for
/// `rungs`. Public so the benchmark runs exactly what fflow runs.
pub fn ffmpeg_args(
    source: &Path,
    out: &Path,
    probe: &Probe,
    rungs: &[u32],
    preset: &str,
) -> Vec<String> {
    let n = rungs.len();
    let mut graph = format!("[0:v]split={n}");
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, short) in rungs.iter().enumerate() {
        let scale = if probe.portrait() {
            format!("scale={short}:-2")
        } else {
            format!("scale=-2:{short}")
        };
        graph.push_str(&format!(";[s{i}]{scale}[v{i}]"));
    }
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-y",
        "-nostats",
        "-progress",
        "pipe:1",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(source.display().to_string());
    args.extend(["-filter_complex".into(), graph]);
    for i in 0..n {
        args.extend(["-map".into(), format!("[v{i}]")]);
    }
    if probe.audio {
        args.extend(["-map".into(), "0:a:0".into()]);
    }
    args.extend(
        [
            "-c:v",
            "libx264",
            "-preset",
            preset,
            "-profile:v",
            "main",
            "-pix_fmt",
            "yuv420p",
            "-sc_threshold",
            "0",
        ]
        .map(String::from),
    );
    args.extend([
        "-force_key_frames".into(),
        format!("expr:gte(t,n_forced*{SEGMENT_SECS})"),
    ]);
    for (i, short) in rungs.iter().enumerate() {
        let rate = bandwidth(*short);
        args.extend([
            format!("-b:v:{i}"),
            rate.to_string(),
            format!("-maxrate:v:{i}"),
            (rate * 3 / 2).to_string(),
            format!("-bufsize:v:{i}"),
            (rate * 2).to_string(),
        ]);
    }
    if probe.audio {
        args.extend(["-c:a", "aac", "-b:a", "128k", "-ac", "2"].map(String::from));
    }
    let sets = if probe.audio {
        "id=0,streams=v id=1,streams=a"
    } else {
        "id=0,streams=v"
    };
    args.extend([
        "-f".into(),
        "dash".into(),
        "-seg_duration".into(),
        SEGMENT_SECS.to_string(),
        "-use_template".into(),
        "0".into(),
        "-use_timeline".into(),
        "0".into(),
        "-hls_playlist".into(),
        "1".into(),
        "-init_seg_name".into(),
        "init-$RepresentationID$.m4s".into(),
        "-media_seg_name".into(),
        "$RepresentationID$-$Number$.m4s".into(),
        "-adaptation_sets".into(),
        sets.into(),
        out.join("manifest.mpd").display().to_string(),
    ]);
    args
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Deserialize)]
struct StreamJson {
    codec_type: String,
    width: Option<u32>,
    height: Option<u32>,
    #[serde(default)]
    side_data_list: Vec<SideData>,
}

#[derive(Deserialize)]
struct SideData {
    rotation: Option<f64>,
}

#[derive(Deserialize)]
struct FormatJson {
    duration: Option<String>,
}

/// Runs ffprobe on `source`; the error is ffprobe's own last words.
pub async fn probe(source: &Path) -> Result<Probe, String> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_entries"])
        .arg("format=duration:stream=codec_type,width,height:stream_side_data=rotation")
        .arg(source)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("ffprobe did not run: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(last_words(stderr.lines(), &[(source, "the upload")])
            .unwrap_or_else(|| "ffprobe failed".into()));
    }
    let parsed: ProbeJson = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("ffprobe's answer is unreadable: {e}"))?;
    let video = parsed
        .streams
        .iter()
        .find(|s| s.codec_type == "video" && s.width.is_some() && s.height.is_some())
        .ok_or_else(|| "no video stream in the file".to_owned())?;
    let (w, h) = (video.width.unwrap_or(0), video.height.unwrap_or(0));
    if w < 2 || h < 2 {
        return Err(format!("the video is {w}x{h}"));
    }
    let quarter_turn = video
        .side_data_list
        .iter()
        .filter_map(|d| d.rotation)
        .any(|r| (r.abs() - 90.0).abs() < 1.0 || (r.abs() - 270.0).abs() < 1.0);
    let (width, height) = if quarter_turn { (h, w) } else { (w, h) };
    let duration_secs = parsed
        .format
        .and_then(|f| f.duration)
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| *d > 0.0)
        .ok_or_else(|| "the file has no duration".to_owned())?;
    Ok(Probe {
        width,
        height,
        duration_secs,
        audio: parsed.streams.iter().any(|s| s.codec_type == "audio"),
    })
}

/// The last non-empty line of a tool's stderr, as a failure's reason
/// (shown to the video's owner): this replica's paths in it are named by
/// what they are (`hide`), not where they are.
fn last_words<'a>(lines: impl Iterator<Item = &'a str>, hide: &[(&Path, &str)]) -> Option<String> {
    let last = lines.map(str::trim).filter(|l| !l.is_empty()).last()?;
    Some(hide.iter().fold(last.to_owned(), |line, (path, name)| {
        line.replace(&*path.to_string_lossy(), name)
    }))
}

/// Encodes `source` into `out` and reports whole percents to `progress`.
pub async fn transcode(
    source: &Path,
    out: &Path,
    probe: &Probe,
    preset: &str,
    mut progress: impl FnMut(u8),
) -> Result<Vec<u32>, String> {
    let rungs = ladder(probe);
    tokio::fs::create_dir_all(out)
        .await
        .map_err(|e| format!("creating the output folder: {e}"))?;
    let mut child = Command::new("ffmpeg")
        .args(ffmpeg_args(source, out, probe, &rungs, preset))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("ffmpeg did not run: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // ffmpeg's stderr is drained as it comes, keeping its last lines.
    let tail = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        let mut kept: VecDeque<String> = VecDeque::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if kept.len() == STDERR_TAIL {
                kept.pop_front();
            }
            kept.push_back(line.trim().to_owned());
        }
        kept
    });
    let total_us = probe.duration_secs * 1e6;
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(us) = line.strip_prefix("out_time_us=")
            && let Ok(us) = us.trim().parse::<f64>()
        {
            progress(((us / total_us) * 100.0).clamp(0.0, 99.0) as u8);
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for ffmpeg: {e}"))?;
    let tail = tail.await.unwrap_or_default();
    if !status.success() {
        return Err(last_words(
            tail.iter().map(String::as_str),
            &[(source, "the upload"), (out, "the output")],
        )
        .unwrap_or_else(|| format!("ffmpeg exited with {status}")));
    }
    Ok(rungs)
}

/// A poster: one frame a second in (or mid-way through a shorter clip).
pub async fn poster(source: &Path, into: &Path, probe: &Probe) -> Result<(), String> {
    let at = (probe.duration_secs / 2.0).min(1.0);
    let short = probe.short_side().min(720);
    let scale = if probe.portrait() {
        format!("scale={short}:-2")
    } else {
        format!("scale=-2:{short}")
    };
    let output = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-ss",
        ])
        .arg(format!("{at:.3}"))
        .arg("-i")
        .arg(source)
        .args(["-frames:v", "1", "-vf", &scale, "-q:v", "3"])
        .arg(into)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("ffmpeg did not run: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(last_words(
            stderr.lines(),
            &[(source, "the upload"), (into, "the poster")],
        )
        .unwrap_or_else(|| "the poster failed".into()));
    }
    Ok(())
}

/// Why an encode did not end with its renditions stored.
#[derive(Debug)]
pub enum Failure {
    /// The file (ffmpeg's words, or our checks'), or S3 refusing: the
    /// video fails.
    Refused(String),
    /// S3 was away past the retries: worth asking again.
    S3Away(String),
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self::Refused(reason)
    }
}

impl Failure {
    /// `what` failed with S3's `error`: away or refused, as it says.
    pub fn s3(what: impl std::fmt::Display, error: &object_store::Error) -> Self {
        let reason = format!("{what}: {error}");
        match reelay_shared::storage::unavailable(error) {
            true => Self::S3Away(reason),
            false => Self::Refused(reason),
        }
    }
}

/// Puts every file of `out` under the video's stream prefix and the poster
/// at its key, a few at once; describes what is where.
#[allow(clippy::too_many_arguments)]
pub async fn store(
    storage: &Storage,
    retry: &RetryPolicy,
    video: VideoId,
    out: &Path,
    poster: &Path,
    probe: &Probe,
    rungs: &[u32],
) -> Result<Encoded, Failure> {
    let prefix = storage.stream_prefix(video);
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(out)
        .await
        .map_err(|e| format!("reading {}: {e}", out.display()))?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let size = entry.metadata().await.map(|m| m.len()).unwrap_or(0);
        files.push((name, entry.path(), size));
    }
    let mut uploads: Vec<(String, PathBuf)> = files
        .iter()
        .map(|(name, path, _)| (format!("{prefix}{name}"), path.clone()))
        .collect();
    uploads.push((storage.poster_key(video), poster.to_path_buf()));
    futures_util::stream::iter(uploads)
        .map(|(key, path)| async move {
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let key = ObjectPath::from(key.as_str());
            retry
                .run("put_rendition", || {
                    storage.s3.put(&key, PutPayload::from(bytes.clone()))
                })
                .await
                .map(drop)
                .map_err(|e| Failure::s3(format_args!("storing {key}"), &e))
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;

    let renditions = rungs
        .iter()
        .enumerate()
        .map(|(i, short)| {
            let (width, height) = probe.scaled(*short);
            let size_bytes = files
                .iter()
                .filter(|(name, _, _)| {
                    name == &format!("init-{i}.m4s") || name.starts_with(&format!("{i}-"))
                })
                .map(|(_, _, size)| size)
                .sum();
            Rendition {
                flow_id: Uuid::now_v7(),
                name: format!("{short}p"),
                width,
                height,
                bandwidth: bandwidth(*short),
                size_bytes,
                playlist: format!("media_{i}.m3u8"),
            }
        })
        .collect();
    Ok(Encoded {
        renditions,
        prefix,
        hls: "master.m3u8".into(),
        dash: "manifest.mpd".into(),
        poster: storage.poster_key(video),
        duration_ms: (probe.duration_secs * 1000.0).round() as u64,
        audio: probe.audio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(width: u32, height: u32) -> Probe {
        Probe {
            width,
            height,
            duration_secs: 4.0,
            audio: true,
        }
    }

    #[test]
    fn the_ladder_never_upscales_and_has_at_least_two_rungs() {
        assert_eq!(ladder(&probe(1920, 1080)), vec![1080, 720, 360]);
        assert_eq!(ladder(&probe(1280, 720)), vec![720, 360]);
        assert_eq!(
            ladder(&probe(720, 1280)),
            vec![720, 360],
            "portrait by its shorter side"
        );
        assert_eq!(ladder(&probe(640, 360)), vec![360, 180]);
        assert_eq!(ladder(&probe(320, 240)), vec![240, 120]);
        assert_eq!(ladder(&probe(853, 481)), vec![480, 360]);
        assert_eq!(ladder(&probe(3840, 2160)), vec![1080, 720, 360]);
        for (w, h) in [(1920, 1080), (320, 240), (100, 56), (480, 640)] {
            let p = probe(w, h);
            let rungs = ladder(&p);
            assert!(rungs.len() >= 2, "{w}x{h}");
            for short in rungs {
                let (rw, rh) = p.scaled(short);
                assert!(rw <= w && rh <= h, "{w}x{h} -> {rw}x{rh}");
                assert_eq!((rw % 2, rh % 2), (0, 0));
            }
        }
    }

    #[test]
    fn renditions_keep_the_aspect_ratio() {
        assert_eq!(probe(1280, 720).scaled(360), (640, 360));
        assert_eq!(probe(720, 1280).scaled(360), (360, 640));
        assert_eq!(probe(320, 240).scaled(120), (160, 120));
    }

    #[test]
    fn the_command_maps_every_rung_and_audio_only_when_there_is_some() {
        let p = probe(1280, 720);
        let args = ffmpeg_args(
            Path::new("in.mp4"),
            Path::new("out"),
            &p,
            &[720, 360],
            "veryfast",
        );
        let joined = args.join(" ");
        assert!(joined.contains("split=2[s0][s1];[s0]scale=-2:720[v0];[s1]scale=-2:360[v1]"));
        assert!(joined.contains("-map [v0] -map [v1] -map 0:a:0"));
        assert!(joined.ends_with("out/manifest.mpd"));
        let silent = Probe { audio: false, ..p };
        let joined = ffmpeg_args(
            Path::new("in.mp4"),
            Path::new("out"),
            &silent,
            &[720, 360],
            "veryfast",
        )
        .join(" ");
        assert!(!joined.contains("0:a"));
        assert!(joined.ends_with("-adaptation_sets id=0,streams=v out/manifest.mpd"));
    }
}

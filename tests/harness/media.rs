//! Test videos made with ffmpeg's lavfi sources.

use std::path::Path;

/// The test inputs, made with ffmpeg's lavfi sources.
#[derive(Clone, Copy, Debug)]
pub enum Sample {
    /// H.264 + AAC, moov first.
    FastStart,
    /// H.264 + AAC, moov at the end.
    MoovAtEnd,
    /// VP8 + Opus.
    WebM,
    /// Bytes that are no video at all.
    Corrupt,
}

impl Sample {
    /// The sample, `seconds` long (written under `dir`), as bytes.
    pub fn make(self, dir: &Path, seconds: u32) -> Vec<u8> {
        let (name, codec): (&str, &[&str]) = match self {
            Sample::FastStart => (
                "fast.mp4",
                &[
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                    "-movflags",
                    "+faststart",
                ],
            ),
            Sample::MoovAtEnd => (
                "late.mp4",
                &[
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                ],
            ),
            Sample::WebM => (
                "clip.webm",
                &[
                    "-c:v",
                    "libvpx",
                    "-deadline",
                    "realtime",
                    "-b:v",
                    "400k",
                    "-c:a",
                    "libopus",
                ],
            ),
            // Zeros, not random bytes: now and then ffprobe reads random
            // bytes as some raw format with a 0x0 video stream, and the
            // failure is then ours ("the video is 0x0"), not ffmpeg's.
            Sample::Corrupt => return vec![0u8; 300_000],
        };
        let path = dir.join(name);
        let duration = format!("duration={seconds}");
        let ok = std::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!("testsrc2=size=640x360:rate=25:{duration}"))
            .args(["-f", "lavfi", "-i"])
            .arg(format!("sine=frequency=440:{duration}"))
            .args(codec)
            .arg("-shortest")
            .arg(&path)
            .status()
            .expect("ffmpeg runs")
            .success();
        assert!(ok, "ffmpeg made {name}");
        std::fs::read(path).expect("the sample")
    }
}

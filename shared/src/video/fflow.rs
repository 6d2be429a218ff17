//! What workers and fflow replicas say to each other over HTTP (JSON).
//!
//! A worker starts a session on any replica (`POST {base}/sessions`), which
//! answers with its own address; the worker keeps `session → address` in
//! Redis and sends every chunk, in order, to `PUT {address}sessions/{id}/chunks?offset=N`.
//! Once the original is whole in S3 an encode job asks the same replica to
//! encode (`POST {address}sessions/{id}/encode`) and polls
//! `GET {address}sessions/{id}` until it is done.

use serde::{Deserialize, Serialize};

use super::domain::{Rendition, VideoId};

/// `POST {base}/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartSession {
    pub video_id: VideoId,
    pub size_bytes: u64,
}

/// A session, as a replica describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The replica's own address, ending in `/`.
    pub address: String,
    pub video_id: VideoId,
    pub size_bytes: u64,
    /// Contiguous bytes glued from offset 0.
    pub length: u64,
    pub encode: EncodeState,
}

/// `PUT …/chunks?offset=N` answers with the session's length; 409 (with
/// the length) when `offset` is past it, a gap the replica can't fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Glued {
    pub length: u64,
}

/// Where the encoder reads the original from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The chunks glued on the replica's disk (they must be complete).
    Local,
    /// The original in S3: the fallback when the routed replica is gone.
    S3,
}

/// `POST …/encode`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Encode {
    pub source: Source,
}

/// An encode's state on its replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EncodeState {
    /// Chunks may still come; not asked to encode.
    Idle,
    /// Waiting for an ffmpeg slot.
    Queued,
    Running {
        percent: u8,
    },
    Done {
        result: Encoded,
    },
    /// ffmpeg (or S3) refused; `reason` is its own words.
    Failed {
        reason: String,
    },
    /// S3 was away past the retries (reading the original, storing the
    /// renditions): nothing is wrong with the video; ask again later.
    Unavailable {
        reason: String,
    },
}

/// What a finished encode put in S3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Encoded {
    pub renditions: Vec<Rendition>,
    /// Object key prefix of the stream folder (manifests and segments).
    pub prefix: String,
    pub hls: String,
    pub dash: String,
    pub poster: String,
    pub duration_ms: u64,
    pub audio: bool,
}

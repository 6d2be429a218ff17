//! For the engagement tests: videos to watch, a scripted player, and what
//! ClickHouse holds.

use chrono::{DateTime, TimeDelta, Utc};
use reelay_shared::{
    VideoId,
    clickhouse::ClickHouse,
    video::{UserId, VideoEvent, domain::Playback, fflow::Source},
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::TestEnv;

impl TestEnv {
    /// A READY video of `owner`, `duration_ms` long, as the log records one
    /// after upload and encode (the engagement tests watch videos; the
    /// video tests make them for real).
    pub async fn ready_video(&self, owner: Uuid, duration_ms: u64) -> VideoId {
        let id = VideoId::new();
        let prefix = format!("{}streams/{id}/", self.s3.key_prefix);
        let events = vec![
            VideoEvent::Created {
                owner_id: UserId(owner),
                flow_id: Uuid::new_v4(),
                size_bytes: 1000,
                part_size_bytes: 5 * 1024 * 1024,
                object_key: format!("{}originals/{id}", self.s3.key_prefix),
                title: Some("a clip".into()),
                filename: None,
                filetype: None,
                upload_metadata: None,
                expires_at: Utc::now() + TimeDelta::days(1),
                onboarding_position: None,
                firmware_id: None,
            },
            VideoEvent::Uploaded {
                sha256: "0".repeat(64),
            },
            VideoEvent::EncodingStarted {
                replica: "fflow-test".into(),
                source: Source::S3,
            },
            VideoEvent::Encoded {
                renditions: vec![],
                playback: Playback {
                    hls: "master.m3u8".into(),
                    dash: "manifest.mpd".into(),
                    poster: format!("{prefix}poster.jpg"),
                    prefix,
                    duration_ms,
                },
            },
        ];
        self.store
            .append(id, |_| Ok((events, ())))
            .await
            .expect("seed a ready video");
        id
    }

    pub fn analytics(&self) -> ClickHouse {
        ClickHouse::new(&self.clickhouse)
    }

    /// `(rows, distinct event ids)` in `playback_events`.
    pub async fn stored_events(&self) -> (u64, u64) {
        #[derive(Deserialize)]
        struct Row {
            n: u64,
            u: u64,
        }
        let ch = self.analytics();
        let rows: Vec<Row> = ch
            .query(&format!(
                "SELECT count() AS n, uniqExact(event_id) AS u FROM {}.playback_events",
                ch.database()
            ))
            .await
            .unwrap_or_default();
        rows.first().map_or((0, 0), |r| (r.n, r.u))
    }

    /// Every event id in `playback_events`, as stored (duplicates kept).
    pub async fn stored_event_ids(&self) -> Vec<Uuid> {
        #[derive(Deserialize)]
        struct Row {
            event_id: Uuid,
        }
        let ch = self.analytics();
        let rows: Vec<Row> = ch
            .query(&format!(
                "SELECT event_id FROM {}.playback_events",
                ch.database()
            ))
            .await
            .unwrap_or_default();
        rows.into_iter().map(|r| r.event_id).collect()
    }
}

/// One playback session's events, as a player would send them.
pub struct Session {
    pub id: Uuid,
    pub video: VideoId,
    /// The client's clock at the session's start.
    pub start: DateTime<Utc>,
    pub events: Vec<Value>,
}

impl Session {
    pub fn new(video: VideoId, start: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::new_v4(),
            video,
            start,
            events: Vec::new(),
        }
    }

    /// Adds an event `at_ms` after the start, with the playhead at
    /// `playhead_ms`.
    pub fn at(mut self, at_ms: i64, kind: &str, playhead_ms: u64) -> Self {
        let mut event = json!({
            "event_id": Uuid::new_v4(),
            "session_id": self.id,
            "video_id": self.video,
            "type": kind,
            "playhead_ms": playhead_ms,
            "client_time": (self.start + TimeDelta::milliseconds(at_ms)).to_rfc3339(),
        });
        if kind == "quality_change" {
            event["rendition"] = json!("720p");
        }
        self.events.push(event);
        self
    }

    /// `{"events": [...]}` of all of it.
    pub fn batch(&self) -> Value {
        json!({ "events": self.events })
    }
}

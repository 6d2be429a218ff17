//! The engagement product's ids, reactions and player events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::video::{UserId, VideoId};

/// The namespace the derived ids live in.
const NAMESPACE: Uuid = Uuid::from_u128(0x7265_656c_6179_4000_8000_656e_6761_6765);

/// One user's relation to one video (reaction, bookmark): derived from
/// both, so the same pair always names the same aggregate.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct UserVideoId(pub Uuid);

impl UserVideoId {
    pub fn of(user: UserId, video: VideoId) -> Self {
        let mut name = [0u8; 32];
        name[..16].copy_from_slice(user.0.as_bytes());
        name[16..].copy_from_slice(video.0.as_bytes());
        Self(Uuid::new_v5(&NAMESPACE, &name))
    }
}

/// A video's engagement settings (reactions, comments on or off): derived
/// from the video's id (an aggregate id is unique across aggregate types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct SettingsId(pub Uuid);

impl SettingsId {
    pub fn of(video: VideoId) -> Self {
        let mut name = [0u8; 24];
        name[..8].copy_from_slice(b"settings");
        name[8..].copy_from_slice(video.0.as_bytes());
        Self(Uuid::new_v5(&NAMESPACE, &name))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct CommentId(pub Uuid);

impl CommentId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Option<Self> {
        Uuid::parse_str(s).ok().map(Self)
    }
}

impl Default for CommentId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for CommentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Mirrored by the SQL enum `reaction`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "reaction", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Reaction {
    Like,
    Dislike,
}

/// What a player says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlayerEventType {
    /// The player was opened on the video (a view attempt starts).
    Open,
    Play,
    Pause,
    /// The viewer jumped; `playhead_ms` is where to.
    Seek,
    /// A heartbeat while playing.
    Position,
    QualityChange,
    RebufferStart,
    RebufferEnd,
    /// Played to the end.
    Complete,
    Error,
}

impl PlayerEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Play => "play",
            Self::Pause => "pause",
            Self::Seek => "seek",
            Self::Position => "position",
            Self::QualityChange => "quality_change",
            Self::RebufferStart => "rebuffer_start",
            Self::RebufferEnd => "rebuffer_end",
            Self::Complete => "complete",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// One player event as it travels on the playback stream: what the player
/// sent, checked, with the viewer (when signed in) and the time it arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlayerEvent {
    pub event_id: Uuid,
    pub session_id: Uuid,
    pub video_id: VideoId,
    #[serde(rename = "type")]
    pub kind: PlayerEventType,
    pub playhead_ms: u64,
    pub client_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    pub received_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let (u, v) = (UserId(Uuid::new_v4()), VideoId::new());
        assert_eq!(UserVideoId::of(u, v), UserVideoId::of(u, v));
        assert_ne!(UserVideoId::of(u, v), UserVideoId::of(u, VideoId::new()));
        assert_ne!(SettingsId::of(v).0, v.0);
        assert_eq!(
            PlayerEventType::parse("quality_change"),
            Some(PlayerEventType::QualityChange)
        );
        assert_eq!(PlayerEventType::parse("teleport"), None);
    }
}

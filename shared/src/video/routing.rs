//! Redis keys that name where an upload session lives outside PostgreSQL.

use super::domain::VideoId;

/// The key holding the address of the fflow replica that has `video`'s
/// encode session (set by workers, removed when the session ends or is
/// reaped).
pub fn session_key(prefix: &str, video: VideoId) -> String {
    format!("{prefix}fflow-session:{video}")
}

pub mod devices;
pub mod links;
pub mod moderation;
pub mod onboarding;
pub mod ops;
pub mod playback;
pub mod profile;
pub mod tus;
pub mod videos;

use reelay_shared::{UserId, VideoId, store::Video};

use crate::{error::ApiError, startup::AppState};

/// The caller's video, or 404 (also for someone else's: its existence is not
/// revealed).
pub async fn owned_video(state: &AppState, user: UserId, id: &str) -> Result<Video, ApiError> {
    let id = VideoId::parse(id).ok_or(ApiError::NotFound)?;
    match state.store.video(id).await? {
        Some(video) if video.owner_id == user => Ok(video),
        _ => Err(ApiError::NotFound),
    }
}

//! `/v1/profile/video`: the caller's current profile video. Setting a new
//! one deletes the previous one; there is exactly one current profile video
//! per user, also under concurrent requests (the profile aggregate's
//! version serialises them).

use axum::{Json, Router, extract::State, routing::get};
use reelay_shared::{UserId, VideoId, domain::ProfileEvent, store::AppendError};
use serde::{Deserialize, Serialize};

use super::{links::linkable, owned_video, videos::VideoView};
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    startup::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/profile/video", get(current).put(set))
}

async fn current(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> ApiResult<Json<VideoView>> {
    let video_id = state
        .store
        .profile(user)
        .await?
        .and_then(|p| p.video_id)
        .ok_or(ApiError::NotFound)?;
    let video = state
        .store
        .video(video_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(video.into()))
}

#[derive(Deserialize)]
pub struct SetProfile {
    video_id: String,
}

#[derive(Serialize)]
pub struct ProfileSet {
    pub video_id: String,
    /// The profile video this one replaced; it is being deleted.
    pub previous_video_id: Option<String>,
}

/// Attempts at the profile aggregate before a concurrent writer's conflict
/// is reported as 423.
const ATTEMPTS: usize = 5;

/// `PUT /v1/profile/video` with `{"video_id": ...}`: an UPLOADED or READY
/// video of the caller's becomes the profile video.
async fn set(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Result<Json<SetProfile>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<ProfileSet>> {
    let Json(request) =
        body.map_err(|e| ApiError::BadRequest(format!("expected {{\"video_id\": uuid}}: {e}")))?;
    let video = owned_video(&state, user, &request.video_id).await?;
    if !linkable(video.status) {
        return Err(ApiError::WrongState(format!(
            "a profile video must be UPLOADED, ENCODING or READY; this one is {:?}",
            video.status
        )));
    }
    let previous = set_profile_video(&state, user, video.id).await?;
    if let Some(previous) = previous {
        super::tus::delete_video(&state, previous).await?;
    }
    Ok(Json(ProfileSet {
        video_id: video.id.to_string(),
        previous_video_id: previous.map(|v| v.to_string()),
    }))
}

/// Records `video` as `user`'s profile video; returns the one it replaced.
async fn set_profile_video(
    state: &AppState,
    user: UserId,
    video: VideoId,
) -> ApiResult<Option<VideoId>> {
    for _ in 0..ATTEMPTS {
        let set = state
            .store
            .append_profile(user, |profile| {
                let previous = profile.and_then(|p| p.video_id);
                if previous == Some(video) {
                    return Ok((vec![], None));
                }
                Ok((
                    vec![ProfileEvent::VideoSet {
                        video_id: video,
                        previous,
                    }],
                    previous,
                ))
            })
            .await;
        match set {
            Ok(previous) => return Ok(previous),
            // Another request set the profile first: decide again on its result.
            Err(AppendError::Conflict) => continue,
            Err(AppendError::Database(e)) => return Err(e.into()),
            Err(AppendError::Rejected(why)) => {
                return Err(ApiError::Internal(anyhow::anyhow!(why)));
            }
        }
    }
    Err(ApiError::Locked)
}

/// Clears `user`'s profile if `video` is its current video (it was deleted).
pub async fn clear_if_current(state: &AppState, user: UserId, video: VideoId) -> ApiResult<()> {
    for _ in 0..ATTEMPTS {
        let cleared = state
            .store
            .append_profile(user, |profile| match profile.and_then(|p| p.video_id) {
                Some(current) if current == video => {
                    Ok((vec![ProfileEvent::VideoCleared { video_id: video }], ()))
                }
                _ => Ok((vec![], ())),
            })
            .await;
        match cleared {
            Ok(()) => return Ok(()),
            Err(AppendError::Conflict) => continue,
            Err(AppendError::Database(e)) => return Err(e.into()),
            Err(AppendError::Rejected(why)) => {
                return Err(ApiError::Internal(anyhow::anyhow!(why)));
            }
        }
    }
    Err(ApiError::Locked)
}

//! `/v1/profile/video`: the caller's current profile video. Setting a new
//! one deletes the previous one; there is exactly one current profile video
//! per user, also under concurrent requests (the profile aggregate's
//! version serialises them).

use axum::{Json, Router, extract::State, routing::get};
use reelay_shared::VideoStatus;
use serde::{Deserialize, Serialize};

use super::videos::VideoView;
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult, JsonBody},
    state::AppState,
    video::{delete_video, linkable, owned_video, restore_profile_video, set_profile_video},
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

/// `PUT /v1/profile/video` with `{"video_id": ...}`: an UPLOADED or READY
/// video of the caller's becomes the profile video.
async fn set(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Result<JsonBody<SetProfile>, ApiError>,
) -> ApiResult<Json<ProfileSet>> {
    let JsonBody(request) = body.map_err(|e| e.expecting("{\"video_id\": uuid}"))?;
    let video = owned_video(&state, user, &request.video_id).await?;
    if !linkable(video.status) {
        return Err(ApiError::WrongState(format!(
            "a profile video must be UPLOADED, ENCODING or READY; this one is {:?}",
            video.status
        )));
    }
    let previous = set_profile_video(&state, user, video.id).await?;
    // A delete of the video may have run between the check above and the
    // profile's change: its own clear found another profile video then.
    // It appended DELETED before clearing, so it shows now; undo the change.
    // (If another set replaced it already, the set did happen: go on.)
    let now = state.store.video(video.id).await?;
    if now.is_none_or(|v| v.status == VideoStatus::Deleted)
        && restore_profile_video(&state, user, video.id, previous).await?
    {
        return Err(ApiError::WrongState(
            "the video was deleted while it became the profile video".into(),
        ));
    }
    if let Some(previous) = previous {
        delete_video(&state, previous).await?;
    }
    Ok(Json(ProfileSet {
        video_id: video.id.to_string(),
        previous_video_id: previous.map(|v| v.to_string()),
    }))
}

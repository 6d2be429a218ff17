//! `/v1/profile/video`: the caller's current profile video. Setting a new
//! one deletes the previous one; there is exactly one current profile video
//! per user, also under concurrent requests (the profile aggregate's
//! version serialises them).

use axum::{Json, extract::State};
use reelay_shared::VideoStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::videos::VideoView;
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult, JsonBody},
    openapi::{BadRequest, Conflict, Forbidden, Locked, NotFound, TooLarge},
    routes::Routes,
    state::AppState,
    video::{delete_video, linkable, owned_video, restore_profile_video, set_profile_video},
};

pub fn router() -> Routes {
    Routes::new().routes(routes!(current, set))
}

/// The caller's current profile video.
#[utoipa::path(get, path = "/v1/profile/video", tag = "profile",
    responses((status = 200, description = "The profile video", body = VideoView),
        (status = 404, description = "The caller has no profile video",
            body = crate::openapi::Problem, content_type = "application/problem+json"), Forbidden))]
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

/// The video to make the profile video.
#[derive(Deserialize, ToSchema)]
pub struct SetProfile {
    #[schema(format = Uuid)]
    video_id: String,
}

/// The new profile video, and the one it replaced.
#[derive(Serialize, ToSchema)]
pub struct ProfileSet {
    pub video_id: String,
    /// The profile video this one replaced; it is being deleted.
    pub previous_video_id: Option<String>,
}

/// Make a video the caller's profile video.
///
/// An UPLOADED, ENCODING or READY video of the caller's becomes the
/// profile video; the previous one is deleted. Exactly one current profile
/// video per user, also under concurrent requests.
#[utoipa::path(put, path = "/v1/profile/video", tag = "profile", request_body = SetProfile,
    responses((status = 200, description = "Set", body = ProfileSet), BadRequest, NotFound,
        Conflict, TooLarge, Locked, Forbidden))]
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

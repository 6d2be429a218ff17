//! `POST /v1/links`: a service fetching many users' profile video links at
//! once (one video's link is `GET /v1/videos/{id}/link`).

use axum::{Json, Router, extract::State, routing::post};
use chrono::{DateTime, Utc};
use reelay_shared::video::queries::ProfileVideo;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    auth::{Caller, Role},
    error::{ApiError, ApiResult, JsonBody},
    state::AppState,
    video::{link_ttl, linkable, moderation_allows, presign_original},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/links", post(batch))
}

/// Users one batch may ask about.
pub const MAX_BATCH: usize = 500;

#[derive(Deserialize)]
pub struct BatchRequest {
    user_ids: Vec<Uuid>,
    ttl: Option<u64>,
}

#[derive(Serialize)]
pub struct UserLink {
    pub user_id: Uuid,
    /// Null when the user has no current profile video to link to.
    pub video_id: Option<String>,
    pub url: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
pub struct BatchResponse {
    pub links: Vec<UserLink>,
}

/// `POST /v1/links` with `{"user_ids": [...], "ttl": seconds}` (service or
/// admin): each user's current profile video link, in the order asked, from
/// one query.
async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody<BatchRequest>, ApiError>,
) -> ApiResult<Json<BatchResponse>> {
    if caller.role == Role::User {
        return Err(ApiError::Forbidden("batch links are for services"));
    }
    let JsonBody(request) = body.map_err(|e| e.expecting("{\"user_ids\": [uuid, ...]}"))?;
    if request.user_ids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH} user_ids per request"
        )));
    }
    let ttl = link_ttl(&state, request.ttl)?;
    let rows = state.store.profile_videos(&request.user_ids).await?;
    let mut links = Vec::with_capacity(rows.len());
    for row in rows {
        let ProfileVideo {
            user_id,
            video_id,
            status,
            verification,
        } = row;
        let link = match (video_id, status, verification) {
            (Some(video), Some(status), Some(verification))
                if linkable(status) && moderation_allows(&state, caller.role, verification) =>
            {
                Some((video, presign_original(&state, video, ttl).await?))
            }
            _ => None,
        };
        links.push(match link {
            Some((video, link)) => UserLink {
                user_id,
                video_id: Some(video.to_string()),
                url: Some(link.url),
                expires_at: Some(link.expires_at),
            },
            None => UserLink {
                user_id,
                video_id: None,
                url: None,
                expires_at: None,
            },
        });
    }
    Ok(Json(BatchResponse { links }))
}

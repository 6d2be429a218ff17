//! Onboarding content: admins upload it through tus with the `onboarding`
//! metadata flag; anyone, without a token, lists it in order with links;
//! admins see every member (`/v1/onboarding/members`) and reorder them.

use axum::{Json, Router, extract::State, routing::get};
use chrono::{DateTime, Utc};
use reelay_shared::{
    VideoId, VideoStatus,
    video::{Verification, VideoEvent, VideoRejection},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Admin, Caller, Role},
    error::{ApiError, ApiResult, JsonBody},
    state::AppState,
    throttle::Throttled,
    video::{linkable, moderation_allows, presign_original},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/onboarding", get(list).put(reorder))
        .route("/v1/onboarding/members", get(members))
}

#[derive(Serialize)]
pub struct Item {
    pub video_id: String,
    pub position: i32,
    pub title: Option<String>,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct Collection {
    pub videos: Vec<Item>,
}

/// `GET /v1/onboarding`: no token needed. Only playable, not rejected
/// videos appear, each with a link of the default life.
async fn list(State(state): State<AppState>, _: Throttled) -> ApiResult<Json<Collection>> {
    let mut videos = Vec::new();
    for v in state.store.onboarding().await? {
        if !linkable(v.status) || !moderation_allows(&state, Role::Service, v.verification) {
            continue;
        }
        let link = presign_original(&state, v.id, state.config.link_ttl).await?;
        videos.push(Item {
            video_id: v.id.to_string(),
            position: v.onboarding_position.unwrap_or_default(),
            title: v.title,
            url: link.url,
            expires_at: link.expires_at,
        });
    }
    Ok(Json(Collection { videos }))
}

/// An onboarding video as admins order it: also those still uploading,
/// failed or held back by moderation, which the public list leaves out.
#[derive(Serialize)]
pub struct Member {
    pub video_id: String,
    pub position: i32,
    pub title: Option<String>,
    pub status: VideoStatus,
    pub verification: Verification,
}

/// `GET /v1/onboarding/members` (admin): every member in order, what
/// `PUT /v1/onboarding` must name.
async fn members(State(state): State<AppState>, _: Admin) -> ApiResult<Json<serde_json::Value>> {
    let members: Vec<Member> = state
        .store
        .onboarding()
        .await?
        .into_iter()
        .map(|v| Member {
            video_id: v.id.to_string(),
            position: v.onboarding_position.unwrap_or_default(),
            title: v.title,
            status: v.status,
            verification: v.verification,
        })
        .collect();
    Ok(Json(serde_json::json!({ "videos": members })))
}

#[derive(Deserialize)]
pub struct Order {
    video_ids: Vec<String>,
}

/// `PUT /v1/onboarding` with `{"video_ids": [...]}` (admin): the whole
/// collection in its new order; every current member exactly once.
async fn reorder(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody<Order>, ApiError>,
) -> ApiResult<Json<serde_json::Value>> {
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden("only admins order onboarding content"));
    }
    let JsonBody(order) = body.map_err(|e| e.expecting("{\"video_ids\": [...]}"))?;
    let wanted: Vec<VideoId> = order
        .video_ids
        .iter()
        .map(|id| {
            VideoId::parse(id)
                .ok_or_else(|| ApiError::BadRequest(format!("'{id}' is not a video id")))
        })
        .collect::<ApiResult<_>>()?;
    let mut members: Vec<VideoId> = state
        .store
        .onboarding()
        .await?
        .into_iter()
        .map(|v| v.id)
        .collect();
    let mut sorted = wanted.clone();
    sorted.sort_by_key(|v| v.0);
    members.sort_by_key(|v| v.0);
    if sorted != members {
        return Err(ApiError::BadRequest(
            "video_ids must name every onboarding video exactly once".into(),
        ));
    }
    for (position, video) in wanted.iter().enumerate() {
        let position = position as i32;
        state
            .store
            .append(*video, |current| {
                match current.video.as_ref().and_then(|v| v.onboarding_position) {
                    Some(p) if p == position => Ok((vec![], ())),
                    Some(_) => Ok((vec![VideoEvent::OnboardingPlaced { position }], ())),
                    None => Err(VideoRejection::NotOnboarding),
                }
            })
            .await?;
    }
    Ok(Json(serde_json::json!({ "video_ids": order.video_ids })))
}

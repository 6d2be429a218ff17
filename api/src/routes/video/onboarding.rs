//! Onboarding content: admins upload it through tus with the `onboarding`
//! metadata flag; anyone, without a token, lists it in order with links;
//! admins see every member (`/v1/onboarding/members`) and reorder them.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use reelay_shared::{
    VideoId, VideoStatus,
    video::{Verification, VideoEvent, VideoRejection},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::{
    auth::{Admin, Caller, Role},
    error::{ApiError, ApiResult, JsonBody},
    openapi::{BadRequest, Forbidden, Locked, TooLarge, TooManyRequests},
    routes::Routes,
    state::AppState,
    throttle::Throttled,
    video::{linkable, moderation_allows, presign_original},
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(list, reorder))
        .routes(routes!(members))
}

/// A video of the onboarding collection, with a link to it.
#[derive(Serialize, ToSchema)]
#[schema(as = OnboardingItem)]
pub struct Item {
    pub video_id: String,
    pub position: i32,
    pub title: Option<String>,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The onboarding collection, in order.
#[derive(Serialize, ToSchema)]
pub struct Collection {
    pub videos: Vec<Item>,
}

/// The onboarding collection for new users (no token needed).
///
/// Only playable, not rejected videos appear, in order, each with a link
/// of the default life.
#[utoipa::path(get, path = "/v1/onboarding", tag = "onboarding", security(()),
    responses((status = 200, description = "The collection", body = Collection), TooManyRequests))]
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
#[derive(Serialize, ToSchema)]
#[schema(as = OnboardingMember)]
pub struct Member {
    pub video_id: String,
    pub position: i32,
    pub title: Option<String>,
    pub status: VideoStatus,
    pub verification: Verification,
}

/// Every member of the collection, in order.
#[derive(Serialize, ToSchema)]
pub struct Members {
    pub videos: Vec<Member>,
}

/// Every onboarding video, in order (admins).
///
/// Also those the public list leaves out: what `PUT /v1/onboarding` must
/// name.
#[utoipa::path(get, path = "/v1/onboarding/members", tag = "onboarding",
    responses((status = 200, description = "The members", body = Members), Forbidden))]
async fn members(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Members>> {
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
    Ok(Json(Members { videos: members }))
}

/// The whole collection in its new order.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct Order {
    /// Every current member exactly once.
    #[schema(value_type = Vec<uuid::Uuid>)]
    video_ids: Vec<String>,
}

/// Reorder the onboarding collection (admins).
#[utoipa::path(put, path = "/v1/onboarding", tag = "onboarding", request_body = Order,
    responses((status = 200, description = "The new order", body = Order),
        BadRequest, Forbidden,
        (status = 409, description = "The ids are not every member of the collection exactly once",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        TooLarge, Locked))]
async fn reorder(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody<Order>, ApiError>,
) -> ApiResult<Json<Order>> {
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
        return Err(ApiError::WrongState(
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
    Ok(Json(order))
}

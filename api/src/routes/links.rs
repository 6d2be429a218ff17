//! Temporary links: presigned S3 GETs of a video's original, one at a time
//! for owners, or `POST /v1/links` for a service fetching many users'
//! profile videos at once.

use std::time::Duration;

use axum::{Json, Router, extract::State, http::Method, routing::post};
use chrono::{DateTime, Utc};
use object_store::signer::Signer;
use reelay_shared::{VideoId, VideoStatus, domain::Verification};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    auth::{Caller, Role},
    error::{ApiError, ApiResult},
    startup::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/links", post(batch))
}

#[derive(Serialize)]
pub struct Link {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// A link's life: `REELAY_LINK_TTL_SECS` unless asked, capped at
/// `REELAY_LINK_MAX_TTL_SECS`; 0 is refused.
pub fn link_ttl(state: &AppState, asked: Option<u64>) -> ApiResult<Duration> {
    match asked {
        Some(0) => Err(ApiError::BadRequest("ttl must be at least 1 second".into())),
        Some(secs) => Ok(Duration::from_secs(secs).min(state.link_max_ttl)),
        None => Ok(state.link_ttl),
    }
}

/// Whether a video in `status` can be linked to at all: its original is
/// whole from UPLOADED on, also while it encodes.
pub fn linkable(status: VideoStatus) -> bool {
    matches!(
        status,
        VideoStatus::Uploaded | VideoStatus::Encoding | VideoStatus::Ready
    )
}

/// Whether `role` may have a link to a video in this moderation state, the
/// owner apart (owners always may): rejected videos only for admins;
/// unverified or pending ones for services as `REELAY_SERVICE_LINKS_UNVERIFIED`
/// says.
pub fn moderation_allows(state: &AppState, role: Role, verification: Verification) -> bool {
    match (role, verification) {
        (Role::Admin, _) => true,
        (_, Verification::Rejected) => false,
        (_, Verification::Verified) => true,
        (_, Verification::Unverified | Verification::PendingReview) => {
            state.service_links_unverified
        }
    }
}

/// A presigned GET of `video`'s original (local computation, no request).
pub async fn presign(state: &AppState, video: VideoId, ttl: Duration) -> ApiResult<Link> {
    let path = object_store::path::Path::from(state.storage.original_key(video));
    let url = state
        .storage
        .s3
        .signed_url(Method::GET, &path, ttl)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("presigning a link")))?;
    Ok(Link {
        url: url.to_string(),
        expires_at: Utc::now() + ttl,
    })
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
    body: Result<Json<BatchRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<BatchResponse>> {
    if caller.role == Role::User {
        return Err(ApiError::Forbidden("batch links are for services"));
    }
    let Json(request) = body.map_err(|e| {
        ApiError::BadRequest(format!("expected {{\"user_ids\": [uuid, ...]}}: {e}"))
    })?;
    if request.user_ids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH} user_ids per request"
        )));
    }
    let ttl = link_ttl(&state, request.ttl)?;
    let rows = state.store.profile_videos(&request.user_ids).await?;
    let mut links = Vec::with_capacity(rows.len());
    for (user_id, video, status, verification) in rows {
        let link = match (video, status, verification) {
            (Some(video), Some(status), Some(verification))
                if linkable(status) && moderation_allows(&state, caller.role, verification) =>
            {
                Some((video, presign(&state, video, ttl).await?))
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

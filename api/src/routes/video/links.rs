//! `POST /v1/links`: a service fetching many users' profile video links at
//! once (one video's link is `GET /v1/videos/{id}/link`).

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::SecondsFormat;
use reelay_shared::VideoId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::{
    auth::{Caller, Role},
    error::{ApiError, ApiResult, JsonBody},
    openapi::{BadRequest, Forbidden, TooLarge},
    routes::Routes,
    state::AppState,
    video::{link_ttl, linkable, moderation_allows},
};

pub fn router() -> Routes {
    Routes::new().routes(routes!(batch))
}

/// Users one batch may ask about.
pub const MAX_BATCH: usize = 500;

/// Users whose profile video links are wanted.
#[derive(Deserialize, ToSchema)]
pub struct BatchRequest {
    #[schema(max_items = 500)]
    user_ids: Vec<Uuid>,
    /// The links' life in seconds (`REELAY_LINK_TTL_SECS` when absent,
    /// capped at `REELAY_LINK_MAX_TTL_SECS`).
    #[schema(minimum = 1)]
    ttl: Option<i64>,
}

/// One user's profile video link; all null when there is none to give.
#[derive(Serialize, ToSchema)]
pub struct UserLink {
    pub user_id: Uuid,
    /// Null when the user has no current profile video to link to.
    #[schema(value_type = Option<String>)]
    pub video_id: Option<VideoId>,
    pub url: Option<String>,
    /// The same instant for every link of a batch, written out once.
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub expires_at: Option<Arc<str>>,
}

/// The links, in the order the users were asked for.
#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    pub links: Vec<UserLink>,
}

/// Profile video links of many users at once (services, admins).
///
/// Each user's current profile video link, in the order asked (profiles
/// from this replica's memory, exact, or one query); `null`s for a user without one (or whose video a service may not
/// link to yet).
#[utoipa::path(post, path = "/v1/links", tag = "profile", request_body = BatchRequest,
    responses((status = 200, description = "The links", body = BatchResponse), BadRequest,
        Forbidden, TooLarge))]
async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody<BatchRequest>, ApiError>,
) -> ApiResult<Response> {
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
    // From this replica's cache while nothing changed (exact, see
    // `reelay_shared::fresh`), the rest in one query.
    let store = &state.store;
    let rows = state
        .profiles
        .get_many(&request.user_ids, Uuid::nil(), |missing| async move {
            let rows = store.profile_videos(&missing).await?;
            Ok::<_, sqlx::Error>(rows.into_iter().map(|r| (r.user_id, r)).collect())
        })
        .await?;
    // Every link signed at the same second, for the same life.
    let ttl = ttl.min(reelay_shared::presign::MAX_EXPIRES);
    let mut signer = state.storage.presigner(ttl);
    let expires_at: Arc<str> = (signer.signed_at() + ttl)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
        .into();
    let mut links = Vec::with_capacity(rows.len());
    for (&user_id, row) in request.user_ids.iter().zip(rows) {
        let (video_id, status, verification) = row.map_or((None, None, None), |r| {
            (r.video_id, r.status, r.verification)
        });
        let link = match (video_id, status, verification) {
            (Some(video), Some(status), Some(verification))
                if linkable(status) && moderation_allows(&state, caller.role, verification) =>
            {
                Some((video, signer.url(&state.storage.original_key(video))))
            }
            _ => None,
        };
        links.push(match link {
            Some((video, url)) => UserLink {
                user_id,
                video_id: Some(video),
                url: Some(url),
                expires_at: Some(expires_at.clone()),
            },
            None => UserLink {
                user_id,
                video_id: None,
                url: None,
                expires_at: None,
            },
        });
    }
    // 500 links are ~200 KB: written into one buffer of about that size
    // rather than grown from a few bytes.
    let mut body = Vec::with_capacity(256 + links.len() * 512);
    serde_json::to_writer(&mut body, &BatchResponse { links })
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

//! Moderation decisions: a signed callback from the moderation service
//! (`POST /v1/moderation/{id}`, HMAC-SHA256 of the body with
//! `REELAY_MODERATION_SECRET` in `x-reelay-signature`), or an admin
//! (`POST /v1/videos/{id}/moderation` with an admin token). Admins read
//! what awaits a decision at `GET /v1/moderation`.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::HeaderMap,
};
use reelay_shared::{
    VideoId, VideoStatus, signing,
    video::{Verification, VideoEvent, VideoRejection, domain::Moderator},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::{
    auth::{Admin, Caller, Role},
    cursor,
    error::{ApiError, ApiResult, QueryParams},
    openapi::{BadRequest, Forbidden, Locked, NotFound, Problem, TooLarge},
    routes::{
        Routes,
        video::videos::{Page, VideoView},
    },
    state::AppState,
    text,
    video::record_video,
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(queue))
        .routes(routes!(callback))
        .routes(routes!(by_admin))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct QueueQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Videos per page, 1–100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// What awaits a decision (admins).
///
/// Whole videos of every user still `unverified` or `pending_review`,
/// oldest first.
#[utoipa::path(get, path = "/v1/moderation", tag = "moderation", params(QueueQuery),
    responses((status = 200, description = "A page of the queue", body = Page), BadRequest, Forbidden))]
async fn queue(
    State(state): State<AppState>,
    _: Admin,
    QueryParams(q): QueryParams<QueueQuery>,
) -> ApiResult<Json<Page>> {
    let (limit, after) = cursor::video_page(q.limit, q.cursor.as_deref())?;
    let videos = state.store.moderation_queue(after, limit + 1).await?;
    let (videos, next_cursor) = cursor::page(videos, limit, |v| (v.created_at, v.id.0));
    Ok(Json(Page {
        videos: videos.into_iter().map(VideoView::from).collect(),
        next_cursor,
    }))
}

/// A moderation decision.
#[derive(Deserialize, ToSchema)]
struct Decision {
    #[schema(value_type = String, pattern = "^(verified|rejected)$")]
    decision: String,
    /// Why, for the owner to read.
    #[schema(max_length = 2000)]
    reason: Option<String>,
}

/// The decision taken.
#[derive(Serialize, ToSchema)]
pub struct Decided {
    pub video_id: String,
    pub verification: Verification,
}

fn parse(body: &[u8]) -> ApiResult<(Verification, Option<String>)> {
    let decision: Decision = serde_json::from_slice(body).map_err(|_| {
        ApiError::BadRequest(
            "expected {\"decision\": \"verified\"|\"rejected\", \"reason\": ...}".into(),
        )
    })?;
    let verification = match decision.decision.as_str() {
        "verified" => Verification::Verified,
        "rejected" => Verification::Rejected,
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown decision '{other}'; verified or rejected"
            )));
        }
    };
    text::check_opt("reason", decision.reason.as_deref(), 2000)?;
    Ok((verification, decision.reason))
}

/// A decision from the moderation service.
///
/// Signed, not authorized by a token: `x-reelay-signature:
/// sha256=<hex HMAC-SHA256 of the body with REELAY_MODERATION_SECRET>`.
#[utoipa::path(post, path = "/v1/moderation/{id}", tag = "moderation", security(()),
    params(
        ("id" = Uuid, Path, description = "The video id"),
        ("x-reelay-signature" = String, Header, description = "`sha256=<hex HMAC-SHA256 of the body>`"),
    ),
    request_body = Decision,
    responses((status = 200, description = "Recorded", body = Decided), BadRequest,
        (status = 401, description = "The signature does not match the body (or callbacks are not configured)",
            body = Problem, content_type = "application/problem+json"),
        NotFound, TooLarge, Locked))]
async fn callback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Decided>> {
    let secret = state
        .config
        .moderation_secret
        .as_deref()
        .ok_or(ApiError::Unauthorized(
            "moderation callbacks are not configured",
        ))?;
    let signature = headers
        .get(signing::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !signing::verify(secret, &body, signature) {
        return Err(ApiError::Unauthorized(
            "the x-reelay-signature does not match the body",
        ));
    }
    let (verification, reason) = parse(&body)?;
    decide(&state, &id, verification, reason, Moderator::Callback).await
}

/// An admin's decision.
#[utoipa::path(post, path = "/v1/videos/{id}/moderation", tag = "moderation",
    params(("id" = Uuid, Path, description = "The video id")),
    request_body = Decision,
    responses((status = 200, description = "Recorded", body = Decided), BadRequest, Forbidden,
        NotFound, TooLarge, Locked))]
async fn by_admin(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Decided>> {
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden("moderation decisions are for admins"));
    }
    let (verification, reason) = parse(&body)?;
    decide(&state, &id, verification, reason, Moderator::Admin).await
}

async fn decide(
    state: &AppState,
    id: &str,
    verification: Verification,
    reason: Option<String>,
    by: Moderator,
) -> ApiResult<Json<Decided>> {
    let id = VideoId::parse(id).ok_or(ApiError::NotFound)?;
    record_video(id);
    state
        .store
        .append(id, |current| match current.video.as_ref() {
            Some(v) if v.status != VideoStatus::Deleted => Ok((
                vec![VideoEvent::Moderated {
                    verification,
                    reason,
                    by,
                }],
                (),
            )),
            _ => Err(VideoRejection::NotFound),
        })
        .await?;
    tracing::info!(verification = ?verification, by = ?by, "moderation decided");
    Ok(Json(Decided {
        video_id: id.to_string(),
        verification,
    }))
}

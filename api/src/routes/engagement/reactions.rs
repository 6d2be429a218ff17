//! Reactions and bookmarks of signed-in users (anonymous 401, services
//! 403) on videos they may watch, and the owner's switches.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use reelay_shared::{
    VideoStatus,
    engagement::{Reaction, queries::Engagement},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::{AuthUser, Person},
    cursor,
    engagement::{self, set_switches},
    error::{ApiError, ApiResult, JsonBody, QueryParams},
    openapi::{BadRequest, Forbidden, Gone, Locked, NotFound, TooLarge},
    state::AppState,
    video::owned_video,
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(react, unreact))
        .routes(routes!(switches))
        .routes(routes!(bookmarks))
        .routes(routes!(bookmark, unbookmark))
}

/// The caller's reaction to a video.
#[derive(Deserialize, ToSchema)]
struct ReactionBody {
    reaction: Reaction,
}

/// React to a video.
///
/// The caller's one reaction, like or dislike, replacing the other; again
/// changes nothing. The video's counts after it.
#[utoipa::path(put, path = "/v1/videos/{id}/reaction", tag = "engagement",
    params(("id" = Uuid, Path, description = "A video the caller may watch")),
    request_body = ReactionBody,
    responses(
        (status = 200, description = "The video's counts, with the caller's reaction", body = Engagement),
        BadRequest, Forbidden, NotFound,
        (status = 409, description = "The video's owner turned reactions off",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        TooLarge, Locked,
    ))]
async fn react(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReactionBody>,
) -> ApiResult<Json<Engagement>> {
    let video = engagement::react(&state, caller, &id, Some(body.reaction)).await?;
    Ok(Json(
        state.store.engagement(video, Some(caller.user)).await?,
    ))
}

/// Take a reaction back.
///
/// Also once reactions are off; without one it changes nothing. The
/// video's counts after it.
#[utoipa::path(delete, path = "/v1/videos/{id}/reaction", tag = "engagement",
    params(("id" = Uuid, Path, description = "A video the caller may watch")),
    responses(
        (status = 200, description = "The video's counts, without a reaction of the caller's", body = Engagement),
        Forbidden, NotFound, Locked,
    ))]
async fn unreact(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> ApiResult<Json<Engagement>> {
    let video = engagement::react(&state, caller, &id, None).await?;
    Ok(Json(
        state.store.engagement(video, Some(caller.user)).await?,
    ))
}

/// The owner's switches: a switch left out (or null) stays as it is.
#[derive(Deserialize, ToSchema)]
#[schema(as = EngagementSwitches)]
#[serde(deny_unknown_fields)]
struct Switches {
    /// Whether viewers may react.
    reactions: Option<bool>,
    /// Whether viewers may comment.
    comments: Option<bool>,
}

/// Turn reactions or comments on or off.
///
/// The owner's switches for one of their videos; existing reactions and
/// comments stay. The video's counts and switches after it.
#[utoipa::path(put, path = "/v1/videos/{id}/engagement", tag = "engagement",
    params(("id" = Uuid, Path, description = "One of the caller's videos")),
    request_body = Switches,
    responses(
        (status = 200, description = "The video's counts and switches", body = Engagement),
        BadRequest, Forbidden, NotFound, Gone, TooLarge, Locked,
    ))]
async fn switches(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Switches>,
) -> ApiResult<Json<Engagement>> {
    let video = owned_video(&state, user, &id).await?;
    if video.status == VideoStatus::Deleted {
        return Err(ApiError::Gone("deleted"));
    }
    set_switches(&state, video.id, body.reactions, body.comments).await?;
    Ok(Json(state.store.engagement(video.id, Some(user)).await?))
}

/// Bookmark a video.
///
/// A video the caller may watch; again changes nothing.
#[utoipa::path(put, path = "/v1/bookmarks/{video_id}", tag = "engagement",
    params(("video_id" = Uuid, Path, description = "A video the caller may watch")),
    responses(
        (status = 204, description = "Bookmarked"),
        Forbidden, NotFound, Locked,
    ))]
async fn bookmark(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engagement::bookmark(&state, caller, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a bookmark.
///
/// 204 also when there was none, or the video is gone since; 404 only for
/// an id that is not a UUID.
#[utoipa::path(delete, path = "/v1/bookmarks/{video_id}", tag = "engagement",
    params(("video_id" = Uuid, Path, description = "The bookmarked video")),
    responses(
        (status = 204, description = "Not bookmarked (any more)"),
        Forbidden, NotFound, Locked,
    ))]
async fn unbookmark(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engagement::bookmark(&state, caller, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Bookmarks per page, 1–100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// A bookmarked video.
#[derive(Serialize, ToSchema)]
struct Bookmark {
    #[schema(value_type = uuid::Uuid)]
    video_id: String,
    bookmarked_at: DateTime<Utc>,
}

/// A page of bookmarks.
#[derive(Serialize, ToSchema)]
#[schema(as = BookmarkPage)]
struct Bookmarks {
    bookmarks: Vec<Bookmark>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// The caller's bookmarks, newest first.
#[utoipa::path(get, path = "/v1/bookmarks", tag = "engagement", params(PageQuery),
    responses(
        (status = 200, description = "A page of bookmarks", body = Bookmarks),
        BadRequest, Forbidden,
    ))]
async fn bookmarks(
    State(state): State<AppState>,
    Person(caller): Person,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Bookmarks>> {
    let limit = cursor::limit(q.limit)?;
    let before = q.cursor.as_deref().map(cursor::decode).transpose()?;
    let rows = state
        .store
        .bookmarks(caller.user, before, limit + 1)
        .await?;
    let (rows, next_cursor) = cursor::page(rows, limit, |(video, at)| (*at, video.0));
    Ok(Json(Bookmarks {
        bookmarks: rows
            .into_iter()
            .map(|(video, at)| Bookmark {
                video_id: video.to_string(),
                bookmarked_at: at,
            })
            .collect(),
        next_cursor,
    }))
}

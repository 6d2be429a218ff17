//! Watch history and resume for signed-in viewers, kept in PostgreSQL by
//! the ETL from position events.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use reelay_shared::engagement::queries::Position;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::Person,
    cursor,
    engagement::watchable_video,
    error::{ApiResult, QueryParams},
    openapi::{BadRequest, Forbidden, NotFound},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(position))
        .routes(routes!(history, clear))
}

/// Where the caller stopped a video.
#[derive(Serialize, ToSchema)]
#[schema(as = ResumePosition)]
struct Resume {
    #[schema(value_type = uuid::Uuid)]
    video_id: String,
    /// Where to resume: 0 when never watched or watched to the end.
    position_ms: i64,
    /// When the position was last recorded; null if never.
    updated_at: Option<DateTime<Utc>>,
}

/// Where to resume a video.
///
/// Where the caller stopped it, from their player's position events.
#[utoipa::path(get, path = "/v1/videos/{id}/position", tag = "engagement",
    params(("id" = Uuid, Path, description = "A video the caller may watch")),
    responses(
        (status = 200, description = "Where to resume", body = Resume),
        Forbidden, NotFound,
    ))]
async fn position(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> ApiResult<Json<Resume>> {
    let video = watchable_video(&state, Some(caller), &id).await?;
    let stored = state.store.position(caller.user, video.id).await?;
    Ok(Json(Resume {
        video_id: video.id.to_string(),
        position_ms: stored.as_ref().map_or(0, |p| p.position_ms),
        updated_at: stored.map(|p| p.updated_at),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Videos per page, 1–100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// A page of the caller's watch history.
#[derive(Serialize, ToSchema)]
#[schema(as = WatchHistory)]
struct History {
    videos: Vec<Position>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// The caller's watch history.
///
/// The videos the caller watched signed in, most recently watched first,
/// each with where to resume it.
#[utoipa::path(get, path = "/v1/history", tag = "engagement", params(PageQuery),
    responses(
        (status = 200, description = "A page of watched videos", body = History),
        BadRequest, Forbidden,
    ))]
async fn history(
    State(state): State<AppState>,
    Person(caller): Person,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<History>> {
    let limit = cursor::limit(q.limit)?;
    let before = q.cursor.as_deref().map(cursor::decode).transpose()?;
    let rows = state
        .store
        .watch_history(caller.user, before, limit + 1)
        .await?;
    let (videos, next_cursor) = cursor::page(rows, limit, |p| (p.updated_at, p.video_id.0));
    Ok(Json(History {
        videos,
        next_cursor,
    }))
}

/// How many positions were forgotten.
#[derive(Serialize, ToSchema)]
#[schema(as = HistoryCleared)]
struct Cleared {
    removed: u64,
}

/// Clear the caller's watch history.
///
/// Forgets every position of the caller.
#[utoipa::path(delete, path = "/v1/history", tag = "engagement",
    responses(
        (status = 200, description = "The history is empty", body = Cleared),
        Forbidden,
    ))]
async fn clear(State(state): State<AppState>, Person(caller): Person) -> ApiResult<Json<Cleared>> {
    let removed = state.store.clear_watch_history(caller.user).await?;
    Ok(Json(Cleared { removed }))
}

//! Watch history and resume for signed-in viewers, kept in PostgreSQL by
//! the ETL from position events.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use chrono::{DateTime, Utc};
use reelay_shared::engagement::queries::Position;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Person,
    cursor,
    engagement::watchable_video,
    error::{ApiResult, QueryParams},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/videos/{id}/position", get(position))
        .route("/v1/history", get(history).delete(clear))
}

#[derive(Serialize)]
struct Resume {
    video_id: String,
    /// Where to resume: 0 when never watched or watched to the end.
    position_ms: i64,
    /// When the position was last recorded; null if never.
    updated_at: Option<DateTime<Utc>>,
}

/// `GET /v1/videos/{id}/position`: where the caller stopped the video.
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

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct History {
    videos: Vec<Position>,
    next_cursor: Option<String>,
}

/// `GET /v1/history?cursor=&limit=`: the videos the caller watched, most
/// recently watched first.
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

#[derive(Serialize)]
struct Cleared {
    removed: u64,
}

/// `DELETE /v1/history`: forgets every position of the caller.
async fn clear(State(state): State<AppState>, Person(caller): Person) -> ApiResult<Json<Cleared>> {
    let removed = state.store.clear_watch_history(caller.user).await?;
    Ok(Json(Cleared { removed }))
}

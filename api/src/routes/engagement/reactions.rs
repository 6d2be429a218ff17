//! Reactions and bookmarks of signed-in users (anonymous 401, services
//! 403) on videos they may watch, and the owner's switches.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, put},
};
use chrono::{DateTime, Utc};
use reelay_shared::engagement::{Reaction, queries::Engagement};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{AuthUser, Person},
    cursor,
    engagement::{self, set_switches},
    error::{ApiResult, JsonBody, QueryParams},
    state::AppState,
    video::owned_video,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/videos/{id}/reaction", put(react).delete(unreact))
        .route("/v1/videos/{id}/engagement", put(switches))
        .route("/v1/bookmarks", get(bookmarks))
        .route("/v1/bookmarks/{video_id}", put(bookmark).delete(unbookmark))
}

#[derive(Deserialize)]
struct ReactionBody {
    reaction: Reaction,
}

/// `PUT /v1/videos/{id}/reaction` `{"reaction": "like" | "dislike"}`: the
/// caller's one reaction, replacing the other; the video's counts after.
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

/// `DELETE /v1/videos/{id}/reaction`: none; the video's counts after.
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

/// `PUT /v1/videos/{id}/engagement` `{"reactions": bool, "comments":
/// bool}` (either may be left out): the owner turns them on or off.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Switches {
    reactions: Option<bool>,
    comments: Option<bool>,
}

async fn switches(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Switches>,
) -> ApiResult<Json<Engagement>> {
    let video = owned_video(&state, user, &id).await?;
    set_switches(&state, video.id, body.reactions, body.comments).await?;
    Ok(Json(state.store.engagement(video.id, Some(user)).await?))
}

/// `PUT /v1/bookmarks/{video_id}`: 204; again changes nothing.
async fn bookmark(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engagement::bookmark(&state, caller, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/bookmarks/{video_id}`: 204, also when there was none.
async fn unbookmark(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engagement::bookmark(&state, caller, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct Bookmark {
    video_id: String,
    bookmarked_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct Bookmarks {
    bookmarks: Vec<Bookmark>,
    next_cursor: Option<String>,
}

/// `GET /v1/bookmarks?cursor=&limit=`: newest first.
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

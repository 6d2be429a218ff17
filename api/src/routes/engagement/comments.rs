//! Comments: signed-in users post on videos they may watch (unless the
//! owner turned comments off); anyone who may watch the video reads them;
//! the author or an admin deletes one.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get},
};
use reelay_shared::engagement::Comment;
use serde::{Deserialize, Serialize};

use crate::{
    auth::{MaybeCaller, Person},
    cursor,
    engagement::{self, watchable_video},
    error::{ApiError, ApiResult, JsonBody, QueryParams},
    state::AppState,
    throttle::Throttled,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/videos/{id}/comments", get(list).post(post))
        .route("/v1/comments/{id}", delete(remove))
}

#[derive(Deserialize)]
struct NewComment {
    text: String,
}

/// `POST /v1/videos/{id}/comments` `{"text"}`: 201 with the comment.
async fn post(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewComment>,
) -> ApiResult<(StatusCode, Json<Comment>)> {
    let comment = engagement::post_comment(&state, caller, &id, body.text).await?;
    let comment = state
        .store
        .comment(comment)
        .await?
        .ok_or(ApiError::NoSuch("comment"))?;
    Ok((StatusCode::CREATED, Json(comment)))
}

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct Comments {
    comments: Vec<Comment>,
    next_cursor: Option<String>,
}

/// `GET /v1/videos/{id}/comments?cursor=&limit=`: newest first, for anyone
/// who may watch the video (also anonymously).
async fn list(
    State(state): State<AppState>,
    _: Throttled,
    MaybeCaller(viewer): MaybeCaller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Comments>> {
    let limit = cursor::limit(q.limit)?;
    let before = q.cursor.as_deref().map(cursor::decode).transpose()?;
    let video = watchable_video(&state, viewer, &id).await?;
    let rows = state.store.comments_of(video.id, before, limit + 1).await?;
    let (comments, next_cursor) = cursor::page(rows, limit, |c| (c.created_at, c.id.0));
    Ok(Json(Comments {
        comments,
        next_cursor,
    }))
}

/// `DELETE /v1/comments/{id}`: 204; by its author or an admin (403 for
/// anyone else); again changes nothing.
async fn remove(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engagement::delete_comment(&state, caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! Comments: signed-in users post on videos they may watch (unless the
//! owner turned comments off); anyone who may watch the video reads them;
//! the author or an admin deletes one.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use reelay_shared::engagement::Comment;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::{MaybeCaller, Person},
    cursor,
    engagement::{self, watchable_video},
    error::{ApiError, ApiResult, JsonBody, QueryParams},
    openapi::{BadRequest, Locked, NotFound, TooLarge, TooManyRequests},
    state::AppState,
    throttle::Throttled,
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(list, post))
        .routes(routes!(remove))
}

/// A new comment.
#[derive(Deserialize, ToSchema)]
struct NewComment {
    /// 1 to 2000 characters, not only white space, no NUL.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\u0000]*[^\u0000\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000]*$"
    )]
    text: String,
}

/// Comment on a video.
///
/// On a video the caller may watch, unless its owner turned comments off.
#[utoipa::path(post, path = "/v1/videos/{id}/comments", tag = "engagement",
    params(("id" = Uuid, Path, description = "A video the caller may watch")),
    request_body = NewComment,
    responses(
        (status = 201, description = "The comment", body = Comment),
        BadRequest,
        (status = 403, description = "A service token: only people comment",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        NotFound,
        (status = 409, description = "The video's owner turned comments off",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        TooLarge,
    ))]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Comments per page, 1–100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// A page of comments.
#[derive(Serialize, ToSchema)]
#[schema(as = CommentPage)]
struct Comments {
    comments: Vec<Comment>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// A video's comments, newest first.
///
/// For anyone who may watch the video, also without a token (a token that
/// is sent must verify).
#[utoipa::path(get, path = "/v1/videos/{id}/comments", tag = "engagement",
    security((), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "A video the caller may watch"), PageQuery),
    responses(
        (status = 200, description = "A page of comments", body = Comments),
        BadRequest, NotFound, TooManyRequests,
    ))]
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

/// Delete a comment.
///
/// By its author or an admin; deleting it again changes nothing.
#[utoipa::path(delete, path = "/v1/comments/{id}", tag = "engagement",
    params(("id" = Uuid, Path, description = "The comment id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not the comment's author nor an admin, or a service token",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        NotFound, Locked,
    ))]
async fn remove(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engagement::delete_comment(&state, caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

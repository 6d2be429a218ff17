//! `/v1/videos`: list, status for polling, details, temporary links, and the
//! event history. Owners only; anyone else gets 404.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::Response,
};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use reelay_shared::{
    VideoId, VideoStatus,
    engagement::{Audience, queries::Engagement},
    store::RecordedEvent,
    video::{Verification, Video, VideoEvent},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::{
    auth::{AuthUser, Caller, Person, Role},
    cursor,
    engagement::admits,
    error::{ApiError, ApiResult, JsonBody, QueryParams},
    etag::Tagged,
    openapi::{BadRequest, Conflict, Forbidden, Gone, Locked, NotFound, TooLarge, Unavailable},
    state::AppState,
    text,
    video::{
        Link, delete_video, link_ttl, linkable, linkable_video, owned_video, presign_original,
        record_video,
    },
};

use super::super::Routes;

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(list))
        .routes(routes!(show, update, remove))
        .routes(routes!(history))
        .routes(routes!(link))
}

/// What the app polls while an upload is in the background.
#[derive(Serialize, ToSchema)]
pub struct VideoView {
    pub id: String,
    /// Whose it is (the owner's and admins' view).
    pub owner_id: String,
    pub status: VideoStatus,
    /// Share of the original durable in S3, 0–100.
    #[schema(maximum = 100)]
    pub uploaded_percentage: u8,
    /// How far the encoder got, 0–100 (100 once READY).
    #[schema(maximum = 100)]
    pub encoding_percentage: u8,
    pub size_bytes: u64,
    /// Bytes the broker confirmed (what HEAD reports as Upload-Offset).
    pub received_bytes: u64,
    /// Bytes durable in S3.
    pub stored_bytes: u64,
    pub sha256: Option<String>,
    pub failure_reason: Option<String>,
    pub verification: Verification,
    pub verification_reason: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub filename: Option<String>,
    pub filetype: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Counts, switches and the caller's reaction, once the video is whole
    /// (GET of one video only).
    #[serde(flatten)]
    #[schema(value_type = EngagementOnceWhole)]
    pub engagement: Option<Engagement>,
}

/// The fields of [`Engagement`] as a `VideoView` carries them: all there
/// once the video is whole, none before. Only describes the document.
#[derive(ToSchema)]
#[allow(dead_code)]
struct EngagementOnceWhole {
    likes: Option<i64>,
    dislikes: Option<i64>,
    comments: Option<i64>,
    views: Option<i64>,
    reactions_enabled: Option<bool>,
    comments_enabled: Option<bool>,
    my_reaction: Option<reelay_shared::engagement::Reaction>,
    bookmarked: Option<bool>,
}

impl From<Video> for VideoView {
    fn from(v: Video) -> Self {
        Self {
            id: v.id.to_string(),
            owner_id: v.owner_id.to_string(),
            status: v.status,
            uploaded_percentage: v.uploaded_percentage(),
            encoding_percentage: v.encoding_percentage.clamp(0, 100) as u8,
            size_bytes: v.size(),
            received_bytes: v.received(),
            stored_bytes: v.stored(),
            sha256: v.sha256,
            failure_reason: v.failure_reason,
            verification: v.verification,
            verification_reason: v.verification_reason,
            title: v.title,
            description: v.description,
            filename: v.filename,
            filetype: v.filetype,
            created_at: v.created_at,
            updated_at: v.updated_at,
            engagement: None,
        }
    }
}

/// What anyone who may watch a video sees of someone else's.
#[derive(Serialize, ToSchema)]
pub struct PublicVideoView {
    pub id: String,
    pub status: VideoStatus,
    pub title: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub engagement: Engagement,
}

/// One video as the caller may see it.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Shown {
    /// The owner's (or an admin's) view.
    Full(VideoView),
    Public(PublicVideoView),
}

/// `anyOf`, not the `oneOf` a derive writes: the owner's view of a whole
/// video carries every field of the public one, so it matches both.
impl utoipa::PartialSchema for Shown {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::AnyOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name("VideoView"))
            .item(utoipa::openapi::Ref::from_schema_name("PublicVideoView"))
            .description(Some(
                "The owner's (or an admin's) view, or the public view of someone else's video",
            ))
            .into()
    }
}

impl ToSchema for Shown {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        for (name, schema) in [
            ("VideoView", <VideoView as utoipa::PartialSchema>::schema()),
            (
                "PublicVideoView",
                <PublicVideoView as utoipa::PartialSchema>::schema(),
            ),
        ] {
            schemas.push((name.to_owned(), schema));
        }
        <VideoView as ToSchema>::schemas(schemas);
        <PublicVideoView as ToSchema>::schemas(schemas);
    }
}

/// One video: what the app polls.
///
/// The owner (and admins) see everything, with the engagement counts once
/// it is whole; other users see a video they may watch, with its counts and
/// their own reaction; 404 otherwise. A deleted video is 410 Gone to its
/// owner (it stays listed under `status=DELETED`). Poll with
/// `If-None-Match` and the last `ETag`: 304 without a body until anything
/// in the answer changes.
#[utoipa::path(get, path = "/v1/videos/{id}", tag = "videos",
    params(
        ("id" = Uuid, Path, description = "The video id (the tus upload id)"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the last answer"),
    ),
    responses(
        (status = 200, description = "The video", body = Shown,
            headers(("ETag" = String, description = "The tag of this answer, for If-None-Match"))),
        (status = 304, description = "Unchanged since the tag sent",
            headers(("ETag" = String, description = "The same tag"))),
        NotFound, Gone, Forbidden))]
async fn show(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let video_id = VideoId::parse(&id).ok_or(ApiError::NotFound)?;
    record_video(video_id);
    // The video and its counts in one round trip, and while nothing changes
    // not even that: this replica keeps the answer, exact by LISTEN/NOTIFY
    // (`reelay_shared::fresh`). This is what the app polls through every
    // upload.
    let answer = state
        .polls
        .get(video_id.0, caller.user.0, || async {
            let row = state
                .store
                .video_with_engagement(video_id, Some(caller.user))
                .await?;
            Ok::<_, sqlx::Error>(Arc::new(PollAnswer::new(row)))
        })
        .await?;
    let Some((video, engagement)) = &answer.row else {
        return Err(ApiError::NotFound);
    };
    let audience = Audience::of(video);
    let full = video.owner_id == caller.user || caller.role == Role::Admin;
    if video.status == VideoStatus::Deleted {
        // Deleted is gone, for its owner too: it stays in the list under
        // `status=DELETED`, with its history.
        return Err(match full {
            true => ApiError::Gone("deleted"),
            false => ApiError::NotFound,
        });
    }
    let tagged = if full {
        rendered(&answer.full, || {
            let mut view = VideoView::from(video.clone());
            view.engagement = linkable(video.status).then(|| engagement.clone());
            Shown::Full(view)
        })?
    } else if admits(&audience, Some(caller)) {
        rendered(&answer.public, || {
            Shown::Public(PublicVideoView {
                id: video.id.to_string(),
                status: video.status,
                title: video.title.clone(),
                description: video.description.clone(),
                created_at: video.created_at,
                engagement: engagement.clone(),
            })
        })?
    } else {
        return Err(ApiError::NotFound);
    };
    Ok(tagged.respond(&headers))
}

/// One caller's poll of one video as the cache keeps it: the row, and its
/// answers rendered once each (the owner's or an admin's view, and the
/// public one: the same for every caller it is kept for).
pub struct PollAnswer {
    row: Option<(Video, Engagement)>,
    full: OnceLock<Tagged>,
    public: OnceLock<Tagged>,
}

impl PollAnswer {
    fn new(row: Option<(Video, Engagement)>) -> Self {
        Self {
            row,
            full: OnceLock::new(),
            public: OnceLock::new(),
        }
    }
}

/// `cell`'s answer, rendered by `shown` the first time.
fn rendered(cell: &OnceLock<Tagged>, shown: impl FnOnce() -> Shown) -> ApiResult<&Tagged> {
    if let Some(tagged) = cell.get() {
        return Ok(tagged);
    }
    let tagged = Tagged::of(&shown())?;
    Ok(cell.get_or_init(|| tagged))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only videos in this state (DELETED ones appear only when asked for).
    #[param(value_type = Option<VideoStatus>)]
    status: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Videos per page, 1–100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// A page of videos.
#[derive(Serialize, ToSchema)]
pub struct Page {
    pub videos: Vec<VideoView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// The caller's videos, newest first.
///
/// Deleted ones appear only when asked for by status.
#[utoipa::path(get, path = "/v1/videos", tag = "videos", params(ListQuery),
    responses((status = 200, description = "A page of the caller's videos", body = Page), BadRequest, Forbidden))]
async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Page>> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<VideoStatus>(serde_json::Value::String(
                s.to_ascii_uppercase(),
            ))
            .map_err(|_| ApiError::BadRequest(format!("unknown status '{s}'")))?,
        ),
    };
    let (limit, after) = cursor::video_page(q.limit, q.cursor.as_deref())?;
    let videos = state
        .store
        .list_videos(user, status, after, limit + 1)
        .await?;
    let (videos, next_cursor) = cursor::page(videos, limit, |v| (v.created_at, v.id.0));
    Ok(Json(Page {
        videos: videos.into_iter().map(VideoView::from).collect(),
        next_cursor,
    }))
}

/// Details to change: fields present are set, `null` clears them.
#[derive(Deserialize, ToSchema)]
pub struct DetailsUpdate {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\x00]*$")]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 5000, pattern = r"^[^\x00]*$")]
    description: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

const MAX_TITLE: usize = 200;
const MAX_DESCRIPTION: usize = 5000;

/// Change a video's title or description.
#[utoipa::path(patch, path = "/v1/videos/{id}", tag = "videos",
    params(("id" = Uuid, Path, description = "The video id")),
    request_body = DetailsUpdate,
    responses((status = 200, description = "The video as it is now", body = VideoView),
        BadRequest, NotFound, Gone, TooLarge, Locked, Forbidden))]
async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    body: Result<JsonBody<DetailsUpdate>, ApiError>,
) -> ApiResult<Json<VideoView>> {
    let JsonBody(change) = body?;
    text::check_opt(
        "title",
        change.title.as_ref().and_then(|t| t.as_deref()),
        MAX_TITLE,
    )?;
    text::check_opt(
        "description",
        change.description.as_ref().and_then(|d| d.as_deref()),
        MAX_DESCRIPTION,
    )?;
    let video = owned_video(&state, user, &id).await?;
    if video.status == VideoStatus::Deleted {
        return Err(ApiError::Gone("deleted"));
    }
    state
        .store
        .append(video.id, |current| {
            let v = current.existing()?;
            let title = change.title.clone().unwrap_or_else(|| v.title.clone());
            let description = change
                .description
                .clone()
                .unwrap_or_else(|| v.description.clone());
            if title == v.title && description == v.description {
                return Ok((vec![], ()));
            }
            Ok((vec![VideoEvent::DetailsUpdated { title, description }], ()))
        })
        .await?;
    Ok(Json(
        state
            .store
            .video(video.id)
            .await?
            .ok_or(ApiError::NotFound)?
            .into(),
    ))
}

/// Delete a video.
///
/// 202 with the video, now DELETED; its title, description and filename
/// leave the projections and a worker removes its objects. A second DELETE
/// answers the same.
#[utoipa::path(delete, path = "/v1/videos/{id}", tag = "videos",
    params(("id" = Uuid, Path, description = "The video id")),
    responses((status = 202, description = "The video, now DELETED", body = VideoView), NotFound, Locked, Forbidden,
        Unavailable))]
async fn remove(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<VideoView>)> {
    let video = owned_video(&state, user, &id).await?;
    delete_video(&state, video.id).await?;
    let video = state
        .store
        .video(video.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(video.into())))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// The link's life in seconds (`REELAY_LINK_TTL_SECS` when absent;
    /// longer ones are capped at `REELAY_LINK_MAX_TTL_SECS`).
    #[param(minimum = 1)]
    ttl: Option<i64>,
}

/// A temporary link to the original.
///
/// A presigned GET of the uploaded file, for UPLOADED, ENCODING or READY
/// videos, to their owner or an admin (and services, for verified videos).
#[utoipa::path(get, path = "/v1/videos/{id}/link", tag = "videos",
    params(("id" = Uuid, Path, description = "The video id"), LinkQuery),
    responses((status = 200, description = "The link", body = Link), BadRequest, NotFound, Conflict, Forbidden))]
async fn link(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Link>> {
    let Query(q) =
        query.map_err(|_| ApiError::BadRequest("ttl must be a whole number of seconds".into()))?;
    let ttl = link_ttl(&state, q.ttl)?;
    let video = linkable_video(&state, caller, &id).await?;
    if !linkable(video.status) {
        return Err(ApiError::WrongState(format!(
            "links exist for UPLOADED, ENCODING or READY videos; this one is {:?}",
            video.status
        )));
    }
    Ok(Json(presign_original(&state, video.id, ttl).await?))
}

/// A video's event history.
#[derive(Serialize, ToSchema)]
pub struct History {
    pub video_id: String,
    pub events: Vec<RecordedEvent>,
}

/// A video's events, oldest first, also the profile events that name it.
#[utoipa::path(get, path = "/v1/videos/{id}/events", tag = "videos",
    params(("id" = Uuid, Path, description = "The video id")),
    responses((status = 200, description = "The events", body = History), NotFound, Forbidden))]
async fn history(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<History>> {
    let video = owned_video(&state, user, &id).await?;
    let events = state.store.events(video.id).await?;
    Ok(Json(History {
        video_id: video.id.to_string(),
        events,
    }))
}

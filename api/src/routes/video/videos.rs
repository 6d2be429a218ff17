//! `/v1/videos`: list, status for polling, details, temporary links, and the
//! event history. Owners only; anyone else gets 404.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::Response,
    routing::get,
};
use chrono::{DateTime, Utc};
use reelay_shared::{
    VideoId, VideoStatus,
    engagement::{Audience, queries::Engagement},
    store::RecordedEvent,
    video::{Verification, Video, VideoEvent},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{AuthUser, Caller, Person, Role},
    cursor,
    engagement::admits,
    error::{ApiError, ApiResult, JsonBody, QueryParams},
    etag,
    state::AppState,
    text,
    video::{
        Link, delete_video, link_ttl, linkable, linkable_video, owned_video, presign_original,
        record_video,
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/videos", get(list))
        .route("/v1/videos/{id}", get(show).patch(update).delete(remove))
        .route("/v1/videos/{id}/events", get(history))
        .route("/v1/videos/{id}/link", get(link))
}

/// What the app polls while an upload is in the background.
#[derive(Serialize)]
pub struct VideoView {
    pub id: String,
    /// Whose it is (the owner's and admins' view).
    pub owner_id: String,
    pub status: VideoStatus,
    /// Share of the original durable in S3, 0–100.
    pub uploaded_percentage: u8,
    /// How far the encoder got, 0–100 (100 once READY).
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
    pub engagement: Option<Engagement>,
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
#[derive(Serialize)]
pub struct PublicVideoView {
    pub id: String,
    pub status: VideoStatus,
    pub title: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub engagement: Engagement,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Shown {
    /// The owner's (or an admin's) view.
    Full(VideoView),
    Public(PublicVideoView),
}

/// `GET /v1/videos/{id}`: the owner (and admins) see everything, with the
/// engagement counts once it is whole; other users see a video they may
/// watch, with its counts and their own reaction; 404 otherwise.
async fn show(
    State(state): State<AppState>,
    Person(caller): Person,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let video_id = VideoId::parse(&id).ok_or(ApiError::NotFound)?;
    record_video(video_id);
    // The video and its counts in one round trip: this is what the app
    // polls through every upload.
    let (video, engagement) = state
        .store
        .video_with_engagement(video_id, Some(caller.user))
        .await?
        .ok_or(ApiError::NotFound)?;
    let audience = Audience::of(&video);
    let shown = if video.owner_id == caller.user || caller.role == Role::Admin {
        let whole = linkable(video.status);
        let mut view = VideoView::from(video);
        view.engagement = whole.then_some(engagement);
        Shown::Full(view)
    } else if admits(&audience, Some(caller)) {
        Shown::Public(PublicVideoView {
            id: video.id.to_string(),
            status: video.status,
            title: video.title,
            description: video.description,
            created_at: video.created_at,
            engagement,
        })
    } else {
        return Err(ApiError::NotFound);
    };
    Ok(etag::json(&headers, &shown))
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub struct Page {
    pub videos: Vec<VideoView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /v1/videos?status=&limit=&cursor=`: the caller's videos, newest
/// first; deleted ones only when asked for by status.
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

/// `PATCH /v1/videos/{id}`: fields present are set (null clears them).
#[derive(Deserialize)]
pub struct DetailsUpdate {
    #[serde(default, deserialize_with = "present")]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

const MAX_TITLE: usize = 200;
const MAX_DESCRIPTION: usize = 5000;

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

/// `DELETE /v1/videos/{id}`: 202 with the video, now DELETED; its objects
/// are removed by a worker. A second DELETE answers the same.
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

#[derive(Deserialize)]
pub struct LinkQuery {
    ttl: Option<u64>,
}

/// `GET /v1/videos/{id}/link?ttl=<seconds>`: a presigned GET of the
/// original, for UPLOADED or READY videos, to their owner or an admin. The default life is
/// `REELAY_LINK_TTL_SECS`; longer requests are capped at
/// `REELAY_LINK_MAX_TTL_SECS`.
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

#[derive(Serialize)]
pub struct History {
    pub video_id: String,
    pub events: Vec<RecordedEvent>,
}

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

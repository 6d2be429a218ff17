//! `/v1/videos`: list, status for polling, details, temporary links, and the
//! event history. Owners only; anyone else gets 404.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use reelay_shared::{
    VideoId, VideoStatus,
    store::RecordedEvent,
    video::{Verification, Video, VideoEvent},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{AuthUser, Caller},
    error::{ApiError, ApiResult},
    state::AppState,
    video::{
        Link, delete_video, link_ttl, linkable, linkable_video, owned_video, presign_original,
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
}

impl From<Video> for VideoView {
    fn from(v: Video) -> Self {
        Self {
            id: v.id.to_string(),
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
        }
    }
}

async fn show(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<VideoView>> {
    Ok(Json(owned_video(&state, user, &id).await?.into()))
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

const MAX_PAGE: i64 = 100;

/// `GET /v1/videos?status=&limit=&cursor=`: the caller's videos, newest
/// first; deleted ones only when asked for by status.
async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<ListQuery>,
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
    let limit = q.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut videos = state
        .store
        .list_videos(user, status, after, limit + 1)
        .await?;
    let next_cursor = if videos.len() as i64 > limit {
        videos.truncate(limit as usize);
        videos.last().map(|v| encode_cursor(v.created_at, v.id))
    } else {
        None
    };
    Ok(Json(Page {
        videos: videos.into_iter().map(VideoView::from).collect(),
        next_cursor,
    }))
}

fn encode_cursor(at: DateTime<Utc>, id: VideoId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> ApiResult<(DateTime<Utc>, VideoId)> {
    let bad = || ApiError::BadRequest("cursor is not one this API returned".into());
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let (micros, id) = text.split_once(':').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, VideoId::parse(id).ok_or_else(bad)?))
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
    body: Result<Json<DetailsUpdate>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<VideoView>> {
    let Json(change) =
        body.map_err(|e| ApiError::BadRequest(format!("the body must be a JSON object: {e}")))?;
    let check = |field: &str, value: &Option<Option<String>>, max: usize| match value {
        Some(Some(v)) if v.chars().count() > max => Err(ApiError::BadRequest(format!(
            "{field} is longer than {max} characters"
        ))),
        _ => Ok(()),
    };
    check("title", &change.title, MAX_TITLE)?;
    check("description", &change.description, MAX_DESCRIPTION)?;
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

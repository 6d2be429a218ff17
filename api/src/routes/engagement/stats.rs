//! Statistics from the analytics store: a video's for its owner or an
//! admin, the most viewed videos for admins. ClickHouse down: 503, and
//! nothing else of the api notices.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use reelay_shared::{
    VideoId,
    engagement::{analytics, stats},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Admin, Caller, Role},
    error::{ApiError, ApiResult, QueryParams},
    state::AppState,
    video::{owned_video, record_video},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/videos/{id}/stats", get(video_stats))
        .route("/v1/stats/top", get(top))
}

#[derive(Deserialize)]
struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// An instant as RFC 3339, or a date (its midnight, UTC).
fn instant(name: &str, text: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 instant or a YYYY-MM-DD date"
            ))
        })
}

#[derive(Serialize)]
struct VideoStats {
    video_id: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    #[serde(flatten)]
    stats: stats::Stats,
}

/// `GET /v1/videos/{id}/stats?from=&to=`: sessions started (by the
/// player's clock) in `[from, to)`, by default all of them.
async fn video_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(range): QueryParams<Range>,
) -> ApiResult<Json<VideoStats>> {
    let from = range
        .from
        .as_deref()
        .map(|t| instant("from", t))
        .transpose()?;
    let to = range.to.as_deref().map(|t| instant("to", t)).transpose()?;
    let video = match caller.role {
        Role::User => owned_video(&state, caller.user, &id).await?,
        Role::Admin => {
            let id = VideoId::parse(&id).ok_or(ApiError::NotFound)?;
            record_video(id);
            state.store.video(id).await?.ok_or(ApiError::NotFound)?
        }
        Role::Service => {
            return Err(ApiError::Forbidden(
                "statistics are for a video's owner and admins",
            ));
        }
    };
    let from = from.unwrap_or(DateTime::UNIX_EPOCH);
    let to = to.unwrap_or_else(|| Utc::now() + TimeDelta::seconds(1));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let sessions = analytics::sessions_of(&state.clickhouse, video.id.0, from, to).await?;
    let duration = video.playback.as_ref().map_or(0, |p| p.duration_ms);
    let threshold = state.config.view_threshold.as_millis() as u64;
    Ok(Json(VideoStats {
        video_id: video.id.to_string(),
        from,
        to,
        stats: stats::compute(&sessions, threshold, duration),
    }))
}

#[derive(Deserialize)]
struct TopQuery {
    period: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct TopVideo {
    video_id: String,
    views: u64,
}

#[derive(Serialize)]
struct Top {
    period: String,
    since: DateTime<Utc>,
    videos: Vec<TopVideo>,
}

/// `GET /v1/stats/top?period=day|week|month&limit=`: the most viewed
/// videos of sessions started in the period (default a week, 10 videos).
async fn top(
    State(state): State<AppState>,
    Admin(_): Admin,
    QueryParams(q): QueryParams<TopQuery>,
) -> ApiResult<Json<Top>> {
    let period = q.period.unwrap_or_else(|| "week".into());
    let span = match period.as_str() {
        "day" => TimeDelta::days(1),
        "week" => TimeDelta::weeks(1),
        "month" => TimeDelta::days(30),
        other => {
            return Err(ApiError::BadRequest(format!(
                "period must be day, week or month, not '{other}'"
            )));
        }
    };
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 100".into(),
        ));
    }
    let since = Utc::now() - span;
    let threshold = state.config.view_threshold.as_millis() as u64;
    let videos = analytics::top(&state.clickhouse, since, threshold, limit).await?;
    Ok(Json(Top {
        period,
        since,
        videos: videos
            .into_iter()
            .map(|(id, views)| TopVideo {
                video_id: id.to_string(),
                views,
            })
            .collect(),
    }))
}

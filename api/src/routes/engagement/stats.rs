//! Statistics from the analytics store: a video's for its owner or an
//! admin, the most viewed videos for admins. ClickHouse down: 503, and
//! nothing else of the api notices.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use reelay_shared::{
    VideoId,
    engagement::{analytics, stats},
};
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoParams, ToSchema,
    openapi::{
        KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type, schema::AnyOfBuilder,
    },
};
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::{Admin, Caller, Role},
    error::{ApiError, ApiResult, QueryParams},
    openapi::{BadRequest, Forbidden, NotFound, Unavailable},
    state::AppState,
    video::{owned_video, record_video},
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(video_stats))
        .routes(routes!(top))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Range {
    /// The first instant of the range (the epoch when absent).
    #[param(schema_with = from_schema)]
    from: Option<String>,
    /// The instant after the range (a second from now when absent); one at
    /// or before `from` makes an empty range.
    #[param(schema_with = to_schema)]
    to: Option<String>,
}

/// What [`instant`] reads: an RFC 3339 instant or a date.
fn instant_schema(description: &str) -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date))),
        )
        .description(Some(format!(
            "{description}: an RFC 3339 instant, or a date (its midnight, UTC)"
        )))
        .into()
}

fn from_schema() -> RefOr<Schema> {
    instant_schema("The first instant of the range (the epoch when absent)")
}

fn to_schema() -> RefOr<Schema> {
    instant_schema(
        "The instant after the range (a second from now when absent); at or before `from`, the range is empty",
    )
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

/// A video's statistics over the sessions started in `[from, to)`.
#[derive(Serialize, ToSchema)]
struct VideoStats {
    #[schema(value_type = uuid::Uuid)]
    video_id: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    #[serde(flatten)]
    stats: stats::Stats,
}

/// A video's statistics.
///
/// Views, watch time, startup, rebuffering and retention of the sessions
/// started (by the player's clock) in `[from, to)`, by default all of them;
/// for the video's owner or an admin. 503 while the analytics store is
/// unavailable.
#[utoipa::path(get, path = "/v1/videos/{id}/stats", tag = "statistics",
    params(("id" = Uuid, Path, description = "The video id (the caller's own, or any for an admin)"), Range),
    responses(
        (status = 200, description = "The statistics", body = VideoStats),
        BadRequest,
        (status = 403, description = "A service token: statistics are for a video's owner and admins",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        NotFound, Unavailable,
    ))]
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

// For the document only: the handler reads the period as text.
/// How far back `GET /v1/stats/top` counts from now.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum StatsPeriod {
    /// One day.
    Day,
    /// Seven days.
    Week,
    /// Thirty days.
    Month,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TopQuery {
    /// The sessions started in the last day, week or month (week when
    /// absent).
    #[param(value_type = Option<StatsPeriod>, inline)]
    period: Option<String>,
    /// How many videos, 1–100 (10 when absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A video and its views.
#[derive(Serialize, ToSchema)]
struct TopVideo {
    #[schema(value_type = uuid::Uuid)]
    video_id: String,
    #[schema(minimum = 1)]
    views: u64,
}

/// The most viewed videos of a period.
#[derive(Serialize, ToSchema)]
#[schema(as = TopVideos)]
struct Top {
    #[schema(value_type = StatsPeriod)]
    period: String,
    /// The start of the period: sessions started since count.
    since: DateTime<Utc>,
    /// Most viewed first; at most `limit`, only videos with a view.
    #[schema(max_items = 100)]
    videos: Vec<TopVideo>,
}

/// The most viewed videos (admins).
///
/// Of the sessions started in the last day, week or month; a view is a
/// session that played at least the view threshold or completed. 503 while
/// the analytics store is unavailable.
#[utoipa::path(get, path = "/v1/stats/top", tag = "statistics", params(TopQuery),
    responses(
        (status = 200, description = "The most viewed videos", body = Top),
        BadRequest, Forbidden, Unavailable,
    ))]
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

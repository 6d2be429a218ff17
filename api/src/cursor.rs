//! Page cursors: opaque to clients, the `(time, id)` of the last item of a
//! page, for lists ordered newest first.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// The most items a page may ask for.
pub const MAX_PAGE: i64 = 100;

pub fn encode(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

pub fn decode(cursor: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let bad = || ApiError::BadRequest("cursor is not one this API returned".into());
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let (micros, id) = text.split_once(':').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// Where a page of videos starts: after the video created at this instant
/// with this id.
pub type VideoAfter = (DateTime<Utc>, reelay_shared::VideoId);

/// A page of videos: its `limit` and the video it follows, from a
/// request's `limit` and `cursor`.
pub fn video_page(
    limit: Option<i64>,
    cursor: Option<&str>,
) -> ApiResult<(i64, Option<VideoAfter>)> {
    let after = cursor
        .map(decode)
        .transpose()?
        .map(|(at, id)| (at, reelay_shared::VideoId(id)));
    Ok((self::limit(limit)?, after))
}

/// A page size: `limit` (default 20) within 1 to [`MAX_PAGE`].
pub fn limit(asked: Option<i64>) -> ApiResult<i64> {
    let limit = asked.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(limit)
}

/// Cuts a page fetched with one item more than `limit` and names the
/// cursor of the next one, if there is one.
pub fn page<T>(
    mut items: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (DateTime<Utc>, Uuid),
) -> (Vec<T>, Option<String>) {
    if items.len() as i64 <= limit {
        return (items, None);
    }
    items.truncate(limit as usize);
    let next = items.last().map(|item| {
        let (at, id) = key(item);
        encode(at, id)
    });
    (items, next)
}

//! Page cursors: the `(time, id)` of the last item of a page, for lists
//! ordered newest first, written `<microseconds since 1970>.<id as 32 hex
//! digits>`. Clients pass back what they were given; the format is
//! documented ([`PATTERN`], in the OpenAPI document) so that every string
//! of that shape is a cursor and anything else a 400.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// The most items a page may ask for.
pub const MAX_PAGE: i64 = 100;

/// What a cursor looks like (the document's `pattern`); 16 digits reach
/// past the year 2250.
pub const PATTERN: &str = r"^[0-9]{1,16}\.[0-9a-f]{32}$";

pub fn encode(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}.{}", at.timestamp_micros().max(0), id.simple())
}

pub fn decode(cursor: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let bad = || {
        ApiError::BadRequest(
            "cursor is not one this API returned (<microseconds>.<32 hex digits>)".into(),
        )
    };
    let (micros, id) = cursor.split_once('.').ok_or_else(bad)?;
    let digits = |s: &str, range: std::ops::RangeInclusive<usize>, ok: fn(&u8) -> bool| {
        range.contains(&s.len()) && s.as_bytes().iter().all(ok)
    };
    if !digits(micros, 1..=16, u8::is_ascii_digit)
        || !digits(id, 32..=32, |b| {
            b.is_ascii_digit() || (b'a'..=b'f').contains(b)
        })
    {
        return Err(bad());
    }
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
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

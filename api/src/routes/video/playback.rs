//! Playback of READY videos by any standard player, with temporary access
//! and the rules of links.
//!
//! `GET /v1/videos/{id}/playback` gives HLS and DASH manifest URLs under
//! `/v1/playback/{token}/`, where the token (video, expiry, HMAC) is the
//! access: players can't add headers. Manifests are read from S3 and served
//! from there; segments never pass through the api:
//! - HLS playlists are rewritten so every segment is a presigned S3 URL
//!   that expires with the token (sub-playlists stay relative, under the
//!   token);
//! - the DASH manifest is served as stored, its segments named relative to
//!   it, and a segment URL under the token answers with a redirect to its
//!   presigned S3 URL. ffmpeg's DASH reader can't follow a segment URL much
//!   longer than the manifest's own, which a presigned one is.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use object_store::{ObjectStoreExt, path::Path as ObjectPath};
use reelay_shared::{VideoId, VideoStatus, video::domain::Playback};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    openapi::{BadRequest, Conflict, Forbidden, NotFound},
    routes::Routes,
    state::AppState,
    video::{link_ttl, linkable_video, presign, record_video},
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(playback))
        .routes(routes!(manifest))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TtlQuery {
    /// The links' life in seconds (`REELAY_LINK_TTL_SECS` when absent;
    /// capped at `REELAY_LINK_MAX_TTL_SECS`).
    #[param(minimum = 1)]
    ttl: Option<i64>,
}

/// What a player opens: manifest URLs that carry their own access.
#[derive(Serialize, ToSchema)]
struct PlaybackLinks {
    /// The HLS master playlist.
    hls: String,
    /// The DASH manifest.
    dash: String,
    /// A presigned still of the video.
    poster: String,
    duration_ms: u64,
    expires_at: DateTime<Utc>,
}

/// HLS and DASH URLs any standard player opens, for a READY video.
///
/// Given as links are (to the owner, or an admin); the URLs carry a signed
/// token that expires with them.
#[utoipa::path(get, path = "/v1/videos/{id}/playback", tag = "playback",
    params(("id" = Uuid, Path, description = "The video id"), TtlQuery),
    responses((status = 200, description = "The playback links", body = PlaybackLinks),
        BadRequest, NotFound, Conflict, Forbidden))]
async fn playback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<TtlQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Json<PlaybackLinks>> {
    let Query(q) =
        query.map_err(|_| ApiError::BadRequest("ttl must be a whole number of seconds".into()))?;
    let ttl = link_ttl(&state, q.ttl)?;
    let video = linkable_video(&state, caller, &id).await?;
    let Some(stream) = video
        .playback
        .as_ref()
        .filter(|_| video.status == VideoStatus::Ready)
    else {
        return Err(ApiError::WrongState(format!(
            "playback exists for READY videos; this one is {:?}",
            video.status
        )));
    };
    let expires_at = Utc::now() + ttl;
    let token = Token::sign(&state.config.jwt_secret, video.id, expires_at.timestamp());
    let base = format!("{}/v1/playback/{token}", public_base(&state, &headers));
    let poster = presign(&state, &stream.poster, ttl).await?.url;
    Ok(Json(PlaybackLinks {
        hls: format!("{base}/{}", stream.hls),
        dash: format!("{base}/{}", stream.dash),
        poster,
        duration_ms: stream.duration_ms,
        expires_at,
    }))
}

/// `REELAY_PUBLIC_URL`, or the address the caller reached us at.
fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// A manifest or segment of the video a playback token names.
///
/// The token is the access (players add no headers). HLS playlists come
/// with every segment presigned; the DASH manifest as stored, its segments
/// (`.m4s`) answered with a redirect to a presigned S3 URL. 404 for
/// anything else, or once the token expired.
#[utoipa::path(get, path = "/v1/playback/{token}/{file}", tag = "playback", security(()),
    params(
        ("token" = String, Path, description = "The token from the playback links"),
        ("file" = String, Path, description = "A file of the stream: `*.m3u8`, `*.mpd` or `*.m4s`"),
    ),
    responses(
        (status = 200, description = "An HLS playlist or the DASH manifest",
            content(
                (String = "application/vnd.apple.mpegurl"),
                (String = "application/dash+xml"),
            )),
        (status = 302, description = "A segment: its presigned S3 URL",
            headers(("Location" = String, description = "The presigned URL"))),
        NotFound,
    ))]
async fn manifest(
    State(state): State<AppState>,
    Path((token, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let token =
        Token::verify(&state.config.jwt_secret, &token).ok_or(ApiError::NoSuch("playback"))?;
    record_video(token.video);
    let remaining = (token.expires - Utc::now().timestamp()).max(0) as u64;
    if remaining == 0 {
        return Err(ApiError::NoSuch("playback (the link expired)"));
    }
    let kind = StreamFile::of(&file).ok_or(ApiError::NoSuch("stream file"))?;
    let video = state
        .store
        .video(token.video)
        .await?
        .filter(|v| v.status == VideoStatus::Ready)
        .ok_or(ApiError::NoSuch("playback"))?;
    let stream = video.playback.ok_or(ApiError::NoSuch("playback"))?.0;
    let ttl = Duration::from_secs(remaining);
    if let StreamFile::Segment = kind {
        let url = presign_stream_file(&state, &stream, &file, ttl).await?;
        let mut response = axum::http::StatusCode::FOUND.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&url).map_err(|e| ApiError::Internal(e.into()))?,
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        return Ok(response);
    }
    let key = ObjectPath::from(format!("{}{file}", stream.prefix));
    let text = match state.storage.s3.get(&key).await {
        Ok(object) => object
            .bytes()
            .await
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("reading a manifest")))?,
        Err(object_store::Error::NotFound { .. }) => return Err(ApiError::NoSuch("manifest")),
        Err(e) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(e).context("reading a manifest"),
            ));
        }
    };
    let text = String::from_utf8_lossy(&text);
    let body = match kind {
        StreamFile::Hls => hls(&state, &stream, &text, ttl).await?,
        _ => text.into_owned(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind.mime()));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}

#[derive(Clone, Copy)]
enum StreamFile {
    /// An HLS playlist (master or media).
    Hls,
    /// The DASH manifest.
    Dash,
    /// An init or media segment.
    Segment,
}

impl StreamFile {
    /// Only plain file names of a stream folder are served.
    fn of(file: &str) -> Option<Self> {
        let plain = !file.is_empty()
            && file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            && !file.starts_with('.');
        match plain {
            true if file.ends_with(".m3u8") => Some(Self::Hls),
            true if file.ends_with(".mpd") => Some(Self::Dash),
            true if file.ends_with(".m4s") => Some(Self::Segment),
            _ => None,
        }
    }

    fn mime(self) -> &'static str {
        match self {
            Self::Hls => "application/vnd.apple.mpegurl",
            Self::Dash => "application/dash+xml",
            Self::Segment => "video/mp4",
        }
    }
}

/// A presigned GET of a file of the stream folder.
async fn presign_stream_file(
    state: &AppState,
    stream: &Playback,
    file: &str,
    ttl: Duration,
) -> ApiResult<String> {
    Ok(presign(state, &format!("{}{file}", stream.prefix), ttl)
        .await?
        .url)
}

/// An HLS playlist with every segment (media lines and `URI="…"` of
/// `#EXT-X-MAP`) presigned; playlists it names stay relative.
async fn hls(state: &AppState, stream: &Playback, text: &str, ttl: Duration) -> ApiResult<String> {
    let resolve = |uri: String| async move {
        if uri.contains("://") || uri.contains('/') {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "a playlist names {uri}, not a file of its stream"
            )));
        }
        match StreamFile::of(&uri) {
            Some(StreamFile::Segment) => presign_stream_file(state, stream, &uri, ttl).await,
            _ => Ok(uri),
        }
    };
    let mut out = String::with_capacity(text.len() * 4);
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            out.push_str(line);
        } else if let Some(tag) = trimmed.strip_prefix('#') {
            // A tag: rewrite its URI="…" attribute, if any.
            match tag.find("URI=\"") {
                Some(at) => {
                    let value_at = at + 1 + "URI=\"".len();
                    let len = trimmed[value_at..].find('"').unwrap_or(0);
                    out.push_str(&trimmed[..value_at]);
                    out.push_str(&resolve(trimmed[value_at..value_at + len].to_owned()).await?);
                    out.push_str(&trimmed[value_at + len..]);
                }
                None => out.push_str(line),
            }
        } else {
            out.push_str(&resolve(trimmed.to_owned()).await?);
        }
        out.push('\n');
    }
    Ok(out)
}

/// `{video}.{expires}.{hex HMAC-SHA256}` over `playback:{video}:{expires}`,
/// keyed with the api's token secret.
struct Token {
    video: VideoId,
    expires: i64,
}

impl Token {
    fn mac(secret: &str, video: VideoId, expires: i64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(format!("playback:{video}:{expires}").as_bytes());
        mac
    }

    fn sign(secret: &str, video: VideoId, expires: i64) -> String {
        let tag = hex::encode(Self::mac(secret, video, expires).finalize().into_bytes());
        format!("{video}.{expires}.{tag}")
    }

    fn verify(secret: &str, encoded: &str) -> Option<Self> {
        let mut parts = encoded.split('.');
        let video = VideoId::parse(parts.next()?)?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let tag = hex::decode(parts.next()?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Self::mac(secret, video, expires)
            .verify_slice(&tag)
            .ok()
            .map(|()| Self { video, expires })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_as_signed() {
        let video = VideoId::new();
        let token = Token::sign("s", video, 1_900_000_000);
        let read = Token::verify("s", &token).expect("verifies");
        assert_eq!((read.video, read.expires), (video, 1_900_000_000));
        assert!(Token::verify("other", &token).is_none());
        let later = token.replacen("1900000000", "1900000001", 1);
        assert!(Token::verify("s", &later).is_none(), "a changed expiry");
        assert!(Token::verify("s", &format!("{token}.x")).is_none());
        assert!(Token::verify("s", "nonsense").is_none());
    }

    #[test]
    fn only_plain_names_of_stream_files_are_served() {
        assert!(matches!(
            StreamFile::of("master.m3u8"),
            Some(StreamFile::Hls)
        ));
        assert!(matches!(
            StreamFile::of("manifest.mpd"),
            Some(StreamFile::Dash)
        ));
        assert!(matches!(
            StreamFile::of("0-12.m4s"),
            Some(StreamFile::Segment)
        ));
        assert!(StreamFile::of("../other.m3u8").is_none());
        assert!(StreamFile::of(".m3u8").is_none());
        assert!(StreamFile::of("poster.jpg").is_none());
        assert!(StreamFile::of("a/0-1.m4s").is_none());
    }
}

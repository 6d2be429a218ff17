//! Conditional GETs for what clients poll: an `ETag` of the exact body,
//! and `304 Not Modified` without a body when the client's
//! `If-None-Match` names it, so an app polling an unchanged video gets a
//! few bytes back.

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A JSON body and its tag, made once and answered many times (a cached
/// poll answer keeps its own).
#[derive(Clone)]
pub struct Tagged {
    body: Bytes,
    tag: HeaderValue,
}

impl Tagged {
    pub fn of(value: &impl Serialize) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.into()))?;
        // A digest of the body: the same answer has the same tag on every
        // replica and across versions (16 bytes are plenty for a cache tag).
        let tag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
        Ok(Self {
            body: body.into(),
            tag: HeaderValue::from_str(&tag).expect("hex in quotes is a header value"),
        })
    }

    /// The body with its `ETag`, or a 304 when `headers` already hold it.
    /// The body depends on who asks (their reaction), hence `private`.
    pub fn respond(&self, headers: &HeaderMap) -> Response {
        let tag = self.tag.as_bytes();
        let matches = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|t| {
                let t = t.trim_ascii();
                t.strip_prefix(b"W/").unwrap_or(t)
            })
            .any(|t| t == tag || t == b"*");
        let cache = HeaderValue::from_static("private, no-cache");
        if matches {
            return (
                StatusCode::NOT_MODIFIED,
                [
                    (header::ETAG, self.tag.clone()),
                    (header::CACHE_CONTROL, cache),
                ],
            )
                .into_response();
        }
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, self.tag.clone()),
                (header::CACHE_CONTROL, cache),
            ],
            self.body.clone(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(headers: &HeaderMap, value: &serde_json::Value) -> Response {
        Tagged::of(value).expect("JSON").respond(headers)
    }

    #[test]
    fn the_same_body_is_a_304_and_a_changed_one_a_200() {
        let first = json(
            &HeaderMap::new(),
            &serde_json::json!({ "status": "LOADING" }),
        );
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut asked = HeaderMap::new();
        asked.insert(header::IF_NONE_MATCH, tag.clone());
        let same = json(&asked, &serde_json::json!({ "status": "LOADING" }));
        assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(same.headers()[header::ETAG], tag);
        let changed = json(&asked, &serde_json::json!({ "status": "READY" }));
        assert_eq!(changed.status(), StatusCode::OK);
        assert_ne!(changed.headers()[header::ETAG], tag);
        let mut weak = HeaderMap::new();
        weak.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{}", tag.to_str().unwrap())).unwrap(),
        );
        assert_eq!(
            json(&weak, &serde_json::json!({ "status": "LOADING" })).status(),
            StatusCode::NOT_MODIFIED
        );
    }
}

//! A raw HTTP client for the protocol-level tests (the end-to-end tests use
//! the real tuspy client instead).

use reelay_shared::VideoId;
use reqwest::{Body, Response, StatusCode};

#[derive(Clone)]
pub struct Tus {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl Tus {
    pub fn new(base: &str, token: String) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, id: VideoId) -> String {
        format!("{}/files/{id}", self.base)
    }

    /// POST /files with `Upload-Length`; returns the new video id.
    pub async fn create(&self, length: u64) -> VideoId {
        self.create_with_metadata(length, "filename dGVzdC5tcDQ=,title VGVzdA==")
            .await
    }

    /// POST /files with `Upload-Length` and this `Upload-Metadata`.
    pub async fn create_with_metadata(&self, length: u64, metadata: &str) -> VideoId {
        let response = self
            .http
            .post(format!("{}/files/", self.base))
            .bearer_auth(&self.token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", length)
            .header("upload-metadata", metadata)
            .send()
            .await
            .expect("POST /files");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap_or_default()
        );
        location_id(&response).expect("a Location naming the upload")
    }

    pub async fn head(&self, id: VideoId) -> Response {
        self.http
            .head(self.url(id))
            .bearer_auth(&self.token)
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .expect("HEAD")
    }

    /// The upload's offset as HEAD reports it.
    pub async fn offset(&self, id: VideoId) -> u64 {
        let response = self.head(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()["upload-offset"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("a number")
    }

    /// A PATCH with the standard headers; `extra` adds or overrides.
    pub fn patch(
        &self,
        id: VideoId,
        offset: u64,
        body: impl Into<Body>,
    ) -> reqwest::RequestBuilder {
        self.http
            .patch(self.url(id))
            .bearer_auth(&self.token)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset)
            .body(body)
    }

    /// PATCHes `data` from `offset` in requests of `chunk` bytes.
    pub async fn upload_from(&self, id: VideoId, data: &[u8], mut offset: usize, chunk: usize) {
        while offset < data.len() {
            let end = (offset + chunk).min(data.len());
            let response = self
                .patch(id, offset as u64, data[offset..end].to_vec())
                .send()
                .await
                .expect("PATCH");
            assert_eq!(
                response.status(),
                StatusCode::NO_CONTENT,
                "{}",
                response.text().await.unwrap_or_default()
            );
            offset = end;
        }
    }

    /// Creates an upload of `data` and PATCHes it in requests of `patch`
    /// bytes (slices of `data`, no copies: what a benchmark's client does).
    pub async fn upload(&self, data: &bytes::Bytes, patch: usize) -> VideoId {
        let id = self.create(data.len() as u64).await;
        let mut offset = 0;
        while offset < data.len() {
            let end = (offset + patch).min(data.len());
            let response = self
                .patch(id, offset as u64, data.slice(offset..end))
                .send()
                .await
                .expect("PATCH");
            assert_eq!(
                response.status(),
                StatusCode::NO_CONTENT,
                "PATCH at {offset}: {}",
                response.text().await.unwrap_or_default()
            );
            offset = end;
        }
        id
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub fn raw(&self) -> &reqwest::Client {
        &self.http
    }
}

/// One JSON call to the api at `base`: the status and the body as JSON (a
/// body that is not JSON comes back as a string).
pub async fn call_json(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    token: Option<&str>,
    path: &str,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = http.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the api answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The upload a creation's `Location` names (also on a 503, when the
/// upload exists but its start failed).
pub fn location_id(response: &Response) -> Option<VideoId> {
    let location = response.headers().get("location")?.to_str().ok()?;
    VideoId::parse(location.rsplit('/').next()?)
}

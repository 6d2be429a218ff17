//! The one error type at the HTTP boundary. Each variant names its status;
//! bodies are `application/problem+json`. A 500 says nothing of its cause to
//! the client: the cause is logged once, here, inside the request's span.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use reelay_shared::{
    clickhouse::ClickHouseError,
    engagement::EngagementRejection,
    fleet::{DeviceRejection, FirmwareRejection, RolloutRejection, UpdateRejection},
    store::AppendError,
    video::{VideoRejection, VideoStatus, profile::ProfileRejection},
};
use serde_json::json;

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body: a JSON object (an array is not taken for one by
/// position) of the shape expected. Anything else is a 400 whose detail says
/// what was wrong, 413 when it is larger than the route's body limit.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .map(str::to_ascii_lowercase)
            .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
        if !json {
            return Err(ApiError::BadRequest(
                "expected a body with Content-Type: application/json".into(),
            ));
        }
        let body = <axum::body::Bytes as axum::extract::FromRequest<S>>::from_request(req, state)
            .await
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(rejection.body_text()),
                _ => ApiError::BadRequest(rejection.body_text()),
            })?;
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        // The rejection names the field at fault ("filter.models: …").
        let (rejected, float) = match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(value)) => return Ok(Self(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let float = text.contains("floating point");
                (ApiError::BadRequest(text), float)
            }
        };
        if !float {
            return Err(rejected);
        }
        // JSON has one number type: `5.0` is the integer 5 to JSON Schema
        // (and to Python's json, which writes floats so), so a body is
        // read again with its whole floats as integers before it is
        // refused.
        let mut value: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(_) => return Err(rejected),
        };
        if !integral_floats_as_integers(&mut value) {
            return Err(rejected);
        }
        let body = serde_json::to_vec(&value).map_err(|_| rejected)?;
        axum::Json::<T>::from_bytes(&body)
            .map(|axum::Json(value)| Self(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// 2^53: past it a float no longer tells every integer apart (a
/// `…678.9` would read as `…680`).
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Turns every float with no fraction (`5.0`) in `value` into the integer
/// it is, where a float can tell (within ±2^53); says whether any changed.
pub fn integral_floats_as_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::{Number, Value};
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let whole: Option<Number> = if f.fract() != 0.0 || !f.is_finite() {
                None
            } else if (0.0..=EXACT).contains(&f) {
                Some((f as u64).into())
            } else if (-EXACT..0.0).contains(&f) {
                Some((f as i64).into())
            } else {
                None
            };
            match whole {
                Some(whole) => {
                    *n = whole;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| integral_floats_as_integers(v) | changed),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |changed, v| integral_floats_as_integers(v) | changed),
        _ => false,
    }
}

/// Query parameters; ones that do not parse are a problem+json 400 that
/// says which.
pub struct QueryParams<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        <axum::extract::Query<T> as axum::extract::FromRequestParts<S>>::from_request_parts(
            parts, state,
        )
        .await
        .map(|axum::extract::Query(q)| Self(q))
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

impl ApiError {
    /// A 400 that also says what shape was expected.
    pub fn expecting(self, shape: &str) -> Self {
        match self {
            Self::BadRequest(why) => Self::BadRequest(format!("expected {shape}: {why}")),
            other => other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a header or parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no bearer token, or one that does not verify.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: the token is valid but its role may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such upload, or not the caller's.
    #[error("no such video")]
    NotFound,
    /// 404: something else that does not exist or is not the caller's.
    #[error("no such {0}")]
    NoSuch(&'static str),
    /// 404: something the request's body names does not exist (or is not
    /// the caller's to see); the detail says what and where.
    #[error("{0}")]
    Missing(String),
    /// 404: a path the api has no route for.
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    /// 409: Upload-Offset is not the upload's current offset.
    #[error("Upload-Offset {sent} does not match the upload's offset {current}")]
    OffsetMismatch { sent: u64, current: u64 },
    /// 409: the video is not in a state that allows this (a link to an
    /// upload that is not finished).
    #[error("{0}")]
    WrongState(String),
    /// 410: the upload failed or was deleted.
    #[error("the upload is gone ({0})")]
    Gone(&'static str),
    /// 412: Tus-Resumable is missing or names a version we don't speak.
    #[error("Tus-Resumable must be 1.0.0")]
    TusVersion,
    /// 413: more bytes than Upload-Length or Tus-Max-Size allow.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a PATCH body that is not application/offset+octet-stream.
    #[error("Content-Type must be application/offset+octet-stream")]
    ContentType,
    /// 423: another request is writing this upload right now.
    #[error("another request is uploading to this upload; retry after it ends")]
    Locked,
    /// 460: the body does not match Upload-Checksum.
    #[error("the body does not match Upload-Checksum")]
    ChecksumMismatch,
    /// 429: the caller went past its rate on a public endpoint.
    #[error("too many requests; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// 503: a service we depend on (the broker, the analytics store) is
    /// unavailable.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 500: a bug or an unexpected failure; logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound | Self::NoSuch(_) | Self::Missing(_) | Self::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            Self::OffsetMismatch { .. } | Self::WrongState(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::TusVersion => StatusCode::PRECONDITION_FAILED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Locked => StatusCode::LOCKED,
            Self::ChecksumMismatch => StatusCode::from_u16(460).expect("460 is a valid status"),
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // 22021: text PostgreSQL cannot hold, which from a client means a
        // NUL in some field the handler did not check by name; the
        // statement (and its transaction) changed nothing.
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("22021")
        {
            return Self::BadRequest("text must not contain NUL (\\u0000)".into());
        }
        Self::Internal(anyhow::Error::new(e).context("database"))
    }
}

/// An append that did not happen: its rejection says why (below), a lost
/// race is 423 (the client retries), anything else a 500.
impl<R: Into<ApiError>> From<AppendError<R>> for ApiError {
    fn from(e: AppendError<R>) -> Self {
        match e {
            AppendError::Rejected(rejection) => rejection.into(),
            AppendError::Conflict => Self::Locked,
            AppendError::Database(e) => e.into(),
        }
    }
}

/// Every way the video aggregate refuses a command, as HTTP.
impl From<VideoRejection> for ApiError {
    fn from(rejection: VideoRejection) -> Self {
        match rejection {
            VideoRejection::NotFound => Self::NotFound,
            VideoRejection::Closed(VideoStatus::Deleted) => Self::Gone("deleted"),
            VideoRejection::Closed(VideoStatus::Failed) => Self::Gone("failed"),
            VideoRejection::OffsetMoved { expected, actual } => Self::OffsetMismatch {
                sent: expected,
                current: actual,
            },
            other @ (VideoRejection::AlreadyExists
            | VideoRejection::Closed(_)
            | VideoRejection::NotOnboarding
            | VideoRejection::MultipartStarted(_)
            | VideoRejection::PartOutOfOrder { .. }) => Self::WrongState(other.to_string()),
        }
    }
}

impl From<ProfileRejection> for ApiError {
    fn from(rejection: ProfileRejection) -> Self {
        match rejection {}
    }
}

impl From<FirmwareRejection> for ApiError {
    fn from(rejection: FirmwareRejection) -> Self {
        match rejection {
            FirmwareRejection::NotFound => Self::NoSuch("firmware"),
            other => Self::WrongState(other.to_string()),
        }
    }
}

impl From<DeviceRejection> for ApiError {
    fn from(rejection: DeviceRejection) -> Self {
        Self::BadRequest(rejection.to_string())
    }
}

impl From<RolloutRejection> for ApiError {
    fn from(rejection: RolloutRejection) -> Self {
        match rejection {
            RolloutRejection::NotFound => Self::NoSuch("rollout"),
            other => Self::WrongState(other.to_string()),
        }
    }
}

impl From<UpdateRejection> for ApiError {
    fn from(rejection: UpdateRejection) -> Self {
        match rejection {
            UpdateRejection::NotFound => Self::NoSuch("device update"),
            other => Self::WrongState(other.to_string()),
        }
    }
}

impl From<EngagementRejection> for ApiError {
    fn from(rejection: EngagementRejection) -> Self {
        match rejection {
            EngagementRejection::NoSuchComment => Self::NoSuch("comment"),
            EngagementRejection::NotTheAuthor => {
                Self::Forbidden("only its author or an admin deletes a comment")
            }
            other @ EngagementRejection::CommentExists => Self::WrongState(other.to_string()),
        }
    }
}

/// Statistics come from the analytics store; while it is down they are
/// unavailable (and nothing else is). A refused query is a bug.
impl From<ClickHouseError> for ApiError {
    fn from(e: ClickHouseError) -> Self {
        match e {
            ClickHouseError::Unreachable(_) => {
                tracing::warn!(error = %e, "analytics store unavailable");
                Self::Unavailable("the analytics store is unavailable; retry later")
            }
            other => Self::Internal(anyhow::Error::new(other).context("analytics store")),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::error!(error = %e, "redis unavailable");
        Self::Unavailable("the lock service is unavailable; retry later")
    }
}

/// An `application/problem+json` answer.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Checksum Mismatch");
    let body = json!({ "type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = problem(status, &detail);
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TusVersion => {
                headers.insert("tus-version", HeaderValue::from_static("1.0.0"));
            }
            Self::OffsetMismatch { current, .. } => {
                headers.insert("upload-offset", HeaderValue::from(current));
            }
            Self::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

//! The tus 1.0.0 endpoints: OPTIONS, POST (creation, creation-with-upload),
//! HEAD, PATCH, DELETE (termination), with checksum and expiration.

use axum::{
    Router,
    body::Body,
    extract::Request,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{patch, post},
};
use chrono::{DateTime, Utc};
use reelay_shared::{
    VideoId, VideoStatus,
    fleet::FirmwareId,
    video::{
        Video, VideoEvent, VideoRejection,
        domain::part_size_for,
        jobs::{JobHeader, JobKind},
    },
};

use crate::{
    auth::{AuthUser, Caller, Role},
    error::{ApiError, ApiResult},
    fleet,
    state::AppState,
    video::{
        delete_video,
        ingest::{ingest, record_received},
        owned_video, publish_job, record_video,
        tus::{self, http_date},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/files", post(create))
        .route("/files/", post(create))
        .route(
            "/files/{id}",
            patch(patch_upload).head(head).delete(terminate),
        )
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                response
                    .headers_mut()
                    .insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
                response
            },
        ))
}

/// OPTIONS on the tus endpoint, without a token. Runs outside the CORS
/// layer, which would otherwise answer every OPTIONS as a browser preflight.
pub async fn options_or_next(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let is_tus_options = request.method() == axum::http::Method::OPTIONS
        && request.uri().path().starts_with("/files")
        && !request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_tus_options {
        capabilities(&state)
    } else {
        next.run(request).await
    }
}

fn capabilities(state: &AppState) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
    headers.insert("tus-version", HeaderValue::from_static(tus::VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(tus::EXTENSIONS));
    headers.insert(
        "tus-max-size",
        HeaderValue::from(state.config.upload.max_upload_size),
    );
    headers.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(tus::CHECKSUM_ALGORITHMS),
    );
    (StatusCode::NO_CONTENT, headers).into_response()
}

fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// 413 up front when Content-Length already says the body runs past the end.
fn check_length(headers: &HeaderMap, offset: u64, size: u64) -> ApiResult<()> {
    if let Some(length) = tus::number(headers, "content-length")?
        && offset.saturating_add(length) > size
    {
        return Err(ApiError::TooLarge(format!(
            "{length} bytes at offset {offset} run past Upload-Length ({size} bytes)"
        )));
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    tus::require_resumable(&headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::BadRequest(
            "creation-defer-length is not supported; send Upload-Length".into(),
        ));
    }
    let size = tus::number(&headers, "upload-length")?
        .ok_or_else(|| ApiError::BadRequest("Upload-Length is required".into()))?;
    let max_size = state.config.upload.max_upload_size;
    if size > max_size {
        return Err(ApiError::TooLarge(format!(
            "Upload-Length {size} is over Tus-Max-Size {max_size}"
        )));
    }
    let metadata = tus::metadata(&headers)?;
    let user = match (caller.role, metadata.onboarding) {
        (Role::Service, _) => return Err(ApiError::Forbidden("service tokens may not upload")),
        (Role::User, true) => {
            return Err(ApiError::Forbidden("only admins upload onboarding content"));
        }
        _ => caller.user,
    };
    // The file of a fleet firmware: admins only, nothing else at once.
    let firmware = match metadata.firmware.as_deref() {
        None => None,
        Some(_) if caller.role != Role::Admin => {
            return Err(ApiError::Forbidden("only admins upload firmware"));
        }
        Some(_) if metadata.onboarding => {
            return Err(ApiError::BadRequest(
                "Upload-Metadata: an upload is onboarding content or firmware, not both".into(),
            ));
        }
        Some(id) => Some(FirmwareId::parse(id).ok_or_else(|| {
            ApiError::BadRequest("Upload-Metadata: 'firmware' is not a firmware id".into())
        })?),
    };
    let onboarding_position = match metadata.onboarding {
        true => Some(state.store.next_onboarding_position().await?),
        false => None,
    };
    let with_body = has_body(&headers);
    let checksum = if with_body {
        tus::require_offset_content_type(&headers)?;
        check_length(&headers, 0, size)?;
        tus::checksum(&headers)?
    } else {
        None
    };

    let id = VideoId::new();
    record_video(id);
    let expires_at = expiry(&state);
    let created = VideoEvent::Created {
        owner_id: user,
        flow_id: uuid::Uuid::now_v7(),
        size_bytes: size,
        part_size_bytes: part_size_for(size, state.config.upload.min_part_size),
        object_key: state.storage.original_key(id),
        title: metadata.title,
        filename: metadata.filename,
        filetype: metadata.filetype,
        upload_metadata: metadata.raw,
        expires_at,
        onboarding_position,
        firmware_id: firmware.map(|f| f.0),
    };
    match firmware {
        Some(firmware) => fleet::firmware::start_upload(&state, firmware, id, created).await?,
        None => {
            state
                .store
                .append(id, |current| match current.video {
                    None => Ok((vec![created], ())),
                    Some(_) => Err(VideoRejection::AlreadyExists),
                })
                .await?;
        }
    }
    tracing::info!(size_bytes = size, "upload created");

    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/files/{id}")).expect("ascii"),
    );
    let mut offset = 0;
    let mut error = None;
    if size == 0 {
        // Nothing will ever be PATCHed: one empty chunk tells the worker to
        // store the empty object.
        error = publish_job(
            &state,
            JobHeader {
                video: id,
                kind: JobKind::Chunk { offset: 0 },
            },
        )
        .await
        .err();
    } else if with_body {
        // The upload exists from here on: a failure answers with its
        // Location (below), so the client can resume it.
        match state.locks.acquire(id).await {
            Ok(Some(lock)) => {
                let ingested = ingest(&state, id, 0, size, body, checksum, &lock).await;
                let recorded =
                    record_received(&state, id, ingested.recorded, ingested.confirmed).await;
                lock.release().await;
                match recorded {
                    Ok((recorded, _)) => {
                        offset = recorded;
                        error = ingested.error;
                    }
                    Err(e) => error = Some(e),
                }
                response_headers.insert("upload-offset", HeaderValue::from(offset));
            }
            Ok(None) => error = Some(ApiError::Locked),
            Err(e) => error = Some(e.into()),
        }
    }
    if let Some(error) = error {
        // The upload exists: say where, so the client can resume it.
        let mut response = error.into_response();
        response.headers_mut().extend(response_headers);
        return Ok(response);
    }
    if offset < size {
        response_headers.insert("upload-expires", http_date(expires_at));
    }
    Ok((StatusCode::CREATED, response_headers).into_response())
}

/// 410 for uploads that will never take bytes again.
fn require_alive(video: &Video) -> ApiResult<()> {
    match video.status {
        VideoStatus::Deleted => Err(ApiError::Gone("deleted")),
        VideoStatus::Failed => Err(ApiError::Gone("failed")),
        _ => Ok(()),
    }
}

async fn head(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    tus::require_resumable(&headers)?;
    let video = owned_video(&state, user, &id).await?;
    require_alive(&video)?;
    let aggregate = state.store.load(video.id).await?;
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out.insert("upload-offset", HeaderValue::from(video.received()));
    out.insert("upload-length", HeaderValue::from(video.size()));
    if let Some(session) = &aggregate.session {
        if let Some(raw) = session
            .upload_metadata
            .as_deref()
            .and_then(|m| HeaderValue::from_str(m).ok())
        {
            out.insert("upload-metadata", raw);
        }
        if video.received() < video.size() {
            out.insert("upload-expires", http_date(session.expires_at));
        }
    }
    Ok((StatusCode::OK, out).into_response())
}

async fn patch_upload(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    tus::require_resumable(&headers)?;
    tus::require_offset_content_type(&headers)?;
    let offset = tus::number(&headers, "upload-offset")?
        .ok_or_else(|| ApiError::BadRequest("Upload-Offset is required".into()))?;
    let checksum = tus::checksum(&headers)?;
    let video = owned_video(&state, user, &id).await?;
    require_alive(&video)?;
    let check_offset = |video: &Video| {
        if offset == video.received() {
            Ok(())
        } else {
            Err(ApiError::OffsetMismatch {
                sent: offset,
                current: video.received(),
            })
        }
    };
    check_offset(&video)?;
    check_length(&headers, offset, video.size())?;
    if video.size() == 0 && video.status == VideoStatus::Pending {
        // An empty upload whose job could not be published when it was
        // created (the broker was down: the client got 503 with a
        // Location): the client's empty PATCH publishes it now. If the
        // first was published after all, the worker takes the second as a
        // redelivered chunk: the upload is recorded once, its follow-up
        // jobs published again (tus-js-client and Uppy send no PATCH for
        // an empty file; this is for clients that resume one).
        publish_job(
            &state,
            JobHeader {
                video: video.id,
                kind: JobKind::Chunk { offset: 0 },
            },
        )
        .await?;
    }

    let lock = state
        .locks
        .acquire(video.id)
        .await?
        .ok_or(ApiError::Locked)?;
    // Another replica may have written between our read and the lock.
    let video = match state.store.video(video.id).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            lock.release().await;
            return Err(ApiError::NotFound);
        }
        Err(e) => {
            lock.release().await;
            return Err(e.into());
        }
    };
    if let Err(e) = require_alive(&video).and_then(|()| check_offset(&video)) {
        lock.release().await;
        return Err(e);
    }
    let ingested = ingest(
        &state,
        video.id,
        offset,
        video.size(),
        body,
        checksum,
        &lock,
    )
    .await;
    let recorded = record_received(&state, video.id, ingested.recorded, ingested.confirmed).await;
    lock.release().await;
    let (new_offset, recorded_expiry) = recorded?;
    if let Some(error) = ingested.error {
        return Err(error);
    }
    tracing::info!(offset_bytes = new_offset, "chunk accepted");
    let mut out = HeaderMap::new();
    out.insert("upload-offset", HeaderValue::from(new_offset));
    if new_offset < video.size() {
        // A PATCH that moved the offset set a new expiry; one that didn't
        // leaves the session's.
        let expires_at = match recorded_expiry {
            Some(at) => Some(at),
            None => state
                .store
                .load(video.id)
                .await?
                .session
                .map(|s| s.expires_at),
        };
        if let Some(at) = expires_at {
            out.insert("upload-expires", http_date(at));
        }
    }
    Ok((StatusCode::NO_CONTENT, out).into_response())
}

async fn terminate(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    tus::require_resumable(&headers)?;
    let video = owned_video(&state, user, &id).await?;
    delete_video(&state, video.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn expiry(state: &AppState) -> DateTime<Utc> {
    Utc::now() + state.config.upload.expiry
}

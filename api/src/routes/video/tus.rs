//! The tus 1.0.0 endpoints: OPTIONS, POST (creation, creation-with-upload),
//! HEAD, PATCH, DELETE (termination), with checksum and expiration.

use axum::{
    body::Body,
    extract::Request,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
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
use utoipa_axum::routes;

use crate::{
    auth::{AuthUser, Caller, Role},
    error::{ApiError, ApiResult},
    fleet,
    openapi::{BadRequest, Forbidden, Gone, Locked, NotFound, TooLarge, Unavailable},
    routes::Routes,
    state::AppState,
    video::{
        delete_video,
        ingest::{ingest, record_received},
        owned_video, publish_job, record_video,
        tus::{self, http_date},
    },
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(create, options))
        .routes(routes!(create_slash))
        .routes(routes!(head, patch_upload, terminate))
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

/// What this server speaks (tus discovery; no token needed).
///
/// Also answered for any path under `/files` that is not a browser's CORS
/// preflight.
#[utoipa::path(options, path = "/files", tag = "uploads", security(()),
    responses((status = 204, description = "The server's tus capabilities", headers(
        ("Tus-Resumable" = String, description = "1.0.0"),
        ("Tus-Version" = String, description = "1.0.0"),
        ("Tus-Extension" = String, description = "creation,creation-with-upload,termination,checksum,expiration"),
        ("Tus-Max-Size" = u64, description = "The largest Upload-Length taken"),
        ("Tus-Checksum-Algorithm" = String, description = "sha1,sha256"),
    ))))]
async fn options(State(state): State<AppState>) -> Response {
    capabilities(&state)
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

/// Create an upload (creation), with its first bytes if a body comes along
/// (creation-with-upload).
///
/// `Upload-Metadata` keys read: `title`, `filename`, `filetype`, and for
/// admins `onboarding` (joins the onboarding collection) or `firmware` (the
/// file of a fleet firmware). A creation that fails after the upload exists
/// (the broker or Redis went away) answers with its `Location` too, so the
/// client can resume it.
#[utoipa::path(post, path = "/files", tag = "uploads",
    params(
        ("Upload-Length" = u64, Header, description = "The file's size in bytes"),
        ("Upload-Metadata" = Option<String>, Header, description = "Comma-separated `key base64(value)` pairs (or a bare `key`): keys unique, values at most 1024 bytes; `filename`, `filetype` and `title` UTF-8 without NUL; `onboarding` (admins) and `firmware <base64 id>` (admins) mark what the upload is"),
        ("Upload-Checksum" = Option<String>, Header,
            description = "`sha1|sha256 base64(digest)` of the body sent with the creation"),
    ),
    request_body(content = crate::openapi::FileBytes, content_type = "application/offset+octet-stream",
        description = "The first bytes (creation-with-upload); none for a plain creation"),
    responses(
        (status = 201, description = "Created", headers(
            ("Location" = String, description = "`/files/{id}`: the upload's URL; the id is the video id"),
            ("Upload-Offset" = u64, description = "Bytes stored of a body sent along"),
            ("Upload-Expires" = String, description = "When an unfinished upload expires (RFC 9110 date)"),
        )),
        BadRequest, Forbidden, NotFound,
        (status = 409, description = "The firmware named in `Upload-Metadata` is not waiting for its file",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        TooLarge, Locked,
        (status = 415, description = "A body that is not application/offset+octet-stream",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 460, description = "The body does not match `Upload-Checksum`",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        Unavailable,
    ))]
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
    // A malformed Upload-Checksum is refused also when no body comes.
    let checksum = tus::checksum(&headers)?;
    if with_body {
        tus::require_offset_content_type(&headers)?;
        check_length(&headers, 0, size)?;
    }

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

/// Create an upload: `/files/` is `/files` (some clients add the slash).
#[utoipa::path(post, path = "/files/", tag = "uploads",
    params(
        ("Upload-Length" = u64, Header, description = "The file's size in bytes"),
        ("Upload-Metadata" = Option<String>, Header, description = "Comma-separated `key base64(value)` pairs (or a bare `key`): keys unique, values at most 1024 bytes; `filename`, `filetype` and `title` UTF-8 without NUL; `onboarding` (admins) and `firmware <base64 id>` (admins) mark what the upload is"),
        ("Upload-Checksum" = Option<String>, Header,
            description = "`sha1|sha256 base64(digest)` of the body sent with the creation"),
    ),
    request_body(content = crate::openapi::FileBytes, content_type = "application/offset+octet-stream",
        description = "The first bytes (creation-with-upload); none for a plain creation"),
    responses(
        (status = 201, description = "Created", headers(
            ("Location" = String, description = "`/files/{id}`: the upload's URL; the id is the video id"),
            ("Upload-Offset" = u64, description = "Bytes stored of a body sent along"),
            ("Upload-Expires" = String, description = "When an unfinished upload expires (RFC 9110 date)"),
        )),
        BadRequest, Forbidden, NotFound,
        (status = 409, description = "The firmware named in `Upload-Metadata` is not waiting for its file",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        TooLarge, Locked,
        (status = 415, description = "A body that is not application/offset+octet-stream",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 460, description = "The body does not match `Upload-Checksum`",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        Unavailable,
    ))]
async fn create_slash(
    state: State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    create(state, caller, headers, body).await
}

/// 410 for uploads that will never take bytes again.
fn require_alive(video: &Video) -> ApiResult<()> {
    match video.status {
        VideoStatus::Deleted => Err(ApiError::Gone("deleted")),
        VideoStatus::Failed => Err(ApiError::Gone("failed")),
        _ => Ok(()),
    }
}

/// Where to resume: the upload's offset and length.
#[utoipa::path(head, path = "/files/{id}", tag = "uploads",
    params(("id" = Uuid, Path, description = "The upload id (the video id)")),
    responses(
        (status = 200, description = "The upload's state", headers(
            ("Upload-Offset" = u64, description = "Bytes the broker confirmed: resume from here"),
            ("Upload-Length" = u64, description = "The file's size"),
            ("Upload-Metadata" = String, description = "As sent at creation"),
            ("Upload-Expires" = String, description = "When an unfinished upload expires"),
            ("Cache-Control" = String, description = "no-store"),
        )),
        NotFound, Gone, Forbidden))]
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

/// Append bytes at `Upload-Offset`.
///
/// The answer's `Upload-Offset` counts only bytes the broker confirmed:
/// those are never asked for again. A PATCH whose connection breaks keeps
/// every byte confirmed before the break; HEAD says where to resume. With
/// `Upload-Checksum`, a body that does not match is refused whole (460).
#[utoipa::path(patch, path = "/files/{id}", tag = "uploads",
    params(
        ("id" = Uuid, Path, description = "The upload id"),
        ("Upload-Offset" = u64, Header, description = "Where these bytes start: the offset HEAD reports"),
        ("Upload-Checksum" = Option<String>, Header,
            description = "`sha1|sha256 base64(digest)` of this body"),
    ),
    request_body(content = crate::openapi::FileBytes, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Taken", headers(
            ("Upload-Offset" = u64, description = "The new offset"),
            ("Upload-Expires" = String, description = "When the unfinished upload expires"),
        )),
        BadRequest, NotFound,
        (status = 409, description = "`Upload-Offset` is not the upload's offset; the answer's `Upload-Offset` is",
            body = crate::openapi::Problem, content_type = "application/problem+json",
            headers(("Upload-Offset" = u64, description = "The upload's offset"))),
        Gone, TooLarge,
        (status = 415, description = "The body is not application/offset+octet-stream",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        Locked,
        (status = 460, description = "The body does not match `Upload-Checksum`; nothing of it is kept",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        Unavailable, Forbidden))]
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

/// Terminate an upload: delete the video (as `DELETE /v1/videos/{id}`).
#[utoipa::path(delete, path = "/files/{id}", tag = "uploads",
    params(("id" = Uuid, Path, description = "The upload id")),
    responses((status = 204, description = "Deleted"), NotFound, Locked, Forbidden, Unavailable))]
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

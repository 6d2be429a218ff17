//! `/v1/fleet/firmware`: create (admin), list per hardware type, get, a
//! presigned link, withdraw (admin). The file itself is uploaded to
//! `/files/` with `firmware <base64 of the id>` in Upload-Metadata.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reelay_shared::fleet::FirmwareId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::{Admin, ServiceOrAdmin},
    error::{ApiError, ApiResult, JsonBody},
    fleet::{self, FirmwareView, firmware::NewFirmware},
    state::AppState,
    text,
    video::{Link, link_ttl},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/fleet/firmware", get(list).post(create))
        .route("/v1/fleet/firmware/{id}", get(show))
        .route("/v1/fleet/firmware/{id}/link", get(link))
        .route("/v1/fleet/firmware/{id}/withdraw", post(withdraw))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateFirmware {
    hardware_type: String,
    version: String,
    version_num: i64,
    comment: Option<String>,
    #[serde(default)]
    models: Vec<String>,
}

/// `POST /v1/fleet/firmware`: 201 with the firmware, `pending` until its
/// file is whole; `upload` says how to send the file.
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<CreateFirmware>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let firmware = fleet::firmware::create(
        &state,
        admin,
        NewFirmware {
            hardware_type: body.hardware_type,
            version: body.version,
            version_num: body.version_num,
            comment: body.comment,
            models: body.models,
        },
    )
    .await?;
    let metadata = format!(
        "firmware {}",
        base64::engine::general_purpose::STANDARD.encode(firmware.id.to_string())
    );
    let mut view = serde_json::to_value(FirmwareView::from(firmware)).expect("JSON");
    view["upload"] = json!({ "endpoint": "/files/", "upload_metadata": metadata });
    Ok((StatusCode::CREATED, Json(view)))
}

fn firmware_id(id: &str) -> ApiResult<FirmwareId> {
    FirmwareId::parse(id).ok_or(ApiError::NoSuch("firmware"))
}

async fn show(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    Path(id): Path<String>,
) -> ApiResult<Json<FirmwareView>> {
    let firmware = state
        .store
        .firmware(firmware_id(&id)?)
        .await?
        .ok_or(ApiError::NoSuch("firmware"))?;
    Ok(Json(firmware.into()))
}

#[derive(Deserialize)]
struct ListQuery {
    hardware_type: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/fleet/firmware?hardware_type=&limit=&cursor=`: one hardware
/// type's firmware, newest (highest version_num) first.
async fn list(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let hardware_type = q
        .hardware_type
        .ok_or_else(|| ApiError::BadRequest("hardware_type is required".into()))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 100".into(),
        ));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(
            URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("cursor is not one this API returned".into())
                })?,
        ),
    };
    let mut page = state
        .store
        .firmware_page(&hardware_type, before, limit + 1)
        .await?;
    let next_cursor = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last()
            .map(|f| URL_SAFE_NO_PAD.encode(f.version_num.to_string()))
    } else {
        None
    };
    let firmware: Vec<FirmwareView> = page.into_iter().map(FirmwareView::from).collect();
    Ok(Json(
        json!({ "firmware": firmware, "next_cursor": next_cursor }),
    ))
}

#[derive(Deserialize)]
struct TtlQuery {
    ttl: Option<u64>,
}

/// `GET /v1/fleet/firmware/{id}/link?ttl=`: a presigned GET of the file,
/// for available firmware (409 otherwise).
async fn link(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    Path(id): Path<String>,
    query: Result<Query<TtlQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Link>> {
    let Query(q) =
        query.map_err(|_| ApiError::BadRequest("ttl must be a whole number of seconds".into()))?;
    let ttl = link_ttl(&state, q.ttl)?;
    let firmware = state
        .store
        .firmware(firmware_id(&id)?)
        .await?
        .ok_or(ApiError::NoSuch("firmware"))?;
    Ok(Json(fleet::firmware_link(&state, &firmware, ttl).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Withdrawal {
    reason: Option<String>,
}

/// `POST /v1/fleet/firmware/{id}/withdraw` with `{"reason": …}` (admin):
/// no new rollout may use it; running ones that do are paused.
async fn withdraw(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<FirmwareView>> {
    let reason = match body.is_empty() {
        true => None,
        false => {
            serde_json::from_slice::<Withdrawal>(&body)
                .map_err(|e| ApiError::BadRequest(format!("expected {{\"reason\": string}}: {e}")))?
                .reason
        }
    };
    text::check_opt("reason", reason.as_deref(), 2000)?;
    let firmware = fleet::firmware::withdraw(&state, firmware_id(&id)?, reason).await?;
    Ok(Json(firmware.into()))
}

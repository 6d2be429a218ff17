//! `/v1/devices`: the caller's devices for push notifications. A user may
//! have several; the scheduler pushes to each when one of their videos
//! becomes UPLOADED, READY or FAILED.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, post},
};
use reelay_shared::push::{self, Device, DeviceToken, Platform};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult, JsonBody},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/devices", post(register).get(list))
        .route("/v1/devices/{id}", delete(unregister))
}

#[derive(Deserialize)]
struct Registration {
    platform: Platform,
    token: String,
}

/// `POST /v1/devices` with `{"platform": "fcm"|"apns"|"webhook", "token": …}`:
/// 201 with the device, or 200 if the caller had registered it already.
async fn register(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Result<JsonBody<Registration>, ApiError>,
) -> ApiResult<Response> {
    let JsonBody(registration) = body.map_err(|e| {
        e.expecting("{\"platform\": \"fcm\"|\"apns\"|\"webhook\", \"token\": string}")
    })?;
    let token = DeviceToken::parse(registration.platform, &registration.token)
        .map_err(ApiError::BadRequest)?;
    let (device, new) =
        push::register(state.store.pool(), user, registration.platform, &token).await?;
    if new {
        tracing::info!(device.id = %device.id, platform = %device.platform, "device registered");
    }
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(device)).into_response())
}

/// `GET /v1/devices`: the caller's devices.
async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> ApiResult<Json<serde_json::Value>> {
    let devices: Vec<Device> = push::devices(state.store.pool(), user).await?;
    Ok(Json(serde_json::json!({ "devices": devices })))
}

/// `DELETE /v1/devices/{id}`: 204; 404 for an unknown id or someone else's.
async fn unregister(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NoSuch("device"))?;
    if !push::unregister(state.store.pool(), user, id).await? {
        return Err(ApiError::NoSuch("device"));
    }
    Ok(StatusCode::NO_CONTENT)
}

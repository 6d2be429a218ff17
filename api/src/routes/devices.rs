//! `/v1/devices`: the caller's devices for push notifications. A user may
//! have several; the scheduler pushes to each when one of their videos
//! becomes UPLOADED, READY or FAILED.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use reelay_shared::push::{self, Device, DeviceToken, Platform};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use super::Routes;
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult, JsonBody},
    openapi::{BadRequest, Forbidden, NotFound, TooLarge},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(register, list))
        .routes(routes!(unregister))
}

#[derive(Deserialize)]
struct Registration {
    platform: Platform,
    token: String,
}

// For the document only: the handler reads a `Registration` and checks the
// token with `DeviceToken::parse`, which this describes.
/// A device to register, `{"platform", "token"}`: the token's shape
/// depends on the platform, and white space around it is dropped.
#[derive(ToSchema)]
#[schema(as = PushRegistration)]
#[serde(tag = "platform", rename_all = "lowercase")]
#[allow(dead_code)]
enum RegistrationShape {
    /// Firebase Cloud Messaging: 1 to 4096 letters, digits and `-_:.`.
    Fcm {
        #[schema(
            pattern = r"^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[A-Za-z0-9_:.\-]{1,4096}[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
        )]
        token: String,
    },
    /// Apple Push Notification service: 64 to 200 hexadecimal digits, an
    /// even number of them.
    Apns {
        #[schema(
            pattern = r"^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*(?:[0-9A-Fa-f]{2}){32,100}[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
        )]
        token: String,
    },
    /// The deployment's own push webhook: 1 to 4096 letters, digits and
    /// `-_:.` naming the device there.
    Webhook {
        #[schema(
            pattern = r"^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[A-Za-z0-9_:.\-]{1,4096}[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
        )]
        token: String,
    },
}

/// Register a device for push notifications.
///
/// 201 with the device, or 200 with it if the caller had registered this
/// token already. A token registered by someone else moves to the caller
/// (and what was still queued for its previous owner is dropped).
#[utoipa::path(post, path = "/v1/devices", tag = "devices",
    request_body = RegistrationShape,
    responses(
        (status = 201, description = "The device, new to the caller", body = Device),
        (status = 200, description = "The device, which the caller had registered already", body = Device),
        BadRequest, Forbidden, TooLarge,
    ))]
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

/// The caller's devices.
#[derive(Serialize, ToSchema)]
#[schema(as = PushDevices)]
struct Devices {
    /// Oldest first.
    devices: Vec<Device>,
}

/// The caller's devices, oldest first.
#[utoipa::path(get, path = "/v1/devices", tag = "devices",
    responses((status = 200, description = "The caller's devices", body = Devices), Forbidden))]
async fn list(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Json<Devices>> {
    let devices: Vec<Device> = push::devices(state.store.pool(), user).await?;
    Ok(Json(Devices { devices }))
}

/// Unregister a device.
///
/// It gets no more pushes, and what was queued for it is dropped.
#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = Uuid, Path, description = "The device id")),
    responses((status = 204, description = "Unregistered"), Forbidden, NotFound))]
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

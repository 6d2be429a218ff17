//! Devices and what they run: bulk registration and reports from the fleet
//! backend, reads one at a time or a thousand at once, and the version
//! distribution now or at any past instant.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use chrono::{DateTime, Utc};
use reelay_shared::{
    fleet::{
        ComponentVersion, DeviceId, DeviceUpdate,
        queries::{DeviceFirmware, VersionCount},
    },
    store::RecordedEvent,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::ServiceOrAdmin,
    error::{ApiError, ApiResult, JsonBody},
    fleet::devices::{self, MAX_BATCH, Registered, Registration, Report, Reported},
    openapi::{BadRequest, Forbidden, Locked, NotFound, TooLarge, Unavailable},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(register))
        .routes(routes!(query, show_query))
        .routes(routes!(show))
        .routes(routes!(history))
        .routes(routes!(report))
        .routes(routes!(versions))
}

/// Devices to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DeviceRegistrations)]
struct Registrations {
    /// At most 1,000.
    #[schema(max_items = 1000)]
    devices: Vec<Registration>,
}

/// Register devices (service or admin).
///
/// Idempotent by external id: a known device keeps its history, and its
/// model changes if another is given. New devices that match a running
/// rollout's filter join its last wave. 400 naming the first device with a
/// malformed external id, 404 for one of an unknown model, and then none is
/// registered;
/// 423 when another request registers the same new device at the same time
/// (retry).
#[utoipa::path(post, path = "/v1/fleet/devices", tag = "fleet",
    request_body = Registrations,
    responses(
        (status = 200, description = "What the registration did", body = Registered),
        BadRequest, Forbidden, crate::openapi::Missing, TooLarge, Locked,
    ))]
async fn register(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    JsonBody(body): JsonBody<Registrations>,
) -> ApiResult<Json<Registered>> {
    Ok(Json(devices::register(&state.store, body.devices).await?))
}

/// Version reports from the fleet backend.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VersionReports)]
struct Reports {
    /// 1 to 1,000.
    #[schema(min_items = 1, max_items = 1000)]
    reports: Vec<Report>,
}

/// Report what devices' components run (service or admin).
///
/// Each report is an event; a report of the version a device's open
/// update brings ends that update as succeeded. 400 naming the first
/// malformed report, 404 the first of an unregistered device, 409 the
/// first of a component its model lacks, and then nothing is recorded.
#[utoipa::path(post, path = "/v1/fleet/reports", tag = "fleet",
    request_body = Reports,
    responses(
        (status = 200, description = "What the reports did", body = Reported),
        BadRequest, Forbidden, crate::openapi::Missing,
        (status = 409, description = "A report names a component its device does not have",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        TooLarge, Unavailable,
    ))]
async fn report(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    JsonBody(body): JsonBody<Reports>,
) -> ApiResult<Json<Reported>> {
    if body.reports.is_empty() || body.reports.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "reports must hold 1 to {MAX_BATCH} reports"
        )));
    }
    for (i, report) in body.reports.iter().enumerate() {
        devices::check_report(i, report)?;
    }
    Ok(Json(state.reports.record(body.reports).await?))
}

/// A device, what it runs, and its update attempts.
#[derive(Serialize, ToSchema)]
#[schema(as = FleetDevice)]
struct DeviceView {
    external_id: String,
    model: String,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// What each component runs, as last reported, by component.
    components: Vec<ComponentVersion>,
    /// Its update attempts, oldest first.
    updates: Vec<DeviceUpdate>,
}

/// One device: what each component runs, and its update attempts.
#[utoipa::path(get, path = "/v1/fleet/devices/{external_id}", tag = "fleet",
    params(("external_id" = String, Path, description = "The device's external id")),
    responses(
        (status = 200, description = "The device", body = DeviceView),
        Forbidden, NotFound,
    ))]
async fn show(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    Path(external_id): Path<String>,
) -> ApiResult<Json<DeviceView>> {
    let (device, components) = state
        .store
        .device(&external_id)
        .await?
        .ok_or(ApiError::NoSuch("device"))?;
    let updates = state.store.device_updates_of(device.id).await?;
    Ok(Json(DeviceView {
        external_id: device.external_id,
        model: device.model,
        registered_at: device.registered_at,
        updated_at: device.updated_at,
        components,
        updates,
    }))
}

/// The device whose external id is `query`.
///
/// The bulk lookup (`POST`) has this path, which would otherwise hide the
/// device from `GET /v1/fleet/devices/{external_id}`.
#[utoipa::path(get, path = "/v1/fleet/devices/query", tag = "fleet",
    responses(
        (status = 200, description = "The device", body = DeviceView),
        Forbidden, NotFound,
    ))]
async fn show_query(state: State<AppState>, caller: ServiceOrAdmin) -> ApiResult<Json<DeviceView>> {
    show(state, caller, Path("query".to_owned())).await
}

/// A device's event history.
#[derive(Serialize, ToSchema)]
#[schema(as = DeviceHistory)]
struct History {
    external_id: String,
    /// Oldest first.
    events: Vec<RecordedEvent>,
}

/// A device's events.
///
/// Every event of the device (registrations, reports) and of its update
/// attempts, oldest first.
#[utoipa::path(get, path = "/v1/fleet/devices/{external_id}/events", tag = "fleet",
    params(("external_id" = String, Path, description = "The device's external id")),
    responses(
        (status = 200, description = "The events", body = History),
        Forbidden, NotFound,
    ))]
async fn history(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    Path(external_id): Path<String>,
) -> ApiResult<Json<History>> {
    let (device, _) = state
        .store
        .device(&external_id)
        .await?
        .ok_or(ApiError::NoSuch("device"))?;
    let mut events = state
        .store
        .history(DeviceId::of(&device.external_id))
        .await?;
    for update in state.store.device_updates_of(device.id).await? {
        events.extend(state.store.history(update.id).await?);
    }
    events.sort_by_key(|e| e.seq);
    Ok(Json(History {
        external_id: device.external_id,
        events,
    }))
}

/// The devices to look up.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DeviceQuery {
    /// External ids, at most 1,000.
    #[schema(
        max_items = 1000,
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$"
    )]
    external_ids: Vec<String>,
}

/// Devices looked up in bulk.
#[derive(Serialize, ToSchema)]
#[schema(as = FleetDevices)]
struct Found {
    /// One per external id asked for, in that order.
    devices: Vec<DeviceFirmware>,
}

/// What up to a thousand devices run (service or admin).
///
/// Each device in the order asked (`model: null` when it is not
/// registered), from one PostgreSQL round trip.
#[utoipa::path(post, path = "/v1/fleet/devices/query", tag = "fleet",
    request_body = DeviceQuery,
    responses(
        (status = 200, description = "The devices, in the order asked", body = Found),
        BadRequest, Forbidden, TooLarge,
    ))]
async fn query(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    JsonBody(body): JsonBody<DeviceQuery>,
) -> ApiResult<Json<Found>> {
    if body.external_ids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH} external_ids per request"
        )));
    }
    for (i, id) in body.external_ids.iter().enumerate() {
        devices::check_external_id(id)
            .map_err(|e| ApiError::BadRequest(format!("external_ids[{i}]: {e}")))?;
    }
    let found: Vec<DeviceFirmware> = state.store.devices_firmware(&body.external_ids).await?;
    Ok(Json(Found { devices: found }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct VersionsQuery {
    /// An RFC 3339 instant: the distribution as it stood then (now when
    /// absent).
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<String>,
}

/// Devices per version per hardware type, at one instant.
#[derive(Serialize, ToSchema)]
#[schema(as = VersionDistribution)]
struct Versions {
    /// The instant asked for, or now.
    at: DateTime<Utc>,
    /// By hardware type, then version_num (unknown versions first).
    versions: Vec<VersionCount>,
}

/// The version distribution (service or admin).
///
/// Devices per version per hardware type, now or as they stood at `at`
/// (from the event log).
#[utoipa::path(get, path = "/v1/fleet/versions", tag = "fleet",
    params(VersionsQuery),
    responses(
        (status = 200, description = "The distribution", body = Versions),
        BadRequest, Forbidden,
    ))]
async fn versions(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    query: Result<Query<VersionsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Versions>> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (at, counts) = match q.at {
        None => (Utc::now(), state.store.version_counts().await?),
        Some(at) => {
            let at: DateTime<Utc> = DateTime::parse_from_rfc3339(&at)
                .map_err(|_| {
                    ApiError::BadRequest(format!("at: '{at}' is not an RFC 3339 instant"))
                })?
                .with_timezone(&Utc);
            (at, state.store.version_counts_at(at).await?)
        }
    };
    Ok(Json(Versions {
        at,
        versions: counts,
    }))
}

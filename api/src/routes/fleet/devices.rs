//! Devices and what they run: bulk registration and reports from the fleet
//! backend, reads one at a time or a thousand at once, and the version
//! distribution now or at any past instant.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use reelay_shared::fleet::{DeviceId, queries::DeviceFirmware};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::ServiceOrAdmin,
    error::{ApiError, ApiResult, JsonBody},
    fleet::devices::{self, MAX_BATCH, Registered, Registration, Report, Reported},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/fleet/devices", post(register))
        .route("/v1/fleet/devices/query", post(query))
        .route("/v1/fleet/devices/{external_id}", get(show))
        .route("/v1/fleet/devices/{external_id}/events", get(history))
        .route("/v1/fleet/reports", post(report))
        .route("/v1/fleet/versions", get(versions))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registrations {
    devices: Vec<Registration>,
}

/// `POST /v1/fleet/devices` with `{"devices": [{"external_id", "model"}]}`
/// (≤ 1,000): idempotent by external id.
async fn register(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    JsonBody(body): JsonBody<Registrations>,
) -> ApiResult<Json<Registered>> {
    Ok(Json(devices::register(&state.store, body.devices).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reports {
    reports: Vec<Report>,
}

/// `POST /v1/fleet/reports` with `{"reports": [{"device", "component",
/// "version"}]}` (≤ 1,000): each is an event; 400 naming the first report
/// of an unknown device or component, and then nothing is recorded.
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

/// `GET /v1/fleet/devices/{external_id}`: the device, what each component
/// runs, and its update attempts.
async fn show(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    Path(external_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (device, components) = state
        .store
        .device(&external_id)
        .await?
        .ok_or(ApiError::NoSuch("device"))?;
    let updates = state.store.device_updates_of(device.id).await?;
    Ok(Json(json!({
        "external_id": device.external_id,
        "model": device.model,
        "registered_at": device.registered_at,
        "updated_at": device.updated_at,
        "components": components,
        "updates": updates,
    })))
}

/// `GET /v1/fleet/devices/{external_id}/events`: every event of the device
/// (registrations, reports) and of its update attempts, oldest first.
async fn history(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    Path(external_id): Path<String>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(
        json!({ "external_id": device.external_id, "events": events }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceQuery {
    external_ids: Vec<String>,
}

/// `POST /v1/fleet/devices/query` with `{"external_ids": [...]}` (≤ 1,000):
/// each device in the order asked (`model: null` when unknown), from one
/// PostgreSQL round trip.
async fn query(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    JsonBody(body): JsonBody<DeviceQuery>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({ "devices": found })))
}

#[derive(Deserialize)]
struct VersionsQuery {
    at: Option<String>,
}

/// `GET /v1/fleet/versions?at=<RFC 3339>`: devices per version per hardware
/// type, now or as they stood at `at` (from the event log).
async fn versions(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    query: Result<Query<VersionsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({ "at": at, "versions": counts })))
}

//! Hardware types, device models and the firmware signing key.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use reelay_shared::fleet::queries::{DeviceModel, HardwareType};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::{Admin, ServiceOrAdmin},
    error::{ApiError, ApiResult, JsonBody},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/fleet/hardware-types",
            get(hardware_types).post(add_hardware_type),
        )
        .route("/v1/fleet/models", get(models).post(add_model))
        .route("/v1/fleet/signing-key", get(signing_key))
}

/// Names of hardware types and models: what SQL's check allows.
fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match ok {
        true => Ok(()),
        false => Err(ApiError::BadRequest(format!(
            "a {what} name is 1 to 64 of a-z, 0-9 and _"
        ))),
    }
}

async fn hardware_types(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
) -> ApiResult<Json<Value>> {
    let types: Vec<HardwareType> = state.store.hardware_types().await?;
    Ok(Json(json!({ "hardware_types": types })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewHardwareType {
    name: String,
    description: Option<String>,
}

/// `POST /v1/fleet/hardware-types` (admin): 201, or 409 if it exists.
async fn add_hardware_type(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(new): JsonBody<NewHardwareType>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_name("hardware type", &new.name)?;
    if !state
        .store
        .add_hardware_type(&new.name, new.description.as_deref())
        .await?
    {
        return Err(ApiError::WrongState(format!(
            "hardware type '{}' exists",
            new.name
        )));
    }
    Ok((StatusCode::CREATED, Json(json!({ "name": new.name }))))
}

async fn models(State(state): State<AppState>, _: ServiceOrAdmin) -> ApiResult<Json<Value>> {
    let models: Vec<DeviceModel> = state.store.device_models().await?;
    Ok(Json(json!({ "models": models })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewModel {
    name: String,
    components: Vec<String>,
    description: Option<String>,
}

/// `POST /v1/fleet/models` (admin): a model and its components (known
/// hardware types); 201, or 409 if it exists.
async fn add_model(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(new): JsonBody<NewModel>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_name("model", &new.name)?;
    if new.components.is_empty() {
        return Err(ApiError::BadRequest(
            "a model has at least one component".into(),
        ));
    }
    let known: Vec<String> = state
        .store
        .hardware_types()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    if let Some(unknown) = new.components.iter().find(|c| !known.contains(c)) {
        return Err(ApiError::BadRequest(format!(
            "unknown hardware type '{unknown}'"
        )));
    }
    if !state
        .store
        .add_device_model(&new.name, &new.components, new.description.as_deref())
        .await?
    {
        return Err(ApiError::WrongState(format!("model '{}' exists", new.name)));
    }
    Ok((StatusCode::CREATED, Json(json!({ "name": new.name }))))
}

/// `GET /v1/fleet/signing-key` (no token: it is public): the Ed25519 key
/// firmware is signed with now, and the earlier ones.
async fn signing_key(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let keys = state.store.signing_keys().await?;
    let Some(current) = keys.first() else {
        return Err(ApiError::NoSuch(
            "signing key: no firmware has been signed yet",
        ));
    };
    Ok(Json(json!({
        "algorithm": "ed25519",
        "key_id": current.key_id,
        "public_key": current.public_key,
        "keys": keys,
    })))
}

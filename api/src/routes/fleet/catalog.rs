//! Hardware types, device models and the firmware signing key.

use axum::{Json, extract::State, http::StatusCode};
use reelay_shared::fleet::queries::{DeviceModel, HardwareType, SigningKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::{Admin, ServiceOrAdmin},
    error::{ApiError, ApiResult, JsonBody},
    openapi::{BadRequest, Conflict, Forbidden, NotFound, TooLarge},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(hardware_types, add_hardware_type))
        .routes(routes!(models, add_model))
        .routes(routes!(signing_key))
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

/// Every hardware type.
#[derive(Serialize, ToSchema)]
struct HardwareTypes {
    /// By name.
    hardware_types: Vec<HardwareType>,
}

/// The hardware types: the components firmware is for.
#[utoipa::path(get, path = "/v1/fleet/hardware-types", tag = "fleet",
    responses(
        (status = 200, description = "Every hardware type, by name", body = HardwareTypes),
        Forbidden,
    ))]
async fn hardware_types(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
) -> ApiResult<Json<HardwareTypes>> {
    let types: Vec<HardwareType> = state.store.hardware_types().await?;
    Ok(Json(HardwareTypes {
        hardware_types: types,
    }))
}

/// A hardware type to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewHardwareType {
    /// 1 to 64 of a-z, 0-9 and _.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_]+$")]
    name: String,
    /// Free text, without NUL.
    #[schema(pattern = r"^[^\x00]*$")]
    description: Option<String>,
}

/// The name of what was added to the catalog.
#[derive(Serialize, ToSchema)]
#[schema(as = CatalogEntryAdded)]
struct Added {
    name: String,
}

/// Add a hardware type (admin).
///
/// 409 if one of that name exists.
#[utoipa::path(post, path = "/v1/fleet/hardware-types", tag = "fleet",
    request_body = NewHardwareType,
    responses(
        (status = 201, description = "Added", body = Added),
        BadRequest, Forbidden, Conflict, TooLarge,
    ))]
async fn add_hardware_type(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(new): JsonBody<NewHardwareType>,
) -> ApiResult<(StatusCode, Json<Added>)> {
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
    Ok((StatusCode::CREATED, Json(Added { name: new.name })))
}

/// Every device model.
#[derive(Serialize, ToSchema)]
struct DeviceModels {
    /// By name.
    models: Vec<DeviceModel>,
}

/// The device models and the components each has.
#[utoipa::path(get, path = "/v1/fleet/models", tag = "fleet",
    responses(
        (status = 200, description = "Every model, by name", body = DeviceModels),
        Forbidden,
    ))]
async fn models(State(state): State<AppState>, _: ServiceOrAdmin) -> ApiResult<Json<DeviceModels>> {
    let models: Vec<DeviceModel> = state.store.device_models().await?;
    Ok(Json(DeviceModels { models }))
}

/// A device model to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewDeviceModel)]
struct NewModel {
    /// 1 to 64 of a-z, 0-9 and _.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_]+$")]
    name: String,
    /// Its components: known hardware types, at least one.
    #[schema(
        min_items = 1,
        min_length = 1,
        max_length = 64,
        pattern = r"^[a-z0-9_]+$"
    )]
    components: Vec<String>,
    /// Free text, without NUL.
    #[schema(pattern = r"^[^\x00]*$")]
    description: Option<String>,
}

/// Add a device model and its components (admin).
///
/// The components are known hardware types; 409 if a model of that name
/// exists.
#[utoipa::path(post, path = "/v1/fleet/models", tag = "fleet",
    request_body = NewModel,
    responses(
        (status = 201, description = "Added", body = Added),
        BadRequest, Forbidden, crate::openapi::Missing, Conflict, TooLarge,
    ))]
async fn add_model(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(new): JsonBody<NewModel>,
) -> ApiResult<(StatusCode, Json<Added>)> {
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
        return Err(ApiError::Missing(format!(
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
    Ok((StatusCode::CREATED, Json(Added { name: new.name })))
}

/// The signature algorithm of firmware.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = FirmwareSignatureAlgorithm)]
enum Algorithm {
    Ed25519,
}

/// The key firmware is signed with now, and every earlier one.
#[derive(Serialize, ToSchema)]
#[schema(as = FirmwareSigningKeys)]
struct SigningKeys {
    algorithm: Algorithm,
    /// The current key's id (a firmware's `key_id`).
    key_id: String,
    /// Base64 of the current key's 32 raw Ed25519 bytes.
    public_key: String,
    /// Every key firmware was signed with, the current (newest) first.
    keys: Vec<SigningKey>,
}

/// The firmware signing key (public: no token needed).
///
/// The Ed25519 key firmware is signed with now, and the earlier ones; 404
/// until a firmware has been signed.
#[utoipa::path(get, path = "/v1/fleet/signing-key", tag = "fleet", security(()),
    responses(
        (status = 200, description = "The current key and every earlier one", body = SigningKeys),
        NotFound,
    ))]
async fn signing_key(State(state): State<AppState>) -> ApiResult<Json<SigningKeys>> {
    let keys = state.store.signing_keys().await?;
    let Some(current) = keys.first() else {
        return Err(ApiError::NoSuch(
            "signing key: no firmware has been signed yet",
        ));
    };
    let (key_id, public_key) = (current.key_id.clone(), current.public_key.clone());
    Ok(Json(SigningKeys {
        algorithm: Algorithm::Ed25519,
        key_id,
        public_key,
        keys,
    }))
}

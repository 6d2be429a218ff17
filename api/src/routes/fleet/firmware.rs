//! `/v1/fleet/firmware`: create (admin), list per hardware type, get, a
//! presigned link, withdraw (admin). The file itself is uploaded to
//! `/files/` with `firmware <base64 of the id>` in Upload-Metadata.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use base64::Engine;
use reelay_shared::fleet::FirmwareId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, PartialSchema as _, ToSchema};
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::{Admin, ServiceOrAdmin},
    error::{ApiError, ApiResult, JsonBody},
    fleet::{self, FirmwareView, firmware::NewFirmware},
    openapi::{BadRequest, Conflict, Forbidden, NotFound, TooLarge},
    state::AppState,
    text,
    video::{Link, link_ttl},
};

pub fn router() -> Routes {
    let mut routes = Routes::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(link))
        .routes(routes!(withdraw));
    // The withdrawal's body is optional, so `withdraw` names its schema by
    // `ref(...)` (an `Option<Withdrawal>` body would also allow a JSON
    // null, which it refuses), and a `ref` adds no schema: it is added here.
    routes
        .get_openapi_mut()
        .components
        .get_or_insert_with(Default::default)
        .schemas
        .insert(Withdrawal::name().into_owned(), Withdrawal::schema());
    routes
}

/// A firmware to create; its file is uploaded next.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateFirmware {
    /// A known hardware type (`GET /v1/fleet/hardware-types`).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_]+$")]
    hardware_type: String,
    /// The vendor's version string: 1 to 64 characters, no spaces or
    /// control characters; new for its hardware type.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$"
    )]
    version: String,
    /// Orders the versions of a hardware type: above every earlier one's.
    version_num: i64,
    /// At most 2,000 characters.
    #[schema(max_length = 2000, pattern = r"^[^\x00]*$")]
    comment: Option<String>,
    /// The models it is for, each a known model that has the hardware
    /// type; every such model when absent or empty.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_]+$")]
    models: Vec<String>,
}

/// How to send a new firmware's file.
#[derive(Serialize, ToSchema)]
#[schema(as = FirmwareUpload)]
struct Upload {
    /// The tus endpoint: create the upload there.
    endpoint: &'static str,
    /// The `Upload-Metadata` the upload is created with.
    upload_metadata: String,
}

/// A firmware just created, and how to send its file.
#[derive(Serialize, ToSchema)]
struct CreatedFirmware {
    #[serde(flatten)]
    firmware: FirmwareView,
    upload: Upload,
}

/// Create a firmware (admin).
///
/// 201 with the firmware, `pending` until its file is whole; `upload` says
/// how to send the file. 404 for an unknown hardware type; 409 for a model
/// that does not exist or lacks that hardware type, when `version_num` is
/// not above every earlier one of its hardware type, or the version exists.
#[utoipa::path(post, path = "/v1/fleet/firmware", tag = "fleet",
    request_body = CreateFirmware,
    responses(
        (status = 201, description = "The firmware, pending", body = CreatedFirmware),
        BadRequest, Forbidden, crate::openapi::Missing, Conflict, TooLarge,
    ))]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<CreateFirmware>,
) -> ApiResult<(StatusCode, Json<CreatedFirmware>)> {
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
    let upload_metadata = format!(
        "firmware {}",
        base64::engine::general_purpose::STANDARD.encode(firmware.id.to_string())
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedFirmware {
            firmware: FirmwareView::from(firmware),
            upload: Upload {
                endpoint: "/files/",
                upload_metadata,
            },
        }),
    ))
}

fn firmware_id(id: &str) -> ApiResult<FirmwareId> {
    FirmwareId::parse(id).ok_or(ApiError::NoSuch("firmware"))
}

/// One firmware.
#[utoipa::path(get, path = "/v1/fleet/firmware/{id}", tag = "fleet",
    params(("id" = Uuid, Path, description = "The firmware id")),
    responses(
        (status = 200, description = "The firmware", body = FirmwareView),
        Forbidden, NotFound,
    ))]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Whose firmware (required).
    #[param(required = true, value_type = String)]
    hardware_type: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,19}$")]
    cursor: Option<String>,
    /// Firmware per page, 1–100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// A page of one hardware type's firmware.
#[derive(Serialize, ToSchema)]
struct FirmwarePage {
    /// Newest (highest version_num) first.
    firmware: Vec<FirmwareView>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// One hardware type's firmware (service or admin).
///
/// Newest (highest version_num) first.
#[utoipa::path(get, path = "/v1/fleet/firmware", tag = "fleet",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of firmware", body = FirmwarePage),
        BadRequest, Forbidden,
    ))]
async fn list(
    State(state): State<AppState>,
    _: ServiceOrAdmin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<FirmwarePage>> {
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
    // The cursor is the last version_num of the page before.
    let before = match q.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(
            Some(cursor)
                .filter(|c| {
                    let digits = c.strip_prefix('-').unwrap_or(c);
                    (1..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
                })
                // Past i64's range is past every version: the whole list.
                .and_then(|c| c.parse::<i128>().ok())
                .map(|n| n.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "cursor is not one this API returned (a version_num)".into(),
                    )
                })?,
        ),
    };
    let mut page = state
        .store
        .firmware_page(&hardware_type, before, limit + 1)
        .await?;
    let next_cursor = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|f| f.version_num.to_string())
    } else {
        None
    };
    let firmware: Vec<FirmwareView> = page.into_iter().map(FirmwareView::from).collect();
    Ok(Json(FirmwarePage {
        firmware,
        next_cursor,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TtlQuery {
    /// The link's life in seconds (`REELAY_LINK_TTL_SECS` when absent;
    /// longer ones are capped at `REELAY_LINK_MAX_TTL_SECS`).
    #[param(minimum = 1)]
    ttl: Option<i64>,
}

/// A temporary link to a firmware's file (service or admin).
///
/// A presigned GET of the file (Range works, so a device resumes a broken
/// download), for available firmware; 409 otherwise.
#[utoipa::path(get, path = "/v1/fleet/firmware/{id}/link", tag = "fleet",
    params(("id" = Uuid, Path, description = "The firmware id"), TtlQuery),
    responses(
        (status = 200, description = "The link", body = Link),
        BadRequest, Forbidden, NotFound, Conflict,
    ))]
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

/// Why a firmware is withdrawn.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FirmwareWithdrawal)]
struct Withdrawal {
    /// At most 2,000 characters.
    #[schema(max_length = 2000, pattern = r"^[^\x00]*$")]
    reason: Option<String>,
}

/// Withdraw a firmware (admin).
///
/// No new rollout may use it; running ones that do are paused. The body is
/// optional (and its Content-Type not checked). 409 if it was withdrawn
/// already.
#[utoipa::path(post, path = "/v1/fleet/firmware/{id}/withdraw", tag = "fleet",
    params(("id" = Uuid, Path, description = "The firmware id")),
    request_body(content = ref("#/components/schemas/FirmwareWithdrawal"),
        content_type = "application/json", description = "Optional: why"),
    responses(
        (status = 200, description = "The firmware, now withdrawn", body = FirmwareView),
        BadRequest, Forbidden, NotFound, Conflict,
        crate::openapi::TooLarge,
    ))]
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

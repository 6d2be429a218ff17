//! The fleet product's application layer: what the fleet routes (and the
//! tus endpoint, for firmware files) do beyond parsing and answering.

pub mod devices;
pub mod firmware;
pub mod rollouts;

use std::time::Duration;

use reelay_shared::fleet::{Firmware, FirmwareStatus};
use serde::Serialize;

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    video::{Link, presign},
};

/// A firmware as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FirmwareView {
    #[schema(format = Uuid)]
    pub id: String,
    pub hardware_type: String,
    pub version: String,
    pub version_num: i64,
    pub comment: Option<String>,
    pub models: Vec<String>,
    pub status: FirmwareStatus,
    /// The tus upload of its file (`/files/<upload_id>`), once begun.
    #[schema(format = Uuid)]
    pub upload_id: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    /// Base64 of the exact bytes signed (canonical JSON).
    pub manifest: Option<String>,
    /// Base64 Ed25519 signature of `manifest`.
    pub signature: Option<String>,
    /// Which key signed it (see `GET /v1/fleet/signing-key`).
    pub key_id: Option<String>,
    pub withdrawn_reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Firmware> for FirmwareView {
    fn from(f: Firmware) -> Self {
        Self {
            id: f.id.to_string(),
            hardware_type: f.hardware_type,
            version: f.version,
            version_num: f.version_num,
            comment: f.comment,
            models: f.models,
            status: f.status,
            upload_id: f.upload_id.map(|u| u.to_string()),
            size_bytes: f.size_bytes,
            sha256: f.sha256,
            manifest: f.manifest,
            signature: f.signature,
            key_id: f.key_id,
            withdrawn_reason: f.withdrawn_reason,
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

/// A presigned GET of an available firmware's file (Range works, so a
/// device resumes a broken download).
pub async fn firmware_link(
    state: &AppState,
    firmware: &Firmware,
    ttl: Duration,
) -> ApiResult<Link> {
    match (&firmware.status, &firmware.object_key) {
        (FirmwareStatus::Available, Some(key)) => presign(state, key, ttl).await,
        (status, _) => Err(ApiError::WrongState(format!(
            "links exist for available firmware; this one is {status:?}"
        ))),
    }
}

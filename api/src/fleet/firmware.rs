//! Firmware: created by an admin (version_num strictly increasing per
//! hardware type), its file uploaded through tus, withdrawn by an admin.

use reelay_shared::{
    UserId, VideoId, VideoStatus,
    fleet::{
        Firmware, FirmwareEvent, FirmwareId, FirmwareRejection, FirmwareStatus, PausedBy,
        RolloutEvent, RolloutId, RolloutRejection, RolloutState,
    },
    video::{VideoEvent, VideoRejection},
};

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// What an admin describes.
pub struct NewFirmware {
    pub hardware_type: String,
    pub version: String,
    pub version_num: i64,
    pub comment: Option<String>,
    /// Empty: every model with this hardware type.
    pub models: Vec<String>,
}

/// Creates a firmware. 404 for an unknown hardware type; 409 for a model
/// that does not exist or lacks that component, when `version_num` is not
/// above every earlier one of its hardware type, or the version string
/// exists.
pub async fn create(state: &AppState, admin: UserId, new: NewFirmware) -> ApiResult<Firmware> {
    check_version(&new.version)?;
    crate::text::check_opt("comment", new.comment.as_deref(), 2000)?;
    let id = FirmwareId::new();
    let mut tx = state.store.begin().await?;
    // One creator per hardware type at a time: the version_num check and
    // the insert are one step.
    let known: Option<(String,)> =
        sqlx::query_as("SELECT name FROM hardware_types WHERE name = $1 FOR UPDATE")
            .bind(&new.hardware_type)
            .fetch_optional(&mut *tx.conn())
            .await?;
    if known.is_none() {
        return Err(ApiError::Missing(format!(
            "unknown hardware type '{}'",
            new.hardware_type
        )));
    }
    let models = compatible_models(&mut tx, &new.hardware_type, &new.models).await?;
    let (highest, same_version): (Option<i64>, bool) = sqlx::query_as(
        "SELECT max(version_num), coalesce(bool_or(version = $2), false) FROM firmware WHERE hardware_type = $1",
    )
    .bind(&new.hardware_type)
    .bind(&new.version)
    .fetch_one(&mut *tx.conn())
    .await?;
    if let Some(highest) = highest
        && new.version_num <= highest
    {
        return Err(ApiError::WrongState(format!(
            "version_num must be above {highest}, the highest of {}",
            new.hardware_type
        )));
    }
    if same_version {
        return Err(ApiError::WrongState(format!(
            "{} already has a firmware with version '{}'",
            new.hardware_type, new.version
        )));
    }
    let created = FirmwareEvent::Created {
        hardware_type: new.hardware_type,
        version: new.version,
        version_num: new.version_num,
        comment: new.comment,
        models,
        created_by: admin,
    };
    tx.append(id, |current| match current {
        None => Ok((vec![created], ())),
        Some(_) => Err(FirmwareRejection::AlreadyExists),
    })
    .await?;
    tx.commit().await?;
    tracing::info!(firmware.id = %id, "firmware created");
    state
        .store
        .firmware(id)
        .await?
        .ok_or(ApiError::NoSuch("firmware"))
}

/// A vendor version string: 1 to 64 printable characters.
fn check_version(version: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&version.chars().count())
        && version
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace());
    match ok {
        true => Ok(()),
        false => Err(ApiError::BadRequest(
            "version must be 1 to 64 characters without spaces".into(),
        )),
    }
}

/// The models a firmware of `hardware_type` is for: those named (each must
/// exist and have that component), or every model that has it.
async fn compatible_models(
    tx: &mut reelay_shared::store::AppendTx,
    hardware_type: &str,
    asked: &[String],
) -> ApiResult<Vec<String>> {
    let having: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM device_models WHERE $1 = ANY(components) ORDER BY name")
            .bind(hardware_type)
            .fetch_all(&mut *tx.conn())
            .await?;
    let having: Vec<String> = having.into_iter().map(|(n,)| n).collect();
    if asked.is_empty() {
        return Ok(having);
    }
    for model in asked {
        if !having.contains(model) {
            return Err(ApiError::WrongState(format!(
                "model '{model}' does not exist or has no {hardware_type}"
            )));
        }
    }
    let mut models = asked.to_vec();
    models.sort();
    models.dedup();
    Ok(models)
}

/// Records a tus upload (`created`, with id `upload`) as the file of
/// firmware `id`, in one transaction with its creation: only an admin, only
/// a pending firmware, and only one upload at a time (one that failed or
/// was deleted may be replaced).
pub async fn start_upload(
    state: &AppState,
    id: FirmwareId,
    upload: VideoId,
    created: VideoEvent,
) -> ApiResult<()> {
    let firmware = state
        .store
        .firmware(id)
        .await?
        .ok_or(ApiError::NoSuch("firmware"))?;
    let mut tx = state.store.begin().await?;
    let earlier = firmware.upload_id;
    let earlier_alive = match earlier {
        Some(upload) => {
            let status: Option<(VideoStatus,)> =
                sqlx::query_as("SELECT status FROM videos WHERE id = $1")
                    .bind(upload)
                    .fetch_optional(&mut *tx.conn())
                    .await?;
            status.is_some_and(|(s,)| !s.is_gone())
        }
        None => false,
    };
    tx.append(id, |current| {
        let firmware = current.as_ref().ok_or(FirmwareRejection::NotFound)?;
        if firmware.status != FirmwareStatus::Pending {
            return Err(FirmwareRejection::NotPending(firmware.status));
        }
        match firmware.upload_id {
            // Another upload started between our read and the lock.
            now if now != earlier => {
                Err(FirmwareRejection::UploadInProgress(now.unwrap_or(upload)))
            }
            Some(other) if earlier_alive => Err(FirmwareRejection::UploadInProgress(other)),
            _ => Ok((vec![FirmwareEvent::UploadStarted { upload_id: upload }], ())),
        }
    })
    .await?;
    tx.append(upload, |current| match current.video {
        None => Ok((vec![created], ())),
        Some(_) => Err(VideoRejection::AlreadyExists),
    })
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Withdraws firmware `id`: no new rollout may use it, and the running
/// rollouts that do are paused, in the same transaction.
pub async fn withdraw(
    state: &AppState,
    id: FirmwareId,
    reason: Option<String>,
) -> ApiResult<Firmware> {
    let mut tx = state.store.begin().await?;
    tx.append(id, |current| {
        let firmware = current.as_ref().ok_or(FirmwareRejection::NotFound)?;
        match firmware.status {
            FirmwareStatus::Withdrawn => Err(FirmwareRejection::AlreadyWithdrawn),
            _ => Ok((
                vec![FirmwareEvent::Withdrawn {
                    reason: reason.clone(),
                }],
                (),
            )),
        }
    })
    .await?;
    let rollouts: Vec<(RolloutId,)> = sqlx::query_as(
        "SELECT id FROM rollouts WHERE state = 'running' \
         AND spec->'targets' @> jsonb_build_array(jsonb_build_object('firmware_id', $1::text)) ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *tx.conn())
    .await?;
    for (rollout,) in rollouts {
        let paused = RolloutEvent::Paused {
            by: PausedBy::Withdrawal,
            reason: format!("firmware {id} was withdrawn"),
        };
        tx.append(rollout, |current| {
            let r = current.as_ref().ok_or(RolloutRejection::NotFound)?;
            Ok(match r.state {
                RolloutState::Running => (vec![paused], ()),
                _ => (vec![], ()),
            })
        })
        .await?;
        tracing::warn!(rollout.id = %rollout, firmware.id = %id, "rollout paused: its firmware was withdrawn");
    }
    tx.commit().await?;
    state
        .store
        .firmware(id)
        .await?
        .ok_or(ApiError::NoSuch("firmware"))
}

//! Seal jobs: a firmware's file is whole in S3 (its upload UPLOADED, with
//! the SHA-256 the worker computed as the bytes became durable); sign its
//! manifest and make it available.

use anyhow::Context as _;
use reelay_shared::{
    VideoStatus,
    fleet::{
        FirmwareEvent, FirmwareId, FirmwareRejection, FirmwareStatus,
        signing::{self},
    },
};

use crate::{consumer::Outcome, jobs::Context};

pub async fn run(ctx: &Context, id: FirmwareId) -> anyhow::Result<Outcome> {
    let Some(firmware) = ctx.store.firmware(id).await? else {
        return Ok(Outcome::Done);
    };
    if firmware.status != FirmwareStatus::Pending {
        return Ok(Outcome::Done);
    }
    let Some(upload) = firmware.upload_id else {
        return Ok(Outcome::GaveUp(format!("firmware {id} has no upload")));
    };
    let Some(signer) = &ctx.config.fleet.signing_key else {
        tracing::error!("REELAY_FLEET_SIGNING_KEY is not set: firmware can't be signed");
        return Ok(Outcome::GaveUp("no signing key configured".into()));
    };
    let video = ctx
        .store
        .video(upload)
        .await?
        .context("the firmware's upload is gone")?;
    let (VideoStatus::Uploaded, Some(sha256)) = (video.status, video.sha256.clone()) else {
        return Ok(Outcome::GaveUp(format!(
            "the firmware's upload is {:?}, not whole",
            video.status
        )));
    };
    let manifest = signing::manifest(
        &firmware.hardware_type,
        &firmware.version,
        firmware.version_num,
        video.size(),
        &sha256,
    );
    let sealed = FirmwareEvent::Sealed {
        object_key: ctx.storage.original_key(upload),
        size_bytes: video.size(),
        sha256,
        manifest: base64_of(&manifest),
        signature: signer.sign(&manifest),
        key_id: signer.key_id(),
    };
    let made_available = ctx
        .store
        .append(id, |current| {
            let f = current.as_ref().ok_or(FirmwareRejection::NotFound)?;
            Ok(match (f.status, f.upload_id) {
                (FirmwareStatus::Pending, Some(u)) if u == upload => (vec![sealed], true),
                _ => (vec![], false),
            })
        })
        .await?;
    if made_available {
        tracing::info!(size_bytes = video.size(), "firmware signed and available");
    }
    Ok(Outcome::Done)
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

//! What happens to firmware, devices, rollouts and device updates, as
//! appended to the event log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::domain::{DeviceId, FirmwareId, PlannedDevice, RolloutId, RolloutSpec};
use crate::{store::Event, video::VideoId};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FirmwareEvent {
    /// An admin described a new firmware; its file comes next.
    Created {
        hardware_type: String,
        version: String,
        version_num: i64,
        comment: Option<String>,
        models: Vec<String>,
        created_by: crate::video::UserId,
    },
    /// A tus upload of its file began (`upload_id` is the upload's id).
    UploadStarted { upload_id: VideoId },
    /// The file is whole in S3, hashed and signed: available.
    Sealed {
        object_key: String,
        size_bytes: u64,
        sha256: String,
        /// Base64 of the exact bytes signed (canonical JSON).
        manifest: String,
        /// Base64 of the Ed25519 signature of `manifest`.
        signature: String,
        key_id: String,
    },
    /// An admin took it back.
    Withdrawn { reason: Option<String> },
}

impl Event for FirmwareEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Created { .. } => "firmware_created",
            Self::UploadStarted { .. } => "firmware_upload_started",
            Self::Sealed { .. } => "firmware_sealed",
            Self::Withdrawn { .. } => "firmware_withdrawn",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// The fleet backend registered the device (again, with another model).
    Registered { external_id: String, model: String },
    /// The fleet backend reported what one component runs.
    VersionReported {
        component: String,
        /// The vendor's version string, as reported.
        version: String,
        /// The firmware it is, when we know the version.
        firmware_id: Option<FirmwareId>,
        version_num: Option<i64>,
    },
}

impl Event for DeviceEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Registered { .. } => "device_registered",
            Self::VersionReported { .. } => "version_reported",
        }
    }
}

/// Who paused a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PausedBy {
    Admin,
    /// The error threshold was crossed in a wave.
    ErrorThreshold,
    /// A wave ended below the success threshold.
    SuccessThreshold,
    /// A target firmware was withdrawn.
    Withdrawal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RolloutEvent {
    Created {
        spec: RolloutSpec,
        created_by: crate::video::UserId,
    },
    /// An admin started it: its devices, split into waves (the plan).
    Started {
        waves: Vec<Vec<PlannedDevice>>,
    },
    /// Devices that registered while it ran and match its filter joined
    /// wave `wave` (its last).
    DevicesJoined {
        wave: u32,
        devices: Vec<PlannedDevice>,
    },
    /// Wave `wave` (from 0) opened: its updates may be released.
    WaveStarted {
        wave: u32,
    },
    /// Wave `wave` met the success threshold; the next waits for an admin.
    ApprovalAwaited {
        wave: u32,
    },
    /// An admin approved the next wave.
    Approved {
        wave: u32,
    },
    Paused {
        by: PausedBy,
        reason: String,
    },
    /// Running again. `error_baseline` is each wave's final failures at
    /// this moment: the error threshold counts only failures after it, so
    /// a rollout resumed past its threshold is not paused again at once.
    Resumed {
        #[serde(default)]
        error_baseline: Vec<u32>,
    },
    Cancelled,
    /// Every wave ended.
    Completed,
}

impl Event for RolloutEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Created { .. } => "rollout_created",
            Self::Started { .. } => "rollout_started",
            Self::DevicesJoined { .. } => "rollout_devices_joined",
            Self::WaveStarted { .. } => "rollout_wave_started",
            Self::ApprovalAwaited { .. } => "rollout_approval_awaited",
            Self::Approved { .. } => "rollout_approved",
            Self::Paused { .. } => "rollout_paused",
            Self::Resumed { .. } => "rollout_resumed",
            Self::Cancelled => "rollout_cancelled",
            Self::Completed => "rollout_completed",
        }
    }
}

/// One attempt to update one component of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UpdateEvent {
    /// The scheduler released it (its first event): a worker asks the
    /// fleet backend.
    Requested {
        rollout_id: RolloutId,
        wave: u32,
        device_id: DeviceId,
        external_id: String,
        component: String,
        firmware_id: FirmwareId,
        attempt: u32,
    },
    /// A call to the fleet backend failed in a way worth repeating (5xx,
    /// 429, timeout); the worker tries again after a backoff.
    RequestFailed {
        reason: String,
    },
    /// The fleet backend took the request.
    Acknowledged,
    /// The device reported the target version.
    Succeeded,
    /// The fleet backend refused the request.
    Failed {
        reason: String,
    },
    /// The device did not report in time; with `retry_at`, the device is
    /// queued again for another attempt from then.
    TimedOut {
        retry_at: Option<DateTime<Utc>>,
    },
    Cancelled {
        reason: String,
    },
}

impl Event for UpdateEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Requested { .. } => "update_requested",
            Self::RequestFailed { .. } => "update_request_failed",
            Self::Acknowledged => "update_acknowledged",
            Self::Succeeded => "update_succeeded",
            Self::Failed { .. } => "update_failed",
            Self::TimedOut { .. } => "update_timed_out",
            Self::Cancelled { .. } => "update_cancelled",
        }
    }
}

//! The fleet product: firmware per hardware component (its file through the
//! same tus → broker → S3 pipeline as videos, then signed), the devices of
//! the fleet and every version they report, and staged rollouts whose
//! device updates workers send to the fleet backend. Success is the
//! version a device reports, never the backend's answer.

pub mod device;
pub mod domain;
pub mod events;
pub mod firmware;
pub mod jobs;
pub mod queries;
pub mod rollout;
pub mod signing;
pub mod update;

pub use device::{ComponentVersion, Device, DeviceAggregate, DeviceRejection};
pub use domain::{
    DeviceId, ErrorThreshold, FirmwareId, FirmwareStatus, PlannedDevice, RolloutId, RolloutSpec,
    RolloutState, Selection, Target, UpdateId, UpdateState, WaveUnit,
};
pub use events::{DeviceEvent, FirmwareEvent, PausedBy, RolloutEvent, UpdateEvent};
pub use firmware::{Firmware, FirmwareAggregate, FirmwareRejection};
pub use rollout::{Rollout, RolloutAggregate, RolloutRejection};
pub use update::{DeviceUpdate, UpdateAggregate, UpdateRejection};

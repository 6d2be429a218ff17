//! The fleet product's ids, states and rollout settings.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::parse_str(s).ok().map(Self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A firmware version of one hardware type.
    FirmwareId
);
uuid_id!(
    /// A device of the fleet; derived from its external id, so registering
    /// the same device twice names the same aggregate.
    DeviceId
);
uuid_id!(
    /// A rollout of firmware to devices.
    RolloutId
);
uuid_id!(
    /// One attempt to update one component of one device; the idempotency
    /// key of its request to the fleet backend.
    UpdateId
);

impl FirmwareId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for FirmwareId {
    fn default() -> Self {
        Self::new()
    }
}

impl RolloutId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for RolloutId {
    fn default() -> Self {
        Self::new()
    }
}

impl UpdateId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for UpdateId {
    fn default() -> Self {
        Self::new()
    }
}

/// The namespace device ids are derived in.
const DEVICE_NAMESPACE: Uuid = Uuid::from_u128(0x7265_656c_6179_4000_8000_6465_7669_6365);

impl DeviceId {
    /// The id of the device the fleet backend calls `external_id`.
    pub fn of(external_id: &str) -> Self {
        Self(Uuid::new_v5(&DEVICE_NAMESPACE, external_id.as_bytes()))
    }
}

/// Where a firmware is in its life. Mirrored by the SQL enum `firmware_status`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "firmware_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum FirmwareStatus {
    /// Created by an admin; its file is not (yet) whole in S3.
    Pending,
    /// Whole, hashed and signed: immutable, usable by rollouts.
    Available,
    /// Taken back by an admin: no new rollout may use it, running ones
    /// that do were paused.
    Withdrawn,
}

/// Where a rollout is. Mirrored by the SQL enum `rollout_state`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "rollout_state", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    /// Created; nothing is sent until an admin starts it.
    Draft,
    /// The scheduler opens its waves and releases device updates.
    Running,
    /// By an admin, by the error threshold, or because a target firmware
    /// was withdrawn: nothing new is released; updates in flight finish.
    Paused,
    /// Every wave ended (terminal).
    Completed,
    /// By an admin: queued updates cancelled, updates in flight cancelled
    /// at the fleet backend (terminal).
    Cancelled,
}

impl RolloutState {
    /// Devices may still be added to it, and it holds its devices' slots.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

/// Where one device update is. Mirrored by the SQL enum `device_update_state`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "device_update_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Waiting for its wave, a slot in flight, and its retry time.
    Queued,
    /// Released by the scheduler: a worker is asking the fleet backend.
    Requested,
    /// The fleet backend took the request (2xx); waiting for the device to
    /// report the target version.
    Acknowledged,
    /// The device reported the target version (terminal).
    Succeeded,
    /// The fleet backend refused it (4xx) (terminal).
    Failed,
    /// The device did not report the target version in time (terminal; a
    /// retry is a new update).
    TimedOut,
    /// Its rollout was cancelled (terminal).
    Cancelled,
}

impl UpdateState {
    pub const ALL: [UpdateState; 7] = [
        Self::Queued,
        Self::Requested,
        Self::Acknowledged,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Requested => "requested",
            Self::Acknowledged => "acknowledged",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }

    /// Sent to the backend and not finished: it holds a slot in flight.
    pub fn in_flight(self) -> bool {
        matches!(self, Self::Requested | Self::Acknowledged)
    }

    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Requested | Self::Acknowledged)
    }
}

/// How the devices of a rollout are split into waves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaveUnit {
    /// Each wave is a share of the devices; the shares add up to 100.
    Percent,
    /// Each wave is a number of devices; what is left joins the last.
    Count,
}

/// When errors pause a rollout by themselves: final failures (failed or
/// timed out with no retry left) in one wave.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorThreshold {
    /// This many.
    Count(u32),
    /// This share of the wave (0 < share ≤ 1).
    Share(f64),
}

impl ErrorThreshold {
    pub fn crossed(self, errors: u32, wave_size: u32) -> bool {
        match self {
            Self::Count(n) => errors >= n.max(1),
            Self::Share(share) => {
                wave_size > 0 && f64::from(errors) >= share * f64::from(wave_size)
            }
        }
    }
}

/// Which devices a rollout is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RolloutSelection)]
pub enum Selection {
    /// Exactly these (external ids).
    Devices(Vec<String>),
    /// Every device of these models (all when none is named) whose
    /// component runs a version_num below `version_below` (a device that
    /// never reported the component counts as below). Devices that
    /// register while the rollout runs and match join its last wave.
    Filter {
        models: Option<Vec<String>>,
        version_below: Option<i64>,
    },
}

/// A firmware a rollout brings, and the component it is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = RolloutTarget)]
pub struct Target {
    pub firmware_id: FirmwareId,
    pub component: String,
}

/// One device in a rollout's plan, and which of its targets (indices into
/// the spec's `targets`) it gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDevice {
    pub external_id: String,
    pub targets: Vec<u8>,
}

/// What an admin asks for when creating a rollout (fixed in its `Created`
/// event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutSpec {
    pub name: Option<String>,
    /// One firmware per component.
    pub targets: Vec<Target>,
    pub selection: Selection,
    pub waves: Vec<u32>,
    pub wave_unit: WaveUnit,
    /// Updates requested and not finished, at most.
    pub max_in_flight: u32,
    /// Update requests per second to the fleet backend, at most.
    pub rate_per_sec: u32,
    /// The share of a wave that must succeed before the next starts.
    pub success_threshold: f64,
    /// Whether each next wave also waits for an admin's approval.
    pub require_approval: bool,
    pub error_threshold: ErrorThreshold,
    /// Requested to reported, at most, per attempt.
    pub device_timeout_secs: u64,
    /// Attempts after the first for a device that timed out.
    pub retries: u32,
    /// The wait before the first retry; it doubles with each.
    pub retry_backoff_secs: u64,
    /// Whether devices running a newer version may be taken back.
    pub allow_downgrade: bool,
}

impl RolloutSpec {
    /// Splits `devices` into waves by the spec.
    pub fn wave_sizes(&self, devices: usize) -> Vec<u32> {
        let n = devices as u64;
        let mut sizes: Vec<u32> = match self.wave_unit {
            WaveUnit::Count => {
                let mut left = n;
                self.waves
                    .iter()
                    .map(|&count| {
                        let take = u64::from(count).min(left);
                        left -= take;
                        take as u32
                    })
                    .collect()
            }
            WaveUnit::Percent => {
                // Cumulative rounding, so the sizes add up to n exactly.
                let mut cumulative = 0u64;
                let mut assigned = 0u64;
                self.waves
                    .iter()
                    .map(|&percent| {
                        cumulative += u64::from(percent);
                        let upto = (n * cumulative).div_ceil(100).min(n);
                        let size = upto - assigned;
                        assigned = upto;
                        size as u32
                    })
                    .collect()
            }
        };
        let total: u64 = sizes.iter().map(|&s| u64::from(s)).sum();
        if let Some(last) = sizes.last_mut() {
            *last += (n - total.min(n)) as u32;
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(waves: Vec<u32>, unit: WaveUnit) -> RolloutSpec {
        RolloutSpec {
            name: None,
            targets: vec![],
            selection: Selection::Devices(vec![]),
            waves,
            wave_unit: unit,
            max_in_flight: 1,
            rate_per_sec: 1,
            success_threshold: 1.0,
            require_approval: false,
            error_threshold: ErrorThreshold::Count(1),
            device_timeout_secs: 1,
            retries: 0,
            retry_backoff_secs: 1,
            allow_downgrade: false,
        }
    }

    #[test]
    fn waves_split_every_device_exactly_once() {
        let percent = spec(vec![10, 40, 50], WaveUnit::Percent);
        assert_eq!(percent.wave_sizes(2000), [200, 800, 1000]);
        assert_eq!(percent.wave_sizes(7), [1, 3, 3]);
        assert_eq!(percent.wave_sizes(0), [0, 0, 0]);
        for n in [1, 3, 99, 101, 1001] {
            assert_eq!(percent.wave_sizes(n).iter().sum::<u32>() as usize, n);
        }
        let counts = spec(vec![5, 10], WaveUnit::Count);
        assert_eq!(counts.wave_sizes(100), [5, 95]);
        assert_eq!(counts.wave_sizes(8), [5, 3]);
    }

    #[test]
    fn a_device_id_is_the_same_for_the_same_external_id() {
        assert_eq!(DeviceId::of("scooter-1"), DeviceId::of("scooter-1"));
        assert_ne!(DeviceId::of("scooter-1"), DeviceId::of("scooter-2"));
    }

    #[test]
    fn error_thresholds_count_or_share_a_wave() {
        assert!(ErrorThreshold::Count(3).crossed(3, 100));
        assert!(!ErrorThreshold::Count(3).crossed(2, 100));
        assert!(ErrorThreshold::Share(0.1).crossed(10, 100));
        assert!(!ErrorThreshold::Share(0.1).crossed(9, 100));
    }
}

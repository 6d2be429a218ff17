//! Rollouts: created as drafts by an admin, started (the plan: which device
//! components, in which wave), then driven by the scheduler; an admin
//! pauses, resumes, approves the next wave or cancels.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use reelay_shared::{
    UserId,
    fleet::{
        ErrorThreshold, Firmware, FirmwareId, FirmwareStatus, PausedBy, PlannedDevice, Rollout,
        RolloutEvent, RolloutId, RolloutRejection, RolloutSpec, RolloutState, Selection, Target,
        UpdateEvent, UpdateId, UpdateRejection, UpdateState, WaveUnit,
        jobs::{self, FleetJob},
    },
};
use serde::{Deserialize, Serialize};

use super::devices::check_external_id;
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// The body of `POST /v1/fleet/rollouts`; every field but `targets` and the
/// selection has a default. Exactly one of `devices` and `filter` is given.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// At most 200 characters.
    #[schema(max_length = 200, pattern = r"^[^\x00]*$")]
    pub name: Option<String>,
    /// Firmware ids, one per component: available firmware, 1 to 16.
    #[schema(value_type = Vec<uuid::Uuid>, min_items = 1, max_items = 16)]
    pub targets: Vec<String>,
    /// Exactly these devices (external ids of registered devices, 1 to
    /// 100,000)…
    #[schema(
        min_items = 1,
        max_items = 100_000,
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$"
    )]
    pub devices: Option<Vec<String>>,
    /// …or the devices a filter selects.
    pub filter: Option<Filter>,
    /// Wave sizes: percentages adding up to 100 (default `[100]`), or
    /// counts with `"wave_unit": "count"`; 1 to 100 waves, each above 0.
    #[schema(
        min_items = 1,
        max_items = 100,
        minimum = 1,
        maximum = 4_294_967_295u32
    )]
    pub waves: Option<Vec<u32>>,
    /// `percent` when absent.
    pub wave_unit: Option<WaveUnit>,
    /// 100 when absent.
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_in_flight: Option<u32>,
    /// 50 when absent.
    #[schema(minimum = 1, maximum = 10_000)]
    pub rate_per_sec: Option<u32>,
    /// Above 0, at most 1; 1 when absent.
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub success_threshold: Option<f64>,
    /// False when absent.
    pub require_approval: Option<bool>,
    /// `{"count": n}` or `{"share": 0.1}` of a wave (default a tenth).
    #[schema(schema_with = crate::routes::fleet::rollouts::new_error_threshold)]
    pub error_threshold: Option<ErrorThreshold>,
    /// 600 when absent.
    #[schema(minimum = 1, maximum = 604_800)]
    pub device_timeout_secs: Option<u64>,
    /// 2 when absent.
    #[schema(minimum = 0, maximum = 20)]
    pub retries: Option<u32>,
    /// 30 when absent.
    #[schema(minimum = 0, maximum = 86_400)]
    pub retry_backoff_secs: Option<u64>,
    /// False when absent.
    pub allow_downgrade: Option<bool>,
}

/// Which devices a rollout is for, by model and version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RolloutFilter)]
pub struct Filter {
    /// Known models (every model when absent).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_]+$")]
    pub models: Option<Vec<String>>,
    /// Only device components that run a version_num below this (or never
    /// reported one).
    #[schema(minimum = 0)]
    pub version_below: Option<i64>,
}

fn bad(why: impl Into<String>) -> ApiError {
    ApiError::BadRequest(why.into())
}

fn within<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    low: T,
    high: T,
) -> ApiResult<T> {
    match value >= low && value <= high {
        true => Ok(value),
        false => Err(bad(format!("{name} must be between {low} and {high}"))),
    }
}

/// Validates a new rollout into its spec: 400 for what is malformed or
/// unknown, 409 for firmware that is not available or a downgrade the spec
/// does not allow.
pub async fn create(state: &AppState, admin: UserId, new: NewRollout) -> ApiResult<RolloutId> {
    crate::text::check_opt("name", new.name.as_deref(), 200)?;
    if new.targets.is_empty() || new.targets.len() > 16 {
        return Err(bad("targets must name 1 to 16 firmware ids"));
    }
    let mut targets = Vec::new();
    let mut firmware = Vec::new();
    for id in &new.targets {
        let id =
            FirmwareId::parse(id).ok_or_else(|| bad(format!("'{id}' is not a firmware id")))?;
        let f = state
            .store
            .firmware(id)
            .await?
            .ok_or_else(|| ApiError::Missing(format!("unknown firmware {id}")))?;
        if f.status != FirmwareStatus::Available {
            return Err(ApiError::WrongState(format!(
                "firmware {id} is {:?}, not available",
                f.status
            )));
        }
        if targets
            .iter()
            .any(|t: &Target| t.component == f.hardware_type)
        {
            return Err(bad(format!(
                "two targets for {}: one firmware per component",
                f.hardware_type
            )));
        }
        targets.push(Target {
            firmware_id: id,
            component: f.hardware_type.clone(),
        });
        firmware.push(f);
    }
    let models: Vec<String> = state
        .store
        .device_models()
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let selection = match (new.devices, new.filter) {
        (Some(devices), None) => {
            if devices.is_empty() || devices.len() > 100_000 {
                return Err(bad("devices must name 1 to 100000 devices"));
            }
            for (i, d) in devices.iter().enumerate() {
                check_external_id(d).map_err(|e| bad(format!("devices[{i}]: {e}")))?;
            }
            let known: Vec<(String,)> = sqlx::query_as(
                "SELECT u.e FROM unnest($1::text[]) AS u (e) \
                 LEFT JOIN fleet_devices d ON d.external_id = u.e WHERE d.id IS NULL LIMIT 1",
            )
            .bind(&devices)
            .fetch_all(state.store.pool())
            .await?;
            if let Some((unknown,)) = known.first() {
                return Err(ApiError::Missing(format!(
                    "device '{unknown}' is not registered"
                )));
            }
            Selection::Devices(devices)
        }
        (None, Some(filter)) => {
            if let Some(m) = filter.models.iter().flatten().find(|m| !models.contains(m)) {
                return Err(ApiError::Missing(format!("filter: unknown model '{m}'")));
            }
            if filter.version_below.is_some_and(|n| n < 0) {
                return Err(bad("filter: version_below must not be negative"));
            }
            Selection::Filter {
                models: filter.models,
                version_below: filter.version_below,
            }
        }
        _ => return Err(bad("give either devices (external ids) or a filter")),
    };
    let wave_unit = new.wave_unit.unwrap_or(WaveUnit::Percent);
    let waves = new.waves.unwrap_or_else(|| vec![100]);
    if waves.is_empty() || waves.len() > 100 {
        return Err(bad("waves must have 1 to 100 entries"));
    }
    if waves.contains(&0) {
        return Err(bad("every wave must be above 0"));
    }
    if wave_unit == WaveUnit::Percent && waves.iter().map(|w| u64::from(*w)).sum::<u64>() != 100 {
        return Err(bad("wave percentages must add up to 100"));
    }
    let error_threshold = new.error_threshold.unwrap_or(ErrorThreshold::Share(0.1));
    match error_threshold {
        ErrorThreshold::Count(n) if n >= 1 => {}
        ErrorThreshold::Share(s) if s > 0.0 && s <= 1.0 => {}
        _ => {
            return Err(bad(
                "error_threshold is {\"count\": n ≥ 1} or {\"share\": 0 < s ≤ 1}",
            ));
        }
    }
    let success_threshold = new.success_threshold.unwrap_or(1.0);
    if !(success_threshold > 0.0 && success_threshold <= 1.0) {
        return Err(bad("success_threshold must be above 0 and at most 1"));
    }
    let spec = RolloutSpec {
        name: new.name,
        targets,
        selection,
        waves,
        wave_unit,
        max_in_flight: within(
            "max_in_flight",
            new.max_in_flight.unwrap_or(100),
            1,
            100_000,
        )?,
        rate_per_sec: within("rate_per_sec", new.rate_per_sec.unwrap_or(50), 1, 10_000)?,
        success_threshold,
        require_approval: new.require_approval.unwrap_or(false),
        error_threshold,
        device_timeout_secs: within(
            "device_timeout_secs",
            new.device_timeout_secs.unwrap_or(600),
            1,
            604_800,
        )?,
        retries: within("retries", new.retries.unwrap_or(2), 0, 20)?,
        retry_backoff_secs: within(
            "retry_backoff_secs",
            new.retry_backoff_secs.unwrap_or(30),
            0,
            86_400,
        )?,
        allow_downgrade: new.allow_downgrade.unwrap_or(false),
    };
    if let Selection::Devices(devices) = &spec.selection
        && !spec.allow_downgrade
    {
        refuse_downgrades(state, devices, &firmware).await?;
    }
    let id = RolloutId::new();
    let created = RolloutEvent::Created {
        spec,
        created_by: admin,
    };
    state
        .store
        .append(id, |current| match current {
            None => Ok((vec![created], ())),
            Some(_) => Err(RolloutRejection::AlreadyExists),
        })
        .await?;
    tracing::info!(rollout.id = %id, "rollout created");
    Ok(id)
}

/// 409 naming the first device that runs a newer version of a target's
/// component than the target.
async fn refuse_downgrades(
    state: &AppState,
    devices: &[String],
    firmware: &[Firmware],
) -> ApiResult<()> {
    for f in firmware {
        let newer: Option<(String, String)> = sqlx::query_as(
            "SELECT d.external_id, c.version FROM fleet_devices d \
             JOIN device_firmware c ON c.device_id = d.id AND c.component = $2 \
             WHERE d.external_id = ANY($1) AND c.version_num > $3 LIMIT 1",
        )
        .bind(devices)
        .bind(&f.hardware_type)
        .bind(f.version_num)
        .fetch_optional(state.store.pool())
        .await?;
        if let Some((device, version)) = newer {
            return Err(ApiError::WrongState(format!(
                "device '{device}' runs {} {version}, newer than {}: a downgrade (set allow_downgrade)",
                f.hardware_type, f.version
            )));
        }
    }
    Ok(())
}

/// A candidate device: its model, and per component what it runs.
#[derive(sqlx::FromRow)]
struct Candidate {
    external_id: String,
    model: String,
    components: Vec<String>,
    reported: sqlx::types::Json<HashMap<String, Option<i64>>>,
    busy: Vec<String>,
}

/// Starts a draft: resolves its devices into a plan split into waves and
/// opens the first wave. Devices already running a target, running a newer
/// version (unless downgrades are allowed), of a model the firmware is not
/// for, or busy in another rollout's open update are left out of a
/// filter's plan; for an explicit list they make the start a 409.
pub async fn start(state: &AppState, id: RolloutId) -> ApiResult<Rollout> {
    let rollout = state
        .store
        .rollout(id)
        .await?
        .ok_or(ApiError::NoSuch("rollout"))?;
    rollout.require(&[RolloutState::Draft], "started")?;
    let spec = rollout.spec.0.clone();
    let mut firmware = Vec::new();
    for target in &spec.targets {
        let f = state
            .store
            .firmware(target.firmware_id)
            .await?
            .ok_or(ApiError::NoSuch("firmware"))?;
        if f.status != FirmwareStatus::Available {
            return Err(ApiError::WrongState(format!(
                "firmware {} is {:?}, not available",
                f.id, f.status
            )));
        }
        firmware.push(f);
    }
    let mut tx = state.store.begin().await?;
    // Starts one at a time, so two never plan the same device component.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(START_LOCK)
        .execute(&mut *tx.conn())
        .await?;
    let (explicit, models, version_below) = match &spec.selection {
        Selection::Devices(devices) => (Some(devices.clone()), None, None),
        Selection::Filter {
            models,
            version_below,
        } => (None, models.clone(), *version_below),
    };
    let candidates: Vec<Candidate> = sqlx::query_as(
        "SELECT d.external_id, d.model, m.components, \
           coalesce((SELECT jsonb_object_agg(c.component, c.version_num) FROM device_firmware c \
                     WHERE c.device_id = d.id), '{}') AS reported, \
           coalesce((SELECT array_agg(p.component) FROM rollout_devices p WHERE p.device_id = d.id \
                     AND p.state IN ('queued', 'requested', 'acknowledged')), '{}') AS busy \
         FROM fleet_devices d JOIN device_models m ON m.name = d.model \
         WHERE ($1::text[] IS NULL OR d.external_id = ANY($1)) \
           AND ($2::text[] IS NULL OR d.model = ANY($2)) \
         ORDER BY d.external_id",
    )
    .bind(&explicit)
    .bind(&models)
    .fetch_all(&mut *tx.conn())
    .await?;
    let mut planned = Vec::new();
    let mut refused = Vec::new();
    for c in candidates {
        let mut targets = Vec::new();
        for (i, f) in firmware.iter().enumerate() {
            if !c.components.contains(&f.hardware_type) || !f.models.contains(&c.model) {
                continue;
            }
            let runs = c.reported.get(&f.hardware_type).copied().flatten();
            if runs == Some(f.version_num) {
                continue;
            }
            if let Some(below) = version_below
                && runs.is_some_and(|n| n >= below)
            {
                continue;
            }
            if runs.is_some_and(|n| n > f.version_num) && !spec.allow_downgrade {
                refused.push(format!(
                    "'{}' runs a newer {}",
                    c.external_id, f.hardware_type
                ));
                continue;
            }
            if c.busy.contains(&f.hardware_type) {
                refused.push(format!(
                    "'{}' is in another rollout's update of {}",
                    c.external_id, f.hardware_type
                ));
                continue;
            }
            targets.push(i as u8);
        }
        if !targets.is_empty() {
            planned.push(PlannedDevice {
                external_id: c.external_id,
                targets,
            });
        }
    }
    if explicit.is_some() && !refused.is_empty() {
        return Err(ApiError::WrongState(format!(
            "{} device(s) can't take part, e.g. {}",
            refused.len(),
            refused[0]
        )));
    }
    let mut waves = Vec::new();
    let mut rest = planned.into_iter();
    for size in spec.wave_sizes(rest.len()) {
        waves.push(rest.by_ref().take(size as usize).collect::<Vec<_>>());
    }
    let devices: usize = waves.iter().map(Vec::len).sum();
    tx.append(id, |current| {
        let r = current.as_ref().ok_or(RolloutRejection::NotFound)?;
        r.require(&[RolloutState::Draft], "started")?;
        Ok((
            vec![
                RolloutEvent::Started { waves },
                RolloutEvent::WaveStarted { wave: 0 },
            ],
            (),
        ))
    })
    .await?;
    tx.commit().await?;
    tracing::info!(rollout.id = %id, devices, "rollout started");
    state
        .store
        .rollout(id)
        .await?
        .ok_or(ApiError::NoSuch("rollout"))
}

/// The advisory lock that serialises rollout starts.
const START_LOCK: i64 = 0x7265_656c_6179_0002;

/// An admin's command on a rollout.
#[derive(Clone, Copy, Debug)]
pub enum Command {
    Pause,
    Resume,
    Cancel,
    Approve,
}

/// Pauses, resumes, cancels or approves; 409 when the rollout's state does
/// not allow it.
pub async fn command(state: &AppState, id: RolloutId, command: Command) -> ApiResult<Rollout> {
    let rollout = state
        .store
        .rollout(id)
        .await?
        .ok_or(ApiError::NoSuch("rollout"))?;
    if let Command::Resume = command {
        for target in &rollout.spec.targets {
            let withdrawn = state
                .store
                .firmware(target.firmware_id)
                .await?
                .is_some_and(|f| f.status == FirmwareStatus::Withdrawn);
            if withdrawn {
                return Err(ApiError::WrongState(format!(
                    "firmware {} was withdrawn; the rollout can't resume",
                    target.firmware_id
                )));
            }
        }
    }
    // Failures so far per wave: a resume accepts them (see Resumed).
    let mut error_baseline: Vec<u32> = Vec::new();
    for c in state.store.rollout_counts(id).await? {
        if matches!(c.state, UpdateState::Failed | UpdateState::TimedOut) {
            let wave = c.wave.max(0) as usize;
            if error_baseline.len() <= wave {
                error_baseline.resize(wave + 1, 0);
            }
            error_baseline[wave] += c.devices as u32;
        }
    }
    let mut tx = state.store.begin().await?;
    tx.append(id, |current| {
        let r = current.as_ref().ok_or(RolloutRejection::NotFound)?;
        let events = match command {
            Command::Pause => {
                r.require(&[RolloutState::Running], "paused")?;
                vec![RolloutEvent::Paused {
                    by: PausedBy::Admin,
                    reason: "paused by an admin".into(),
                }]
            }
            Command::Resume => {
                r.require(&[RolloutState::Paused], "resumed")?;
                vec![RolloutEvent::Resumed { error_baseline }]
            }
            Command::Cancel => {
                r.require(
                    &[
                        RolloutState::Draft,
                        RolloutState::Running,
                        RolloutState::Paused,
                    ],
                    "cancelled",
                )?;
                vec![RolloutEvent::Cancelled]
            }
            Command::Approve => {
                r.require(&[RolloutState::Running, RolloutState::Paused], "approved")?;
                if !r.awaiting_approval {
                    return Err(RolloutRejection::NotAwaitingApproval);
                }
                let wave = r.current_wave as u32;
                let mut events = vec![
                    RolloutEvent::Approved { wave },
                    RolloutEvent::WaveStarted { wave: wave + 1 },
                ];
                // Paused because the wave ended below the success
                // threshold: approving is going on anyway.
                if r.state == RolloutState::Paused {
                    events.push(RolloutEvent::Resumed { error_baseline });
                }
                events
            }
        };
        Ok((events, ()))
    })
    .await?;
    let mut cancelled = Vec::new();
    if let Command::Cancel = command {
        let in_flight: Vec<(UpdateId,)> = sqlx::query_as(
            "SELECT update_id FROM rollout_devices WHERE rollout_id = $1 \
             AND state IN ('requested', 'acknowledged') ORDER BY update_id",
        )
        .bind(id)
        .fetch_all(&mut *tx.conn())
        .await?;
        for (update,) in in_flight {
            let was = tx
                .append(update, |current| {
                    let u = current.as_ref().ok_or(UpdateRejection::NotFound)?;
                    Ok(match u.state.in_flight() {
                        true => (
                            vec![UpdateEvent::Cancelled {
                                reason: "the rollout was cancelled".into(),
                            }],
                            true,
                        ),
                        false => (vec![], false),
                    })
                })
                .await?;
            if was {
                cancelled.push(update);
            }
        }
    }
    // The fleet backend drops what it was asked for; a job retries until it
    // has (the updates are cancelled here whatever it answers). Written
    // with the cancel, so a crash before publishing loses none.
    let withdraw: Vec<FleetJob> = cancelled.into_iter().map(FleetJob::Cancel).collect();
    jobs::enqueue(tx.conn(), &withdraw).await?;
    tx.commit().await?;
    if !withdraw.is_empty() {
        // In the background: the answer does not wait on the broker, and
        // the rollout driver's next pass relays whatever this does not.
        let (pool, publisher) = (state.store.pool().clone(), state.publisher.clone());
        tokio::spawn(async move {
            if let Err(e) = jobs::relay(&pool, &publisher).await {
                tracing::warn!(error = %e, "cancel jobs wait in the outbox for the rollout driver");
            }
        });
    }
    tracing::info!(rollout.id = %id, ?command, "rollout command");
    state
        .store
        .rollout(id)
        .await?
        .ok_or(ApiError::NoSuch("rollout"))
}

/// A rollout as the console and the API show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    pub id: RolloutId,
    pub name: Option<String>,
    pub state: RolloutState,
    pub current_wave: i32,
    pub awaiting_approval: bool,
    pub paused_reason: Option<String>,
    /// Device components by state, over all waves.
    #[schema(value_type = crate::routes::fleet::rollouts::StateCounts)]
    pub counts: BTreeMap<&'static str, i64>,
    pub waves: Vec<WaveView>,
    /// Device components that succeeded per second over the last 10 s.
    pub current_rate_per_sec: f64,
    /// Seconds until every device component is done at the current rate.
    pub eta_secs: Option<u64>,
    pub spec: RolloutSpec,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One wave of a rollout.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RolloutWave)]
pub struct WaveView {
    pub wave: i32,
    /// Devices in it.
    pub size: i32,
    pub started_at: Option<DateTime<Utc>>,
    /// Its device components by state.
    #[schema(value_type = crate::routes::fleet::rollouts::StateCounts)]
    pub counts: BTreeMap<&'static str, i64>,
}

fn empty_counts() -> BTreeMap<&'static str, i64> {
    UpdateState::ALL.iter().map(|s| (s.as_str(), 0)).collect()
}

pub async fn view(state: &AppState, id: RolloutId) -> ApiResult<RolloutView> {
    let rollout = state
        .store
        .rollout(id)
        .await?
        .ok_or(ApiError::NoSuch("rollout"))?;
    let mut waves: Vec<WaveView> = state
        .store
        .rollout_waves(id)
        .await?
        .into_iter()
        .map(|w| WaveView {
            wave: w.wave,
            size: w.size,
            started_at: w.started_at,
            counts: empty_counts(),
        })
        .collect();
    let mut counts = empty_counts();
    for c in state.store.rollout_counts(id).await? {
        *counts.entry(c.state.as_str()).or_default() += c.devices;
        if let Some(w) = waves.iter_mut().find(|w| w.wave == c.wave) {
            *w.counts.entry(c.state.as_str()).or_default() += c.devices;
        }
    }
    let window = chrono::Duration::seconds(10);
    let recent = state
        .store
        .rollout_succeeded_since(id, Utc::now() - window)
        .await?;
    let rate = recent as f64 / window.num_seconds() as f64;
    let open = counts["queued"] + counts["requested"] + counts["acknowledged"];
    let eta_secs = match (rollout.state, rate > 0.0) {
        (RolloutState::Completed | RolloutState::Cancelled, _) => Some(0),
        (_, true) => Some((open as f64 / rate).ceil() as u64),
        _ => None,
    };
    Ok(RolloutView {
        id: rollout.id,
        name: rollout.name,
        state: rollout.state,
        current_wave: rollout.current_wave,
        awaiting_approval: rollout.awaiting_approval,
        paused_reason: rollout.paused_reason,
        counts,
        waves,
        current_rate_per_sec: rate,
        eta_secs,
        spec: rollout.spec.0,
        created_at: rollout.created_at,
        started_at: rollout.started_at,
        finished_at: rollout.finished_at,
    })
}

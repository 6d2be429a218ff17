//! Devices, registered and reported in bulk by the fleet backend. Every
//! report is an event; a report of a device's target version ends its open
//! update as succeeded, in the same transaction.
//!
//! Reports go through a batcher: requests that arrive while a transaction
//! runs are written together in the next one (group commit), so many small
//! requests cost a few transactions, not one each. A request whose devices
//! are unknown is refused alone; the others in its batch go on.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use reelay_shared::{
    fleet::{
        DeviceEvent, DeviceId, DeviceRejection, FirmwareId, PlannedDevice, RolloutEvent, RolloutId,
        RolloutRejection, RolloutSpec, Selection, UpdateEvent, UpdateId, UpdateRejection,
    },
    store::{AppendTx, Store},
};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::{ApiError, ApiResult};

/// The most devices or reports one request may carry.
pub const MAX_BATCH: usize = 1000;

/// Checks an external id: 1 to 128 printable characters.
pub fn check_external_id(id: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&id.chars().count())
        && id.chars().all(|c| !c.is_control() && !c.is_whitespace());
    match ok {
        true => Ok(()),
        false => Err(format!(
            "external id '{}' must be 1 to 128 characters without spaces",
            id.chars().take(40).collect::<String>()
        )),
    }
}

/// One device to register.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = DeviceRegistration)]
pub struct Registration {
    /// The fleet backend's id of the device: 1 to 128 characters, no
    /// spaces or control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$"
    )]
    pub external_id: String,
    /// A known device model (`GET /v1/fleet/models`).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_]+$")]
    pub model: String,
}

/// What a registration did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = DevicesRegistered)]
pub struct Registered {
    /// New devices.
    pub registered: u32,
    /// Known devices whose model changed.
    pub updated: u32,
    /// Known devices, as they were.
    pub unchanged: u32,
    /// New devices that joined running rollouts' last waves.
    pub joined_rollouts: u32,
}

/// Registers devices (idempotent by external id). New devices that match a
/// running rollout's filter join its last wave.
pub async fn register(store: &Store, devices: Vec<Registration>) -> ApiResult<Registered> {
    if devices.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH} devices per request"
        )));
    }
    let models: HashMap<String, Vec<String>> = store
        .device_models()
        .await?
        .into_iter()
        .map(|m| (m.name, m.components))
        .collect();
    for (i, device) in devices.iter().enumerate() {
        check_external_id(&device.external_id)
            .map_err(|e| ApiError::BadRequest(format!("devices[{i}]: {e}")))?;
        if !models.contains_key(&device.model) {
            return Err(ApiError::Missing(format!(
                "devices[{i}]: unknown model '{}'",
                device.model
            )));
        }
    }
    // One registration per device (the last wins), in id order: two
    // requests never lock the same devices in opposite orders.
    let mut by_id: HashMap<DeviceId, Registration> = HashMap::new();
    for device in devices {
        by_id.insert(DeviceId::of(&device.external_id), device);
    }
    let mut ordered: Vec<(DeviceId, Registration)> = by_id.into_iter().collect();
    ordered.sort_by_key(|(id, _)| *id);
    let mut tx = store.begin().await?;
    let mut outcome = Registered::default();
    let ids: Vec<DeviceId> = ordered.iter().map(|(id, _)| *id).collect();
    let wanted: HashMap<DeviceId, &Registration> = ordered.iter().map(|(id, d)| (*id, d)).collect();
    let changes = tx
        .append_many(&ids, |id, current| {
            let device = wanted[&id];
            let event = DeviceEvent::Registered {
                external_id: device.external_id.clone(),
                model: device.model.clone(),
            };
            Ok::<_, DeviceRejection>(match current {
                None => (vec![event], 0),
                Some(d) if d.model != device.model => (vec![event], 1),
                Some(_) => (vec![], 2),
            })
        })
        .await?;
    let mut new_devices = Vec::new();
    for ((_, device), change) in ordered.iter().zip(changes) {
        match change {
            0 => {
                outcome.registered += 1;
                new_devices.push(device.clone());
            }
            1 => outcome.updated += 1,
            _ => outcome.unchanged += 1,
        }
    }
    outcome.joined_rollouts = join_running_rollouts(&mut tx, &models, &new_devices).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Adds new devices to the last wave of every running (or paused) rollout
/// whose filter they match; returns how many joined.
async fn join_running_rollouts(
    tx: &mut AppendTx,
    models: &HashMap<String, Vec<String>>,
    devices: &[Registration],
) -> ApiResult<u32> {
    if devices.is_empty() {
        return Ok(0);
    }
    let rollouts: Vec<(RolloutId, Json<RolloutSpec>, i32)> = sqlx::query_as(
        "SELECT r.id, r.spec, (SELECT max(wave) FROM rollout_waves w WHERE w.rollout_id = r.id) \
         FROM rollouts r WHERE r.state IN ('running', 'paused') AND r.spec->'selection' ? 'filter' \
         ORDER BY r.id",
    )
    .fetch_all(&mut *tx.conn())
    .await?;
    let mut joined = 0;
    for (rollout, spec, last_wave) in rollouts {
        let Selection::Filter { models: wanted, .. } = &spec.selection else {
            continue;
        };
        let planned: Vec<PlannedDevice> = devices
            .iter()
            .filter(|d| wanted.as_ref().is_none_or(|w| w.contains(&d.model)))
            .filter_map(|d| {
                // A new device has reported nothing: it runs "below" any
                // version, so every target for a component it has applies.
                let components = models.get(&d.model)?;
                let targets: Vec<u8> = spec
                    .targets
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| components.contains(&t.component))
                    .map(|(i, _)| i as u8)
                    .collect();
                (!targets.is_empty()).then(|| PlannedDevice {
                    external_id: d.external_id.clone(),
                    targets,
                })
            })
            .collect();
        if planned.is_empty() {
            continue;
        }
        let count = planned.len() as u32;
        let event = RolloutEvent::DevicesJoined {
            wave: last_wave.max(0) as u32,
            devices: planned,
        };
        tx.append(rollout, |current| {
            let r = current.as_ref().ok_or(RolloutRejection::NotFound)?;
            Ok(match r.state.is_active() {
                true => (vec![event], count),
                false => (vec![], 0),
            })
        })
        .await
        .map(|n| joined += n)?;
    }
    Ok(joined)
}

/// What one component of one device runs.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = VersionReport)]
pub struct Report {
    /// The device's external id (a registered device).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$"
    )]
    pub device: String,
    /// A hardware type the device's model has.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_]+$")]
    pub component: String,
    /// The vendor's version string: 1 to 64 characters, no control
    /// characters.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub version: String,
}

/// What a batch of reports did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = ReportsRecorded)]
pub struct Reported {
    /// Reports recorded (each an event).
    pub recorded: u32,
    /// Device updates that ended succeeded because of them.
    pub succeeded: u32,
}

type Reply = oneshot::Sender<ApiResult<Reported>>;

/// Writes reports in batches; see the module's doc.
#[derive(Clone)]
pub struct Reports {
    queue: mpsc::Sender<(Vec<Report>, Reply)>,
}

/// Reports one transaction takes at most (requests are never split).
const REPORTS_PER_TRANSACTION: usize = 2000;
/// Transactions writing reports at once.
const WRITERS: usize = 2;

impl Reports {
    pub fn start(store: Store) -> Self {
        let (queue, requests) = mpsc::channel::<(Vec<Report>, Reply)>(4096);
        let requests = Arc::new(Mutex::new(requests));
        for _ in 0..WRITERS {
            let (store, requests) = (store.clone(), requests.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut requests = requests.lock().await;
                        let Some(first) = requests.recv().await else {
                            return;
                        };
                        let mut total = first.0.len();
                        let mut batch = vec![first];
                        while total < REPORTS_PER_TRANSACTION {
                            match requests.try_recv() {
                                Ok(next) => {
                                    total += next.0.len();
                                    batch.push(next);
                                }
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    write_batch(&store, batch).await;
                }
            });
        }
        Self { queue }
    }

    /// Records `reports` (validated for shape by the caller); 400 when a
    /// device is unknown or lacks the component.
    pub async fn record(&self, reports: Vec<Report>) -> ApiResult<Reported> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((reports, reply))
            .await
            .map_err(|_| ApiError::Unavailable("the report writer stopped"))?;
        answer
            .await
            .map_err(|_| ApiError::Unavailable("the report writer stopped"))?
    }
}

/// Checks a report's fields (the devices are checked when written).
pub fn check_report(i: usize, report: &Report) -> ApiResult<()> {
    check_external_id(&report.device)
        .map_err(|e| ApiError::BadRequest(format!("reports[{i}]: {e}")))?;
    let component_ok = (1..=64).contains(&report.component.len())
        && report
            .component
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !component_ok {
        return Err(ApiError::BadRequest(format!(
            "reports[{i}]: component must be a hardware type name"
        )));
    }
    let version_ok = (1..=64).contains(&report.version.chars().count())
        && report.version.chars().all(|c| !c.is_control());
    if !version_ok {
        return Err(ApiError::BadRequest(format!(
            "reports[{i}]: version must be 1 to 64 characters"
        )));
    }
    Ok(())
}

/// One transaction for a batch of requests; each gets its own answer. If
/// the transaction fails, every request of the batch gets the error.
async fn write_batch(store: &Store, batch: Vec<(Vec<Report>, Reply)>) {
    let (requests, replies): (Vec<Vec<Report>>, Vec<Reply>) = batch.into_iter().unzip();
    match write(store, &requests).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, requests = replies.len(), "writing reports failed");
            for reply in replies {
                let _ = reply.send(Err(ApiError::Internal(anyhow::anyhow!(
                    "writing reports: {e}"
                ))));
            }
        }
    }
}

/// A device's model and components, for checking reports.
#[derive(sqlx::FromRow)]
struct Known {
    id: DeviceId,
    external_id: String,
    components: Vec<String>,
}

/// An update in flight, its target, and since when.
#[derive(sqlx::FromRow)]
struct InFlight {
    device_id: DeviceId,
    component: String,
    firmware_id: FirmwareId,
    update_id: UpdateId,
    requested_at: DateTime<Utc>,
}

async fn write(
    store: &Store,
    requests: &[Vec<Report>],
) -> Result<Vec<ApiResult<Reported>>, anyhow::Error> {
    let names: Vec<&str> = requests
        .iter()
        .flatten()
        .map(|r| r.device.as_str())
        .collect();
    let known: Vec<Known> = sqlx::query_as(
        "SELECT d.id, d.external_id, m.components FROM fleet_devices d \
         JOIN device_models m ON m.name = d.model WHERE d.external_id = ANY($1)",
    )
    .bind(&names)
    .fetch_all(store.pool())
    .await?;
    let known: HashMap<&str, &Known> = known.iter().map(|k| (k.external_id.as_str(), k)).collect();
    // Each request is written whole or not at all.
    let mut answers: Vec<ApiResult<Reported>> = Vec::with_capacity(requests.len());
    let mut accepted: Vec<(usize, DeviceId, &Report)> = Vec::new();
    for (n, request) in requests.iter().enumerate() {
        let refused =
            request
                .iter()
                .enumerate()
                .find_map(|(i, r)| match known.get(r.device.as_str()) {
                    None => Some(ApiError::Missing(format!(
                        "reports[{i}]: device '{}' is not registered",
                        r.device
                    ))),
                    Some(k) if !k.components.contains(&r.component) => {
                        Some(ApiError::WrongState(format!(
                            "reports[{i}]: device '{}' has no component '{}'",
                            r.device, r.component
                        )))
                    }
                    Some(_) => None,
                });
        match refused {
            Some(refusal) => answers.push(Err(refusal)),
            None => {
                answers.push(Ok(Reported::default()));
                accepted.extend(request.iter().map(|r| (n, known[r.device.as_str()].id, r)));
            }
        }
    }
    if accepted.is_empty() {
        return Ok(answers);
    }
    // The firmware each (component, version) is, when we know it.
    let pairs: Vec<(&str, &str)> = accepted
        .iter()
        .map(|(_, _, r)| (r.component.as_str(), r.version.as_str()))
        .collect();
    let (components, versions): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
    let firmware: Vec<(String, String, FirmwareId, i64)> = sqlx::query_as(
        "SELECT f.hardware_type, f.version, f.id, f.version_num FROM firmware f \
         JOIN unnest($1::text[], $2::text[]) AS p (component, version) \
         ON f.hardware_type = p.component AND f.version = p.version",
    )
    .bind(&components)
    .bind(&versions)
    .fetch_all(store.pool())
    .await?;
    let firmware: HashMap<(&str, &str), (FirmwareId, i64)> = firmware
        .iter()
        .map(|(c, v, id, num)| ((c.as_str(), v.as_str()), (*id, *num)))
        .collect();

    let mut tx = store.begin().await?;
    // Devices in id order: no two writers lock them in opposite orders.
    let mut by_device: Vec<(DeviceId, Vec<(usize, &Report)>)> = Vec::new();
    {
        let mut map: HashMap<DeviceId, Vec<(usize, &Report)>> = HashMap::new();
        for (n, device, report) in &accepted {
            map.entry(*device).or_default().push((*n, report));
        }
        by_device.extend(map);
        by_device.sort_by_key(|(id, _)| *id);
    }
    let mut reported: HashMap<(DeviceId, &str), Option<FirmwareId>> = HashMap::new();
    let ids: Vec<DeviceId> = by_device.iter().map(|(id, _)| *id).collect();
    let mut events: HashMap<DeviceId, Vec<DeviceEvent>> = by_device
        .iter()
        .map(|(device, reports)| {
            let events = reports
                .iter()
                .map(|(_, r)| {
                    let known = firmware.get(&(r.component.as_str(), r.version.as_str()));
                    DeviceEvent::VersionReported {
                        component: r.component.clone(),
                        version: r.version.clone(),
                        firmware_id: known.map(|k| k.0),
                        version_num: known.map(|k| k.1),
                    }
                })
                .collect();
            (*device, events)
        })
        .collect();
    tx.append_many(&ids, |device, current| match current {
        Some(_) => Ok((events.remove(&device).unwrap_or_default(), ())),
        None => Err(DeviceRejection::NotRegistered(device.to_string())),
    })
    .await?;
    for (device, reports) in &by_device {
        for (n, r) in reports {
            if let Ok(answer) = &mut answers[*n] {
                answer.recorded += 1;
            }
            let known = firmware.get(&(r.component.as_str(), r.version.as_str()));
            reported.insert((*device, r.component.as_str()), known.map(|k| k.0));
        }
    }
    // Updates in flight whose device now reports their target succeeded.
    let ids: Vec<uuid::Uuid> = by_device.iter().map(|(d, _)| d.0).collect();
    let in_flight: Vec<InFlight> = sqlx::query_as(
        "SELECT p.device_id, p.component, p.firmware_id, p.update_id, u.requested_at \
         FROM rollout_devices p JOIN device_updates u ON u.id = p.update_id \
         WHERE p.device_id = ANY($1) AND p.state IN ('requested', 'acknowledged') ORDER BY p.update_id",
    )
    .bind(&ids)
    .fetch_all(&mut *tx.conn())
    .await?;
    let reached: Vec<InFlight> = in_flight
        .into_iter()
        .filter(|u| {
            reported.get(&(u.device_id, u.component.as_str())) == Some(&Some(u.firmware_id))
        })
        .collect();
    let ids: Vec<UpdateId> = reached.iter().map(|u| u.update_id).collect();
    let ended = tx
        .append_many(&ids, |_, current| {
            let u = current.as_ref().ok_or(UpdateRejection::NotFound)?;
            Ok(match u.state.in_flight() {
                true => (vec![UpdateEvent::Succeeded], true),
                false => (vec![], false),
            })
        })
        .await?;
    let finished: Vec<InFlight> = reached
        .into_iter()
        .zip(ended)
        .filter_map(|(u, ended)| ended.then_some(u))
        .collect();
    tx.commit().await?;
    for update in &finished {
        let seconds = (Utc::now() - update.requested_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("reelay_fleet_update_duration_seconds", "hardware_type" => update.component.clone())
            .record(seconds);
        let owner = accepted
            .iter()
            .find(|(_, d, r)| *d == update.device_id && r.component == update.component)
            .map(|(n, _, _)| *n);
        if let Some(Ok(answer)) = owner.map(|n| &mut answers[n]) {
            answer.succeeded += 1;
        }
    }
    Ok(answers)
}

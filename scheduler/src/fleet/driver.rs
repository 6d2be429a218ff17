//! The rollout driver: one pass over every running or paused rollout, as
//! the leader, every `REELAY_FLEET_TICK_MS`.
//!
//! - Updates in flight past the device timeout: timed out; queued again
//!   after a backoff while retries are left; the backend is told to drop
//!   them.
//! - A wave whose final failures (since the last resume) cross the error
//!   threshold pauses the rollout.
//! - When the current wave's share of successes reaches the success
//!   threshold, the next wave opens (or waits for an admin's approval); a
//!   wave that ends below it pauses the rollout until an admin approves.
//!   With the last wave open and nothing left in flight or queued, the
//!   rollout is completed.
//! - Queued device components of open waves are released, at most the
//!   in-flight limit at once: `Requested` is recorded with its update job
//!   in the fleet outbox, and the job is published once that commits (a
//!   leader killed in between leaves the row to the next pass). Workers
//!   hold the rate (a limiter shared in Redis).
//!
//! Every step re-checks its condition in the transaction that appends its
//! event, so a pass repeated by a new leader does nothing twice.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use reelay_shared::{
    fleet::{
        DeviceId, FirmwareId, PausedBy, Rollout, RolloutEvent, RolloutId, RolloutRejection,
        RolloutState, UpdateEvent, UpdateId, UpdateRejection, UpdateState,
        jobs::{self, FleetJob},
    },
    mq::Publisher,
    store::Store,
};
use serde::Serialize;

use crate::lease::Lease;

/// How long one relay of the fleet outbox may take.
const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// Updates released per transaction (then their jobs are relayed).
const RELEASE_CHUNK: i64 = 200;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Driven {
    pub released: u32,
    pub timed_out: u32,
    pub retried: u32,
    pub waves_started: u32,
    pub paused: u32,
    pub completed: u32,
    pub errors: u32,
}

impl Driven {
    pub fn changed(&self) -> bool {
        self.released + self.timed_out + self.waves_started + self.paused + self.completed > 0
    }
}

pub struct Driver {
    pub store: Store,
    pub publisher: Arc<Publisher>,
}

/// A queued device component that may be released now.
#[derive(sqlx::FromRow)]
struct Releasable {
    wave: i32,
    device_id: DeviceId,
    external_id: String,
    component: String,
    firmware_id: FirmwareId,
    attempts: i32,
}

impl Driver {
    /// One pass; each rollout's steps run only while the lease has
    /// `margin` left.
    pub async fn pass(&self, lease: &Lease, margin: Duration) -> Driven {
        let mut driven = Driven::default();
        // Jobs a writer committed but died before publishing.
        self.relay(&mut driven).await;
        let rollouts: Result<Vec<Rollout>, _> = sqlx::query_as(
            "SELECT * FROM rollouts WHERE state IN ('running', 'paused') ORDER BY created_at",
        )
        .fetch_all(self.store.pool())
        .await;
        let rollouts = match rollouts {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the rollout driver could not list rollouts");
                driven.errors += 1;
                return driven;
            }
        };
        for rollout in rollouts {
            if lease.held_for(margin).is_none() {
                break;
            }
            let span = tracing::info_span!("rollout", rollout.id = %rollout.id);
            let drive = tokio::time::timeout(margin, self.drive(&rollout, &mut driven));
            match tracing::Instrument::instrument(drive, span.clone()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    driven.errors += 1;
                    span.in_scope(|| {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "driving a rollout failed; retried next pass"
                        )
                    });
                }
                Err(_) => {
                    driven.errors += 1;
                    span.in_scope(|| {
                        tracing::warn!("driving a rollout timed out; retried next pass")
                    });
                }
            }
        }
        driven
    }

    async fn drive(&self, rollout: &Rollout, driven: &mut Driven) -> anyhow::Result<()> {
        self.time_out(rollout, driven).await?;
        if rollout.state != RolloutState::Running {
            return Ok(());
        }
        if !self.progress(rollout, driven).await? {
            return Ok(());
        }
        self.release(rollout, driven).await
    }

    /// Updates in flight past the device timeout end timed out, retried
    /// after a backoff while attempts are left.
    async fn time_out(&self, rollout: &Rollout, driven: &mut Driven) -> anyhow::Result<()> {
        let spec = &rollout.spec.0;
        let late: Vec<(UpdateId, i32)> = sqlx::query_as(
            "SELECT id, attempt FROM device_updates WHERE rollout_id = $1 \
             AND state IN ('requested', 'acknowledged') \
             AND requested_at < now() - make_interval(secs => $2) ORDER BY id",
        )
        .bind(rollout.id)
        .bind(spec.device_timeout_secs as f64)
        .fetch_all(self.store.pool())
        .await?;
        for (id, attempt) in late {
            let retry_at = (attempt as u32 <= spec.retries).then(|| {
                let backoff = Duration::from_secs(spec.retry_backoff_secs)
                    .saturating_mul(1u32 << (attempt as u32 - 1).min(10));
                Utc::now() + backoff
            });
            let mut tx = self.store.begin().await?;
            let timed_out = tx
                .append(id, |current| {
                    let u = current.as_ref().ok_or(UpdateRejection::NotFound)?;
                    Ok(match u.state.in_flight() {
                        true => (vec![UpdateEvent::TimedOut { retry_at }], true),
                        false => (vec![], false),
                    })
                })
                .await?;
            if timed_out {
                // The backend drops it, so the device does not act on it late.
                jobs::enqueue(tx.conn(), &[FleetJob::Cancel(id)]).await?;
            }
            tx.commit().await?;
            if timed_out {
                driven.timed_out += 1;
                if retry_at.is_some() {
                    driven.retried += 1;
                }
                tracing::info!(update.id = %id, attempt, retried = retry_at.is_some(), "device update timed out");
            }
        }
        self.relay(driven).await;
        Ok(())
    }

    /// Thresholds and waves; false when the rollout stopped running.
    async fn progress(&self, rollout: &Rollout, driven: &mut Driven) -> anyhow::Result<bool> {
        let spec = &rollout.spec.0;
        let sizes: HashMap<i32, i64> = self
            .store
            .rollout_waves(rollout.id)
            .await?
            .into_iter()
            .map(|w| (w.wave, i64::from(w.size)))
            .collect();
        let mut by_wave: HashMap<(i32, UpdateState), i64> = HashMap::new();
        for c in self.store.rollout_counts(rollout.id).await? {
            by_wave.insert((c.wave, c.state), c.devices);
        }
        let count = |wave: i32, states: &[UpdateState]| -> i64 {
            states
                .iter()
                .map(|s| by_wave.get(&(wave, *s)).copied().unwrap_or(0))
                .sum()
        };
        let current = rollout.current_wave;
        let last = sizes.keys().copied().max().unwrap_or(0);
        // The error threshold, wave by wave, counting failures since the
        // last resume.
        for wave in 0..=current {
            let errors = count(wave, &[UpdateState::Failed, UpdateState::TimedOut]);
            let accepted = rollout
                .error_baseline
                .get(wave as usize)
                .copied()
                .unwrap_or(0);
            let fresh = (errors - i64::from(accepted)).max(0) as u32;
            let size = sizes.get(&wave).copied().unwrap_or(0) as u32;
            if fresh > 0 && spec.error_threshold.crossed(fresh, size) {
                let reason = format!("wave {wave}: {errors} of {size} failed (error threshold)");
                self.pause(rollout.id, PausedBy::ErrorThreshold, reason)
                    .await?;
                driven.paused += 1;
                return Ok(false);
            }
        }
        let open_states = [
            UpdateState::Queued,
            UpdateState::Requested,
            UpdateState::Acknowledged,
        ];
        if current >= last {
            let open: i64 = (0..=last).map(|w| count(w, &open_states)).sum();
            if open == 0 {
                self.append_rollout(rollout.id, |_| vec![RolloutEvent::Completed])
                    .await?;
                driven.completed += 1;
                tracing::info!("rollout completed");
                return Ok(false);
            }
            return Ok(true);
        }
        let size = sizes.get(&current).copied().unwrap_or(0);
        let succeeded = count(current, &[UpdateState::Succeeded]);
        let share = if size == 0 {
            1.0
        } else {
            succeeded as f64 / size as f64
        };
        if share + 1e-9 >= spec.success_threshold {
            if rollout.awaiting_approval {
                return Ok(true);
            }
            let wave = current as u32;
            let events = match spec.require_approval {
                true => vec![RolloutEvent::ApprovalAwaited { wave }],
                false => vec![RolloutEvent::WaveStarted { wave: wave + 1 }],
            };
            let opened = !spec.require_approval;
            self.append_rollout(rollout.id, move |_| events).await?;
            if opened {
                driven.waves_started += 1;
                tracing::info!(wave = wave + 1, "next wave started");
            }
            return Ok(true);
        }
        if count(current, &open_states) == 0 {
            let reason = format!(
                "wave {current} ended with {succeeded} of {size} succeeded, below the success threshold; approve to go on"
            );
            let wave = current as u32;
            self.append_rollout(rollout.id, move |_| {
                vec![
                    RolloutEvent::ApprovalAwaited { wave },
                    RolloutEvent::Paused {
                        by: PausedBy::SuccessThreshold,
                        reason,
                    },
                ]
            })
            .await?;
            driven.paused += 1;
            return Ok(false);
        }
        Ok(true)
    }

    async fn pause(&self, id: RolloutId, by: PausedBy, reason: String) -> anyhow::Result<()> {
        tracing::warn!(reason, "rollout paused");
        self.append_rollout(id, move |_| vec![RolloutEvent::Paused { by, reason }])
            .await
    }

    /// Appends what `events` gives while the rollout is still running.
    async fn append_rollout(
        &self,
        id: RolloutId,
        events: impl FnOnce(&Rollout) -> Vec<RolloutEvent>,
    ) -> anyhow::Result<()> {
        self.store
            .append(id, |current| {
                let r = current.as_ref().ok_or(RolloutRejection::NotFound)?;
                Ok(match r.state {
                    RolloutState::Running => (events(r), ()),
                    _ => (vec![], ()),
                })
            })
            .await?;
        Ok(())
    }

    /// Releases queued device components of open waves into the in-flight
    /// room left: `Requested`, then their jobs.
    async fn release(&self, rollout: &Rollout, driven: &mut Driven) -> anyhow::Result<()> {
        let spec = &rollout.spec.0;
        let (in_flight,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM rollout_devices WHERE rollout_id = $1 \
             AND state IN ('requested', 'acknowledged')",
        )
        .bind(rollout.id)
        .fetch_one(self.store.pool())
        .await?;
        let mut room = i64::from(spec.max_in_flight) - in_flight;
        while room > 0 {
            let batch: Vec<Releasable> = sqlx::query_as(
                "SELECT wave, device_id, external_id, component, firmware_id, attempts FROM rollout_devices \
                 WHERE rollout_id = $1 AND state = 'queued' AND wave <= $2 AND not_before <= now() \
                 ORDER BY wave, not_before, external_id, component LIMIT $3",
            )
            .bind(rollout.id)
            .bind(rollout.current_wave)
            .bind(room.min(RELEASE_CHUNK))
            .fetch_all(self.store.pool())
            .await?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut tx = self.store.begin().await?;
            // Still running, and still the state we read (a cancel waits).
            let still: Option<(RolloutState,)> =
                sqlx::query_as("SELECT state FROM rollouts WHERE id = $1 FOR SHARE")
                    .bind(rollout.id)
                    .fetch_optional(&mut *tx.conn())
                    .await?;
            if still.map(|(s,)| s) != Some(RolloutState::Running) {
                return Ok(());
            }
            // Sorted, as append_many wants them (which id goes to which
            // device does not matter: they are all new).
            let mut released: Vec<UpdateId> = batch.iter().map(|_| UpdateId::new()).collect();
            released.sort();
            let mut devices = batch.iter();
            tx.append_many(&released, |_, current| {
                let device = devices.next().expect("one device per id");
                match current {
                    None => Ok((
                        vec![UpdateEvent::Requested {
                            rollout_id: rollout.id,
                            wave: device.wave as u32,
                            device_id: device.device_id,
                            external_id: device.external_id.clone(),
                            component: device.component.clone(),
                            firmware_id: device.firmware_id,
                            attempt: device.attempts as u32 + 1,
                        }],
                        (),
                    )),
                    Some(u) => Err(UpdateRejection::Moved(u.state)),
                }
            })
            .await?;
            let jobs: Vec<FleetJob> = released.iter().map(|id| FleetJob::Update(*id)).collect();
            jobs::enqueue(tx.conn(), &jobs).await?;
            tx.commit().await?;
            driven.released += released.len() as u32;
            self.relay(driven).await;
            room -= released.len() as i64;
        }
        Ok(())
    }

    /// Publishes what waits in the fleet outbox, within [`RELAY_TIMEOUT`]
    /// (a broker that blocks publishers must not hold the pass). What it
    /// could not publish stays for the next pass.
    async fn relay(&self, driven: &mut Driven) {
        let relayed = tokio::time::timeout(
            RELAY_TIMEOUT,
            jobs::relay(self.store.pool(), &self.publisher),
        )
        .await;
        let error = match relayed {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        tracing::warn!(error, "fleet jobs wait in the outbox for the next pass");
        driven.errors += 1;
    }

    /// Sets the fleet gauges: devices per version, rollouts per state.
    pub async fn record_metrics(&self) -> Result<(), sqlx::Error> {
        for count in self.store.version_counts().await? {
            metrics::gauge!(
                "reelay_fleet_devices_per_version",
                "hardware_type" => count.hardware_type,
                "version" => count.version
            )
            .set(count.devices as f64);
        }
        let states: Vec<(RolloutState, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM rollouts GROUP BY state")
                .fetch_all(self.store.pool())
                .await?;
        for state in [
            RolloutState::Draft,
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Completed,
            RolloutState::Cancelled,
        ] {
            let n = states
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("reelay_fleet_rollouts", "state" => format!("{state:?}").to_lowercase())
                .set(n as f64);
        }
        Ok(())
    }
}

//! The rollout aggregate (aggregate type `rollout`) and its projections:
//! `rollouts`, its waves (`rollout_waves`) and its plan (`rollout_devices`,
//! one row per device and target, which the device updates' events move
//! along).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use super::{
    domain::{DeviceId, PlannedDevice, RolloutId, RolloutSpec, RolloutState},
    events::RolloutEvent,
};
use crate::{
    store::{Aggregate, AggregateId},
    video::UserId,
};

/// The `rollouts` projection.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Rollout {
    pub id: RolloutId,
    pub name: Option<String>,
    pub state: RolloutState,
    pub spec: Json<RolloutSpec>,
    pub current_wave: i32,
    pub awaiting_approval: bool,
    pub paused_reason: Option<String>,
    /// Per wave, the final failures already accepted by a resume.
    pub error_baseline: Json<Vec<u32>>,
    pub created_by: UserId,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Why a command on a rollout is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RolloutRejection {
    #[error("no such rollout")]
    NotFound,
    #[error("the rollout already exists")]
    AlreadyExists,
    /// Not allowed from this state (start a running one, resume a
    /// cancelled one, …).
    #[error("the rollout is {state:?}; it can't be {action}")]
    WrongState {
        state: RolloutState,
        action: &'static str,
    },
    #[error("the rollout is not waiting for an approval")]
    NotAwaitingApproval,
}

impl Rollout {
    /// `Ok` when the rollout is in one of `states`, else the rejection
    /// naming `action`.
    pub fn require(
        &self,
        states: &[RolloutState],
        action: &'static str,
    ) -> Result<(), RolloutRejection> {
        match states.contains(&self.state) {
            true => Ok(()),
            false => Err(RolloutRejection::WrongState {
                state: self.state,
                action,
            }),
        }
    }
}

pub struct RolloutAggregate;

impl AggregateId for RolloutId {
    type Aggregate = RolloutAggregate;

    fn uuid(self) -> Uuid {
        self.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Aggregate for RolloutAggregate {
    const TYPE: &'static str = "rollout";
    const TABLES: &'static [&'static str] = &["rollout_devices", "rollout_waves", "rollouts"];
    type Id = RolloutId;
    type Event = RolloutEvent;
    type State = Option<Rollout>;
    type Rejection = RolloutRejection;

    async fn load(
        conn: &mut PgConnection,
        id: RolloutId,
        for_update: bool,
    ) -> Result<Option<Rollout>, sqlx::Error> {
        let query = if for_update {
            "SELECT * FROM rollouts WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT * FROM rollouts WHERE id = $1"
        };
        sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    fn version(state: &Option<Rollout>) -> i32 {
        state.as_ref().map_or(0, |r| r.version)
    }

    async fn apply(
        conn: &mut PgConnection,
        id: RolloutId,
        version: i32,
        event: &RolloutEvent,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if let RolloutEvent::Created { spec, created_by } = event {
            sqlx::query(
                "INSERT INTO rollouts (id, name, state, spec, created_by, version, created_at, updated_at) \
                 VALUES ($1, $2, 'draft', $3, $4, $5, $6, $6)",
            )
            .bind(id)
            .bind(&spec.name)
            .bind(Json(spec))
            .bind(created_by)
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        sqlx::query("UPDATE rollouts SET version = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        let query = match event {
            RolloutEvent::Created { .. } => unreachable!("handled above"),
            RolloutEvent::Started { waves } => {
                let spec = spec_of(conn, id).await?;
                for (wave, devices) in waves.iter().enumerate() {
                    sqlx::query("INSERT INTO rollout_waves (rollout_id, wave) VALUES ($1, $2)")
                        .bind(id)
                        .bind(wave as i32)
                        .execute(&mut *conn)
                        .await?;
                    plan(conn, id, &spec, wave as u32, devices, at).await?;
                }
                sqlx::query("UPDATE rollouts SET state = 'running', started_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(at)
            }
            RolloutEvent::DevicesJoined { wave, devices } => {
                let spec = spec_of(conn, id).await?;
                plan(conn, id, &spec, *wave, devices, at).await?;
                return Ok(());
            }
            RolloutEvent::WaveStarted { wave } => {
                sqlx::query(
                    "UPDATE rollout_waves SET started_at = $3 WHERE rollout_id = $1 AND wave = $2",
                )
                .bind(id)
                .bind(*wave as i32)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE rollouts SET current_wave = $2, awaiting_approval = false WHERE id = $1",
                )
                .bind(id)
                .bind(*wave as i32)
            }
            RolloutEvent::ApprovalAwaited { .. } => {
                sqlx::query("UPDATE rollouts SET awaiting_approval = true WHERE id = $1").bind(id)
            }
            RolloutEvent::Approved { .. } => {
                sqlx::query("UPDATE rollouts SET awaiting_approval = false WHERE id = $1").bind(id)
            }
            RolloutEvent::Paused { reason, .. } => {
                sqlx::query("UPDATE rollouts SET state = 'paused', paused_reason = $2 WHERE id = $1")
                    .bind(id)
                    .bind(reason)
            }
            RolloutEvent::Resumed { error_baseline } => sqlx::query(
                "UPDATE rollouts SET state = 'running', paused_reason = NULL, error_baseline = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(Json(error_baseline)),
            RolloutEvent::Cancelled => {
                // What was never requested is cancelled with the rollout;
                // attempts in flight are cancelled by their own events.
                sqlx::query(
                    "UPDATE rollout_devices SET state = 'cancelled', finished_at = $2 \
                     WHERE rollout_id = $1 AND state = 'queued'",
                )
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE rollouts SET state = 'cancelled', awaiting_approval = false, finished_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(at)
            }
            RolloutEvent::Completed => sqlx::query(
                "UPDATE rollouts SET state = 'completed', finished_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(at),
        };
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

async fn spec_of(conn: &mut PgConnection, id: RolloutId) -> Result<RolloutSpec, sqlx::Error> {
    let (spec,): (Json<RolloutSpec>,) = sqlx::query_as("SELECT spec FROM rollouts WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(spec.0)
}

/// Adds `devices` to wave `wave` of the plan: one row per device and
/// target, queued; the wave grows by the devices.
async fn plan(
    conn: &mut PgConnection,
    id: RolloutId,
    spec: &RolloutSpec,
    wave: u32,
    devices: &[PlannedDevice],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (mut device_ids, mut external_ids, mut components, mut firmware) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for device in devices {
        for &target in &device.targets {
            let Some(target) = spec.targets.get(usize::from(target)) else {
                continue;
            };
            device_ids.push(DeviceId::of(&device.external_id).0);
            external_ids.push(device.external_id.as_str());
            components.push(target.component.as_str());
            firmware.push(target.firmware_id.0);
        }
    }
    sqlx::query(
        "INSERT INTO rollout_devices (rollout_id, wave, device_id, external_id, component, firmware_id, not_before) \
         SELECT $1, $2, d, e, c, f, $7 FROM unnest($3::uuid[], $4::text[], $5::text[], $6::uuid[]) AS u(d, e, c, f)",
    )
    .bind(id)
    .bind(wave as i32)
    .bind(&device_ids)
    .bind(&external_ids)
    .bind(&components)
    .bind(&firmware)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE rollout_waves SET size = size + $3 WHERE rollout_id = $1 AND wave = $2")
        .bind(id)
        .bind(wave as i32)
        .bind(devices.len() as i32)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

//! The device update aggregate (aggregate type `device_update`): one
//! attempt to bring one component of one device to a rollout's firmware.
//! Its projection is a row of `device_updates`, and it moves its device's
//! row of the rollout's plan (`rollout_devices`) along.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    domain::{DeviceId, FirmwareId, RolloutId, UpdateId, UpdateState},
    events::UpdateEvent,
};
use crate::store::{Aggregate, AggregateId};

/// The `device_updates` projection: one attempt.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeviceUpdate {
    pub id: UpdateId,
    pub rollout_id: RolloutId,
    pub wave: i32,
    #[serde(skip)]
    pub device_id: DeviceId,
    pub external_id: String,
    pub component: String,
    pub firmware_id: FirmwareId,
    pub attempt: i32,
    pub state: UpdateState,
    pub requested_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    #[serde(skip)]
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRejection {
    #[error("no such device update")]
    NotFound,
    #[error("the device update is {0:?}")]
    Moved(UpdateState),
}

impl DeviceUpdate {
    /// `Ok` while the update is in one of `states`.
    pub fn require(&self, states: &[UpdateState]) -> Result<(), UpdateRejection> {
        match states.contains(&self.state) {
            true => Ok(()),
            false => Err(UpdateRejection::Moved(self.state)),
        }
    }
}

pub struct UpdateAggregate;

impl AggregateId for UpdateId {
    type Aggregate = UpdateAggregate;

    fn uuid(self) -> Uuid {
        self.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Aggregate for UpdateAggregate {
    const TYPE: &'static str = "device_update";
    const TABLES: &'static [&'static str] = &["device_updates"];
    const BULK: bool = true;
    type Id = UpdateId;
    type Event = UpdateEvent;
    type State = Option<DeviceUpdate>;
    type Rejection = UpdateRejection;

    async fn load(
        conn: &mut PgConnection,
        id: UpdateId,
        for_update: bool,
    ) -> Result<Option<DeviceUpdate>, sqlx::Error> {
        let query = if for_update {
            "SELECT * FROM device_updates WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT * FROM device_updates WHERE id = $1"
        };
        sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    fn version(state: &Option<DeviceUpdate>) -> i32 {
        state.as_ref().map_or(0, |u| u.version)
    }

    /// One statement for all of them, locked in id order.
    async fn load_many(
        conn: &mut PgConnection,
        ids: &[UpdateId],
    ) -> Result<Vec<Option<DeviceUpdate>>, sqlx::Error> {
        let uuids: Vec<Uuid> = ids.iter().map(|u| u.0).collect();
        let rows: Vec<DeviceUpdate> = sqlx::query_as(
            "SELECT * FROM device_updates WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&uuids)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_id: std::collections::HashMap<UpdateId, DeviceUpdate> =
            rows.into_iter().map(|u| (u.id, u)).collect();
        Ok(ids.iter().map(|id| by_id.remove(id)).collect())
    }

    /// Releases (`Requested`, each a new update) and plain state changes in
    /// a few set-based statements; anything else (or two events of one
    /// update) one by one, as `apply` does.
    async fn apply_many(
        conn: &mut PgConnection,
        events: &[(UpdateId, i32, &UpdateEvent)],
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let distinct: std::collections::HashSet<UpdateId> =
            events.iter().map(|(id, _, _)| *id).collect();
        let simple = distinct.len() == events.len()
            && events.iter().all(|(_, _, e)| {
                matches!(
                    e,
                    UpdateEvent::Requested { .. }
                        | UpdateEvent::Acknowledged
                        | UpdateEvent::Succeeded
                )
            });
        if !simple {
            for (id, version, event) in events {
                Self::apply(&mut *conn, *id, *version, event, at).await?;
            }
            return Ok(());
        }
        let mut requested = Vec::new();
        let mut moved: Vec<(Uuid, i32, UpdateState)> = Vec::new();
        for (id, version, event) in events {
            match event {
                UpdateEvent::Requested { .. } => requested.push((*id, *version, *event)),
                UpdateEvent::Acknowledged => {
                    moved.push((id.0, *version, UpdateState::Acknowledged))
                }
                _ => moved.push((id.0, *version, UpdateState::Succeeded)),
            }
        }
        if !requested.is_empty() {
            let (
                mut ids,
                mut rollouts,
                mut waves,
                mut devices,
                mut externals,
                mut components,
                mut firmware,
                mut attempts,
                mut versions,
            ) = (
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
            );
            for (id, version, event) in &requested {
                let UpdateEvent::Requested {
                    rollout_id,
                    wave,
                    device_id,
                    external_id,
                    component,
                    firmware_id,
                    attempt,
                } = event
                else {
                    unreachable!("only releases here")
                };
                ids.push(id.0);
                rollouts.push(rollout_id.0);
                waves.push(*wave as i32);
                devices.push(device_id.0);
                externals.push(external_id.as_str());
                components.push(component.as_str());
                firmware.push(firmware_id.0);
                attempts.push(*attempt as i32);
                versions.push(*version);
            }
            sqlx::query(
                "INSERT INTO device_updates (id, rollout_id, wave, device_id, external_id, component, \
                 firmware_id, attempt, state, requested_at, version, updated_at) \
                 SELECT i, r, w, d, e, c, f, a, 'requested', $10, v, $10 FROM unnest($1::uuid[], $2::uuid[], \
                   $3::int[], $4::uuid[], $5::text[], $6::text[], $7::uuid[], $8::int[], $9::int[]) \
                   AS u (i, r, w, d, e, c, f, a, v)",
            )
            .bind(&ids)
            .bind(&rollouts)
            .bind(&waves)
            .bind(&devices)
            .bind(&externals)
            .bind(&components)
            .bind(&firmware)
            .bind(&attempts)
            .bind(&versions)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE rollout_devices p SET state = 'requested', update_id = u.i, attempts = u.a \
                 FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::int[]) AS u (r, d, c, i, a) \
                 WHERE p.rollout_id = u.r AND p.device_id = u.d AND p.component = u.c",
            )
            .bind(&rollouts)
            .bind(&devices)
            .bind(&components)
            .bind(&ids)
            .bind(&attempts)
            .execute(&mut *conn)
            .await?;
        }
        if !moved.is_empty() {
            let ids: Vec<Uuid> = moved.iter().map(|m| m.0).collect();
            let versions: Vec<i32> = moved.iter().map(|m| m.1).collect();
            let states: Vec<UpdateState> = moved.iter().map(|m| m.2).collect();
            sqlx::query(
                "UPDATE device_updates d SET state = u.s, version = u.v, updated_at = $4, \
                 acknowledged_at = CASE WHEN u.s = 'acknowledged' THEN $4 ELSE d.acknowledged_at END, \
                 finished_at = CASE WHEN u.s = 'succeeded' THEN $4 ELSE d.finished_at END \
                 FROM unnest($1::uuid[], $2::int[], $3::device_update_state[]) AS u (i, v, s) WHERE d.id = u.i",
            )
            .bind(&ids)
            .bind(&versions)
            .bind(&states)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE rollout_devices p SET state = u.s, \
                 finished_at = CASE WHEN u.s = 'succeeded' THEN $3 ELSE p.finished_at END \
                 FROM unnest($1::uuid[], $2::device_update_state[]) AS u (i, s) WHERE p.update_id = u.i",
            )
            .bind(&ids)
            .bind(&states)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn apply(
        conn: &mut PgConnection,
        id: UpdateId,
        version: i32,
        event: &UpdateEvent,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if let UpdateEvent::Requested {
            rollout_id,
            wave,
            device_id,
            external_id,
            component,
            firmware_id,
            attempt,
        } = event
        {
            sqlx::query(
                "INSERT INTO device_updates (id, rollout_id, wave, device_id, external_id, component, \
                 firmware_id, attempt, state, requested_at, version, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'requested', $9, $10, $9)",
            )
            .bind(id)
            .bind(rollout_id)
            .bind(*wave as i32)
            .bind(device_id)
            .bind(external_id)
            .bind(component)
            .bind(firmware_id)
            .bind(*attempt as i32)
            .bind(at)
            .bind(version)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE rollout_devices SET state = 'requested', update_id = $4, attempts = $5 \
                 WHERE rollout_id = $1 AND device_id = $2 AND component = $3",
            )
            .bind(rollout_id)
            .bind(device_id)
            .bind(component)
            .bind(id)
            .bind(*attempt as i32)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        let (state, reason): (Option<UpdateState>, Option<&str>) = match event {
            UpdateEvent::Requested { .. } => unreachable!("handled above"),
            UpdateEvent::RequestFailed { reason } => (None, Some(reason)),
            UpdateEvent::Acknowledged => (Some(UpdateState::Acknowledged), None),
            UpdateEvent::Succeeded => (Some(UpdateState::Succeeded), None),
            UpdateEvent::Failed { reason } => (Some(UpdateState::Failed), Some(reason)),
            UpdateEvent::TimedOut { .. } => (
                Some(UpdateState::TimedOut),
                Some("the device did not report the version in time"),
            ),
            UpdateEvent::Cancelled { reason } => (Some(UpdateState::Cancelled), Some(reason)),
        };
        sqlx::query(
            "UPDATE device_updates SET state = coalesce($2, state), version = $3, updated_at = $4, \
             acknowledged_at = CASE WHEN $2 = 'acknowledged'::device_update_state THEN $4 ELSE acknowledged_at END, \
             finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'timed_out', 'cancelled') THEN $4 ELSE finished_at END, \
             reason = coalesce($5, reason) WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(version)
        .bind(at)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
        // The plan follows its current attempt; a timed-out one that is
        // retried goes back to the queue until its retry time.
        let plan = match event {
            UpdateEvent::RequestFailed { .. } => return Ok(()),
            UpdateEvent::TimedOut {
                retry_at: Some(retry_at),
            } => sqlx::query(
                "UPDATE rollout_devices SET state = 'queued', update_id = NULL, not_before = $2 \
                 WHERE update_id = $1",
            )
            .bind(id)
            .bind(retry_at),
            _ => sqlx::query(
                "UPDATE rollout_devices SET state = $2, \
                 finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'timed_out', 'cancelled') THEN $3 ELSE finished_at END \
                 WHERE update_id = $1",
            )
            .bind(id)
            .bind(state)
            .bind(at),
        };
        plan.execute(&mut *conn).await?;
        Ok(())
    }
}

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
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
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

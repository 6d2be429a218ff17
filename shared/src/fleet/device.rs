//! The device aggregate (aggregate type `device`): a device of the fleet
//! and every version it reported.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    domain::{DeviceId, FirmwareId},
    events::DeviceEvent,
};
use crate::store::{Aggregate, AggregateId};

/// The `fleet_devices` projection.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Device {
    #[serde(skip)]
    pub id: DeviceId,
    pub external_id: String,
    pub model: String,
    #[serde(skip)]
    pub version: i32,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One row of `device_firmware`: what a component runs.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ComponentVersion {
    #[serde(skip)]
    pub device_id: DeviceId,
    pub component: String,
    pub version: String,
    pub firmware_id: Option<FirmwareId>,
    pub version_num: Option<i64>,
    pub reported_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceRejection {
    #[error("device {0} is not registered")]
    NotRegistered(String),
}

pub struct DeviceAggregate;

impl AggregateId for DeviceId {
    type Aggregate = DeviceAggregate;

    fn uuid(self) -> Uuid {
        self.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Aggregate for DeviceAggregate {
    const TYPE: &'static str = "device";
    const TABLES: &'static [&'static str] = &["device_firmware", "fleet_devices"];
    type Id = DeviceId;
    type Event = DeviceEvent;
    type State = Option<Device>;
    type Rejection = DeviceRejection;

    async fn load(
        conn: &mut PgConnection,
        id: DeviceId,
        for_update: bool,
    ) -> Result<Option<Device>, sqlx::Error> {
        let query = if for_update {
            "SELECT * FROM fleet_devices WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT * FROM fleet_devices WHERE id = $1"
        };
        sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    fn version(state: &Option<Device>) -> i32 {
        state.as_ref().map_or(0, |d| d.version)
    }

    async fn apply(
        conn: &mut PgConnection,
        id: DeviceId,
        version: i32,
        event: &DeviceEvent,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        match event {
            DeviceEvent::Registered { external_id, model } => {
                sqlx::query(
                    "INSERT INTO fleet_devices (id, external_id, model, version, registered_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) \
                     ON CONFLICT (id) DO UPDATE SET model = $3, version = $4, updated_at = $5",
                )
                .bind(id)
                .bind(external_id)
                .bind(model)
                .bind(version)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            DeviceEvent::VersionReported {
                component,
                version: vendor_version,
                firmware_id,
                version_num,
            } => {
                sqlx::query("UPDATE fleet_devices SET version = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(version)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "INSERT INTO device_firmware (device_id, component, version, firmware_id, version_num, reported_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (device_id, component) DO UPDATE \
                     SET version = $3, firmware_id = $4, version_num = $5, reported_at = $6",
                )
                .bind(id)
                .bind(component)
                .bind(vendor_version)
                .bind(firmware_id)
                .bind(version_num)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

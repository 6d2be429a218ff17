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
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
    const BULK: bool = true;
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

    /// One statement for all of them, locked in id order.
    async fn load_many(
        conn: &mut PgConnection,
        ids: &[DeviceId],
    ) -> Result<Vec<Option<Device>>, sqlx::Error> {
        let uuids: Vec<Uuid> = ids.iter().map(|d| d.0).collect();
        let rows: Vec<Device> =
            sqlx::query_as("SELECT * FROM fleet_devices WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&uuids)
                .fetch_all(&mut *conn)
                .await?;
        let mut by_id: std::collections::HashMap<DeviceId, Device> =
            rows.into_iter().map(|d| (d.id, d)).collect();
        Ok(ids.iter().map(|id| by_id.remove(id)).collect())
    }

    /// The same rows as applying the events one by one: registrations
    /// upserted, then each device's last version and each component's last
    /// report, in a few set-based statements.
    async fn apply_many(
        conn: &mut PgConnection,
        events: &[(DeviceId, i32, &DeviceEvent)],
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        use std::collections::HashMap;
        // Registrations first, in order (a new device must exist before its
        // reports); there are few, so one by one.
        for (id, version, event) in events {
            if let DeviceEvent::Registered { .. } = event {
                Self::apply(&mut *conn, *id, *version, event, at).await?;
            }
        }
        // The last version per device, the last report per component.
        let mut versions: HashMap<DeviceId, i32> = HashMap::new();
        // (device, component) → (version, firmware, version_num), the last.
        type Report<'e> = (&'e str, Option<FirmwareId>, Option<i64>);
        let mut reports: HashMap<(DeviceId, &str), Report<'_>> = HashMap::new();
        for (id, version, event) in events {
            versions.insert(*id, *version);
            if let DeviceEvent::VersionReported {
                component,
                version: vendor,
                firmware_id,
                version_num,
            } = event
            {
                reports.insert((*id, component), (vendor, *firmware_id, *version_num));
            }
        }
        if reports.is_empty() {
            return Ok(());
        }
        let (ids, numbers): (Vec<Uuid>, Vec<i32>) =
            versions.into_iter().map(|(id, v)| (id.0, v)).unzip();
        sqlx::query(
            "UPDATE fleet_devices d SET version = u.v, updated_at = $3 \
             FROM unnest($1::uuid[], $2::int[]) AS u (i, v) WHERE d.id = u.i",
        )
        .bind(&ids)
        .bind(&numbers)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        let (mut devices, mut components, mut vendors, mut firmware, mut nums) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((device, component), (vendor, firmware_id, num)) in reports {
            devices.push(device.0);
            components.push(component);
            vendors.push(vendor);
            firmware.push(firmware_id.map(|f| f.0));
            nums.push(num);
        }
        sqlx::query(
            "INSERT INTO device_firmware (device_id, component, version, firmware_id, version_num, reported_at) \
             SELECT d, c, v, f, n, $6 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::bigint[]) \
               AS u (d, c, v, f, n) \
             ON CONFLICT (device_id, component) DO UPDATE \
             SET version = excluded.version, firmware_id = excluded.firmware_id, \
                 version_num = excluded.version_num, reported_at = excluded.reported_at",
        )
        .bind(&devices)
        .bind(&components)
        .bind(&vendors)
        .bind(&firmware)
        .bind(&nums)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        Ok(())
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

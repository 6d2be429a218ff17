//! What the api, workers and the scheduler read of the fleet product.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    device::{ComponentVersion, Device},
    domain::{DeviceId, FirmwareId, RolloutId, UpdateId, UpdateState},
    firmware::Firmware,
    rollout::Rollout,
    update::DeviceUpdate,
};
use crate::{store::Store, video::VideoId};

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HardwareType {
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeviceModel {
    pub name: String,
    pub components: Vec<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SigningKey {
    pub key_id: String,
    /// Base64 of the 32 raw Ed25519 bytes.
    pub public_key: String,
    pub first_used_at: DateTime<Utc>,
}

/// How many devices run one version of one component.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct VersionCount {
    pub hardware_type: String,
    pub version: String,
    pub version_num: Option<i64>,
    pub firmware_id: Option<FirmwareId>,
    pub devices: i64,
}

/// One device of a bulk query, as asked (unregistered ones too).
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeviceFirmware {
    pub external_id: String,
    /// Null when no such device is registered.
    pub model: Option<String>,
    /// What each component runs, by component (empty for an unknown
    /// device): the same objects as `ComponentVersion`, built by SQL.
    #[schema(value_type = Vec<super::device::ComponentVersion>)]
    pub components: serde_json::Value,
}

/// How many of a rollout's device components are in `state` in `wave`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WaveCount {
    pub wave: i32,
    pub state: UpdateState,
    pub devices: i64,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Wave {
    pub wave: i32,
    pub size: i32,
    pub started_at: Option<DateTime<Utc>>,
}

/// An open (queued or in flight) update of a device's component.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OpenUpdate {
    pub rollout_id: RolloutId,
    pub device_id: DeviceId,
    pub component: String,
    pub firmware_id: FirmwareId,
    pub state: UpdateState,
    pub update_id: Option<UpdateId>,
}

impl Store {
    pub async fn hardware_types(&self) -> Result<Vec<HardwareType>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM hardware_types ORDER BY name")
            .fetch_all(self.pool())
            .await
    }

    /// Adds a hardware type; false if it existed.
    pub async fn add_hardware_type(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let added = sqlx::query(
            "INSERT INTO hardware_types (name, description) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(description)
        .execute(self.pool())
        .await?;
        Ok(added.rows_affected() == 1)
    }

    pub async fn device_models(&self) -> Result<Vec<DeviceModel>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM device_models ORDER BY name")
            .fetch_all(self.pool())
            .await
    }

    /// Adds a model; false if it existed.
    pub async fn add_device_model(
        &self,
        name: &str,
        components: &[String],
        description: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let added = sqlx::query(
            "INSERT INTO device_models (name, components, description) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(components)
        .bind(description)
        .execute(self.pool())
        .await?;
        Ok(added.rows_affected() == 1)
    }

    pub async fn firmware(&self, id: FirmwareId) -> Result<Option<Firmware>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM firmware WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
    }

    /// A page of one hardware type's firmware, newest (highest
    /// version_num) first, below `before` if given.
    pub async fn firmware_page(
        &self,
        hardware_type: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Firmware>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM firmware WHERE hardware_type = $1 AND ($2::bigint IS NULL OR version_num < $2) \
             ORDER BY version_num DESC LIMIT $3",
        )
        .bind(hardware_type)
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// The firmware whose file `upload` is, if it is one.
    pub async fn firmware_of_upload(
        &self,
        upload: VideoId,
    ) -> Result<Option<FirmwareId>, sqlx::Error> {
        let row: Option<(Option<FirmwareId>,)> =
            sqlx::query_as("SELECT firmware_id FROM videos WHERE id = $1")
                .bind(upload)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(f,)| f))
    }

    pub async fn record_signing_key(
        &self,
        key_id: &str,
        public_key: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO fleet_signing_keys (key_id, public_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(key_id)
        .bind(public_key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every key firmware was signed with, the current (newest) first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM fleet_signing_keys ORDER BY first_used_at DESC, key_id")
            .fetch_all(self.pool())
            .await
    }

    /// A device and what each of its components runs.
    pub async fn device(
        &self,
        external_id: &str,
    ) -> Result<Option<(Device, Vec<ComponentVersion>)>, sqlx::Error> {
        let device: Option<Device> =
            sqlx::query_as("SELECT * FROM fleet_devices WHERE external_id = $1")
                .bind(external_id)
                .fetch_optional(self.pool())
                .await?;
        let Some(device) = device else {
            return Ok(None);
        };
        let components =
            sqlx::query_as("SELECT * FROM device_firmware WHERE device_id = $1 ORDER BY component")
                .bind(device.id)
                .fetch_all(self.pool())
                .await?;
        Ok(Some((device, components)))
    }

    /// Each device asked for, in order, with what its components run: one
    /// round trip for up to a thousand devices.
    pub async fn devices_firmware(
        &self,
        external_ids: &[String],
    ) -> Result<Vec<DeviceFirmware>, sqlx::Error> {
        sqlx::query_as(
            "SELECT u.external_id, d.model, \
               coalesce(jsonb_agg(jsonb_build_object('component', f.component, 'version', f.version, \
                 'version_num', f.version_num, 'firmware_id', f.firmware_id, 'reported_at', f.reported_at) \
                 ORDER BY f.component) FILTER (WHERE f.component IS NOT NULL), '[]') AS components \
             FROM unnest($1::text[]) WITH ORDINALITY AS u (external_id, n) \
             LEFT JOIN fleet_devices d ON d.external_id = u.external_id \
             LEFT JOIN device_firmware f ON f.device_id = d.id \
             GROUP BY u.external_id, u.n, d.model ORDER BY u.n",
        )
        .bind(external_ids)
        .fetch_all(self.pool())
        .await
    }

    /// Devices per version per hardware type, now.
    pub async fn version_counts(&self) -> Result<Vec<VersionCount>, sqlx::Error> {
        sqlx::query_as(
            "SELECT component AS hardware_type, version, version_num, firmware_id, count(*) AS devices \
             FROM device_firmware GROUP BY 1, 2, 3, 4 \
             ORDER BY 1, version_num NULLS FIRST, version",
        )
        .fetch_all(self.pool())
        .await
    }

    /// Devices per version per hardware type as they stood at `at`, from
    /// the log: each device's last report per component up to then.
    pub async fn version_counts_at(
        &self,
        at: DateTime<Utc>,
    ) -> Result<Vec<VersionCount>, sqlx::Error> {
        sqlx::query_as(
            "SELECT component AS hardware_type, version, version_num, firmware_id, count(*) AS devices FROM ( \
               SELECT DISTINCT ON (aggregate_id, payload->>'component') \
                 payload->>'component' AS component, payload->>'version' AS version, \
                 (payload->>'version_num')::bigint AS version_num, (payload->>'firmware_id')::uuid AS firmware_id \
               FROM events WHERE kind = 'version_reported' AND recorded_at <= $1 \
               ORDER BY aggregate_id, payload->>'component', seq DESC) latest \
             GROUP BY 1, 2, 3, 4 ORDER BY 1, version_num NULLS FIRST, version",
        )
        .bind(at)
        .fetch_all(self.pool())
        .await
    }

    pub async fn rollout(&self, id: RolloutId) -> Result<Option<Rollout>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
    }

    /// Rollouts, newest first, before the `(created_at, id)` cursor.
    pub async fn rollouts(
        &self,
        before: Option<(DateTime<Utc>, RolloutId)>,
        limit: i64,
    ) -> Result<Vec<Rollout>, sqlx::Error> {
        let (at, id) = before.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        sqlx::query_as(
            "SELECT * FROM rollouts WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2)) \
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    pub async fn rollout_waves(&self, id: RolloutId) -> Result<Vec<Wave>, sqlx::Error> {
        sqlx::query_as(
            "SELECT wave, size, started_at FROM rollout_waves WHERE rollout_id = $1 ORDER BY wave",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
    }

    /// Device components per state per wave of a rollout.
    pub async fn rollout_counts(&self, id: RolloutId) -> Result<Vec<WaveCount>, sqlx::Error> {
        sqlx::query_as(
            "SELECT wave, state, count(*) AS devices FROM rollout_devices WHERE rollout_id = $1 \
             GROUP BY wave, state ORDER BY wave",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
    }

    /// Device components of a rollout that succeeded since `since`.
    pub async fn rollout_succeeded_since(
        &self,
        id: RolloutId,
        since: DateTime<Utc>,
    ) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM rollout_devices WHERE rollout_id = $1 AND state = 'succeeded' \
             AND finished_at >= $2",
        )
        .bind(id)
        .bind(since)
        .fetch_one(self.pool())
        .await?;
        Ok(n)
    }

    pub async fn device_update(&self, id: UpdateId) -> Result<Option<DeviceUpdate>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM device_updates WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
    }

    /// A device's update attempts, oldest first.
    pub async fn device_updates_of(
        &self,
        device: DeviceId,
    ) -> Result<Vec<DeviceUpdate>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM device_updates WHERE device_id = $1 ORDER BY requested_at, id",
        )
        .bind(device)
        .fetch_all(self.pool())
        .await
    }

    /// The open updates (queued or in flight) of these devices.
    pub async fn open_updates(&self, devices: &[DeviceId]) -> Result<Vec<OpenUpdate>, sqlx::Error> {
        open_updates(self.pool(), devices).await
    }
}

/// The open updates (queued or in flight) of these devices, on `conn`.
pub async fn open_updates<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    devices: &[DeviceId],
) -> Result<Vec<OpenUpdate>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = devices.iter().map(|d| d.0).collect();
    sqlx::query_as(
        "SELECT rollout_id, device_id, component, firmware_id, state, update_id FROM rollout_devices \
         WHERE device_id = ANY($1) AND state IN ('queued', 'requested', 'acknowledged')",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await
}

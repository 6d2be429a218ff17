//! The firmware aggregate (aggregate type `firmware`) and its projection.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    domain::{FirmwareId, FirmwareStatus},
    events::FirmwareEvent,
};
use crate::{
    store::{Aggregate, AggregateId},
    video::{UserId, VideoId},
};

/// The `firmware` projection.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Firmware {
    pub id: FirmwareId,
    pub hardware_type: String,
    pub version: String,
    pub version_num: i64,
    pub comment: Option<String>,
    pub models: Vec<String>,
    pub status: FirmwareStatus,
    pub upload_id: Option<VideoId>,
    pub object_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub manifest: Option<String>,
    pub signature: Option<String>,
    pub key_id: Option<String>,
    pub withdrawn_reason: Option<String>,
    pub created_by: UserId,
    pub version_no: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a command on a firmware is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FirmwareRejection {
    #[error("no such firmware")]
    NotFound,
    #[error("the firmware already exists")]
    AlreadyExists,
    /// Its file is whole already, or it was withdrawn: it can't change.
    #[error("the firmware is {0:?}; available firmware is immutable")]
    NotPending(FirmwareStatus),
    #[error("the firmware's file is being uploaded already ({0})")]
    UploadInProgress(VideoId),
    #[error("the firmware is not available ({0:?})")]
    NotAvailable(FirmwareStatus),
    #[error("the firmware was withdrawn already")]
    AlreadyWithdrawn,
}

pub struct FirmwareAggregate;

impl AggregateId for FirmwareId {
    type Aggregate = FirmwareAggregate;

    fn uuid(self) -> Uuid {
        self.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Aggregate for FirmwareAggregate {
    const TYPE: &'static str = "firmware";
    const TABLES: &'static [&'static str] = &["firmware"];
    type Id = FirmwareId;
    type Event = FirmwareEvent;
    type State = Option<Firmware>;
    type Rejection = FirmwareRejection;

    async fn load(
        conn: &mut PgConnection,
        id: FirmwareId,
        for_update: bool,
    ) -> Result<Option<Firmware>, sqlx::Error> {
        let query = if for_update {
            "SELECT * FROM firmware WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT * FROM firmware WHERE id = $1"
        };
        sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    fn version(state: &Option<Firmware>) -> i32 {
        state.as_ref().map_or(0, |f| f.version_no)
    }

    async fn apply(
        conn: &mut PgConnection,
        id: FirmwareId,
        version: i32,
        event: &FirmwareEvent,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let query = match event {
            FirmwareEvent::Created {
                hardware_type,
                version: vendor_version,
                version_num,
                comment,
                models,
                created_by,
            } => sqlx::query(
                "INSERT INTO firmware (id, hardware_type, version, version_num, comment, models, status, \
                 created_by, version_no, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $9)",
            )
            .bind(id)
            .bind(hardware_type)
            .bind(vendor_version)
            .bind(version_num)
            .bind(comment)
            .bind(models)
            .bind(created_by)
            .bind(version)
            .bind(at),
            FirmwareEvent::UploadStarted { upload_id } => sqlx::query(
                "UPDATE firmware SET upload_id = $2, version_no = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(upload_id)
            .bind(version)
            .bind(at),
            FirmwareEvent::Sealed {
                object_key,
                size_bytes,
                sha256,
                manifest,
                signature,
                key_id,
            } => sqlx::query(
                "UPDATE firmware SET status = 'available', object_key = $2, size_bytes = $3, sha256 = $4, \
                 manifest = $5, signature = $6, key_id = $7, version_no = $8, updated_at = $9 WHERE id = $1",
            )
            .bind(id)
            .bind(object_key)
            .bind(*size_bytes as i64)
            .bind(sha256)
            .bind(manifest)
            .bind(signature)
            .bind(key_id)
            .bind(version)
            .bind(at),
            FirmwareEvent::Withdrawn { reason } => sqlx::query(
                "UPDATE firmware SET status = 'withdrawn', withdrawn_reason = $2, version_no = $3, \
                 updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(reason)
            .bind(version)
            .bind(at),
        };
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

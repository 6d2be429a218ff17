//! Push notifications in PostgreSQL: the devices users register, and the
//! outbox of notifications. A notification row is written in the same
//! transaction as the event it tells of (see [`enqueue`]); the scheduler
//! sends it, at least once, under the row's id as idempotency key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::video::{UserId, VideoId, VideoStatus};

/// The channel `NOTIFY`d when notifications are written, so the
/// dispatcher sends them at once instead of at its next poll.
pub const NOTIFY_CHANNEL: &str = "reelay_push";

/// Where a device gets its pushes. Mirrored by the SQL enum `push_platform`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[schema(as = PushPlatform)]
#[sqlx(type_name = "push_platform", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Firebase Cloud Messaging (Android, and iOS through Firebase).
    Fcm,
    /// Apple Push Notification service.
    Apns,
    /// The deployment's own push webhook; the token names the device there.
    Webhook,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fcm => "fcm",
            Self::Apns => "apns",
            Self::Webhook => "webhook",
        })
    }
}

/// A device token, checked for its platform's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceToken(String);

impl DeviceToken {
    /// APNs tokens are hex (64 characters today; Apple says they may grow);
    /// FCM registration tokens and webhook tokens are URL-safe text.
    pub fn parse(platform: Platform, token: &str) -> Result<Self, String> {
        let token = token.trim();
        let ok = match platform {
            Platform::Apns => {
                (64..=200).contains(&token.len())
                    && token.len().is_multiple_of(2)
                    && token.bytes().all(|b| b.is_ascii_hexdigit())
            }
            Platform::Fcm | Platform::Webhook => {
                (1..=4096).contains(&token.len())
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
            }
        };
        match (ok, platform) {
            (true, _) => Ok(Self(token.to_owned())),
            (false, Platform::Apns) => {
                Err("an APNs device token is 64 to 200 hexadecimal characters".into())
            }
            (false, _) => Err(format!(
                "a {platform} token is 1 to 4096 characters of letters, digits and - _ : ."
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A device that receives push notifications.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = PushDevice)]
pub struct Device {
    pub id: Uuid,
    #[serde(skip)]
    pub user_id: UserId,
    pub platform: Platform,
    /// The provider's token, as registered (without surrounding spaces).
    pub token: String,
    /// When it was registered (by its current owner).
    pub created_at: DateTime<Utc>,
}

/// Registers `token` for `user`; the device and whether it is new to them.
/// A token already registered by someone else moves to `user` (the phone
/// changed hands or accounts), and what was still queued for its previous
/// owner is dropped: their videos are not this user's business.
pub async fn register(
    pool: &PgPool,
    user: UserId,
    platform: Platform,
    token: &DeviceToken,
) -> Result<(Device, bool), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let previous: Option<(Uuid, UserId)> = sqlx::query_as(
        "SELECT id, user_id FROM devices WHERE platform = $1 AND token = $2 FOR UPDATE",
    )
    .bind(platform)
    .bind(token.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let (device, new) = match previous {
        Some((id, owner)) if owner == user => {
            let device = sqlx::query_as("SELECT * FROM devices WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            (device, false)
        }
        Some((id, _)) => {
            sqlx::query("DELETE FROM notifications WHERE device_id = $1 AND status = 'pending'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let device = sqlx::query_as(
                "UPDATE devices SET user_id = $2, created_at = now() WHERE id = $1 RETURNING *",
            )
            .bind(id)
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
            (device, true)
        }
        None => {
            // Two registrations of one token at once: one inserts, the other
            // finds its row.
            let inserted: Option<Device> = sqlx::query_as(
                "INSERT INTO devices (id, user_id, platform, token, created_at) \
                 VALUES ($1, $2, $3, $4, now()) ON CONFLICT (platform, token) DO NOTHING RETURNING *",
            )
            .bind(Uuid::now_v7())
            .bind(user)
            .bind(platform)
            .bind(token.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            match inserted {
                Some(device) => (device, true),
                None => {
                    let device =
                        sqlx::query_as("SELECT * FROM devices WHERE platform = $1 AND token = $2")
                            .bind(platform)
                            .bind(token.as_str())
                            .fetch_one(&mut *tx)
                            .await?;
                    (device, false)
                }
            }
        }
    };
    tx.commit().await?;
    Ok((device, new))
}

/// `user`'s devices, oldest first.
pub async fn devices(pool: &PgPool, user: UserId) -> Result<Vec<Device>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM devices WHERE user_id = $1 ORDER BY created_at, id")
        .bind(user)
        .fetch_all(pool)
        .await
}

/// Removes `user`'s device `id` (and what is queued for it); false if they
/// have no such device.
pub async fn unregister(pool: &PgPool, user: UserId, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Forgets a device whose token the provider said is invalid.
pub async fn forget_device(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Writes one notification per device of `owner` about `video` reaching
/// `state` (the event `seq`), inside the event's transaction; wakes the
/// dispatcher if there is any. Returns how many were written.
pub async fn enqueue(
    conn: &mut PgConnection,
    owner: UserId,
    video: VideoId,
    seq: i64,
    state: VideoStatus,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO notifications (id, device_id, video_id, event_seq, state, next_attempt_at, created_at) \
         SELECT gen_random_uuid(), d.id, $2, $3, $4, $5, $5 FROM devices d WHERE d.user_id = $1",
    )
    .bind(owner)
    .bind(video)
    .bind(seq)
    .bind(state)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if written > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(written)
}

/// A notification whose next attempt is due, with its device.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Due {
    pub id: Uuid,
    pub video_id: VideoId,
    pub state: VideoStatus,
    pub attempts: i32,
    pub device_id: Uuid,
    pub platform: Platform,
    pub token: String,
}

/// Up to `limit` notifications due now, oldest first.
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.id, n.video_id, n.state, n.attempts, d.id AS device_id, d.platform, d.token \
         FROM notifications n JOIN devices d ON d.id = n.device_id \
         WHERE n.status = 'pending' AND n.next_attempt_at <= now() \
         ORDER BY n.next_attempt_at, n.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn mark_sent(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = 'sent', attempts = attempts + 1, sent_at = now(), \
         last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn retry_later(
    pool: &PgPool,
    id: Uuid,
    after: Duration,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET attempts = attempts + 1, last_error = $3, \
         next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
    )
    .bind(id)
    .bind(after.as_secs_f64())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn give_up(pool: &PgPool, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = 'failed', attempts = attempts + 1, last_error = $2 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_for_their_platform() {
        let apns = "a".repeat(64);
        assert!(DeviceToken::parse(Platform::Apns, &apns).is_ok());
        assert!(DeviceToken::parse(Platform::Apns, &"g".repeat(64)).is_err());
        assert!(DeviceToken::parse(Platform::Apns, "abcd").is_err());
        assert!(DeviceToken::parse(Platform::Fcm, "fKx1:APA91bH-q_z.9").is_ok());
        assert!(DeviceToken::parse(Platform::Fcm, "").is_err());
        assert!(DeviceToken::parse(Platform::Fcm, "has space").is_err());
        assert!(DeviceToken::parse(Platform::Webhook, &"x".repeat(4097)).is_err());
        assert_eq!(
            DeviceToken::parse(Platform::Webhook, " phone-1 ")
                .unwrap()
                .as_str(),
            "phone-1"
        );
    }
}

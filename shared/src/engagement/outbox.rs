//! The UGC outbox: every reaction, bookmark, comment and settings event
//! writes a row in its own transaction; the scheduler's relay publishes the
//! rows, in order, to the UGC stream and removes them. So the analytics
//! store hears of exactly what the log holds, even across crashes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Woken when rows are written.
pub const NOTIFY_CHANNEL: &str = "reelay_ugc";

/// A UGC event as the stream carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UgcMessage {
    pub seq: i64,
    pub kind: String,
    pub aggregate_id: Uuid,
    pub video_id: Uuid,
    pub user_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    /// The event itself.
    pub event: serde_json::Value,
}

/// Writes `message` to the outbox in the event's transaction.
pub async fn enqueue(conn: &mut PgConnection, message: &UgcMessage) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO ugc_outbox (seq, payload) VALUES ($1, $2)")
        .bind(message.seq)
        .bind(sqlx::types::Json(message))
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Up to `limit` waiting messages, oldest first.
pub async fn waiting(pool: &PgPool, limit: i64) -> Result<Vec<UgcMessage>, sqlx::Error> {
    let rows: Vec<(sqlx::types::Json<UgcMessage>,)> =
        sqlx::query_as("SELECT payload FROM ugc_outbox ORDER BY seq LIMIT $1")
            .bind(limit)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(m,)| m.0).collect())
}

/// Removes what was published.
pub async fn sent(pool: &PgPool, seqs: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM ugc_outbox WHERE seq = ANY($1)")
        .bind(seqs)
        .execute(pool)
        .await?;
    Ok(())
}

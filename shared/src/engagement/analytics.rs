//! The engagement tables in ClickHouse and what is read from them.
//!
//! - `playback_events`: every player event, with the stream offset of the
//!   message it came in; the largest offset stored is where the ETL
//!   resumes, so the offset is stored with what was inserted (one INSERT
//!   is one block: all of a batch or none of it).
//! - `playback_sessions`: one summary per session (`sessions.rs`),
//!   rewritten with a higher `version` whenever the session gets events.
//! - `ugc_events`: reactions, bookmarks, comments, settings, by log `seq`.
//!
//! Duplicates (a client that sends an event twice, a batch re-read after a
//! crash between steps) are harmless: tables are ReplacingMergeTree on
//! their identity, and reads take one row per event id or the newest
//! summary per session.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    domain::PlayerEventType,
    sessions::{SessionEvent, SessionRow},
};
use crate::clickhouse::{ClickHouse, ClickHouseError};

/// Creates the database and tables if missing (the api and workers call it).
pub async fn migrate(ch: &ClickHouse) -> Result<(), ClickHouseError> {
    let db = ch.database();
    ch.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .await?;
    ch.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.playback_events (\
           event_id UUID, session_id UUID, video_id UUID, user_id String, type String, \
           playhead_ms UInt64, client_ms Int64, received_ms UInt64, rendition String, error_code String, \
           event_date Date, stream_offset UInt64, idx UInt32\
         ) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(event_date) \
         ORDER BY (video_id, session_id, event_id)"
    ))
    .await?;
    ch.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.playback_sessions (\
           video_id UUID, session_id UUID, user_id String, started_ms Int64, session_date Date, \
           played_ms UInt64, furthest_ms UInt64, completed UInt8, startup_ms Int64, rebuffer_ms UInt64, \
           quality_changes UInt32, errors UInt32, played UInt8, version UInt64\
         ) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(session_date) \
         ORDER BY (video_id, session_id)"
    ))
    .await?;
    ch.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.ugc_events (\
           seq UInt64, kind String, aggregate_id UUID, video_id UUID, user_id String, \
           recorded_ms UInt64, event_date Date, payload String, stream_offset UInt64\
         ) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(event_date) ORDER BY (seq)"
    ))
    .await?;
    Ok(())
}

/// A row of `playback_events`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventRow {
    pub event_id: Uuid,
    pub session_id: Uuid,
    pub video_id: Uuid,
    pub user_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub playhead_ms: u64,
    pub client_ms: i64,
    pub received_ms: u64,
    pub rendition: String,
    pub error_code: String,
    pub event_date: String,
    pub stream_offset: u64,
    pub idx: u32,
}

impl EventRow {
    pub fn session_event(&self) -> Option<SessionEvent> {
        Some(SessionEvent {
            id: self.event_id,
            kind: PlayerEventType::parse(&self.kind)?,
            playhead_ms: self.playhead_ms,
            client_ms: self.client_ms,
            order: (self.stream_offset, self.idx),
        })
    }
}

/// A row of `ugc_events`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UgcRow {
    pub seq: u64,
    pub kind: String,
    pub aggregate_id: Uuid,
    pub video_id: Uuid,
    pub user_id: String,
    pub recorded_ms: u64,
    pub event_date: String,
    pub payload: String,
    pub stream_offset: u64,
}

/// Where to resume reading a stream: one past the largest offset `table`
/// holds, or `None` when it holds nothing (read from the first).
pub async fn resume_offset(ch: &ClickHouse, table: &str) -> Result<Option<u64>, ClickHouseError> {
    #[derive(Deserialize)]
    struct Row {
        n: u64,
        top: u64,
    }
    let rows: Vec<Row> = ch
        .query(&format!(
            "SELECT count() AS n, max(stream_offset) AS top FROM {}.{table}",
            ch.database()
        ))
        .await?;
    Ok(rows.first().filter(|r| r.n > 0).map(|r| r.top + 1))
}

fn uuid_list(ids: impl IntoIterator<Item = Uuid>) -> String {
    ids.into_iter()
        .map(|id| format!("toUUID('{id}')"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sessions per query when asking about many: keeps each query well
/// inside ClickHouse's `max_query_size` (256 KiB).
const SESSIONS_PER_QUERY: usize = 1000;

/// Which of these `(video, session)` pairs ClickHouse has a summary of:
/// only those have stored events to read back (the summaries table is far
/// smaller than the events').
pub async fn known_sessions(
    ch: &ClickHouse,
    sessions: &[(Uuid, Uuid)],
) -> Result<HashSet<(Uuid, Uuid)>, ClickHouseError> {
    #[derive(Deserialize)]
    struct Row {
        video_id: Uuid,
        session_id: Uuid,
    }
    let mut known = HashSet::new();
    for chunk in sessions.chunks(SESSIONS_PER_QUERY) {
        let rows: Vec<Row> = ch
            .query(&format!(
                "SELECT DISTINCT video_id, session_id FROM {}.playback_sessions \
                 WHERE video_id IN ({}) AND session_id IN ({})",
                ch.database(),
                uuid_list(chunk.iter().map(|s| s.0).collect::<BTreeSet<_>>()),
                uuid_list(chunk.iter().map(|s| s.1))
            ))
            .await?;
        // The IN lists cross: keep only the pairs asked for.
        let wanted: HashSet<(Uuid, Uuid)> = chunk.iter().copied().collect();
        known.extend(
            rows.into_iter()
                .map(|r| (r.video_id, r.session_id))
                .filter(|k| wanted.contains(k)),
        );
    }
    Ok(known)
}

/// The stored events of these `(video, session)` pairs, one row per event
/// id (the table's key leads with the video, so this reads only their
/// videos' parts).
pub async fn session_events(
    ch: &ClickHouse,
    sessions: &[(Uuid, Uuid)],
) -> Result<Vec<EventRow>, ClickHouseError> {
    let mut events = Vec::new();
    for chunk in sessions.chunks(SESSIONS_PER_QUERY) {
        let videos: BTreeSet<Uuid> = chunk.iter().map(|s| s.0).collect();
        let rows: Vec<EventRow> = ch
            .query(&format!(
                // Aliases differ from the columns inside (an alias named like
                // a column would stand for it inside the other aggregates).
                "SELECT event_id, s AS session_id, v AS video_id, u AS user_id, t AS type, p AS playhead_ms, \
                   c AS client_ms, r AS received_ms, rn AS rendition, ec AS error_code, d AS event_date, \
                   o AS stream_offset, i AS idx FROM (\
                   SELECT event_id, any(session_id) AS s, any(video_id) AS v, any(user_id) AS u, any(type) AS t, \
                     any(playhead_ms) AS p, any(client_ms) AS c, any(received_ms) AS r, any(rendition) AS rn, \
                     any(error_code) AS ec, toString(any(event_date)) AS d, min(stream_offset) AS o, \
                     argMin(idx, stream_offset) AS i \
                   FROM {}.playback_events WHERE video_id IN ({}) AND session_id IN ({}) GROUP BY event_id)",
                ch.database(),
                uuid_list(videos),
                uuid_list(chunk.iter().map(|s| s.1))
            ))
            .await?;
        // The IN lists cross: keep only the pairs asked for.
        let wanted: HashSet<(Uuid, Uuid)> = chunk.iter().copied().collect();
        events.extend(
            rows.into_iter()
                .filter(|r| wanted.contains(&(r.video_id, r.session_id))),
        );
    }
    Ok(events)
}

/// The newest summary of each session of `video` that started in
/// `[from, to)`.
pub async fn sessions_of(
    ch: &ClickHouse,
    video: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<SessionRow>, ClickHouseError> {
    // Aliases differ from the columns: an alias named like a column would
    // stand for it inside the aggregates.
    #[derive(Deserialize)]
    struct Row {
        session_id: Uuid,
        u: String,
        s: i64,
        d: String,
        p: u64,
        f: u64,
        c: u8,
        st: i64,
        r: u64,
        q: u32,
        e: u32,
        pl: u8,
        v: u64,
    }
    let rows: Vec<Row> = ch
        .query(&format!(
            "SELECT session_id, argMax(user_id, version) AS u, argMax(started_ms, version) AS s, \
               toString(argMax(session_date, version)) AS d, argMax(played_ms, version) AS p, \
               argMax(furthest_ms, version) AS f, argMax(completed, version) AS c, \
               argMax(startup_ms, version) AS st, argMax(rebuffer_ms, version) AS r, \
               argMax(quality_changes, version) AS q, argMax(errors, version) AS e, \
               argMax(played, version) AS pl, max(version) AS v \
             FROM {}.playback_sessions WHERE video_id = toUUID('{video}') \
             GROUP BY session_id HAVING s >= {} AND s < {}",
            ch.database(),
            from.timestamp_millis(),
            to.timestamp_millis()
        ))
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| SessionRow {
            video_id: video,
            session_id: r.session_id,
            user_id: r.u,
            started_ms: r.s,
            session_date: r.d,
            played_ms: r.p,
            furthest_ms: r.f,
            completed: r.c,
            startup_ms: r.st,
            rebuffer_ms: r.r,
            quality_changes: r.q,
            errors: r.e,
            played: r.pl,
            version: r.v,
        })
        .collect())
}

/// The most viewed videos of sessions started since `since`.
pub async fn top(
    ch: &ClickHouse,
    since: DateTime<Utc>,
    threshold_ms: u64,
    limit: u32,
) -> Result<Vec<(Uuid, u64)>, ClickHouseError> {
    #[derive(Deserialize)]
    struct Row {
        video_id: Uuid,
        views: u64,
    }
    let rows: Vec<Row> = ch
        .query(&format!(
            "SELECT video_id, countIf(p >= {threshold_ms} OR c = 1) AS views FROM (\
               SELECT video_id, session_id, argMax(played_ms, version) AS p, argMax(completed, version) AS c, \
                 argMax(started_ms, version) AS s \
               FROM {}.playback_sessions GROUP BY video_id, session_id HAVING s >= {}) \
             GROUP BY video_id HAVING views > 0 ORDER BY views DESC, video_id LIMIT {limit}",
            ch.database(),
            since.timestamp_millis()
        ))
        .await?;
    Ok(rows.into_iter().map(|r| (r.video_id, r.views)).collect())
}

/// Drops the monthly partitions of every engagement table older than
/// `months`: retention as ClickHouse does it cheaply.
pub async fn drop_old_partitions(ch: &ClickHouse, months: u32) -> Result<u32, ClickHouseError> {
    #[derive(Deserialize)]
    struct Part {
        table: String,
        partition: String,
    }
    let cutoff = Utc::now() - chrono::Months::new(months);
    let cutoff = cutoff.format("%Y%m").to_string();
    let parts: Vec<Part> = ch
        .query(&format!(
            "SELECT DISTINCT table, partition FROM system.parts WHERE database = '{}' AND active \
             AND table IN ('playback_events', 'playback_sessions', 'ugc_events') AND partition < '{cutoff}'",
            ch.database()
        ))
        .await?;
    let mut dropped = 0;
    for part in parts {
        if part.partition.bytes().all(|b| b.is_ascii_digit()) {
            ch.execute(&format!(
                "ALTER TABLE {}.{} DROP PARTITION {}",
                ch.database(),
                part.table,
                part.partition
            ))
            .await?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

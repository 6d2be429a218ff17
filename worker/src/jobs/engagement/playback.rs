//! The playback stream into ClickHouse: each flush sums up the sessions it
//! touched (their stored events and the new ones, each event id once),
//! writes the summaries, the touched videos' view counts and the viewers'
//! positions, and inserts the raw events last (the commit point).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use reelay_shared::{
    clickhouse::ClickHouse,
    engagement::{
        PlayerEvent, PlayerEventType,
        analytics::{self, EventRow},
        queries::NewPosition,
        sessions::{SessionRow, summarize},
    },
};
use uuid::Uuid;

use super::etl::{Loader, Message, month_runs};
use crate::jobs::Context;

/// How often old partitions are dropped.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// A position this close to the end (or 5 % of the video, if more) resumes
/// from the start.
const NEAR_THE_END_MS: i64 = 10_000;

#[derive(Default)]
pub struct Playback {
    /// When old partitions were last dropped.
    retention: Mutex<Option<Instant>>,
}

/// The events of a message, with where they stood in the stream; `None`
/// for a message that does not parse (it is skipped, and logged).
fn rows_of(message: &Message) -> Option<Vec<(PlayerEvent, EventRow)>> {
    let events: Vec<PlayerEvent> = match serde_json::from_slice(&message.body) {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(offset = message.offset, error = %e, "a playback message does not parse; skipped");
            metrics::counter!("reelay_etl_unreadable_total", "stream" => "playback").increment(1);
            return None;
        }
    };
    Some(
        events
            .into_iter()
            .enumerate()
            .map(|(idx, e)| {
                let row = EventRow {
                    event_id: e.event_id,
                    session_id: e.session_id,
                    video_id: e.video_id.0,
                    user_id: e.user_id.map(|u| u.to_string()).unwrap_or_default(),
                    kind: e.kind.as_str().to_owned(),
                    playhead_ms: e.playhead_ms,
                    client_ms: e.client_time.timestamp_millis(),
                    received_ms: e.received_at.timestamp_millis().max(0) as u64,
                    rendition: e.rendition.clone().unwrap_or_default(),
                    error_code: e.error_code.clone().unwrap_or_default(),
                    event_date: e.received_at.format("%Y-%m-%d").to_string(),
                    stream_offset: message.offset,
                    idx: idx as u32,
                };
                (e, row)
            })
            .collect(),
    )
}

impl Loader for Playback {
    const NAME: &'static str = "playback";
    const TABLE: &'static str = "playback_events";

    fn events_in(&self, message: &Message) -> usize {
        // A cheap estimate: each event is one object of the array.
        message
            .body
            .windows(10)
            .filter(|w| w == b"\"event_id\"")
            .count()
            .max(1)
    }

    async fn flush(&self, ctx: &Context, ch: &ClickHouse, batch: &[Message]) -> anyhow::Result<()> {
        let mut seen = HashSet::new();
        let mut fresh: Vec<(PlayerEvent, EventRow)> = batch
            .iter()
            .filter_map(rows_of)
            .flatten()
            .filter(|(e, _)| seen.insert(e.event_id))
            .collect();
        let touched: Vec<(Uuid, Uuid)> = fresh
            .iter()
            .map(|(e, _)| (e.video_id.0, e.session_id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let stored = analytics::session_events(ch, &touched)
            .await
            .context("reading the touched sessions")?;
        // An event stored before (a client sent it again) counts once.
        let known: HashSet<Uuid> = stored.iter().map(|r| r.event_id).collect();
        fresh.retain(|(e, _)| !known.contains(&e.event_id));
        let (events, rows): (Vec<PlayerEvent>, Vec<EventRow>) = fresh.into_iter().unzip();
        let version = batch.last().map_or(0, |m| m.offset);
        let sessions = summaries(stored.iter().chain(&rows), version);
        ch.insert("playback_sessions", &sessions)
            .await
            .context("inserting session summaries")?;
        let videos: Vec<Uuid> = sessions
            .iter()
            .map(|s| s.video_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let threshold = ctx.config.etl.view_threshold.as_millis() as u64;
        let views = analytics::view_counts(ch, &videos, threshold)
            .await
            .context("counting views")?;
        ctx.store.record_views(&views).await?;
        record_positions(ctx, &events).await?;
        // Last: the raw rows, and with them the offset.
        for run in month_runs(&rows, |r| &r.event_date) {
            ch.insert("playback_events", run)
                .await
                .context("inserting events")?;
        }
        self.drop_old_partitions(ctx, ch).await;
        Ok(())
    }
}

impl Playback {
    async fn drop_old_partitions(&self, ctx: &Context, ch: &ClickHouse) {
        {
            let mut last = self.retention.lock().expect("not poisoned");
            if last.is_some_and(|at| at.elapsed() < RETENTION_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match analytics::drop_old_partitions(ch, ctx.config.etl.retention_months).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                partitions = n,
                "dropped analytics partitions past retention"
            ),
            Err(e) => tracing::warn!(error = %e, "dropping old analytics partitions failed"),
        }
    }
}

/// One summary per `(video, session)` of `rows` (each event id once), at
/// `version`.
fn summaries<'a>(rows: impl Iterator<Item = &'a EventRow>, version: u64) -> Vec<SessionRow> {
    let mut sessions: HashMap<(Uuid, Uuid), (String, Vec<_>)> = HashMap::new();
    for row in rows {
        let Some(event) = row.session_event() else {
            continue;
        };
        let entry = sessions.entry((row.video_id, row.session_id)).or_default();
        if entry.0.is_empty() {
            entry.0.clone_from(&row.user_id);
        }
        entry.1.push(event);
    }
    sessions
        .into_iter()
        .map(|((video_id, session_id), (user_id, mut events))| {
            let s = summarize(&mut events);
            let started = DateTime::<Utc>::from_timestamp_millis(s.started_ms).unwrap_or_default();
            SessionRow {
                video_id,
                session_id,
                user_id,
                started_ms: s.started_ms,
                session_date: started.format("%Y-%m-%d").to_string(),
                played_ms: s.played_ms,
                furthest_ms: s.furthest_ms,
                completed: u8::from(s.completed),
                startup_ms: s.startup_ms.unwrap_or(-1),
                rebuffer_ms: s.rebuffer_ms,
                quality_changes: s.quality_changes,
                errors: s.errors,
                played: u8::from(s.played),
                version,
            }
        })
        .collect()
}

/// The newest position of each signed-in viewer and video in `events`
/// (by client time): where they are, 0 once they finished or got within
/// 10 s or 5 % of the end.
async fn record_positions(ctx: &Context, events: &[PlayerEvent]) -> anyhow::Result<()> {
    use PlayerEventType as T;
    let mut newest: BTreeMap<(Uuid, Uuid), &PlayerEvent> = BTreeMap::new();
    for e in events {
        let Some(user) = e.user_id else { continue };
        if !matches!(e.kind, T::Position | T::Pause | T::Seek | T::Complete) {
            continue;
        }
        let slot = newest.entry((user.0, e.video_id.0)).or_insert(e);
        if e.client_time >= slot.client_time {
            *slot = e;
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let videos: Vec<Uuid> = newest
        .keys()
        .map(|k| k.1)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let durations: HashMap<Uuid, i64> = ctx.store.durations(&videos).await?.into_iter().collect();
    let positions: Vec<NewPosition> = newest
        .into_iter()
        .map(|((user_id, video_id), e)| {
            let at = e.playhead_ms as i64;
            let near_the_end = durations
                .get(&video_id)
                .is_some_and(|&d| d > 0 && at >= d - NEAR_THE_END_MS.max(d / 20));
            NewPosition {
                user_id,
                video_id,
                position_ms: if e.kind == T::Complete || near_the_end {
                    0
                } else {
                    at
                },
                client_time: e.client_time,
            }
        })
        .collect();
    ctx.store.record_positions(&positions).await?;
    Ok(())
}

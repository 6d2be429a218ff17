//! The playback stream into ClickHouse. Each flush:
//!
//! 1. folds the batch's events into their sessions' summaries: from the
//!    fold this reader keeps in memory when the new events come after what
//!    it folded (the usual case: players send in order), else from the
//!    session's stored events read back from ClickHouse (a reader that just
//!    started, an event that came late, a flush that failed before);
//! 2. inserts the summaries (`playback_sessions`, newest version wins);
//! 3. in one PostgreSQL transaction: the sessions that are views (each
//!    counts once, ever, by its row in `counted_views`: a batch read again,
//!    a second reader or a summary that changed never counts twice), and
//!    the viewers' newest positions;
//! 4. inserts the raw events, last: with them the offset moves.

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
        sessions::{Fold, Pushed, SessionEvent, SessionRow},
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
/// How long a session counted as a view is remembered (the api refuses
/// events over 30 days behind).
const COUNTED_VIEWS_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(35);
/// Sessions whose fold is kept in memory; the least recently touched go
/// first (and are read back from ClickHouse if they play on).
const CACHED_SESSIONS: usize = 200_000;

/// `(video, session)`.
type Key = (Uuid, Uuid);

/// A session as this reader folded it, consistent with what ClickHouse
/// holds of it.
#[derive(Clone)]
struct Session {
    fold: Fold,
    /// The signed-in viewer's id, empty for an anonymous one.
    user_id: String,
    /// Known to be counted as a view (in PostgreSQL).
    counted: bool,
    /// The flush that last touched it, for eviction.
    touched: u64,
}

#[derive(Default)]
struct Cache {
    sessions: HashMap<Key, Session>,
    flushes: u64,
}

#[derive(Default)]
pub struct Playback {
    cache: Mutex<Cache>,
    /// When old partitions were last dropped.
    retention: Mutex<Option<Instant>>,
}

/// A batch's event with its row.
struct Incoming {
    event: PlayerEvent,
    row: EventRow,
    session: SessionEvent,
}

/// The events of a message, with where they stood in the stream; none for
/// a message that does not parse (it is skipped, and logged).
fn incoming(message: &Message) -> Vec<Incoming> {
    let events: Vec<PlayerEvent> = match serde_json::from_slice(&message.body) {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(offset = message.offset, error = %e, "a playback message does not parse; skipped");
            metrics::counter!("reelay_etl_unreadable_total", "stream" => "playback").increment(1);
            return Vec::new();
        }
    };
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
            let session = SessionEvent {
                id: e.event_id,
                kind: e.kind,
                playhead_ms: e.playhead_ms,
                client_ms: row.client_ms,
                order: (message.offset, idx as u32),
            };
            Incoming {
                event: e,
                row,
                session,
            }
        })
        .collect()
}

/// What a flush makes of one session.
struct Outcome {
    session: Session,
    /// A view not known to be counted: recorded (once, whatever the
    /// session's row says) with this flush.
    count: bool,
    /// Indexes (into the batch) of its events not stored before.
    fresh: Vec<usize>,
}

impl Loader for Playback {
    const NAME: &'static str = "playback";
    const TABLE: &'static str = "playback_events";

    fn events_in(&self, message: &Message) -> usize {
        // Each event is one object of the array.
        message
            .body
            .windows(10)
            .filter(|w| w == b"\"event_id\"")
            .count()
            .max(1)
    }

    fn reset(&self) {
        // Another reader may have stored events meanwhile.
        self.cache.lock().expect("not poisoned").sessions.clear();
    }

    async fn flush(&self, ctx: &Context, ch: &ClickHouse, batch: &[Message]) -> anyhow::Result<()> {
        let mut seen = HashSet::new();
        let events: Vec<Incoming> = batch
            .iter()
            .flat_map(incoming)
            .filter(|i| seen.insert(i.event.event_id))
            .collect();
        let mut by_session: HashMap<Key, Vec<usize>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            by_session
                .entry((e.row.video_id, e.row.session_id))
                .or_default()
                .push(i);
        }
        let threshold = ctx.config.etl.view_threshold.as_millis() as u64;
        let cached: HashMap<Key, Session> = {
            let cache = self.cache.lock().expect("not poisoned");
            by_session
                .keys()
                .filter_map(|k| cache.sessions.get(k).map(|s| (*k, s.clone())))
                .collect()
        };
        let mut outcomes: HashMap<Key, Outcome> = HashMap::new();
        let mut reread = Vec::new();
        for (key, members) in &by_session {
            let folded = cached
                .get(key)
                .and_then(|s| fold_on(s, members, &events, threshold));
            match folded {
                Some(outcome) => {
                    outcomes.insert(*key, outcome);
                }
                None => reread.push(*key),
            }
        }
        if !reread.is_empty() {
            // A session new to ClickHouse has nothing to read back.
            let known = analytics::known_sessions(ch, &reread)
                .await
                .context("looking sessions up")?;
            let known: Vec<Key> = known.into_iter().collect();
            let stored = analytics::session_events(ch, &known)
                .await
                .context("reading sessions back")?;
            let mut stored_by: HashMap<Key, Vec<EventRow>> = HashMap::new();
            for row in stored {
                stored_by
                    .entry((row.video_id, row.session_id))
                    .or_default()
                    .push(row);
            }
            for key in reread {
                let stored = stored_by.remove(&key).unwrap_or_default();
                let outcome = refold(&stored, &by_session[&key], &events, threshold);
                outcomes.insert(key, outcome);
            }
        }
        let version = batch.last().map_or(0, |m| m.offset);
        let summaries: Vec<SessionRow> = outcomes
            .iter()
            .filter(|(_, o)| !o.fresh.is_empty())
            .map(|(key, o)| row_of(*key, &o.session, version))
            .collect();
        let viewed: Vec<Key> = outcomes
            .iter()
            .filter(|(_, o)| o.count)
            .map(|(key, _)| *key)
            .collect();
        let fresh: Vec<usize> = {
            let mut fresh: Vec<usize> = outcomes.values().flat_map(|o| o.fresh.clone()).collect();
            fresh.sort_unstable();
            fresh
        };
        let result = async {
            ch.insert("playback_sessions", &summaries)
                .await
                .context("inserting session summaries")?;
            let positions = positions(ctx, fresh.iter().map(|&i| &events[i].event)).await?;
            ctx.store.record_playback(&viewed, &positions).await?;
            // Last: the raw rows, and with them the offset.
            let rows: Vec<&EventRow> = fresh.iter().map(|&i| &events[i].row).collect();
            for run in month_runs(&rows, |r| &r.event_date) {
                ch.insert("playback_events", run)
                    .await
                    .context("inserting events")?;
            }
            anyhow::Ok(())
        }
        .await;
        {
            let mut cache = self.cache.lock().expect("not poisoned");
            if result.is_ok() {
                cache.flushes += 1;
                let touched = cache.flushes;
                for (key, mut outcome) in outcomes {
                    outcome.session.touched = touched;
                    outcome.session.counted |= outcome.count;
                    cache.sessions.insert(key, outcome.session);
                }
                evict(&mut cache.sessions);
            } else {
                // What ClickHouse holds of these sessions is unknown now:
                // the retry reads them back.
                for key in by_session.keys() {
                    cache.sessions.remove(key);
                }
            }
        }
        result?;
        self.drop_old_partitions(ctx, ch).await;
        Ok(())
    }
}

/// Folds a session's new events (`members`, batch indexes) into its cached
/// fold; `None` when one came out of order (the session must be read back).
fn fold_on(
    cached: &Session,
    members: &[usize],
    events: &[Incoming],
    threshold: u64,
) -> Option<Outcome> {
    let mut members = members.to_vec();
    members.sort_by_key(|&i| (events[i].session.client_ms, events[i].session.order));
    let mut session = cached.clone();
    let mut fresh = Vec::new();
    for i in members {
        let e = &events[i];
        match session.fold.push(&e.session) {
            Pushed::Added => fresh.push(i),
            Pushed::Duplicate => continue,
            Pushed::OutOfOrder => return None,
        }
        if session.user_id.is_empty() {
            session.user_id.clone_from(&e.row.user_id);
        }
    }
    Some(Outcome {
        count: !session.counted && session.fold.summary.is_view(threshold),
        session,
        fresh,
    })
}

/// A session folded from scratch: its stored events and the batch's new
/// ones (each id once). Whether it was counted is not known here: if it
/// is a view, recording it again is harmless.
fn refold(stored: &[EventRow], members: &[usize], events: &[Incoming], threshold: u64) -> Outcome {
    let known: HashSet<Uuid> = stored.iter().map(|r| r.event_id).collect();
    let fresh: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| !known.contains(&events[i].event.event_id))
        .collect();
    let mut all: Vec<SessionEvent> = stored.iter().filter_map(EventRow::session_event).collect();
    all.extend(fresh.iter().map(|&i| events[i].session.clone()));
    let fold = Fold::of(&mut all);
    let user_id = stored
        .iter()
        .map(|r| &r.user_id)
        .chain(members.iter().map(|&i| &events[i].row.user_id))
        .find(|u| !u.is_empty())
        .cloned()
        .unwrap_or_default();
    Outcome {
        count: fold.summary.is_view(threshold),
        session: Session {
            fold,
            user_id,
            counted: false,
            touched: 0,
        },
        fresh,
    }
}

fn row_of((video_id, session_id): Key, session: &Session, version: u64) -> SessionRow {
    let s = &session.fold.summary;
    let started = DateTime::<Utc>::from_timestamp_millis(s.started_ms).unwrap_or_default();
    SessionRow {
        video_id,
        session_id,
        user_id: session.user_id.clone(),
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
}

/// Keeps the cache within [`CACHED_SESSIONS`]: past it, the least recently
/// touched quarter goes.
fn evict(sessions: &mut HashMap<Key, Session>) {
    if sessions.len() <= CACHED_SESSIONS {
        return;
    }
    let mut touched: Vec<u64> = sessions.values().map(|s| s.touched).collect();
    let cut = sessions.len() - CACHED_SESSIONS * 3 / 4;
    let (_, oldest_kept, _) = touched.select_nth_unstable(cut);
    let oldest_kept = *oldest_kept;
    sessions.retain(|_, s| s.touched >= oldest_kept);
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
        let before = Utc::now() - COUNTED_VIEWS_KEPT;
        if let Err(e) = ctx.store.forget_counted_views(before).await {
            tracing::warn!(error = %e, "forgetting old counted views failed");
        }
    }
}

/// The newest position of each signed-in viewer and video in `events`
/// (by client time): where they are, 0 once they finished or got within
/// 10 s or 5 % of the end.
async fn positions<'a>(
    ctx: &Context,
    events: impl Iterator<Item = &'a PlayerEvent>,
) -> anyhow::Result<Vec<NewPosition>> {
    use PlayerEventType as T;
    let mut newest: BTreeMap<Key, &PlayerEvent> = BTreeMap::new();
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
        return Ok(Vec::new());
    }
    let videos: Vec<Uuid> = newest
        .keys()
        .map(|k| k.1)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let durations: HashMap<Uuid, i64> = ctx.store.durations(&videos).await?.into_iter().collect();
    Ok(newest
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
        .collect())
}

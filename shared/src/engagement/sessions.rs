//! A playback session from its player events: how long it played, how far
//! it got, whether it completed, how it started and stalled. Time played is
//! measured on the playhead, never on client clocks: the sum, over
//! consecutive events while playing, of how far the playhead moved (a seek
//! ends an interval, since its playhead is where the viewer jumped to).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::domain::PlayerEventType;

/// One event as the analytics store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub id: Uuid,
    pub kind: PlayerEventType,
    pub playhead_ms: u64,
    /// The client's clock, ms since the epoch (for durations within one
    /// session: startup and rebuffering).
    pub client_ms: i64,
    /// Where it stood in the stream, to order events of the same instant.
    pub order: (u64, u32),
}

/// What a session amounts to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub played_ms: u64,
    /// The furthest playhead reached.
    pub furthest_ms: u64,
    pub completed: bool,
    /// From open to the first play, when both happened.
    pub startup_ms: Option<i64>,
    pub rebuffer_ms: u64,
    pub quality_changes: u32,
    pub errors: u32,
    /// Whether it ever played.
    pub played: bool,
    /// Its first client instant (ms since the epoch).
    pub started_ms: i64,
}

impl Summary {
    /// A view: played at least `threshold_ms`, or completed.
    pub fn is_view(&self, threshold_ms: u64) -> bool {
        self.completed || self.played_ms >= threshold_ms
    }
}

/// Whether the player plays after an event; `None` keeps the state before.
fn playing_after(kind: PlayerEventType) -> Option<bool> {
    use PlayerEventType as T;
    match kind {
        T::Play | T::Position | T::RebufferEnd => Some(true),
        T::Open | T::Pause | T::Complete | T::Error | T::RebufferStart => Some(false),
        T::Seek | T::QualityChange => None,
    }
}

/// A session summed up so far, and what it takes to go on from there: a
/// new event that sorts after the last one is folded in alone, so a
/// session's summary costs its new events, not its history.
#[derive(Clone, Debug, Default)]
pub struct Fold {
    pub summary: Summary,
    playing: bool,
    opened_at: Option<i64>,
    stalled_at: Option<i64>,
    last: Option<SessionEvent>,
    /// The ids of the events at the last client instant: one of them sent
    /// again sorts after `last`, yet is nothing new.
    frontier: Vec<Uuid>,
}

/// What [`Fold::push`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Added,
    /// An event folded in already.
    Duplicate,
    /// It sorts before the last event: the fold must start over from all
    /// the session's events. Nothing changed.
    OutOfOrder,
}

impl Fold {
    /// The fold of `events` (any order, no duplicates).
    pub fn of(events: &mut [SessionEvent]) -> Self {
        events.sort_by_key(|e| (e.client_ms, e.order));
        let mut fold = Self::default();
        for event in events.iter() {
            fold.push(event);
        }
        fold
    }

    pub fn push(&mut self, event: &SessionEvent) -> Pushed {
        use PlayerEventType as T;
        if let Some(last) = &self.last {
            if event.client_ms == last.client_ms && self.frontier.contains(&event.id) {
                return Pushed::Duplicate;
            }
            if (event.client_ms, event.order) < (last.client_ms, last.order) {
                return Pushed::OutOfOrder;
            }
            // The interval since the last event counted if playing, unless
            // this event jumped (its playhead is where to).
            if self.playing && event.kind != T::Seek {
                self.summary.played_ms += event.playhead_ms.saturating_sub(last.playhead_ms);
            }
        } else {
            self.summary.started_ms = event.client_ms;
        }
        let summary = &mut self.summary;
        summary.furthest_ms = summary.furthest_ms.max(event.playhead_ms);
        match event.kind {
            T::Open => {
                self.opened_at.get_or_insert(event.client_ms);
            }
            T::Play => {
                summary.played = true;
                if summary.startup_ms.is_none()
                    && let Some(opened) = self.opened_at
                {
                    summary.startup_ms = Some((event.client_ms - opened).max(0));
                }
            }
            T::Complete => summary.completed = true,
            T::QualityChange => summary.quality_changes += 1,
            T::Error => summary.errors += 1,
            T::RebufferStart => {
                self.stalled_at.get_or_insert(event.client_ms);
            }
            T::RebufferEnd => {
                if let Some(since) = self.stalled_at.take() {
                    summary.rebuffer_ms += (event.client_ms - since).max(0) as u64;
                }
            }
            T::Pause | T::Seek | T::Position => {}
        }
        if let Some(now) = playing_after(event.kind) {
            self.playing = now;
        }
        if self.playing {
            summary.played = true;
        }
        match &self.last {
            Some(last) if last.client_ms == event.client_ms => self.frontier.push(event.id),
            _ => self.frontier = vec![event.id],
        }
        self.last = Some(event.clone());
        Pushed::Added
    }
}

/// A session's summary with what it belongs to, as the analytics store
/// keeps it (the newest `version` wins).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRow {
    pub video_id: Uuid,
    pub session_id: Uuid,
    /// Empty for an anonymous viewer.
    pub user_id: String,
    pub started_ms: i64,
    pub session_date: String,
    pub played_ms: u64,
    pub furthest_ms: u64,
    pub completed: u8,
    /// -1 when unknown.
    pub startup_ms: i64,
    pub rebuffer_ms: u64,
    pub quality_changes: u32,
    pub errors: u32,
    pub played: u8,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summarize(events: &mut [SessionEvent]) -> Summary {
        Fold::of(events).summary
    }
    use PlayerEventType as T;

    fn ev(kind: PlayerEventType, playhead_ms: u64, client_ms: i64) -> SessionEvent {
        SessionEvent {
            id: Uuid::new_v4(),
            kind,
            playhead_ms,
            client_ms,
            order: (0, 0),
        }
    }

    #[test]
    fn played_time_follows_the_playhead_while_playing() {
        let mut events = vec![
            ev(T::Open, 0, 1_000),
            ev(T::Play, 0, 1_400),
            ev(T::Position, 5_000, 6_400),
            ev(T::QualityChange, 6_000, 7_400),
            ev(T::RebufferStart, 8_000, 9_400),
            ev(T::RebufferEnd, 8_000, 10_400),
            ev(T::Position, 12_000, 14_400),
            ev(T::Complete, 15_000, 17_400),
        ];
        let s = summarize(&mut events);
        assert_eq!(s.played_ms, 15_000);
        assert_eq!(s.startup_ms, Some(400));
        assert_eq!(s.rebuffer_ms, 1_000);
        assert_eq!(s.quality_changes, 1);
        assert!(s.completed && s.is_view(10_000));
    }

    #[test]
    fn a_pause_or_a_seek_ends_an_interval() {
        let mut events = vec![
            ev(T::Play, 0, 0),
            ev(T::Position, 3_000, 3_000),
            ev(T::Pause, 4_000, 4_000),
            // Paused: the clock runs, the playhead does not count.
            ev(T::Play, 4_000, 60_000),
            ev(T::Seek, 50_000, 61_000),
            ev(T::Position, 52_000, 63_000),
        ];
        let s = summarize(&mut events);
        assert_eq!(s.played_ms, 4_000 + 2_000);
        assert!(!s.is_view(10_000), "six seconds of play is no view");
        assert_eq!(s.furthest_ms, 52_000);
    }

    #[test]
    fn events_arriving_out_of_order_are_ordered_by_client_time() {
        let mut events = vec![
            ev(T::Position, 10_000, 10_000),
            ev(T::Play, 0, 0),
            ev(T::Position, 5_000, 5_000),
        ];
        assert_eq!(summarize(&mut events).played_ms, 10_000);
    }

    #[test]
    fn folding_in_new_events_gives_what_summing_up_all_of_them_gives() {
        let events = vec![
            ev(T::Open, 0, 1_000),
            ev(T::Play, 0, 1_400),
            ev(T::Position, 5_000, 6_400),
            ev(T::RebufferStart, 8_000, 9_400),
            ev(T::RebufferEnd, 8_000, 10_400),
            ev(T::Seek, 30_000, 11_000),
            ev(T::Position, 33_000, 14_000),
            ev(T::Complete, 40_000, 21_000),
        ];
        let whole = summarize(&mut events.clone());
        let mut fold = Fold::of(&mut events[..3].to_vec());
        for event in &events[3..] {
            assert_eq!(fold.push(event), Pushed::Added);
        }
        assert_eq!(fold.summary, whole);
        assert_eq!(
            fold.push(&events[7]),
            Pushed::Duplicate,
            "the last one again"
        );
        assert_eq!(
            fold.push(&ev(T::Position, 1_000, 2_000)),
            Pushed::OutOfOrder
        );
        assert_eq!(fold.summary, whole, "nothing changed");
    }
}

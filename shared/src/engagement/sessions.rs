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

/// Sums a session up; `events` in any order (sorted here by client time,
/// then stream order), without duplicates.
pub fn summarize(events: &mut [SessionEvent]) -> Summary {
    events.sort_by_key(|e| (e.client_ms, e.order));
    let mut summary = Summary {
        started_ms: events.first().map_or(0, |e| e.client_ms),
        ..Summary::default()
    };
    let (mut playing, mut opened_at, mut stalled_at) = (false, None, None);
    for (i, event) in events.iter().enumerate() {
        use PlayerEventType as T;
        summary.furthest_ms = summary.furthest_ms.max(event.playhead_ms);
        match event.kind {
            T::Open => {
                opened_at.get_or_insert(event.client_ms);
            }
            T::Play => {
                summary.played = true;
                if summary.startup_ms.is_none()
                    && let Some(opened) = opened_at
                {
                    summary.startup_ms = Some((event.client_ms - opened).max(0));
                }
            }
            T::Complete => summary.completed = true,
            T::QualityChange => summary.quality_changes += 1,
            T::Error => summary.errors += 1,
            T::RebufferStart => {
                stalled_at.get_or_insert(event.client_ms);
            }
            T::RebufferEnd => {
                if let Some(since) = stalled_at.take() {
                    summary.rebuffer_ms += (event.client_ms - since).max(0) as u64;
                }
            }
            T::Pause | T::Seek | T::Position => {}
        }
        if let Some(now) = playing_after(event.kind) {
            playing = now;
        }
        if playing {
            summary.played = true;
            if let Some(next) = events.get(i + 1)
                && next.kind != T::Seek
            {
                summary.played_ms += next.playhead_ms.saturating_sub(event.playhead_ms);
            }
        }
    }
    summary
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
    use PlayerEventType as T;

    fn ev(kind: PlayerEventType, playhead_ms: u64, client_ms: i64) -> SessionEvent {
        SessionEvent {
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
}

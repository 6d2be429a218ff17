//! A video's statistics from its sessions' summaries.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::sessions::SessionRow;

/// Nearest-rank percentiles, in milliseconds; null without sessions that
/// started playing.
#[derive(Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = StartupPercentiles)]
pub struct Percentiles {
    #[schema(minimum = 0)]
    pub p50: Option<i64>,
    #[schema(minimum = 0)]
    pub p95: Option<i64>,
}

/// The views and watch time of the sessions started on one day (UTC).
#[derive(Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = StatsDay)]
pub struct Day {
    #[schema(format = Date)]
    pub date: String,
    pub views: u64,
    pub watch_time_ms: u64,
}

/// How many viewers got how far into the video.
#[derive(Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RetentionPoint {
    /// Percent of the video's duration: 0, 10, … 100.
    #[schema(minimum = 0, maximum = 100, multiple_of = 10)]
    pub at_percent: u32,
    /// Share of the sessions that played which got at least this far.
    #[schema(minimum = 0, maximum = 1)]
    pub share: f64,
}

/// A video's playback statistics over a range of sessions.
#[derive(Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = PlaybackStats)]
pub struct Stats {
    /// Sessions that played at least the view threshold or completed.
    pub views: u64,
    /// Signed-in viewers counted once, each anonymous view once.
    pub unique_viewers: u64,
    /// Played time of every session (on the playhead).
    pub watch_time_ms: u64,
    pub average_view_duration_ms: u64,
    /// Views that completed, of all views.
    #[schema(minimum = 0, maximum = 1)]
    pub completion_rate: f64,
    /// From open to first play.
    pub startup_time_ms: Percentiles,
    /// Time stalled, of time stalled or playing.
    #[schema(minimum = 0, maximum = 1)]
    pub rebuffer_ratio: f64,
    pub quality_changes: u64,
    /// Per day the sessions started on, oldest first.
    pub days: Vec<Day>,
    /// At every tenth of the video's duration, 0 % to 100 % (11 points).
    #[schema(min_items = 11, max_items = 11)]
    pub retention: Vec<RetentionPoint>,
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

pub fn compute(sessions: &[SessionRow], threshold_ms: u64, duration_ms: u64) -> Stats {
    let is_view = |s: &SessionRow| s.completed == 1 || s.played_ms >= threshold_ms;
    let views: Vec<&SessionRow> = sessions.iter().filter(|s| is_view(s)).collect();
    let signed_in: HashSet<&str> = views
        .iter()
        .filter(|s| !s.user_id.is_empty())
        .map(|s| s.user_id.as_str())
        .collect();
    let anonymous = views.iter().filter(|s| s.user_id.is_empty()).count();
    let view_time: u64 = views.iter().map(|s| s.played_ms).sum();
    let watch_time_ms: u64 = sessions.iter().map(|s| s.played_ms).sum();
    let rebuffer: u64 = sessions.iter().map(|s| s.rebuffer_ms).sum();
    let mut startups: Vec<i64> = sessions
        .iter()
        .filter(|s| s.startup_ms >= 0)
        .map(|s| s.startup_ms)
        .collect();
    startups.sort_unstable();
    let mut days: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for s in sessions {
        let day = days.entry(s.session_date.as_str()).or_default();
        day.0 += u64::from(is_view(s));
        day.1 += s.played_ms;
    }
    let played: Vec<&SessionRow> = sessions.iter().filter(|s| s.played == 1).collect();
    let retention = (0..=10)
        .map(|tenth| {
            let at = duration_ms * tenth / 10;
            let reached = played.iter().filter(|s| s.furthest_ms >= at).count();
            RetentionPoint {
                at_percent: tenth as u32 * 10,
                share: match played.len() {
                    0 => 0.0,
                    n => reached as f64 / n as f64,
                },
            }
        })
        .collect();
    Stats {
        views: views.len() as u64,
        unique_viewers: (signed_in.len() + anonymous) as u64,
        watch_time_ms,
        average_view_duration_ms: match views.len() {
            0 => 0,
            n => view_time / n as u64,
        },
        completion_rate: match views.len() {
            0 => 0.0,
            n => views.iter().filter(|s| s.completed == 1).count() as f64 / n as f64,
        },
        startup_time_ms: Percentiles {
            p50: percentile(&startups, 0.5),
            p95: percentile(&startups, 0.95),
        },
        rebuffer_ratio: match rebuffer + watch_time_ms {
            0 => 0.0,
            total => rebuffer as f64 / total as f64,
        },
        quality_changes: sessions.iter().map(|s| u64::from(s.quality_changes)).sum(),
        days: days
            .into_iter()
            .map(|(date, (views, watch_time_ms))| Day {
                date: date.to_owned(),
                views,
                watch_time_ms,
            })
            .collect(),
        retention,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn session(user: &str, played: u64, completed: bool, furthest: u64) -> SessionRow {
        SessionRow {
            video_id: Uuid::nil(),
            session_id: Uuid::new_v4(),
            user_id: user.into(),
            started_ms: 0,
            session_date: "2026-11-25".into(),
            played_ms: played,
            furthest_ms: furthest,
            completed: u8::from(completed),
            startup_ms: 300,
            rebuffer_ms: 100,
            quality_changes: 1,
            errors: 0,
            played: 1,
            version: 1,
        }
    }

    #[test]
    fn views_need_the_threshold_or_completion() {
        let sessions = [
            session("a", 12_000, false, 12_000),
            session("a", 5_000, false, 5_000),
            session("", 3_000, true, 20_000),
        ];
        let stats = compute(&sessions, 10_000, 20_000);
        assert_eq!(stats.views, 2);
        assert_eq!(stats.unique_viewers, 2);
        assert_eq!(stats.watch_time_ms, 20_000);
        assert_eq!(stats.average_view_duration_ms, 7_500);
        assert_eq!(stats.completion_rate, 0.5);
        assert_eq!(stats.startup_time_ms.p50, Some(300));
        assert_eq!(stats.retention[0].share, 1.0);
        assert_eq!(stats.retention[10].share, 1.0 / 3.0);
        assert_eq!(stats.days[0].views, 2);
    }
}

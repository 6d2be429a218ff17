//! A player sending events through the faults, and the check that
//! ClickHouse has each accepted one once.

use super::*;

/// What the player sent: event ids the api accepted (202, not dropped),
/// and ids of batches never accepted.
#[derive(Default)]
pub(super) struct Played {
    pub(super) accepted: Vec<Uuid>,
    pub(super) unaccepted: usize,
}

/// A player on the uploader's videos over the fault window: a session's
/// events every 300 ms, to either api replica; a batch that is not
/// accepted is sent again, as a player does, until its deadline.
pub(super) async fn play(
    apis: Vec<String>,
    token: String,
    videos: Vec<VideoId>,
    window: Duration,
    deadline: Duration,
) -> Played {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let mut played = Played::default();
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < window {
        n += 1;
        let session = Session::new(videos[n % videos.len()], chrono::Utc::now())
            .at(0, "open", 0)
            .at(300, "play", 0)
            .at(5_300, "position", 5_000)
            .at(10_300, "position", 10_000)
            .at(12_000, "pause", 11_700);
        let ids: Vec<Uuid> = session
            .events
            .iter()
            .map(|e| {
                e["event_id"]
                    .as_str()
                    .and_then(|i| i.parse().ok())
                    .expect("an id")
            })
            .collect();
        let mut tries = 0usize;
        let accepted = loop {
            tries += 1;
            let sent = http
                .post(format!("{}/v1/events", apis[(n + tries) % apis.len()]))
                .bearer_auth(&token)
                .json(&session.batch())
                .send()
                .await;
            if let Ok(answer) = sent
                && answer.status() == reqwest::StatusCode::ACCEPTED
            {
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                let dropped: Vec<usize> = body["dropped"]
                    .as_array()
                    .map(|d| {
                        d.iter()
                            .filter_map(|x| x["index"].as_u64())
                            .map(|i| i as usize)
                            .collect()
                    })
                    .unwrap_or_default();
                break Some(
                    ids.iter()
                        .enumerate()
                        .filter(|(i, _)| !dropped.contains(i))
                        .map(|(_, id)| *id)
                        .collect::<Vec<_>>(),
                );
            }
            if started.elapsed() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        match accepted {
            Some(ids) => played.accepted.extend(ids),
            None => played.unaccepted += 1,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    played
}

/// Waits until `until` for every accepted event to reach ClickHouse, then
/// counts those missing and those stored more than once.
pub(super) async fn player_events(
    env: &TestEnv,
    played: Played,
    report: &mut ChaosReport,
    until: Instant,
) {
    report.player_events = played.accepted.len();
    report.player_batches_unaccepted = played.unaccepted;
    let accepted: std::collections::HashSet<Uuid> = played.accepted.iter().copied().collect();
    let mut stored: HashMap<Uuid, usize> = HashMap::new();
    loop {
        stored.clear();
        for id in env.stored_event_ids().await {
            *stored.entry(id).or_default() += 1;
        }
        let all = accepted.iter().all(|id| stored.contains_key(id));
        if all || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    report.player_events_missing = accepted
        .iter()
        .filter(|id| !stored.contains_key(id))
        .count();
    report.player_events_doubled = stored.values().filter(|n| **n > 1).count();
    if played.unaccepted > 0 {
        report.findings.push(format!(
            "{} player batches were never accepted",
            played.unaccepted
        ));
    }
    if report.player_events_missing > 0 {
        report.findings.push(format!(
            "{} accepted player events are not in ClickHouse",
            report.player_events_missing
        ));
    }
    if report.player_events_doubled > 0 {
        report.findings.push(format!(
            "{} player events are in ClickHouse more than once",
            report.player_events_doubled
        ));
    }
}

//! Player events: checked, then published to the playback stream before
//! the 202. The api never waits on the analytics store.
//!
//! - Which videos may be watched is read from PostgreSQL once per video
//!   every few seconds ([`Audiences`]), not once per request: a fleet of
//!   players sends heartbeats about the same videos.
//! - Publishing goes through a [`PlaybackSink`]: requests that arrive while
//!   a publish waits for its confirm are sent together in the next message
//!   (group commit), so ten thousand requests a second cost the broker a
//!   few hundred messages, each confirmed before its requests are answered.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use lapin::{
    BasicProperties,
    types::{FieldTable, ShortString},
};
use reelay_shared::{
    UserId, VideoId,
    engagement::{Audience, PlayerEvent, PlayerEventType},
    mq::Publisher,
    store::Store,
};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    auth::{Caller, Role},
    error::{ApiError, ApiResult},
};

/// The most events one request may carry.
pub const MAX_EVENTS: usize = 100;
/// How far ahead of the api's clock a client's clock may be.
const MAX_CLOCK_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// How old an event may be (players offline for a while send late).
const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::days(30);
const MAX_LABEL: usize = 64;

/// One event as a player sends it.
///
/// Every type takes the same fields; `rendition` and `error_code` are
/// optional for all of them. Fields not named here are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PlayerEvent)]
pub struct IncomingEvent {
    /// The event's own id: an event sent again is stored once.
    pub event_id: Uuid,
    /// One playback of the video by one viewer, from its `open` on.
    pub session_id: Uuid,
    /// A video the viewer may watch.
    pub video_id: Uuid,
    #[serde(rename = "type")]
    pub kind: PlayerEventType,
    /// Where the playhead was (for `seek`: where to), in milliseconds.
    #[schema(maximum = 18446744073709551615u64)]
    pub playhead_ms: u64,
    /// When it happened by the player's clock: at most 5 minutes ahead of
    /// the server's and at most 30 days behind it.
    pub client_time: DateTime<Utc>,
    /// The rendition playing (`quality_change`, say): at most 64
    /// characters, no NUL.
    #[serde(default)]
    #[schema(max_length = 64, pattern = "^[^\\u0000]*$")]
    pub rendition: Option<String>,
    /// The player's error code (`error`): at most 64 characters, no NUL.
    #[serde(default)]
    #[schema(max_length = 64, pattern = "^[^\\u0000]*$")]
    pub error_code: Option<String>,
}

/// `{"events": [...]}`.
#[derive(Debug, Deserialize)]
struct Batch<E> {
    events: Vec<E>,
}

/// Reads a request's body: typed at once, the common case; when that
/// fails, again event by event, to name the bad one by its place.
pub fn parse(body: &[u8]) -> ApiResult<Vec<IncomingEvent>> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object: {\"events\": [...]}".into(),
        ));
    }
    let events = match serde_json::from_slice::<Batch<IncomingEvent>>(body) {
        Ok(batch) => batch.events,
        Err(typed) => {
            let batch: Batch<serde_json::Value> = serde_json::from_slice(body).map_err(|_| {
                ApiError::BadRequest(format!("the body must be {{\"events\": [...]}}: {typed}"))
            })?;
            check_count(batch.events.len())?;
            let mut events = Vec::with_capacity(batch.events.len());
            for (i, mut raw) in batch.events.into_iter().enumerate() {
                crate::error::integral_floats_as_integers(&mut raw);
                events.push(
                    serde_json::from_value(raw)
                        .map_err(|e| ApiError::BadRequest(format!("events[{i}]: {e}")))?,
                );
            }
            events
        }
    };
    check_count(events.len())?;
    Ok(events)
}

fn check_count(n: usize) -> ApiResult<()> {
    match n {
        1..=MAX_EVENTS => Ok(()),
        _ => Err(ApiError::BadRequest(format!(
            "events must hold 1 to {MAX_EVENTS} events; this one holds {n}"
        ))),
    }
}

/// An event of a batch that was left out, and why.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = DroppedEvent)]
pub struct Dropped {
    /// Its place in the batch.
    pub index: usize,
    pub reason: String,
}

/// What a batch gives: the events to publish, and those left out because
/// the player's clock put them outside the window analytics keep.
#[derive(Debug)]
pub struct Checked {
    pub events: Vec<PlayerEvent>,
    pub dropped: Vec<Dropped>,
}

/// Checks events and turns them into stream events: 400 naming the first
/// malformed event and 404 for a video the viewer may not watch, and
/// nothing published. An event whose `client_time` is more than 5 minutes
/// ahead or 30 days behind the server's clock is dropped and reported,
/// while the rest of its batch goes on: a player cannot fix its device's
/// clock, and its other events are good. A signed-in viewer's id (a
/// user's or an admin's, not a service's) goes with every event.
pub async fn check(
    audiences: &Audiences,
    store: &Store,
    viewer: Option<Caller>,
    incoming: Vec<IncomingEvent>,
) -> ApiResult<Checked> {
    let now = Utc::now();
    let user = viewer_user(viewer);
    // Each kept event with its place in the batch, for the answer.
    let mut events = Vec::with_capacity(incoming.len());
    let mut dropped = Vec::new();
    for (i, e) in incoming.into_iter().enumerate() {
        let bad = |why: String| ApiError::BadRequest(format!("events[{i}]: {why}"));
        for (name, value) in [("rendition", &e.rendition), ("error_code", &e.error_code)] {
            if value
                .as_ref()
                .is_some_and(|v| v.chars().count() > MAX_LABEL || v.contains('\0'))
            {
                return Err(bad(format!(
                    "{name} must be at most {MAX_LABEL} characters, without NUL"
                )));
            }
        }
        let clock = if e.client_time > now + MAX_CLOCK_AHEAD {
            Some("is more than 5 minutes ahead of the server's clock")
        } else if e.client_time < now - MAX_AGE {
            Some("is more than 30 days old")
        } else {
            None
        };
        if let Some(why) = clock {
            dropped.push(Dropped {
                index: i,
                reason: format!("client_time {} {why}", e.client_time.to_rfc3339()),
            });
            continue;
        }
        events.push((
            i,
            PlayerEvent {
                event_id: e.event_id,
                session_id: e.session_id,
                video_id: VideoId(e.video_id),
                kind: e.kind,
                playhead_ms: e.playhead_ms,
                client_time: e.client_time,
                rendition: e.rendition,
                error_code: e.error_code,
                user_id: user,
                received_at: now,
            },
        ));
    }
    let videos: Vec<Uuid> = events.iter().map(|(_, e)| e.video_id.0).collect();
    let known = audiences.get(store, &videos).await?;
    for (i, event) in &events {
        let admitted = known
            .get(&event.video_id)
            .is_some_and(|a| super::admits(a, viewer));
        if !admitted {
            return Err(ApiError::Missing(format!(
                "events[{i}]: no video {} that this viewer may watch",
                event.video_id
            )));
        }
    }
    Ok(Checked {
        events: events.into_iter().map(|(_, e)| e).collect(),
        dropped,
    })
}

/// Who may watch which video, read from PostgreSQL at most once per video
/// per [`Audiences::TTL`] (also that a video does not exist).
#[derive(Clone, Default)]
pub struct Audiences {
    known: Arc<Mutex<HashMap<VideoId, Known>>>,
}

/// When a video's audience was read, and what it was (`None`: no such
/// video).
type Known = (Instant, Option<Audience>);

impl Audiences {
    const TTL: Duration = Duration::from_secs(5);
    /// Past this many entries the cache starts over.
    const MAX_ENTRIES: usize = 100_000;

    /// The audiences of `videos` that exist.
    async fn get(&self, store: &Store, videos: &[Uuid]) -> ApiResult<HashMap<VideoId, Audience>> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let known = self
                .known
                .lock()
                .expect("the audience cache is not poisoned");
            for id in videos.iter().map(|v| VideoId(*v)) {
                match known.get(&id) {
                    Some((at, Some(audience))) if at.elapsed() < Self::TTL => {
                        found.insert(id, *audience);
                    }
                    Some((at, None)) if at.elapsed() < Self::TTL => {}
                    _ if !missing.contains(&id.0) => missing.push(id.0),
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let loaded = store.audiences(&missing).await?;
        let now = Instant::now();
        let mut known = self
            .known
            .lock()
            .expect("the audience cache is not poisoned");
        if known.len() > Self::MAX_ENTRIES {
            known.clear();
        }
        for id in missing {
            let audience = loaded.iter().find(|a| a.id.0 == id).copied();
            known.insert(VideoId(id), (now, audience));
            if let Some(audience) = audience {
                found.insert(audience.id, audience);
            }
        }
        Ok(found)
    }
}

/// The most events one stream message carries.
const MAX_MESSAGE_EVENTS: usize = 2000;
/// Publishes running at once, each waiting for its confirm.
const PUBLISHERS: usize = 2;

struct Pending {
    events: Vec<PlayerEvent>,
    done: oneshot::Sender<bool>,
}

/// Publishes player events to the playback stream with confirms, batching
/// concurrent requests into one message (see the module's notes).
#[derive(Clone)]
pub struct PlaybackSink {
    tx: mpsc::Sender<Pending>,
}

impl PlaybackSink {
    pub fn start(publisher: Arc<Publisher>) -> Self {
        let (tx, rx) = mpsc::channel::<Pending>(16_384);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let stream = publisher.topology().playback_stream();
        for _ in 0..PUBLISHERS {
            tokio::spawn(publish_loop(publisher.clone(), stream.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Returns once the broker confirmed `events`; 503 if it can't.
    pub async fn publish(&self, events: Vec<PlayerEvent>) -> ApiResult<()> {
        let unavailable =
            || ApiError::Unavailable("the message broker is unavailable; retry later");
        let (done, confirmed) = oneshot::channel();
        self.tx
            .send(Pending { events, done })
            .await
            .map_err(|_| unavailable())?;
        match confirmed.await {
            Ok(true) => Ok(()),
            _ => Err(unavailable()),
        }
    }
}

async fn publish_loop(
    publisher: Arc<Publisher>,
    stream: String,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut count = first.events.len();
            batch.push(first);
            while count < MAX_MESSAGE_EVENTS {
                match rx.try_recv() {
                    Ok(next) => {
                        count += next.events.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
        }
        let events: Vec<&PlayerEvent> = batch.iter().flat_map(|p| &p.events).collect();
        let ok = match serde_json::to_vec(&events) {
            Ok(body) => {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"))
                    .with_headers(FieldTable::default());
                match publisher
                    .publish_confirmed(&stream, properties, &body)
                    .await
                {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, events = events.len(), "publishing player events failed");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "player events do not serialize");
                false
            }
        };
        metrics::counter!("playback_events_published_total").increment(if ok {
            events.len() as u64
        } else {
            0
        });
        for pending in batch {
            let _ = pending.done.send(ok);
        }
    }
}

/// The user a viewer's token names, for events (services attach none).
pub fn viewer_user(viewer: Option<Caller>) -> Option<UserId> {
    viewer.filter(|c| c.role != Role::Service).map(|c| c.user)
}

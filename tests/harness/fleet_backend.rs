//! A local stand-in for the fleet backend (scooters-backend + telematics),
//! which we can't reach from tests. It checks what the real one would: the
//! HMAC-SHA256 signature of every body, and that the `Idempotency-Key` is
//! the update's id. It plays the devices: after a delay a device reports
//! the new version through `POST /v1/fleet/reports`, as the real backend
//! does once a scooter installed it; or the backend refuses it (4xx), or
//! takes it and the device never reports, or the backend is down (5xx).
//! It records every request, the most updates it held in flight at once,
//! and how many arrived in any one second.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{delete, post},
};
use reelay_shared::signing;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// How a device behaves when asked to update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Play {
    /// The backend takes it; the device reports the version after the delay.
    Succeed,
    /// The backend refuses it (422).
    Reject,
    /// The backend takes it; the device never reports.
    Silent,
    /// Silent the first time, then succeeds.
    SilentOnce,
    /// The backend answers 503 every time.
    Down,
}

/// One update request that reached the backend.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: Instant,
    pub update_id: String,
    pub device: String,
    pub component: String,
    pub version: String,
    pub url: String,
    pub sha256: String,
    pub signature: String,
}

#[derive(Default)]
struct Books {
    arrivals: Vec<Arrival>,
    cancels: Vec<(String, Instant)>,
    in_flight: HashSet<String>,
    max_in_flight: usize,
    seen_keys: HashSet<String>,
    plays: HashMap<String, Play>,
    silent_once_done: HashSet<String>,
    violations: Vec<String>,
    reported: usize,
}

/// How long a device's report is retried.
const REPORT_FOR: Duration = Duration::from_secs(300);

struct Inner {
    secret: String,
    api: String,
    token: String,
    delay: Duration,
    books: Mutex<Books>,
    http: reqwest::Client,
}

pub struct FleetBackend {
    pub url: String,
    pub secret: String,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl FleetBackend {
    /// Starts on a free port; devices report to `api` with `service_token`
    /// `delay` after the backend took their update.
    pub async fn start(api: &str, service_token: String, delay: Duration) -> Self {
        let secret = format!("fleet-{}", uuid::Uuid::new_v4().simple());
        let inner = Arc::new(Inner {
            secret: secret.clone(),
            api: api.trim_end_matches('/').to_owned(),
            token: service_token,
            delay,
            books: Mutex::new(Books::default()),
            http: reqwest::Client::new(),
        });
        let app = Router::new()
            .route("/updates", post(update))
            .route("/updates/{id}", delete(cancel))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            secret,
            inner,
            task,
        }
    }

    /// How `device` (external id) behaves from now on.
    pub fn play(&self, device: &str, play: Play) {
        self.inner
            .books
            .lock()
            .unwrap()
            .plays
            .insert(device.to_owned(), play);
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.inner.books.lock().unwrap().arrivals.clone()
    }

    pub fn cancels(&self) -> Vec<String> {
        let books = self.inner.books.lock().unwrap();
        books.cancels.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Whether a DELETE of `arrival`'s update came after it did (so the
    /// device was told to drop it).
    pub fn withdrawn(&self, arrival: &Arrival) -> bool {
        let books = self.inner.books.lock().unwrap();
        books
            .cancels
            .iter()
            .any(|(id, at)| *id == arrival.update_id && *at >= arrival.at)
    }

    /// Reports the devices sent back.
    pub fn reported(&self) -> usize {
        self.inner.books.lock().unwrap().reported
    }

    /// The most updates taken and not yet reported or cancelled at once.
    pub fn max_in_flight(&self) -> usize {
        self.inner.books.lock().unwrap().max_in_flight
    }

    /// Requests that broke a rule (bad signature, key not the update id).
    pub fn violations(&self) -> Vec<String> {
        self.inner.books.lock().unwrap().violations.clone()
    }

    /// The most update requests that arrived within any one second.
    pub fn max_per_second(&self) -> usize {
        let mut at: Vec<Instant> = self.arrivals().iter().map(|a| a.at).collect();
        at.sort();
        let mut most = 0;
        let mut start = 0;
        for end in 0..at.len() {
            while at[end].duration_since(at[start]) >= Duration::from_secs(1) {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    }

    /// Devices (and component) that got requests under more than one key.
    pub fn devices_with_several_keys(&self) -> Vec<String> {
        let mut keys: HashMap<(String, String), HashSet<String>> = HashMap::new();
        for a in self.arrivals() {
            keys.entry((a.device, a.component))
                .or_default()
                .insert(a.update_id);
        }
        let mut several: Vec<String> = keys
            .into_iter()
            .filter(|(_, k)| k.len() > 1)
            .map(|((d, c), _)| format!("{d}/{c}"))
            .collect();
        several.sort();
        several
    }
}

impl Drop for FleetBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn checked(inner: &Inner, headers: &HeaderMap, body: &[u8], what: &str) -> bool {
    let signature = headers
        .get(signing::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !signing::verify(&inner.secret, body, signature) {
        inner
            .books
            .lock()
            .unwrap()
            .violations
            .push(format!("{what}: bad signature"));
        return false;
    }
    true
}

async fn update(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if !checked(&inner, &headers, &body, "POST /updates") {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".into());
    };
    let text = |k: &str| request[k].as_str().unwrap_or_default().to_owned();
    let update_id = text("update_id");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let device = text("device");
    let component = text("component");
    let version = text("version");
    let play = {
        let mut books = inner.books.lock().unwrap();
        if key != update_id || update_id.is_empty() {
            books.violations.push(format!(
                "Idempotency-Key {key} is not the update id {update_id}"
            ));
            return (StatusCode::BAD_REQUEST, "bad idempotency key".into());
        }
        for field in ["url", "sha256", "signature", "version"] {
            if text(field).is_empty() {
                books
                    .violations
                    .push(format!("update {update_id} lacks {field}"));
            }
        }
        if !books.seen_keys.insert(key) {
            // A repeat of a request already taken: the same answer, no
            // second effect on the device.
            return (
                StatusCode::OK,
                json!({ "accepted": true, "repeat": true }).to_string(),
            );
        }
        books.arrivals.push(Arrival {
            at: Instant::now(),
            update_id: update_id.clone(),
            device: device.clone(),
            component: component.clone(),
            version: version.clone(),
            url: text("url"),
            sha256: text("sha256"),
            signature: text("signature"),
        });
        let mut play = books.plays.get(&device).copied().unwrap_or(Play::Succeed);
        if play == Play::SilentOnce && !books.silent_once_done.insert(device.clone()) {
            play = Play::Succeed;
        }
        if matches!(play, Play::Succeed | Play::Silent | Play::SilentOnce) {
            books.in_flight.insert(update_id.clone());
            books.max_in_flight = books.max_in_flight.max(books.in_flight.len());
        }
        play
    };
    match play {
        Play::Reject => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": "the scooter refused the update" }).to_string(),
        ),
        Play::Down => {
            // Not taken: forget the key so a retry counts as new.
            let mut books = inner.books.lock().unwrap();
            books.seen_keys.remove(&update_id);
            (StatusCode::SERVICE_UNAVAILABLE, "down".into())
        }
        Play::Silent | Play::SilentOnce => {
            (StatusCode::OK, json!({ "accepted": true }).to_string())
        }
        Play::Succeed => {
            let inner = inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(inner.delay).await;
                // Installed: no longer in flight for the backend, whatever
                // the report's fate.
                inner.books.lock().unwrap().in_flight.remove(&update_id);
                let report = json!({ "reports": [{ "device": device, "component": component, "version": version }] });
                // As the real backend does: until the api takes it (an
                // api replica restarting, its database away).
                let until = Instant::now() + REPORT_FOR;
                while Instant::now() < until {
                    let sent = inner
                        .http
                        .post(format!("{}/v1/fleet/reports", inner.api))
                        .bearer_auth(&inner.token)
                        .json(&report)
                        .send()
                        .await;
                    if matches!(&sent, Ok(r) if r.status().is_success()) {
                        inner.books.lock().unwrap().reported += 1;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
            (StatusCode::OK, json!({ "accepted": true }).to_string())
        }
    }
}

async fn cancel(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> StatusCode {
    if !checked(&inner, &headers, b"", "DELETE /updates") {
        return StatusCode::UNAUTHORIZED;
    }
    let mut books = inner.books.lock().unwrap();
    books.cancels.push((id.clone(), Instant::now()));
    match books.in_flight.remove(&id) || books.seen_keys.contains(&id) {
        true => StatusCode::NO_CONTENT,
        false => StatusCode::NOT_FOUND,
    }
}

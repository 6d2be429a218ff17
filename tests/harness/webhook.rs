//! A local stand-in for the moderation service (an outside party): it
//! checks what the real one would check (the HMAC signature of the exact
//! body, the JSON shape, the content type) and answers as a test tells it.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use reelay_shared::signing;
use serde_json::Value;

/// How the receiver answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 200 with `{"decision": …, "reason": …}`.
    Decide(&'static str, Option<&'static str>),
    /// 202 with no decision: it comes later by callback.
    Later,
    /// 503 every time: the service is down.
    Down,
}

/// A request the receiver accepted as genuine.
#[derive(Clone, Debug)]
pub struct Received {
    pub video_id: String,
    pub url: String,
}

#[derive(Clone)]
struct Receiver {
    secret: String,
    answer: Answer,
    received: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<Mutex<usize>>,
    forged: Arc<Mutex<usize>>,
}

pub struct ModerationService {
    pub url: String,
    inner: Receiver,
    task: tokio::task::JoinHandle<()>,
}

impl ModerationService {
    pub async fn start(secret: &str, answer: Answer) -> Self {
        let inner = Receiver {
            secret: secret.to_owned(),
            answer,
            received: Arc::default(),
            attempts: Arc::default(),
            forged: Arc::default(),
        };
        let router = Router::new()
            .route("/moderate", post(moderate))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/moderate",
            listener.local_addr().expect("address")
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, inner, task }
    }

    /// Genuine requests so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("lock").clone()
    }

    /// Every request, genuine or not.
    pub fn attempts(&self) -> usize {
        *self.inner.attempts.lock().expect("lock")
    }

    /// Requests whose signature or shape was wrong.
    pub fn forged(&self) -> usize {
        *self.inner.forged.lock().expect("lock")
    }
}

impl Drop for ModerationService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn moderate(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    *r.attempts.lock().expect("lock") += 1;
    let signature = headers
        .get(signing::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json_body = headers
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let fields = parsed.as_ref().and_then(|v| {
        Some((
            v["video_id"].as_str()?.to_owned(),
            v["url"].as_str()?.to_owned(),
        ))
    });
    let (Some((video_id, url)), true, true) = (
        fields,
        json_body,
        signing::verify(&r.secret, &body, signature),
    ) else {
        *r.forged.lock().expect("lock") += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if let Answer::Down = r.answer {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    r.received
        .lock()
        .expect("lock")
        .push(Received { video_id, url });
    match r.answer {
        Answer::Decide(decision, reason) => {
            axum::Json(serde_json::json!({ "decision": decision, "reason": reason }))
                .into_response()
        }
        Answer::Later | Answer::Down => StatusCode::ACCEPTED.into_response(),
    }
}

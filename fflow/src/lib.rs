//! fflow: reelay's encoder. Each replica glues the chunks workers forward
//! to it into a session on its own disk, and, asked to, encodes the session
//! with ffmpeg into HLS and DASH renditions that it puts in S3.
//!
//! A replica answers under `/` (any replica will do: starting a session)
//! and under `/<replica>/`, its own address, which it hands out when a
//! session starts (`http://host:4050/r1/`): whatever sits in front of the
//! replicas routes that prefix to it. See `reelay_shared::video::fflow` for the
//! protocol.

pub mod config;
pub mod encode;
pub mod sessions;

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, Request, State, rejection::JsonRejection},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use futures_util::StreamExt;
use object_store::{ObjectStoreExt, path::Path as ObjectPath};
use reelay_shared::{
    VideoId,
    config::MAX_CHUNK_SIZE,
    retry::RetryPolicy,
    storage::Storage,
    telemetry,
    video::fflow::{Encode, EncodeState, Glued, SessionInfo, Source, StartSession},
};
use serde::Deserialize;
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpListener, sync::Semaphore};
use tracing::Instrument;

use crate::{
    config::FflowConfig,
    encode::Failure,
    sessions::{Session, SessionError, Sessions},
};

/// What the handlers share.
pub struct Replica {
    pub name: String,
    pub sessions: Sessions,
    storage: Storage,
    retry: RetryPolicy,
    ffmpeg_slots: Semaphore,
    preset: String,
}

pub struct Application {
    listener: TcpListener,
    replica: Arc<Replica>,
    session_ttl: Duration,
}

impl Application {
    /// Binds the listener (port 0 picks one) and opens the data folder,
    /// taking back the sessions a previous run left there.
    pub async fn build(config: FflowConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        let base = match &config.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", listener.local_addr()?),
        };
        let address = format!("{base}/{}/", config.replica);
        let sessions = Sessions::open(config.data_dir.clone(), config.disk_budget, address)
            .await
            .with_context(|| format!("opening {}", config.data_dir.display()))?;
        let replica = Arc::new(Replica {
            name: config.replica.clone(),
            sessions,
            storage: Storage::new(&config.s3).context("building the S3 client")?,
            retry: RetryPolicy {
                attempts: 4,
                base: Duration::from_millis(200),
            },
            ffmpeg_slots: Semaphore::new(config.max_encodes),
            preset: config.preset.clone(),
        });
        Ok(Self {
            listener,
            replica,
            session_ttl: config.session_ttl,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// This replica's own address, ending in `/`.
    pub fn address(&self) -> &str {
        self.replica.sessions.address()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(replica = %self.replica.name, address = %self.address(), "fflow listening");
        let replica = self.replica.clone();
        let ttl = self.session_ttl;
        let expiry = tokio::spawn(async move {
            let mut tick = tokio::time::interval(
                (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            );
            loop {
                tick.tick().await;
                replica.sessions.expire(ttl).await;
            }
        });
        let served = axum::serve(self.listener, router(self.replica))
            .with_graceful_shutdown(shutdown)
            .await;
        expiry.abort();
        served
    }
}

pub fn router(replica: Arc<Replica>) -> Router {
    let sessions = Router::new()
        .route("/sessions", post(start))
        .route("/sessions/{id}", get(show).delete(drop_session))
        .route("/sessions/{id}/chunks", put(glue))
        .route("/sessions/{id}/encode", post(encode))
        .layer(DefaultBodyLimit::max(MAX_CHUNK_SIZE));
    let metrics = telemetry::metrics_handle();
    let name = replica.name.clone();
    Router::new()
        .nest(&format!("/{}", replica.name), sessions.clone())
        .merge(sessions)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(move || async move { metrics.render() }))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                // `video.id` is recorded once a handler knows it.
                let span = tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = request.uri().path(),
                    replica = %name,
                    video.id = tracing::field::Empty,
                );
                next.run(request).instrument(span)
            },
        ))
        .with_state(replica)
}

/// Notes the video a request is about in its span.
fn record_video(video: VideoId) {
    tracing::Span::current().record("video.id", tracing::field::display(video));
}

/// An error answer: status and `{"error": …}` (plus the length for gaps).
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = match &self {
            SessionError::Unknown => StatusCode::NOT_FOUND,
            SessionError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            SessionError::Gap { .. } | SessionError::Incomplete { .. } => StatusCode::CONFLICT,
            SessionError::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            SessionError::Io(e) => {
                tracing::error!(error = %e, "local disk");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut body = json!({ "error": self.to_string() });
        if let SessionError::Gap { length, .. } = self {
            body["length"] = json!(length);
        }
        (status, Json(body)).into_response()
    }
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": e.to_string() })),
    )
        .into_response()
}

fn video_id(id: &str) -> Result<VideoId, SessionError> {
    let video = VideoId::parse(id).ok_or(SessionError::Unknown)?;
    record_video(video);
    Ok(video)
}

async fn ready(State(replica): State<Arc<Replica>>) -> Json<serde_json::Value> {
    Json(json!({
        "replica": replica.name,
        "address": replica.sessions.address(),
        "sessions": replica.sessions.count(),
        "reserved_bytes": replica.sessions.reserved(),
    }))
}

/// `POST /sessions`: 201 with the session (and this replica's address),
/// 200 if this replica has it already, 507 when it would not fit.
async fn start(
    State(replica): State<Arc<Replica>>,
    body: Result<Json<StartSession>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return bad_request(e.body_text()),
    };
    record_video(request.video_id);
    let result = async {
        let (_, new) = replica
            .sessions
            .start(request.video_id, request.size_bytes)
            .await?;
        let info = replica.sessions.info(request.video_id).await?;
        Ok::<_, SessionError>((new, info))
    }
    .await;
    match result {
        Ok((new, info)) => {
            if new {
                metrics::counter!("reelay_fflow_sessions_total").increment(1);
                tracing::info!(size_bytes = request.size_bytes, "session started");
            }
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(info)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct At {
    offset: u64,
}

/// `PUT /sessions/{id}/chunks?offset=N`: glues the body at `offset`.
async fn glue(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
    at: Result<Query<At>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    let Ok(Query(at)) = at else {
        return bad_request("offset must be a whole number of bytes");
    };
    let glued = async {
        let video = video_id(&id)?;
        replica.sessions.glue(video, at.offset, &body).await
    }
    .await;
    match glued {
        Ok(length) => Json(Glued { length }).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct Wait {
    /// Hold the answer until the encode ends, at most this long.
    wait_ms: Option<u64>,
}

/// `GET /sessions/{id}[?wait_ms=N]`: the session; with `wait_ms`, a long
/// poll that answers as soon as the encode ends (or after N ms), so a
/// worker learns of the end at once without polling hard.
async fn show(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
    Query(wait): Query<Wait>,
) -> Response {
    if let Some(ms) = wait.wait_ms
        && let Some(video) = VideoId::parse(&id)
        && let Ok(session) = replica.sessions.get(video)
    {
        let ended = session.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        let working = matches!(
            session.state.lock().await.encode,
            EncodeState::Queued | EncodeState::Running { .. }
        );
        if working {
            let _ = tokio::time::timeout(Duration::from_millis(ms.min(30_000)), ended).await;
        }
    }
    let info = async { replica.sessions.info(video_id(&id)?).await }.await;
    match info {
        Ok(info) => Json(with_progress(&replica, info)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A running encode's percent lives outside the state lock (ffmpeg's
/// progress comes many times a second).
fn with_progress(replica: &Replica, mut info: SessionInfo) -> SessionInfo {
    if let EncodeState::Running { percent } = &mut info.encode
        && let Ok(session) = replica.sessions.get(info.video_id)
    {
        *percent = session.progress.load(Ordering::Relaxed);
    }
    info
}

async fn drop_session(State(replica): State<Arc<Replica>>, Path(id): Path<String>) -> Response {
    let Ok(video) = video_id(&id) else {
        return SessionError::Unknown.into_response();
    };
    if replica.sessions.remove(video).await {
        tracing::info!("session dropped");
        StatusCode::NO_CONTENT.into_response()
    } else {
        SessionError::Unknown.into_response()
    }
}

/// `POST /sessions/{id}/encode` with `{"source": "local"|"s3"}`: 202 with
/// the session; asking again returns the encode as it stands (idempotent).
async fn encode(
    State(replica): State<Arc<Replica>>,
    Path(id): Path<String>,
    body: Result<Json<Encode>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return bad_request(e.body_text()),
    };
    let started = async {
        let video = video_id(&id)?;
        let session = replica.sessions.get(video)?;
        {
            let mut state = session.state.lock().await;
            state.last_activity = tokio::time::Instant::now();
            if matches!(state.encode, EncodeState::Idle) {
                Sessions::check_source(&session, &state, request.source)?;
                state.encode = EncodeState::Queued;
                let span =
                    tracing::info_span!("encode", video.id = %video, replica = %replica.name);
                state.task = Some(tokio::spawn(
                    run(replica.clone(), session.clone(), request.source).instrument(span),
                ));
                tracing::info!(source = ?request.source, "encode queued");
            }
        }
        replica.sessions.info(video).await
    }
    .await;
    match started {
        Ok(info) => (StatusCode::ACCEPTED, Json(with_progress(&replica, info))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// One encode, start to end; its state says how it ended. The local files
/// go once the renditions are stored (or the encode failed).
async fn run(replica: Arc<Replica>, session: Arc<Session>, source: Source) {
    let _slot = replica.ffmpeg_slots.acquire().await.expect("never closed");
    session.state.lock().await.encode = EncodeState::Running { percent: 0 };
    session.progress.store(0, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let outcome = encode_session(&replica, &session, source).await;
    let mut state = session.state.lock().await;
    state.last_activity = tokio::time::Instant::now();
    state.encode = match outcome {
        Ok(result) => {
            metrics::counter!("reelay_fflow_encodes_total", "outcome" => "done").increment(1);
            tracing::info!(
                duration_ms = started.elapsed().as_millis() as u64,
                renditions = result.renditions.len(),
                "encoded"
            );
            EncodeState::Done { result }
        }
        Err(Failure::Refused(reason)) => {
            metrics::counter!("reelay_fflow_encodes_total", "outcome" => "failed").increment(1);
            tracing::warn!(reason, "encode failed");
            EncodeState::Failed { reason }
        }
        Err(Failure::S3Away(reason)) => {
            metrics::counter!("reelay_fflow_encodes_total", "outcome" => "s3_away").increment(1);
            tracing::warn!(reason, "S3 was away; the encode may be asked again");
            EncodeState::Unavailable { reason }
        }
    };
    session.holds_files.store(false, Ordering::Relaxed);
    drop(state);
    sessions::remove(&session.dir).await;
    session.ended.notify_waiters();
}

async fn encode_session(
    replica: &Replica,
    session: &Session,
    source: Source,
) -> Result<reelay_shared::video::fflow::Encoded, Failure> {
    if source == Source::S3 {
        download_original(replica, session).await?;
    }
    let input = session.source();
    let started = std::time::Instant::now();
    let probe = encode::probe(&input).await?;
    let progress = |percent: u8| session.progress.store(percent, Ordering::Relaxed);
    // The poster is one frame: grabbed while the ladder encodes.
    let (out, poster) = (session.out(), session.poster());
    let (rungs, ()) = tokio::try_join!(
        encode::transcode(&input, &out, &probe, &replica.preset, progress),
        encode::poster(&input, &poster, &probe),
    )?;
    let encoded = started.elapsed();
    let stored = encode::store(
        &replica.storage,
        &replica.retry,
        session.video,
        &session.out(),
        &session.poster(),
        &probe,
        &rungs,
    )
    .await?;
    tracing::info!(
        encode_ms = encoded.as_millis() as u64,
        store_ms = (started.elapsed() - encoded).as_millis() as u64,
        "renditions stored"
    );
    Ok(stored)
}

/// The fallback: the original from S3 instead of glued chunks.
async fn download_original(replica: &Replica, session: &Session) -> Result<(), Failure> {
    const WHAT: &str = "reading the original from S3";
    let key = ObjectPath::from(replica.storage.original_key(session.video));
    let failed = |e: &dyn std::fmt::Display| Failure::Refused(format!("{WHAT}: {e}"));
    tokio::fs::create_dir_all(&session.dir)
        .await
        .map_err(|e| failed(&e))?;
    let mut file = tokio::fs::File::create(session.source())
        .await
        .map_err(|e| failed(&e))?;
    let mut stream = replica
        .retry
        .run("get_original", || replica.storage.s3.get(&key))
        .await
        .map_err(|e| Failure::s3(WHAT, &e))?
        .into_stream();
    while let Some(bytes) = stream.next().await {
        file.write_all(&bytes.map_err(|e| Failure::s3(WHAT, &e))?)
            .await
            .map_err(|e| failed(&e))?;
    }
    file.flush().await.map_err(|e| failed(&e))
}

//! Builds the api: state, router, listener.

use std::{future::Future, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use reelay_shared::{
    clickhouse::ClickHouse,
    engagement::analytics,
    lock::Locks,
    mq::{Publisher, Topology},
    storage::Storage,
    store::Store,
    telemetry,
};
use tokio::net::TcpListener;
use tower_http::{
    cors::{AllowOrigin, Any, CorsLayer},
    trace::TraceLayer,
};

use crate::{
    auth::Verifier,
    config::ApiConfig,
    engagement::events::{Audiences, PlaybackSink},
    error::{self, ApiError},
    routes,
    state::AppState,
};

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects to PostgreSQL (running migrations), Redis and the broker, and
    /// binds the listener (port 0 picks a free port).
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let store = Store::connect(&config.database)
            .await
            .context("connecting to PostgreSQL")?;
        store.migrate().await.context("running migrations")?;
        let redis = reelay_shared::lock::connect(&config.redis)
            .await
            .context("connecting to Redis")?;
        let topology = Topology::new(&config.amqp);
        reelay_shared::shards::check_count(
            store.pool(),
            &topology,
            &config.amqp.url,
            &config.replica,
        )
        .await?;
        let queues = reelay_shared::queues(&topology);
        let publisher = Arc::new(Publisher::new(
            config.amqp.url.clone(),
            config.replica.clone(),
            topology,
            queues,
        ));
        if let Err(e) = publisher.channel().await {
            tracing::warn!(error = %e, "broker unavailable at start-up; PATCH answers 503 until it is back");
        }
        let reports = crate::fleet::devices::Reports::start(store.clone());
        let clickhouse = ClickHouse::new(&config.clickhouse);
        if let Err(e) = analytics::migrate(&clickhouse).await {
            tracing::warn!(error = %e, "ClickHouse unavailable at start-up; statistics answer 503 until it is back");
        }
        if config.dev_tokens {
            tracing::warn!(
                "REELAY_DEV_TOKENS is on: this machine may mint admin tokens (development only)"
            );
        }
        let metrics = telemetry::metrics_handle();
        let state = AppState::new(crate::state::Shared {
            polls: reelay_shared::fresh::FreshCache::start(
                store.pool(),
                reelay_shared::fresh::VIDEO_CHANGED,
                "polls",
                config.poll_cache_entries,
            ),
            profiles: reelay_shared::fresh::FreshCache::start(
                store.pool(),
                reelay_shared::fresh::PROFILE_CHANGED,
                "profiles",
                config.link_cache_users,
            ),
            throttle: crate::throttle::Throttle::new(&config),
            budget: Arc::new(crate::video::budget::Budget::new(config.buffer_budget)),
            reports,
            playback: PlaybackSink::start(publisher.clone()),
            audiences: Audiences::default(),
            clickhouse,
            store,
            publisher,
            locks: Locks::new(
                redis.clone(),
                config.redis.key_prefix.clone(),
                config.lock.ttl,
            ),
            redis,
            verifier: Verifier::new(
                &config.jwt_secret,
                config.jwt_public_key.as_deref(),
                config.jwt_leeway,
            )
            .context("REELAY_JWT_PUBLIC_KEY is not a PEM RSA public key")?,
            storage: Storage::new(&config.s3).context("building the S3 client")?,
            metrics,
            config: Arc::new(config),
        });
        let addr = state.config.addr;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        Ok(Self {
            listener,
            router: router(state.clone()),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(port = self.port(), "api listening");
        let publisher = self.state.publisher.clone();
        let served = crate::serve::serve(self.listener, self.router, shutdown).await;
        publisher.close().await;
        served
    }
}

pub fn router(state: AppState) -> Router {
    let exposed = [
        "tus-resumable",
        "tus-version",
        "tus-extension",
        "tus-max-size",
        "tus-checksum-algorithm",
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-expires",
        "upload-checksum",
        "upload-defer-length",
        "location",
        // The poll's tag, for If-None-Match from a page on another origin.
        "etag",
    ]
    .map(HeaderName::from_static);
    let origins = &state.config.cors_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::HEAD,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers(exposed)
        .max_age(std::time::Duration::from_secs(86_400));
    let replica = state.config.replica.clone();
    let request_span = move |request: &Request| {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str());
        // `video.id` is recorded by the handler that resolves one.
        tracing::info_span!(
            "request",
            method = %request.method(),
            route,
            replica = %replica,
            video.id = tracing::field::Empty,
        )
    };
    let (routes, _document) = routes::router().split_for_parts();
    routes
        .fallback(no_route)
        .layer(axum::middleware::from_fn(problems))
        .layer(axum::middleware::from_fn(track_metrics))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::video::tus::options_or_next,
        ))
        .with_state(state)
}

/// A path no route has: a problem+json 404 that names it (the contract
/// test tells it from a handler's own 404 by this detail).
async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute(format!("{method} {}", uri.path()))
}

/// Every error is problem+json. A URL holding NUL (`%00`) is refused
/// before any handler (PostgreSQL keeps no NUL in text, and no id or name
/// has one), and axum's own plain-text rejections (a path segment that is
/// not UTF-8, a body over its limit, a method a path does not have) are
/// rewritten, headers (`Allow`) kept.
async fn problems(request: Request, next: Next) -> Response {
    let nul = |s: &str| {
        s.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    };
    let uri = request.uri();
    if nul(uri.path()) || uri.query().is_some_and(nul) {
        return ApiError::BadRequest("the URL must not contain NUL (%00)".into()).into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|t| t.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let detail = match text.trim() {
        _ if status.is_server_error() => {
            // Like every 500: the cause is logged, not shown.
            tracing::error!(status = status.as_u16(), error = %text, "request failed");
            "internal error"
        }
        "" => status.canonical_reason().unwrap_or_default(),
        text => text,
    };
    let mut answer = error::problem(status, detail);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}

/// Counts requests and their latency by matched route, never by raw path.
async fn track_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

//! Builds the api: state, router, listener.

use std::{future::Future, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request},
    http::{HeaderName, Method},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;
use reelay_shared::{
    config::{LockConfig, UploadConfig},
    lock::Locks,
    mq::{Publisher, Topology},
    storage::Storage,
    store::Store,
    telemetry,
};
use tokio::net::TcpListener;
use tower_http::{
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};

use crate::{auth::Verifier, config::ApiConfig, routes};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub locks: Locks,
    pub redis: ConnectionManager,
    pub verifier: Verifier,
    pub upload: UploadConfig,
    pub lock_config: LockConfig,
    /// Names object keys and presigns temporary links (local computation:
    /// the api never sends object bytes to S3).
    pub storage: Storage,
    pub link_ttl: std::time::Duration,
    pub link_max_ttl: std::time::Duration,
    pub moderation_secret: Option<String>,
    pub service_links_unverified: bool,
    pub metrics: PrometheusHandle,
    pub replica: String,
    /// Signs playback tokens (the same secret as HS256 bearer tokens, under
    /// its own context string).
    pub jwt_secret: String,
    /// `REELAY_PUBLIC_URL`: the base of URLs handed to players.
    pub public_url: Option<String>,
}

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
        let publisher = Arc::new(Publisher::new(
            config.amqp.url.clone(),
            config.replica.clone(),
            topology,
        ));
        if let Err(e) = publisher.channel().await {
            tracing::warn!(error = %e, "broker unavailable at start-up; PATCH answers 503 until it is back");
        }
        let state = AppState {
            store,
            publisher,
            locks: Locks::new(
                redis.clone(),
                config.redis.key_prefix.clone(),
                config.lock.ttl,
            ),
            redis,
            verifier: Verifier::new(&config.jwt_secret, config.jwt_public_key.as_deref())
                .context("REELAY_JWT_PUBLIC_KEY is not a PEM RSA public key")?,
            upload: config.upload.clone(),
            lock_config: config.lock.clone(),
            storage: Storage::new(&config.s3).context("building the S3 client")?,
            link_ttl: config.link_ttl,
            link_max_ttl: config.link_max_ttl,
            moderation_secret: config.moderation_secret.clone(),
            service_links_unverified: config.service_links_unverified,
            metrics: telemetry::metrics_handle(),
            replica: config.replica.clone(),
            jwt_secret: config.jwt_secret.clone(),
            public_url: config.public_url.clone(),
        };
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
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
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        publisher.close().await;
        served
    }
}

pub fn router(state: AppState) -> Router {
    let tus_headers = [
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
    ]
    .map(HeaderName::from_static);
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::HEAD,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers(tus_headers)
        .max_age(std::time::Duration::from_secs(86_400));
    Router::new()
        .merge(routes::tus::router())
        .merge(routes::videos::router())
        .merge(routes::profile::router())
        .merge(routes::links::router())
        .merge(routes::moderation::router())
        .merge(routes::onboarding::router())
        .merge(routes::devices::router())
        .merge(routes::playback::router())
        .merge(routes::ops::router())
        .layer(axum::middleware::from_fn(track_metrics))
        .layer(TraceLayer::new_for_http())
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::tus::options_or_next,
        ))
        .with_state(state)
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

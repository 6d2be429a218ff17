//! `/healthz`, `/readyz`, `/metrics` and `/openapi.json`.

use std::sync::LazyLock;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::Routes;
use crate::{openapi, state::AppState};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(document))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "The process is up", body = String, content_type = "text/plain")))]
async fn health() -> &'static str {
    "ok"
}

/// Which dependencies answered a readiness check.
#[derive(Serialize, ToSchema)]
struct Readiness {
    replica: String,
    postgres: bool,
    redis: bool,
    broker: bool,
}

/// Readiness: 200 when PostgreSQL, Redis and the broker answer; 503 naming
/// what doesn't.
#[utoipa::path(get, path = "/readyz", tag = "ops", security(()),
    responses(
        (status = 200, description = "Every dependency answers", body = Readiness),
        (status = 503, description = "Some dependency does not answer (the body says which)", body = Readiness),
    ))]
async fn ready(State(state): State<AppState>) -> Response {
    let postgres = sqlx::query("SELECT 1")
        .execute(state.store.pool())
        .await
        .is_ok();
    let mut redis = state.redis.clone();
    let redis = redis::cmd("PING")
        .query_async::<String>(&mut redis)
        .await
        .is_ok();
    let broker = state.publisher.ready().await;
    let status = if postgres && redis && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        replica: state.config.replica.clone(),
        postgres,
        redis,
        broker,
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics of this replica.
#[utoipa::path(get, path = "/metrics", tag = "ops", security(()),
    responses((status = 200, description = "The Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

/// The document, built once: it is a function of the code alone.
static DOCUMENT: LazyLock<Vec<u8>> = LazyLock::new(|| {
    serde_json::to_vec(&openapi::document()).expect("the OpenAPI document serializes")
});

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", security(()),
    responses((status = 200, description = "The OpenAPI document of this api", content_type = "application/json",
        body = Object)))]
async fn document() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.as_slice(),
    )
        .into_response()
}

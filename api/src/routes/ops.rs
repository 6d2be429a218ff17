//! `/healthz`, `/readyz`, `/metrics`.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { state.metrics.render() }),
        )
}

/// 200 when PostgreSQL, Redis and the broker answer; 503 naming what doesn't.
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
    let body = json!({ "replica": state.config.replica, "postgres": postgres, "redis": redis, "broker": broker });
    (status, Json(body)).into_response()
}

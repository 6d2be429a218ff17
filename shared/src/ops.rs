//! The operations endpoints of the binaries other than the api (workers,
//! the scheduler): `/healthz`, `/readyz` (what the replica is doing, as
//! JSON) and `/metrics` (Prometheus).

use axum::{Json, Router, routing::get};
use tokio::{net::TcpListener, sync::watch};

use crate::telemetry;

/// Binds `addr`, or nothing when it is empty (no listener configured).
pub async fn bind(addr: &str) -> anyhow::Result<Option<TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    Ok(Some(listener))
}

/// Serves the endpoints until `stop`; `readiness` describes the replica.
pub async fn serve<F>(listener: TcpListener, readiness: F, mut stop: watch::Receiver<bool>)
where
    F: Fn() -> serde_json::Value + Clone + Send + Sync + 'static,
{
    let metrics = telemetry::metrics_handle();
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || async move { Json(readiness()) }))
        .route("/metrics", get(move || async move { metrics.render() }));
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the operations listener stopped");
    }
}

//! JSON logs (or pretty ones for a terminal) and the Prometheus recorder.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// `RUST_LOG` filters (default `info`); `REELAY_LOG_FORMAT=pretty` prints
/// readable lines instead of JSON.
pub fn init_tracing() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn"));
    let pretty = crate::config::Env::process().var_or("REELAY_LOG_FORMAT", "json") == "pretty";
    let registry = tracing_subscriber::registry().with(filter);
    let result = if pretty {
        registry.with(fmt::layer().compact()).try_init()
    } else {
        registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init()
    };
    // A second init (several Applications in one test process) is harmless.
    let _ = result;
}

/// Installs the global Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

//! `reelay-fflow`: one encoder replica.

use reelay_fflow::{Application, config::FflowConfig};
use reelay_shared::{shutdown::shutdown_signal, telemetry};

/// The allocator is set before the runtime starts any thread.
fn main() -> anyhow::Result<()> {
    reelay_shared::memory::give_back_large_buffers();
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let app = Application::build(FflowConfig::from_env()?).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

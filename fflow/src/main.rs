//! `reelay-fflow`: one encoder replica.

use reelay_fflow::{Application, config::FflowConfig};
use reelay_shared::{shutdown::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let app = Application::build(FflowConfig::from_env()?).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

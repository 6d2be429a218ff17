use clap::{Parser, Subcommand};
use reelay_shared::{
    PROJECTIONS, config::DatabaseConfig, shutdown::shutdown_signal, store::Store, telemetry,
};
use reelay_worker::{Worker, config::WorkerConfig};

#[derive(Parser)]
#[command(name = "reelay-worker", about = "reelay's job consumers")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume jobs until SIGTERM or ctrl-c (the default).
    Run,
    /// Rebuild every projection from the event log, in one transaction.
    RebuildProjections,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    match Cli::parse().command.unwrap_or(Command::Run) {
        Command::Run => {
            let worker = Worker::build(WorkerConfig::from_env()?).await?;
            worker.run_until_stopped(shutdown_signal()).await
        }
        Command::RebuildProjections => {
            let store = Store::connect(&DatabaseConfig::from_env()?).await?;
            store.migrate().await?;
            let replayed = store.rebuild_projections(PROJECTIONS).await?;
            tracing::info!(events = replayed, "projections rebuilt");
            Ok(())
        }
    }
}

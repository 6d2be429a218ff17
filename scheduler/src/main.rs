//! `reelay-scheduler`: the scheduler on its own, for deployments that keep
//! it apart from the workers (a worker runs it with `REELAY_SCHEDULER=true`).

use reelay_scheduler::{Scheduler, config::SchedulerConfig};
use reelay_shared::{config::Env, ops, shutdown::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let config = SchedulerConfig::from_env()?;
    let http = ops::bind(&Env::process().var_or("REELAY_SCHEDULER_HTTP_ADDR", "")).await?;
    let scheduler = Scheduler::build(config).await?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    if let Some(listener) = http {
        let lease = scheduler.lease();
        let readiness = move || {
            let role = if lease.is_leader() {
                "leader"
            } else {
                "standby"
            };
            serde_json::json!({ "holder": lease.holder(), "scheduler": role })
        };
        tokio::spawn(ops::serve(listener, readiness, stop.clone()));
    }
    scheduler.run_until_stopped(stop).await;
    Ok(())
}

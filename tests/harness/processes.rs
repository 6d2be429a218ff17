//! The workspace's real binaries as processes, started with the very
//! settings the harness built (each config's `to_env`), killed when their
//! `Child` is dropped.

use std::{path::Path, process::Stdio, time::Duration};

use reelay_api::config::ApiConfig;
use reelay_scheduler::config::SchedulerConfig;
use reelay_shared::config::Vars;
use reelay_worker::config::WorkerConfig;
use tokio::{
    io::AsyncBufReadExt,
    process::{Child, Command},
};

use crate::{TestEnv, TestFflow};

/// How long a process may take to say it listens.
const STARTUP: Duration = Duration::from_secs(30);

impl TestEnv {
    /// A worker as its own process, the real `reelay-worker` binary.
    pub fn spawn_worker_process(&self) -> Child {
        self.spawn_worker_process_with(&self.worker_config())
    }

    pub fn spawn_worker_process_with(&self, config: &WorkerConfig) -> Child {
        self.spawn_process("reelay-worker", with_logs(config.to_env(), "reelay_worker"))
    }

    /// The `reelay-scheduler` binary as replica `replica`.
    pub fn spawn_scheduler_process(&self, replica: &str, config: &SchedulerConfig) -> Child {
        let config = SchedulerConfig {
            replica: replica.to_owned(),
            ..config.clone()
        };
        self.spawn_process(
            "reelay-scheduler",
            with_logs(config.to_env(), "reelay_scheduler"),
        )
    }

    /// A `reelay-worker` process that also runs the scheduler
    /// (`REELAY_SCHEDULER=true`), as replica `replica`.
    pub fn spawn_scheduling_worker_process(
        &self,
        replica: &str,
        config: &SchedulerConfig,
    ) -> Child {
        let worker = WorkerConfig {
            replica: replica.to_owned(),
            scheduler: Some(config.clone()),
            ..self.worker_config()
        };
        self.spawn_process(
            "reelay-worker",
            with_logs(worker.to_env(), "reelay_worker,reelay_scheduler"),
        )
    }

    /// The `reelay-api` binary; returns once it listens, with its base URL.
    pub async fn spawn_api_process(&self, config: &ApiConfig) -> (Child, String) {
        let mut vars = config.to_env();
        vars.push(("REELAY_LOG_FORMAT", "json".into()));
        vars.push(("RUST_LOG", "warn,reelay_api::startup=info".into()));
        let (child, said) = self.spawn_saying("reelay-api", vars, "api listening").await;
        let port = said["port"].as_u64().expect("the api says its port");
        (child, format!("http://127.0.0.1:{port}"))
    }

    /// The `reelay-fflow` binary as replica `replica`, its data under `dir`,
    /// on a port it picks; returns once it listens.
    pub async fn spawn_fflow_process(&self, replica: &str, dir: &Path) -> (Child, TestFflow) {
        let config = self.fflow_config(replica, dir);
        self.spawn_fflow_process_with(&config).await
    }

    pub async fn spawn_fflow_process_with(
        &self,
        config: &reelay_fflow::config::FflowConfig,
    ) -> (Child, TestFflow) {
        let mut vars = config.to_env();
        vars.push(("REELAY_LOG_FORMAT", "json".into()));
        vars.push(("RUST_LOG", "info".into()));
        let (child, said) = self
            .spawn_saying("reelay-fflow", vars, "fflow listening")
            .await;
        let address = said["address"]
            .as_str()
            .expect("fflow says its address")
            .to_owned();
        let base = address
            .trim_end_matches('/')
            .trim_end_matches(config.replica.as_str())
            .trim_end_matches('/')
            .to_owned();
        let fflow = TestFflow {
            base,
            address,
            data_dir: config.data_dir.clone(),
            task: None,
        };
        (child, fflow)
    }

    /// Starts binary `name` of this workspace with exactly `vars` on top of
    /// the inherited environment; its output is dropped unless
    /// `REELAY_TEST_PROCESS_LOGS` is set.
    pub fn spawn_process(&self, name: &str, vars: Vars) -> Child {
        let output = match std::env::var_os("REELAY_TEST_PROCESS_LOGS") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        };
        self.command(name, vars)
            .stdout(output)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts (run `cargo build --bins` first): {e}"))
    }

    /// Starts binary `name` with JSON logs and waits for its log line with
    /// `message`, which it returns; the rest of its output is read and
    /// dropped.
    async fn spawn_saying(
        &self,
        name: &str,
        vars: Vars,
        message: &str,
    ) -> (Child, serde_json::Value) {
        let mut child = self
            .command(name, vars)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts (run `cargo build --bins` first): {e}"));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        let said = tokio::time::timeout(STARTUP, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line)
                    && log["message"] == message
                {
                    return Some(log);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{name} did not log '{message}' within {STARTUP:?}"));
        // Keep reading so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, said)
    }

    fn command(&self, name: &str, vars: Vars) -> Command {
        let mut command = Command::new(self.binaries.join(name));
        command
            .envs(vars)
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }
}

/// Readable logs of `crates` at info, the rest at warn.
fn with_logs(mut vars: Vars, crates: &str) -> Vars {
    let filter = std::iter::once("warn".to_owned())
        .chain(crates.split(',').map(|c| format!("{c}=info")))
        .collect::<Vec<_>>()
        .join(",");
    vars.push(("REELAY_LOG_FORMAT", "pretty".into()));
    vars.push(("RUST_LOG", filter));
    vars
}

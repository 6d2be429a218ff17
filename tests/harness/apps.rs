//! The api, workers, schedulers and fflow replicas inside the test process,
//! each stopped when its handle is dropped.

use std::path::PathBuf;

use reelay_api::{Application, config::ApiConfig};
use reelay_scheduler::{Scheduler, config::SchedulerConfig};
use reelay_worker::{Worker, config::WorkerConfig};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::TestEnv;

impl TestEnv {
    pub async fn spawn_api(&self) -> TestApi {
        self.spawn_api_with(self.api_config()).await
    }

    pub async fn spawn_api_with(&self, config: ApiConfig) -> TestApi {
        let app = Application::build(config).await.expect("the api builds");
        let port = app.port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestApi {
            address: format!("http://127.0.0.1:{port}"),
            stop: Some(stop),
            task,
        }
    }

    /// A worker inside the test process.
    pub async fn spawn_worker(&self) -> TestWorker {
        self.spawn_worker_with(self.worker_config()).await
    }

    pub async fn spawn_worker_with(&self, config: WorkerConfig) -> TestWorker {
        let worker = Worker::build(config).await.expect("the worker builds");
        let ops = worker
            .http_port()
            .map(|port| format!("http://127.0.0.1:{port}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = worker
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestWorker {
            ops,
            stop: Some(stop),
            task,
        }
    }

    /// A scheduler inside the test process.
    pub async fn spawn_scheduler(&self, config: SchedulerConfig) -> TestScheduler {
        let scheduler = Scheduler::build(config)
            .await
            .expect("the scheduler builds");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(scheduler.run_until_stopped(stopped));
        TestScheduler { stop, task }
    }

    /// An fflow replica inside the test process; its data under `dir`.
    pub async fn spawn_fflow(&self, replica: &str, dir: &std::path::Path) -> TestFflow {
        let app = reelay_fflow::Application::build(self.fflow_config(replica, dir))
            .await
            .expect("fflow builds");
        let address = app.address().to_owned();
        let base = format!("http://127.0.0.1:{}", app.port());
        let task = tokio::spawn(async move {
            let _ = app.run_until_stopped(std::future::pending()).await;
        });
        TestFflow {
            base,
            address,
            data_dir: dir.join(replica),
            task: Some(task),
        }
    }
}

pub struct TestApi {
    pub address: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestApi {
    pub fn files_url(&self) -> String {
        format!("{}/files/", self.address)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct TestWorker {
    /// `http://127.0.0.1:<port>` of its `/readyz` and `/metrics` when its
    /// config asked for a listener.
    pub ops: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestWorker {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A scheduler running in the test process; dropped, it stops at once
/// (without giving up its lease, as if it had died).
pub struct TestScheduler {
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TestScheduler {
    /// Stops it as SIGTERM would: it gives up its lease.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An fflow replica (in the test process, or a process the test holds).
pub struct TestFflow {
    /// Where sessions start: `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its own address, `<base>/<replica>/`.
    pub address: String,
    pub data_dir: PathBuf,
    pub(crate) task: Option<JoinHandle<()>>,
}

impl TestFflow {
    /// Files the replica holds (glued sources, encode outputs).
    pub fn local_files(&self) -> usize {
        fn count(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        count(&self.data_dir)
    }
}

impl Drop for TestFflow {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

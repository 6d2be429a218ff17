//! The shipped binaries run on jemalloc with the options of
//! `reelay_shared::memory`: its background thread, which gives an idle
//! process's freed memory back, is running in the api and in a worker.

use std::time::Duration;

use reelay_tests::{TestEnv, wait_until};

/// The names of a process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_a_worker_give_memory_back_from_jemallocs_background_thread() {
    let env = TestEnv::new().await;
    let (mut api, _) = env.spawn_api_process(&env.api_config()).await;
    let mut worker = env.spawn_worker_process();
    for (name, child) in [("api", &api), ("worker", &worker)] {
        let pid = child.id().expect("the process runs");
        let running = wait_until(Duration::from_secs(10), || async {
            thread_names(pid).iter().any(|n| n == "jemalloc_bg_thd")
        })
        .await;
        assert!(
            running,
            "the {name} runs jemalloc's background thread; its threads: {:?}",
            thread_names(pid)
        );
    }
    let _ = api.kill().await;
    let _ = worker.kill().await;
}

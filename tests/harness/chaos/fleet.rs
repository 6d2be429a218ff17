//! A rollout through the faults, and the check that it ended exact.

use super::*;

/// A rollout to every device of a fleet, over the fault window: the
/// scheduler's leader is killed under it, the broker, database and Redis
/// go away under it. Its device timeout is longer than any fault, so each
/// device must be asked exactly once and succeed.
pub(super) struct Fleet {
    pub(super) api: String,
    pub(super) admin: String,
    pub(super) rollout: String,
    pub(super) devices: usize,
    pub(super) http: reqwest::Client,
}

impl Fleet {
    pub(super) async fn call(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let method = match body {
            Some(_) => reqwest::Method::POST,
            None => reqwest::Method::GET,
        };
        let (status, answer) =
            call_json(&self.http, &self.api, method, Some(&self.admin), path, body).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// A firmware, its file through tus, `config.devices` devices and a
    /// started rollout paced to last most of the fault window.
    pub(super) async fn start(env: &TestEnv, api: &str, config: &ChaosConfig) -> Self {
        let mut fleet = Self {
            api: api.to_owned(),
            admin: env.token_with_role(Uuid::new_v4(), Role::Admin),
            rollout: String::new(),
            devices: config.devices,
            http: reqwest::Client::new(),
        };
        let firmware = fleet
            .call(
                "/v1/fleet/firmware",
                Some(serde_json::json!({
                    "hardware_type": "audio_lock", "version": "2.0", "version_num": 2
                })),
            )
            .await;
        let id = firmware["id"].as_str().expect("an id").to_owned();
        let file = crate::random_bytes(100_000);
        let tus = Tus::new(api, fleet.admin.clone());
        let metadata = firmware["upload"]["upload_metadata"]
            .as_str()
            .expect("metadata");
        let upload = tus.create_with_metadata(file.len() as u64, metadata).await;
        tus.upload_from(upload, &file, 0, file.len()).await;
        let available = crate::wait_until(Duration::from_secs(60), || async {
            fleet.call(&format!("/v1/fleet/firmware/{id}"), None).await["status"] == "available"
        })
        .await;
        assert!(available, "the firmware is sealed");
        let names: Vec<String> = (0..config.devices)
            .map(|i| format!("chaos-{i:05}"))
            .collect();
        let service = env.token_with_role(Uuid::new_v4(), Role::Service);
        for chunk in names.chunks(1000) {
            let devices: Vec<serde_json::Value> = chunk
                .iter()
                .map(|d| serde_json::json!({ "external_id": d, "model": "v2" }))
                .collect();
            let (status, body) = call_json(
                &fleet.http,
                api,
                reqwest::Method::POST,
                Some(&service),
                "/v1/fleet/devices",
                Some(serde_json::json!({ "devices": devices })),
            )
            .await;
            assert!(status.is_success(), "devices: {status} {body}");
        }
        let over = config.fault_window.as_secs_f64() * 0.7;
        let rate = ((config.devices as f64 / over).ceil() as u32).max(1);
        let rollout = fleet
            .call(
                "/v1/fleet/rollouts",
                Some(serde_json::json!({
                    "targets": [id],
                    "devices": names,
                    "waves": [10, 40, 50],
                    "max_in_flight": 20,
                    "rate_per_sec": rate,
                    "device_timeout_secs": 3600,
                })),
            )
            .await;
        fleet.rollout = rollout["id"].as_str().expect("an id").to_owned();
        fleet
            .call(
                &format!("/v1/fleet/rollouts/{}/start", fleet.rollout),
                Some(serde_json::json!({})),
            )
            .await;
        fleet
    }

    /// Waits until `until` for the rollout to complete; counts what is not
    /// exact.
    pub(super) async fn check(
        &self,
        backend: &FleetBackend,
        report: &mut ChaosReport,
        until: Instant,
    ) {
        let path = format!("/v1/fleet/rollouts/{}", self.rollout);
        let mut view = serde_json::Value::Null;
        while Instant::now() < until {
            let (status, answer) = call_json(
                &self.http,
                &self.api,
                reqwest::Method::GET,
                Some(&self.admin),
                &path,
                None,
            )
            .await;
            if status.is_success() {
                view = answer;
                if view["state"] == "completed" {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        report.rollout_devices = self.devices;
        report.rollout_succeeded = view["counts"]["succeeded"].as_u64().unwrap_or(0) as usize;
        // A call repeated under its update's key (a worker killed before
        // it recorded the answer) is one request to the backend.
        let asked = backend
            .arrivals()
            .iter()
            .map(|a| a.update_id.clone())
            .collect::<std::collections::HashSet<_>>()
            .len();
        report.duplicate_update_requests =
            asked.saturating_sub(self.devices) + backend.devices_with_several_keys().len();
        let mut inexact = Vec::new();
        if view["state"] != "completed" {
            inexact.push(format!("it is {}", view["state"]));
        }
        if report.rollout_succeeded != self.devices {
            inexact.push(format!("counts {}", view["counts"]));
        }
        if asked != self.devices {
            inexact.push(format!("the backend got {asked} distinct requests"));
        }
        for several in backend.devices_with_several_keys() {
            inexact.push(format!("{several} was asked under several keys"));
        }
        for violation in backend.violations() {
            inexact.push(format!("fleet backend: {violation}"));
        }
        report.rollout_exact = inexact.is_empty();
        for what in inexact {
            report
                .findings
                .push(format!("rollout of {} devices: {what}", self.devices));
        }
    }
}

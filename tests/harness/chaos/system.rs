//! The system under test (api, worker and fflow processes) and the
//! services it reaches, with the faults done to each.

use super::*;

/// A service reached through a proxy, `addr` rewritten in every URL.
fn through(url: &str, addr: &str, proxy: &Proxy) -> String {
    assert!(url.contains(addr), "{url} names {addr}");
    url.replacen(addr, &format!("127.0.0.1:{}", proxy.port), 1)
}

/// `host:port` of a URL such as `amqp://guest:guest@127.0.0.1:5672/%2f`.
fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

/// The four services, each behind a proxy the driver can cut, or (real)
/// reached directly and stopped and started for real.
pub(super) struct Services {
    pub(super) proxies: Vec<(&'static str, Proxy)>,
    pub(super) real: bool,
}

/// How a service of this machine stops and starts (as
/// `scripts/services.sh` starts it), and the port that says it is back.
fn real_service(name: &str) -> (String, String, u16) {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    match name {
        "postgres down" => (
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -n1) main stop -m fast".into(),
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -n1) main start".into(),
            5432,
        ),
        "rabbitmq down" => ("rabbitmqctl -q stop_app".into(), "rabbitmqctl -q start_app".into(), 5672),
        "clickhouse down" => (
            // The bracket keeps the pattern from matching this very shell.
            "pkill -KILL -f 'clickhouse-serve[r]' || true".into(),
            format!("setsid {} >/dev/null", scripts.join("clickhouse.sh").display()),
            8123,
        ),
        "redis down" => (
            "redis-cli shutdown nosave".into(),
            "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no \
             --dir /var/lib/redis --logfile /var/log/redis/reelay.log"
                .into(),
            6379,
        ),
        _ => (
            // By its name: a pattern over command lines would match this
            // very shell's.
            "pkill -KILL -x garage || true".into(),
            // Its own session: a Ctrl-C of the run leaves it running.
            format!("setsid {} >/dev/null", scripts.join("garage.sh").display()),
            3900,
        ),
    }
}

async fn sh(command: &str) {
    let status = tokio::process::Command::new("bash")
        .args(["-c", command])
        .status()
        .await
        .expect("bash runs");
    assert!(status.success(), "{command}: {status}");
}

impl Services {
    /// Takes `name` away for `down`, then brings it back.
    pub(super) async fn outage(&mut self, name: &str, down: Duration) {
        if self.real {
            let (stop, start, port) = real_service(name);
            sh(&stop).await;
            tokio::time::sleep(down).await;
            sh(&start).await;
            let back = crate::wait_until(Duration::from_secs(60), || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await;
            assert!(back, "{name}: the service came back");
            return;
        }
        let proxy = self.proxy(name);
        proxy.cut().await;
        tokio::time::sleep(down).await;
        proxy.restore().await;
    }

    pub(super) async fn start(env: &TestEnv, real: bool) -> (Self, [(String, String); 5]) {
        let pairs = [
            ("postgres down", env.database_url.clone()),
            ("rabbitmq down", env.amqp.url.clone()),
            ("redis down", env.redis.url.clone()),
            ("garage down", env.s3.endpoint.clone()),
            ("clickhouse down", env.clickhouse.url.clone()),
        ];
        let mut proxies = Vec::new();
        let mut urls: Vec<(String, String)> = Vec::new();
        for (name, url) in pairs {
            if real {
                urls.push((url.clone(), url));
                continue;
            }
            let addr = address_of(&url);
            let proxy = Proxy::start(Box::leak(addr.clone().into_boxed_str())).await;
            urls.push((url.clone(), through(&url, &addr, &proxy)));
            proxies.push((name, proxy));
        }
        let urls: [(String, String); 5] = urls.try_into().expect("five services");
        (Self { proxies, real }, urls)
    }

    pub(super) fn proxy(&mut self, name: &str) -> &mut Proxy {
        &mut self
            .proxies
            .iter_mut()
            .find(|(n, _)| *n == name)
            .expect("a service")
            .1
    }
}

/// The processes of the system under test.
pub(super) struct System {
    pub(super) api_configs: Vec<ApiConfig>,
    pub(super) apis: Vec<Child>,
    pub(super) fflow_configs: Vec<FflowConfig>,
    pub(super) fflows: Vec<Child>,
    pub(super) worker_vars: Vec<Vars>,
    pub(super) workers: Vec<Child>,
}

pub(super) const WORKERS: [&str; 2] = ["chaos-w1", "chaos-w2"];

impl System {
    pub(super) async fn start(
        env: &TestEnv,
        urls: &[(String, String); 5],
        push: &PushReceivers,
        dir: &Path,
    ) -> (Self, Vec<String>, FleetBackend) {
        let [database, amqp, redis, s3, clickhouse] = urls.clone().map(|(_, proxied)| proxied);
        let mut api = env.api_config();
        api.database.url = database.clone();
        api.amqp.url = amqp.clone();
        api.redis.url = redis.clone();
        api.s3.endpoint = s3.clone();
        api.clickhouse.url = clickhouse.clone();
        let mut scheduler: SchedulerConfig = env.scheduler_config();
        scheduler.database.url = database.clone();
        scheduler.amqp.url = amqp.clone();
        scheduler.redis.url = redis.clone();
        scheduler.s3.endpoint = s3.clone();
        // S3 calls retry as deployed (REELAY_S3_RETRIES, …), not with the
        // tests' short retries: an outage of a few seconds is theirs to ride.
        let s3_retry =
            reelay_shared::config::S3RetryConfig::read(&reelay_shared::config::Env::process())
                .expect("S3 retry settings");
        scheduler.s3_retry = s3_retry;
        // Stalled uploads are looked at within the settle window, and so are
        // uploads created twice (a creation whose answer a fault took: the
        // client creates another) that never get a byte.
        scheduler.rules.stall_timeout = Duration::from_secs(20);
        scheduler.rules.pending_timeout = Duration::from_secs(30);
        env.point_push_at(&mut scheduler, push, dir);
        let mut system = Self {
            api_configs: Vec::new(),
            apis: Vec::new(),
            fflow_configs: Vec::new(),
            fflows: Vec::new(),
            worker_vars: Vec::new(),
            workers: Vec::new(),
        };
        // Two encoders; a restarted one listens where the workers know it.
        let mut encoders = Vec::new();
        for replica in ["chaos-f1", "chaos-f2"] {
            let mut config = env.fflow_config(replica, dir);
            config.s3.endpoint = s3.clone();
            let (child, fflow) = env.spawn_fflow_process_with(&config).await;
            let port: u16 = fflow.base.rsplit(':').next().unwrap().parse().unwrap();
            config.addr = format!("127.0.0.1:{port}").parse().expect("address");
            system.fflow_configs.push(config);
            system.fflows.push(child);
            encoders.push(fflow.base.clone());
        }
        let mut addresses = Vec::new();
        for i in 0..2 {
            let (child, address) = env.spawn_api_process(&api).await;
            // A restarted replica listens where its clients know it.
            let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
            let mut config = api.clone();
            config.addr = format!("127.0.0.1:{port}").parse().expect("address");
            config.replica = format!("chaos-api{i}");
            system.api_configs.push(config);
            system.apis.push(child);
            addresses.push(address);
        }
        // Devices install in a second and report through the first replica.
        let service = env.token_with_role(Uuid::new_v4(), Role::Service);
        let backend = FleetBackend::start(&addresses[0], service, Duration::from_secs(1)).await;
        system.worker_vars = WORKERS
            .iter()
            .map(|replica| {
                let mut worker: WorkerConfig = env.worker_config_with_fflow(&encoders);
                worker.etl = env.worker_config_with_etl().etl;
                worker.etl.clickhouse.url = clickhouse.clone();
                worker.fleet.backend = Some(BackendConfig {
                    url: backend.url.clone(),
                    secret: backend.secret.clone(),
                });
                worker.replica = (*replica).to_owned();
                worker.s3_retry = s3_retry;
                worker.database.url = database.clone();
                worker.amqp.url = amqp.clone();
                worker.redis.url = redis.clone();
                worker.s3.endpoint = s3.clone();
                worker.scheduler = Some(SchedulerConfig {
                    replica: (*replica).to_owned(),
                    ..scheduler.clone()
                });
                let mut vars = worker.to_env();
                vars.push(("RUST_LOG", "error".into()));
                vars
            })
            .collect();
        for vars in &system.worker_vars {
            system
                .workers
                .push(env.spawn_process("reelay-worker", vars.clone()));
        }
        (system, addresses, backend)
    }

    pub(super) async fn restart_api(&mut self, env: &TestEnv, i: usize) {
        let (child, _) = env.spawn_api_process(&self.api_configs[i]).await;
        self.apis[i] = child;
    }

    pub(super) async fn restart_fflow(&mut self, env: &TestEnv, i: usize) {
        let (child, _) = env.spawn_fflow_process_with(&self.fflow_configs[i]).await;
        self.fflows[i] = child;
    }

    pub(super) fn restart_worker(&mut self, env: &TestEnv, i: usize) {
        self.workers[i] = env.spawn_process("reelay-worker", self.worker_vars[i].clone());
    }
}

/// SIGKILL, and wait until it is dead.
pub(super) async fn kill(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

//! The work that must run once in the cluster: the reaper, the rollout
//! driver, the push dispatcher and the UGC outbox relay. Any number of replicas may run it (a worker with
//! `REELAY_SCHEDULER=true`, or the `reelay-scheduler` binary); a lease in
//! PostgreSQL lets exactly one of them act at a time.

/// The lease the scheduler runs under (`reelay_shared::lease`).
pub use reelay_shared::lease;

pub mod config;
pub mod engagement;
pub mod fleet;
pub mod push;
pub mod video;

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use reelay_shared::{
    engagement::outbox,
    lock::{self, Locks},
    mq::{Publisher, Topology},
    push::{NOTIFY_CHANNEL, Platform},
    storage::Storage,
    store::Store,
};
use serde::Serialize;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::{
    config::{PushConfig, SchedulerConfig},
    engagement::relay::Relay,
    fleet::driver::Driver,
    lease::Lease,
    push::{Dispatcher, Provider, RetryRule, apns, fcm, webhook},
    video::reaper::Reaper,
};

/// The lease's name in the `leases` table.
pub const LEASE_NAME: &str = "scheduler";
/// Pass records kept in `scheduler_passes`.
const PASSES_KEPT: i64 = 1_000;
/// How often the UGC outbox is looked at without a notification.
const UGC_POLL: Duration = Duration::from_secs(1);
/// Redis lock expiry while the reaper holds an upload.
const REAPER_LOCK_TTL: Duration = Duration::from_secs(5);

pub struct Scheduler {
    lease: Lease,
    reaper: Reaper,
    driver: Driver,
    relay: Relay,
    dispatcher: Dispatcher,
    store: Store,
    interval: Duration,
    fleet_tick: Duration,
    push_poll: Duration,
}

impl Scheduler {
    /// Connects to PostgreSQL (running migrations), Redis and S3, and reads
    /// the push providers' keys. The broker is connected only when a pass
    /// needs it.
    pub async fn build(config: SchedulerConfig) -> anyhow::Result<Self> {
        config.check()?;
        let store = Store::connect(&config.database)
            .await
            .context("connecting to PostgreSQL")?;
        store.migrate().await.context("running migrations")?;
        let storage = Storage::new(&config.s3).context("building the S3 client")?;
        let redis = lock::connect(&config.redis)
            .await
            .context("connecting to Redis")?;
        let lease = Lease::new(
            store.pool().clone(),
            LEASE_NAME,
            lease::holder_name(&config.replica),
            config.lease_ttl,
        );
        let dispatcher = Dispatcher::new(
            store.clone(),
            providers(&config.push)?,
            RetryRule {
                max_attempts: config.push.max_attempts,
                base: config.push.retry_base,
                cap: config.push.retry_cap,
            },
            config.push.concurrency,
            config.push.timeout,
        );
        let reaper = Reaper {
            store: store.clone(),
            storage,
            locks: Locks::new(
                redis.clone(),
                config.redis.key_prefix.clone(),
                REAPER_LOCK_TTL,
            ),
            redis,
            redis_prefix: config.redis.key_prefix.clone(),
            amqp_url: config.amqp.url.clone(),
            topology: Topology::new(&config.amqp),
            retry: config.s3_retry.policy(),
            rules: config.rules,
            replica: config.replica.clone(),
            http: reqwest::Client::new(),
            suspects: Default::default(),
        };
        let topology = Topology::new(&config.amqp);
        let publisher = Arc::new(Publisher::new(
            config.amqp.url.clone(),
            format!("{}-scheduler", config.replica),
            topology.clone(),
            reelay_shared::queues(&topology),
        ));
        let driver = Driver {
            store: store.clone(),
            publisher: publisher.clone(),
        };
        let relay = Relay {
            store: store.clone(),
            publisher,
        };
        Ok(Self {
            lease,
            reaper,
            driver,
            relay,
            dispatcher,
            store,
            interval: config.interval,
            fleet_tick: config.fleet_tick,
            push_poll: config.push.poll,
        })
    }

    /// The lease handle, to tell (in `/readyz`) whether this replica leads.
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// Campaigns for the lease and, while leading, runs reaper passes and
    /// push rounds, until `stop`; then gives up the lease.
    pub async fn run_until_stopped(self, stop: watch::Receiver<bool>) {
        tracing::info!(holder = %self.lease.holder(), "scheduler campaigning for the lease");
        tokio::join!(
            self.lease.campaign(stop.clone()),
            self.reap_loop(stop.clone()),
            self.fleet_loop(stop.clone()),
            self.push_loop(stop.clone()),
            self.ugc_loop(stop),
        );
    }

    async fn reap_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = self.lease.leading() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Some(term) = self.lease.held_for(self.lease.ttl() / 3) {
                let started = Utc::now();
                let record = self.record_start("reap", term, started).await;
                let reaped = self.reaper.pass(&self.lease).await;
                self.record_end(record, &reaped).await;
                if reaped.changed() || reaped.errors > 0 {
                    tracing::info!(?reaped, "reaper pass");
                }
                metrics::counter!("reelay_reaper_passes_total").increment(1);
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Drives rollouts every `REELAY_FLEET_TICK_MS` while leading; sets the
    /// fleet gauges every few seconds.
    async fn fleet_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut last_metrics = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            tokio::select! {
                () = self.lease.leading() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let margin = self.lease.ttl() / 3;
            if self.lease.held_for(margin).is_some() {
                let driven = self.driver.pass(&self.lease, margin).await;
                if driven.changed() || driven.errors > 0 {
                    tracing::debug!(?driven, "rollout driver pass");
                }
                if last_metrics.elapsed() >= Duration::from_secs(10) {
                    last_metrics = std::time::Instant::now();
                    if let Err(e) = self.driver.record_metrics().await {
                        tracing::warn!(error = %e, "fleet metrics failed");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.fleet_tick) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn push_loop(&self, stop: watch::Receiver<bool>) {
        let round = || async {
            if let Err(e) = self.push_round().await {
                tracing::warn!(error = %e, "push round failed");
            }
        };
        self.notified_loop(NOTIFY_CHANNEL, self.push_poll, round, stop)
            .await;
    }

    /// Relays the UGC outbox to its stream as rows are written.
    async fn ugc_loop(&self, stop: watch::Receiver<bool>) {
        let round = || async {
            if let Err(e) = self.relay.round(&self.lease).await {
                tracing::warn!(error = format!("{e:#}"), "relaying UGC events failed");
            }
        };
        self.notified_loop(outbox::NOTIFY_CHANNEL, UGC_POLL, round, stop)
            .await;
    }

    /// Runs `round` while leading: at once when `channel` is notified (new
    /// rows), and every `poll` anyway (retries that came due, a lost
    /// listener).
    async fn notified_loop<F, Fut>(
        &self,
        channel: &str,
        poll: Duration,
        round: F,
        mut stop: watch::Receiver<bool>,
    ) where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut listener: Option<PgListener> = None;
        loop {
            tokio::select! {
                () = self.lease.leading() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if listener.is_none() {
                listener = self.listen(channel).await;
            }
            round().await;
            let woken = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(drop),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                woke = woken => if let Err(e) = woke {
                    tracing::warn!(channel, error = %e, "listener lost; polling until it is back");
                    listener = None;
                },
                () = tokio::time::sleep(poll) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn listen(&self, channel: &str) -> Option<PgListener> {
        let listening = async {
            let mut listener = PgListener::connect_with(self.store.pool()).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::warn!(channel, error = %e, "cannot LISTEN; polling");
                None
            }
        }
    }

    /// Sends what is due, batch after batch, while leading.
    async fn push_round(&self) -> Result<(), sqlx::Error> {
        loop {
            let Some(term) = self.lease.held_for(self.lease.ttl() / 3) else {
                return Ok(());
            };
            let due = self.dispatcher.due().await?;
            if due.is_empty() {
                return Ok(());
            }
            let full = due.len() as i64 >= push::BATCH;
            let record = self.record_start("push", term, Utc::now()).await;
            let done = self.dispatcher.send(due, &self.lease).await?;
            self.record_end(record, &done).await;
            if !done.is_empty() {
                tracing::info!(?done, "push round");
            }
            if !full || done.is_empty() {
                return Ok(());
            }
        }
    }

    /// Notes a pass's start in `scheduler_passes` (best effort: the record
    /// is for operators and tests, the work goes on without it).
    async fn record_start(&self, kind: &str, term: i64, at: DateTime<Utc>) -> Option<i64> {
        let recorded: Result<(i64,), _> = sqlx::query_as(
            "INSERT INTO scheduler_passes (kind, holder, term, started_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(kind)
        .bind(self.lease.holder())
        .bind(term)
        .bind(at)
        .fetch_one(self.store.pool())
        .await;
        match recorded {
            Ok((id,)) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e, "recording a scheduler pass failed");
                None
            }
        }
    }

    async fn record_end(&self, id: Option<i64>, counts: &impl Serialize) {
        let Some(id) = id else { return };
        let counts = serde_json::to_value(counts).unwrap_or_default();
        let recorded =
            sqlx::query("UPDATE scheduler_passes SET finished_at = $2, counts = $3 WHERE id = $1")
                .bind(id)
                .bind(Utc::now())
                .bind(counts)
                .execute(self.store.pool())
                .await
                .and(
                    sqlx::query("DELETE FROM scheduler_passes WHERE id <= $1")
                        .bind(id - PASSES_KEPT)
                        .execute(self.store.pool())
                        .await,
                );
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "recording a scheduler pass failed");
        }
    }
}

/// The configured push providers, by platform.
fn providers(config: &PushConfig) -> anyhow::Result<HashMap<Platform, Arc<dyn Provider>>> {
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .context("building the HTTP client")?;
    let mut providers: HashMap<Platform, Arc<dyn Provider>> = HashMap::new();
    if let Some(fcm) = &config.fcm {
        let account = fcm::ServiceAccount::from_file(&fcm.credentials)?;
        providers.insert(
            Platform::Fcm,
            Arc::new(fcm::Fcm::new(http.clone(), &fcm.base_url, account)?),
        );
    }
    if let Some(apns) = &config.apns {
        let pem = std::fs::read_to_string(&apns.key_path)
            .with_context(|| format!("reading the APNs key {}", apns.key_path.display()))?;
        // APNs speaks HTTP/2 only.
        let h2 = reqwest::Client::builder()
            .timeout(config.timeout)
            .http2_prior_knowledge()
            .build()
            .context("building the HTTP/2 client")?;
        let key = apns::ApnsKey {
            pem,
            key_id: apns.key_id.clone(),
            team_id: apns.team_id.clone(),
            topic: apns.topic.clone(),
        };
        providers.insert(
            Platform::Apns,
            Arc::new(apns::Apns::new(h2, &apns.base_url, key)?),
        );
    }
    if let Some(webhook) = &config.webhook {
        providers.insert(
            Platform::Webhook,
            Arc::new(webhook::Webhook::new(
                http,
                webhook.url.clone(),
                webhook.secret.clone(),
            )),
        );
    }
    Ok(providers)
}

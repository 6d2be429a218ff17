//! Builds the worker and runs its consumers until shutdown: one per chunk
//! shard, the verify and encode consumers when configured, the fleet
//! queue's, and the engagement streams' readers (each under a lease). The broker
//! connection is made again (with everything in memory dropped) when it or
//! PostgreSQL fails.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use lapin::Connection;
use reelay_scheduler::Scheduler;
use reelay_shared::{
    fleet::jobs::FleetJob,
    lease,
    mq::{self, Publisher, Topology},
    ops,
    ratelimit::RateLimiter,
    shards::{self, ShardLeases},
    storage::Storage,
    store::Store,
    video::jobs::{JobHeader, JobKind},
};
use tokio::{sync::watch, task::JoinSet};
use tracing::Instrument;

use crate::{
    config::WorkerConfig,
    consumer::{Unordered, run_unordered, stopped},
    jobs::{
        Context,
        engagement::{etl, playback::Playback, ugc::Ugc},
        fleet,
        video::{self, fflow::Fflow},
    },
};

pub struct Worker {
    context: Arc<Context>,
    topology: Topology,
    shards: ShardLeases,
    http: Option<tokio::net::TcpListener>,
    scheduler: Option<Scheduler>,
}

impl Worker {
    /// Connects to PostgreSQL (running migrations), builds the S3 client and,
    /// when configured, the scheduler. The broker is connected in
    /// `run_until_stopped`, and again after loss.
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database)
            .await
            .context("connecting to PostgreSQL")?;
        store.migrate().await.context("running migrations")?;
        let storage = Storage::new(&config.s3).context("building the S3 client")?;
        let http = match config.http_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?,
            ),
            None => None,
        };
        let redis = reelay_shared::lock::connect(&config.redis)
            .await
            .context("connecting to Redis")?;
        let fflow = config.fflow.as_ref().map(|fflow| {
            Arc::new(Fflow::new(
                fflow.clone(),
                redis.clone(),
                config.redis.key_prefix.clone(),
            ))
        });
        let limiter = RateLimiter::new(redis, config.redis.key_prefix.clone());
        if let Some(signer) = &config.fleet.signing_key {
            // The api serves the public keys firmware was signed with.
            store
                .record_signing_key(&signer.key_id(), &signer.public_key())
                .await
                .context("recording the firmware signing key")?;
        }
        let scheduler = match &config.scheduler {
            Some(scheduler) => Some(
                Scheduler::build(scheduler.clone())
                    .await
                    .context("building the scheduler")?,
            ),
            None => None,
        };
        let topology = Topology::new(&config.amqp);
        shards::check_count(store.pool(), &topology, &config.amqp.url, &config.replica).await?;
        let shards = ShardLeases::new(
            store.pool().clone(),
            &topology.prefix,
            lease::holder_name(&config.replica),
            topology.shards,
            config.shard_lease,
        );
        let publisher = Arc::new(Publisher::new(
            config.amqp.url.clone(),
            format!("{}-publisher", config.replica),
            topology.clone(),
            reelay_shared::queues(&topology),
        ));
        Ok(Self {
            context: Arc::new(Context {
                config: Arc::new(config),
                store,
                storage,
                publisher,
                fflow,
                limiter,
                http: reqwest::Client::new(),
                s3_strikes: Default::default(),
                held: Default::default(),
            }),
            topology,
            shards,
            http,
            scheduler,
        })
    }

    pub fn http_port(&self) -> Option<u16> {
        self.http
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let scheduler = self.scheduler.take();
        let lease = scheduler.as_ref().map(Scheduler::lease);
        let leasing = tokio::spawn({
            let (shards, stop) = (self.shards.clone(), stop.clone());
            async move { shards.run(stop).await }
        });
        if let Some(listener) = self.http.take() {
            let replica = self.context.config.replica.clone();
            let assignment = self.shards.assignment();
            let readiness = move || {
                let scheduler = match &lease {
                    None => "off",
                    Some(lease) if lease.is_leader() => "leader",
                    Some(_) => "standby",
                };
                let shards = assignment.borrow();
                serde_json::json!({
                    "replica": replica,
                    "scheduler": scheduler,
                    "shards": shards.consume.keys().collect::<Vec<_>>(),
                    "shard_share": shards.share,
                    "workers": shards.members,
                })
            };
            tokio::spawn(ops::serve(listener, readiness, stop.clone()));
        }
        // The scheduler stops with the worker and gives up its lease then.
        let scheduling = scheduler.map(|s| tokio::spawn(s.run_until_stopped(stop.clone())));
        // The engagement readers keep their own connections and leases.
        let mut readers = JoinSet::new();
        if self.context.config.etl.enabled {
            let playback = self.topology.playback_stream();
            readers.spawn(etl::run(
                self.context.clone(),
                Playback::default(),
                playback,
                stop.clone(),
            ));
            let ugc = self.topology.ugc_stream();
            readers.spawn(etl::run(self.context.clone(), Ugc, ugc, stop.clone()));
        }
        let span = tracing::info_span!("worker", replica = %self.context.config.replica);
        let consumed = self.consume_until_stopped(stop).instrument(span).await;
        // The consumers stopped: the others may take the shards at once.
        let _ = leasing.await;
        self.shards.leave().await;
        if let Some(scheduling) = scheduling {
            let _ = scheduling.await;
        }
        readers.join_all().await;
        consumed
    }

    async fn consume_until_stopped(&self, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut backoff = RECONNECT_FIRST;
        // Since when the consumers keep failing to run.
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let started = tokio::time::Instant::now();
            match run_connection(&self.context, &self.topology, &self.shards, stop.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // A connection that ran a while had a new failure.
                    if started.elapsed() >= HEALTHY_RUN {
                        backoff = RECONNECT_FIRST;
                    }
                    let lease = self.context.config.shard_lease;
                    if started.elapsed() >= lease {
                        failing_since = Some(tokio::time::Instant::now());
                    }
                    // A worker that can't consume for a lease's life gives
                    // its shards to the others until it can.
                    if failing_since.get_or_insert(started).elapsed() >= lease {
                        self.shards.set_active(false);
                    }
                    tracing::warn!(
                        error = format!("{e:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "consumers stopped; reconnecting"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stopped(stop.clone()) => return Ok(()),
                    }
                    // Each restart returns every unacked message, and a
                    // quorum queue counts that as a delivery (50 of them
                    // dead-letter it): take deliveries again only once what
                    // they need answers, however long an outage lasts.
                    if !wait_for_dependencies(&self.context, &self.shards, stop.clone()).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The first pause before reconnecting, and how long a connection must
/// have run for its failure to start the backoff over.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Waits until PostgreSQL and S3 both answer (checked every few seconds,
/// logged while they don't; the worker's shards go to others meanwhile);
/// false when the worker is stopping instead.
async fn wait_for_dependencies(
    ctx: &Context,
    shards: &ShardLeases,
    stop: watch::Receiver<bool>,
) -> bool {
    let mut waited = 0u32;
    loop {
        // A check can take a while (the pool's acquire timeout, the probe's
        // own): a stopping worker does not wait for it.
        let check = async {
            let database = sqlx::query("SELECT 1")
                .execute(ctx.store.pool())
                .await
                .is_ok();
            (database, database && ctx.storage.reachable().await)
        };
        let (database, s3) = tokio::select! {
            answered = check => answered,
            () = stopped(stop.clone()) => return false,
        };
        if database && s3 {
            if waited > 0 {
                tracing::info!("PostgreSQL and S3 answer again; taking deliveries");
            }
            return true;
        }
        // Its shards go to workers that can consume them meanwhile.
        shards.set_active(false);
        if waited.is_multiple_of(10) {
            tracing::warn!(
                postgres = database,
                s3,
                "waiting for PostgreSQL and S3 before taking deliveries again"
            );
        }
        waited += 1;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = stopped(stop.clone()) => return false,
        }
    }
}

/// One broker connection with a consumer per shard, plus the encode and
/// verify consumers. Returns Ok on shutdown, Err when the connection or any
/// consumer failed.
async fn run_connection(
    ctx: &Arc<Context>,
    topology: &Topology,
    shards: &ShardLeases,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let replica = &ctx.config.replica;
    let connection = mq::connect(&ctx.config.amqp.url, replica)
        .await
        .context("connecting to the broker")?;
    let setup = connection.create_channel().await?;
    mq::declare(&setup, &reelay_shared::queues(topology))
        .await
        .context("declaring queues")?;
    // It can consume: it takes (or keeps) its share of the shards.
    shards.set_active(true);
    let connection = Arc::new(connection);
    let mut consumers = JoinSet::new();
    {
        let (ctx, connection, topology, shards, stop) = (
            ctx.clone(),
            connection.clone(),
            topology.clone(),
            shards.clone(),
            stop.clone(),
        );
        consumers.spawn(
            async move { video::shards::consume(ctx, &connection, &topology, shards, stop).await }
                .in_current_span(),
        );
    }
    if let Some(fflow) = &ctx.fflow {
        let channel = connection.create_channel().await?;
        let consumer = Unordered {
            queue: topology.encode_queue(),
            consumer_tag: format!("{replica}.encode"),
            concurrency: fflow.config().encode_concurrency,
            stop: stop.clone(),
            channel,
        };
        let (ctx, fflow) = (ctx.clone(), fflow.clone());
        consumers.spawn(
            async move {
                run_unordered(
                    consumer,
                    job_of(JobKind::Encode),
                    video::span_of,
                    |job, _| {
                        let (ctx, fflow) = (ctx.clone(), fflow.clone());
                        async move {
                            // PostgreSQL trouble ends the consumer: it starts over
                            // and the message comes back.
                            video::encode::run(&ctx, &fflow, job.video)
                                .await
                                .with_context(|| format!("encoding {}", job.video))
                        }
                    },
                )
                .await
            }
            .in_current_span(),
        );
    }
    if let Some(moderation) = &ctx.config.moderation {
        let channel = connection.create_channel().await?;
        let consumer = Unordered {
            queue: topology.verify_queue(),
            consumer_tag: format!("{replica}.verify"),
            concurrency: 4,
            stop: stop.clone(),
            channel,
        };
        let (ctx, moderation) = (ctx.clone(), moderation.clone());
        consumers.spawn(
            async move {
                run_unordered(
                    consumer,
                    job_of(JobKind::Verify),
                    video::span_of,
                    |job, attempt| {
                        let (ctx, moderation) = (ctx.clone(), moderation.clone());
                        async move {
                            video::verify::review(&ctx, &moderation, job.video, attempt)
                                .await
                                .with_context(|| format!("reviewing {}", job.video))
                        }
                    },
                )
                .await
            }
            .in_current_span(),
        );
    }
    {
        let channel = connection.create_channel().await?;
        let consumer = Unordered {
            queue: topology.fleet_queue(),
            consumer_tag: format!("{replica}.fleet"),
            concurrency: ctx.config.fleet.concurrency,
            stop: stop.clone(),
            channel,
        };
        let ctx = ctx.clone();
        consumers.spawn(
            async move {
                run_unordered(consumer, FleetJob::parse, fleet::span_of, |job, attempt| {
                    let ctx = ctx.clone();
                    async move { fleet::run(&ctx, job, attempt).await }
                })
                .await
            }
            .in_current_span(),
        );
    }
    let result = match consumers.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(anyhow::anyhow!("consumer task panicked: {e}")),
        None => Ok(()),
    };
    consumers.shutdown().await;
    close(&connection).await;
    result
}

/// Reads a video job of `kind` (anything else is not for this queue).
fn job_of(kind: JobKind) -> impl Fn(&lapin::BasicProperties) -> Option<JobHeader> {
    move |properties| JobHeader::parse(properties).filter(|header| header.kind == kind)
}

/// Closing the connection returns every unacked message to its queue, in order.
async fn close(connection: &Connection) {
    let _ = connection.close(200, "worker stopping".into()).await;
}

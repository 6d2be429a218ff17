//! Builds the worker and runs one consumer per shard queue until shutdown,
//! reconnecting (with everything in memory dropped) when the broker or
//! Postgres fails.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures_util::StreamExt;
use lapin::{
    Connection,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions},
    types::FieldTable,
};
use reelay_scheduler::Scheduler;
use reelay_shared::{
    mq,
    mq::{JobHeader, JobKind, Publisher, Topology},
    ops,
    retry::RetryPolicy,
    storage::Storage,
    store::Store,
};
use tokio::{sync::watch, task::JoinSet};

use crate::{
    config::WorkerConfig,
    fflow::Fflow,
    jobs::{
        Context, Outcome,
        shard::{Shard, ShardError},
    },
};

pub struct Worker {
    context: Arc<Context>,
    topology: Topology,
    amqp_url: String,
    replica: String,
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
        let fflow = match config.fflow {
            Some(fflow) => {
                let redis = reelay_shared::lock::connect(&config.redis)
                    .await
                    .context("connecting to Redis")?;
                Some(Arc::new(Fflow::new(fflow, redis, config.redis.key_prefix)))
            }
            None => None,
        };
        let scheduler = match config.scheduler {
            Some(scheduler) => Some(
                Scheduler::build(scheduler)
                    .await
                    .context("building the scheduler")?,
            ),
            None => None,
        };
        Ok(Self {
            context: Arc::new(Context {
                store,
                storage,
                retry: RetryPolicy {
                    attempts: config.s3_retries,
                    base: config.s3_retry_base,
                },
                stage_idle: config.stage_idle,
                prefetch: config.prefetch,
                publisher: Arc::new(Publisher::new(
                    config.amqp.url.clone(),
                    format!("{}-publisher", config.replica),
                    Topology::new(&config.amqp),
                )),
                moderation: config.moderation,
                fflow,
                http: reqwest::Client::new(),
            }),
            topology: Topology::new(&config.amqp),
            amqp_url: config.amqp.url,
            replica: config.replica,
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
        if let Some(listener) = self.http.take() {
            let replica = self.replica.clone();
            let readiness = move || {
                let scheduler = match &lease {
                    None => "off",
                    Some(lease) if lease.is_leader() => "leader",
                    Some(_) => "standby",
                };
                serde_json::json!({ "replica": replica, "scheduler": scheduler })
            };
            tokio::spawn(ops::serve(listener, readiness, stop.clone()));
        }
        // The scheduler stops with the worker and gives up its lease then.
        let scheduling = scheduler.map(|s| tokio::spawn(s.run_until_stopped(stop.clone())));
        let consumed = self.consume_until_stopped(stop).await;
        if let Some(scheduling) = scheduling {
            let _ = scheduling.await;
        }
        consumed
    }

    async fn consume_until_stopped(&self, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(200);
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            match run_connection(
                &self.context,
                &self.topology,
                &self.amqp_url,
                &self.replica,
                stop.clone(),
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "consumers stopped; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stopped(stop.clone()) => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// One broker connection with a consumer per shard. Returns Ok on shutdown,
/// Err when the connection or any consumer failed.
async fn run_connection(
    context: &Arc<Context>,
    topology: &Topology,
    url: &str,
    replica: &str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let connection = mq::connect(url, replica)
        .await
        .context("connecting to the broker")?;
    let setup = connection.create_channel().await?;
    topology.declare(&setup).await.context("declaring queues")?;
    tracing::info!(replica, shards = topology.shards, "consuming chunk queues");
    let mut consumers = JoinSet::new();
    for shard in 0..topology.shards {
        let context = context.clone();
        let queue = topology.chunk_queue(shard);
        let tag = format!("{replica}.{shard}");
        let channel = connection.create_channel().await?;
        consumers.spawn(consume(context, channel, queue, tag, stop.clone()));
    }
    if let Some(fflow) = &context.fflow {
        let channel = connection.create_channel().await?;
        consumers.spawn(consume_encode(
            context.clone(),
            fflow.clone(),
            channel,
            topology.encode_queue(),
            format!("{replica}.encode"),
            stop.clone(),
        ));
    }
    if context.moderation.is_some() {
        let channel = connection.create_channel().await?;
        consumers.spawn(consume_verify(
            context.clone(),
            channel,
            topology.verify_queue(),
            format!("{replica}.verify"),
            stop.clone(),
        ));
    }
    let result = match consumers.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(anyhow::anyhow!("consumer task panicked: {e}")),
        None => Ok(()),
    };
    consumers.shutdown().await;
    close(connection).await;
    result
}

/// Closing the connection returns every unacked message to its queue, in order.
async fn close(connection: Connection) {
    let _ = connection.close(200, "worker stopping".into()).await;
}

async fn consume(
    context: Arc<Context>,
    channel: lapin::Channel,
    queue: String,
    tag: String,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut deliveries = subscribe(&channel, &queue, &tag, context.prefetch).await?;
    let (mut shard, mut parts_done) = Shard::new(&context, channel.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = stopped(stop.clone()) => return Ok(()),
            delivery = deliveries.next() => {
                let delivery = delivered(delivery, &queue)?;
                shard.handle(delivery).await.map_err(|e| shard_failed(&queue, e))?
            }
            Some(video) = parts_done.recv() => shard.part_done(video).await.map_err(|e| shard_failed(&queue, e))?,
            _ = tick.tick() => shard.stage_idle().await.map_err(|e| shard_failed(&queue, e))?,
        }
    }
}

/// Verify jobs: a few at a time, in any order; each ends acked, or
/// dead-lettered when the webhook stayed down past its retries.
async fn consume_verify(
    context: Arc<Context>,
    channel: lapin::Channel,
    queue: String,
    tag: String,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let moderation = context
        .moderation
        .clone()
        .expect("only consumed with moderation on");
    let mut deliveries = subscribe(&channel, &queue, &tag, 4).await?;
    loop {
        let delivery = tokio::select! {
            () = stopped(stop.clone()) => return Ok(()),
            delivery = deliveries.next() => delivered(delivery, &queue)?,
        };
        let Some((tag, video)) = job_of(&channel, &delivery, JobKind::Verify).await? else {
            continue;
        };
        let outcome = crate::jobs::verify::review(&context, &moderation, video)
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("reviewing {video}")))?;
        settle(&channel, tag, video, outcome).await?;
    }
}

/// Encode jobs: up to `REELAY_ENCODE_CONCURRENCY` followed at once, each in
/// a task of its own (an encode takes a while and costs this worker
/// nothing but polls). Acked when recorded; dead-lettered when no replica
/// could take it (the video is FAILED then). On shutdown the tasks stop and
/// closing the channel returns their messages to the queue.
async fn consume_encode(
    context: Arc<Context>,
    fflow: Arc<Fflow>,
    channel: lapin::Channel,
    queue: String,
    tag: String,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let prefetch = fflow.config().encode_concurrency;
    let mut deliveries = subscribe(&channel, &queue, &tag, prefetch).await?;
    let mut encodes: JoinSet<anyhow::Result<()>> = JoinSet::new();
    loop {
        let delivery = tokio::select! {
            () = stopped(stop.clone()) => {
                encodes.shutdown().await;
                return Ok(());
            }
            Some(ended) = encodes.join_next() => {
                ended.map_err(|e| anyhow::anyhow!("an encode task panicked: {e}"))??;
                continue;
            }
            delivery = deliveries.next() => delivered(delivery, &queue)?,
        };
        let Some((tag, video)) = job_of(&channel, &delivery, JobKind::Encode).await? else {
            continue;
        };
        let (context, fflow, channel) = (context.clone(), fflow.clone(), channel.clone());
        encodes.spawn(async move {
            // PostgreSQL trouble ends the consumer: it starts over and the
            // message comes back.
            let outcome = crate::jobs::encode::run(&context, &fflow, video)
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("encoding {video}")))?;
            settle(&channel, tag, video, outcome).await
        });
    }
}

/// The delivery's tag and video if it is a job of `kind`; anything else is
/// dead-lettered (None).
async fn job_of(
    channel: &lapin::Channel,
    delivery: &lapin::message::Delivery,
    kind: JobKind,
) -> Result<Option<(u64, reelay_shared::VideoId)>, lapin::Error> {
    let tag = delivery.delivery_tag;
    match JobHeader::parse(&delivery.properties) {
        Some(header) if header.kind == kind => Ok(Some((tag, header.video))),
        _ => {
            tracing::error!(delivery.tag = tag, expected = ?kind, "not the job this queue carries; dead-lettering it");
            channel
                .basic_reject(tag, BasicRejectOptions { requeue: false })
                .await?;
            Ok(None)
        }
    }
}

/// Acks a job that is done; dead-letters one that gave up.
async fn settle(
    channel: &lapin::Channel,
    tag: u64,
    video: reelay_shared::VideoId,
    outcome: Outcome,
) -> anyhow::Result<()> {
    match outcome {
        Outcome::Done => channel.basic_ack(tag, BasicAckOptions::default()).await?,
        Outcome::GaveUp(why) => {
            tracing::warn!(upload.id = %video, reason = %why, "job dead-lettered");
            channel
                .basic_reject(tag, BasicRejectOptions { requeue: false })
                .await?;
        }
    }
    Ok(())
}

/// The next delivery of `queue`, or why the consumer must start over.
fn delivered(
    next: Option<Result<lapin::message::Delivery, lapin::Error>>,
    queue: &str,
) -> anyhow::Result<lapin::message::Delivery> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(e)) => Err(anyhow::Error::new(e).context(format!("consuming {queue}"))),
        None => Err(anyhow::anyhow!("the consumer of {queue} was cancelled")),
    }
}

fn shard_failed(queue: &str, e: ShardError) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("consumer of {queue}"))
}

/// Consumes `queue` with manual acks and at most `prefetch` unacked messages.
async fn subscribe(
    channel: &lapin::Channel,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> Result<lapin::Consumer, lapin::Error> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Resolves once shutdown was asked for.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

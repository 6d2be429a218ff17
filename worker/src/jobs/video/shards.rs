//! Which chunk shards this worker consumes: one consumer per shard its
//! leases give it ([`reelay_shared::shards`]), each on a channel of its own,
//! started as a lease is taken and handed over as one is let go. Each
//! consumer's prefetch comes from the worker's byte budget spread over its
//! share of shards; a consumer whose prefetch would break the budget after
//! the share grew is handed over to itself (resubscribed) with a smaller one.

use std::{collections::HashMap, sync::Arc, time::Duration};

use lapin::Connection;
use reelay_shared::{
    mq::Topology,
    shards::{Assignment, ShardLeases},
};
use tokio::{sync::watch, task::JoinSet, time::Instant};
use tracing::Instrument;

use super::chunks::{self, ShardConsumer};
use crate::{config::WorkerConfig, consumer::stopped, jobs::Context};

/// How long a consumer may take to hand its shard over.
const HAND_OVER: Duration = Duration::from_secs(10);

/// The prefetch of each shard consumer when the worker takes `share` shards.
pub fn prefetch_for(config: &WorkerConfig, share: u16) -> u16 {
    let per_shard = config.buffer_budget / (usize::from(share.max(1)) * config.chunk_size.max(1));
    per_shard.clamp(2, usize::from(config.prefetch)) as u16
}

struct Running {
    prefetch: u16,
    hand_over: watch::Sender<Option<Instant>>,
}

/// Runs the consumers of the shards the leases assign, on `connection`,
/// until shutdown; an error from any of them ends it (the connection
/// starts over).
pub async fn consume(
    ctx: Arc<Context>,
    connection: &Connection,
    topology: &Topology,
    leases: ShardLeases,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let replica = ctx.config.replica.clone();
    let mut assignment = leases.assignment();
    let mut running: HashMap<u16, Running> = HashMap::new();
    let mut ended: JoinSet<(u16, anyhow::Result<()>)> = JoinSet::new();
    loop {
        let now: Assignment = assignment.borrow_and_update().clone();
        let share = now.share.max(now.consume.len() as u16);
        let prefetch = prefetch_for(&ctx.config, share);
        for (shard, consumer) in &running {
            let keep = now.consume.contains_key(shard) && consumer.prefetch <= prefetch;
            if keep {
                continue;
            }
            // A hand-over (or a new prefetch) may finish what it holds, but
            // only while the lease is surely ours; a lease about to lapse
            // stops at once.
            let by = leases
                .deadline(*shard)
                .map(|until| {
                    until
                        .checked_sub(ctx.config.shard_lease / 3)
                        .unwrap_or(until)
                })
                .map_or_else(Instant::now, |safe| safe.min(Instant::now() + HAND_OVER));
            consumer
                .hand_over
                .send_if_modified(|current| match current {
                    Some(earlier) if *earlier <= by => false,
                    _ => {
                        *current = Some(by);
                        true
                    }
                });
        }
        // Hand-overs whose consumer is gone already (the connection that
        // ran it failed) have nothing left to finish.
        for shard in leases.releasing_shards() {
            if !running.contains_key(&shard) {
                leases.let_go(shard).await;
            }
        }
        for shard in now.consume.keys() {
            // Marked for hand-over since this snapshot was published.
            if running.contains_key(shard) || leases.releasing(*shard) {
                continue;
            }
            let channel = connection.create_channel().await?;
            let (hand_over, handed) = watch::channel(None);
            let consumer = ShardConsumer {
                queue: topology.chunk_queue(*shard),
                consumer_tag: format!("{replica}.{shard}"),
                prefetch,
            };
            let (ctx, stop, shard) = (ctx.clone(), stop.clone(), *shard);
            tracing::info!(shard, prefetch, "consuming a chunk shard");
            ended.spawn(
                async move {
                    let result = chunks::consume(&ctx, channel, consumer, stop, handed).await;
                    (shard, result)
                }
                .in_current_span(),
            );
            running.insert(
                shard,
                Running {
                    prefetch,
                    hand_over,
                },
            );
        }
        tokio::select! {
            () = stopped(stop.clone()) => {
                // The consumers end by themselves on shutdown.
                while ended.join_next().await.is_some() {}
                return Ok(());
            }
            changed = assignment.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            Some(done) = ended.join_next() => {
                let (shard, result) = done.map_err(|e| anyhow::anyhow!("a shard consumer panicked: {e}"))?;
                result?;
                running.remove(&shard);
                if leases.releasing(shard) {
                    leases.let_go(shard).await;
                }
            }
        }
    }
}

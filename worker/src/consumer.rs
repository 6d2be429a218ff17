//! The one consumer framework. Every job, of every product, ends in an
//! [`Outcome`], and [`Acker::settle`] is the only place that turns one into
//! an ack, a dead-letter or a later retry. A job that cannot trust its view
//! of the world (the broker or PostgreSQL failed under it) returns an error
//! instead: the consumer closes its channel, which returns every unacked
//! message in order, and starts over from committed state.
//!
//! Two shapes of consumer run on it: [`run_unordered`] for queues whose jobs
//! are independent (verify, encode: up to N at once, any order), and the
//! ordered chunk shards (`jobs::video::chunks`), which hold an upload's
//! messages until its bytes are durable and settle many at a time.

use std::{future::Future, time::Duration};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Consumer,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::{sync::watch, task::JoinSet};
use tracing::Instrument;

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect is recorded, or there was nothing to do: ack.
    Done,
    /// It may work later (a webhook is down): the message goes back to its
    /// queue after this long, and comes again with its delivery count one
    /// higher. Never for ordered queues: a returned message would let later
    /// ones overtake it.
    RetryLater(Duration),
    /// It can never succeed (retries ran out, the data is unusable):
    /// dead-letter it, with why.
    GaveUp(String),
}

/// Settles deliveries on one channel.
#[derive(Clone)]
pub struct Acker {
    channel: Channel,
}

impl Acker {
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// Acks, dead-letters or (later) returns the deliveries `tags`.
    pub async fn settle(
        &self,
        tags: impl IntoIterator<Item = u64>,
        outcome: &Outcome,
    ) -> Result<(), lapin::Error> {
        for tag in tags {
            match outcome {
                Outcome::Done => {
                    self.channel
                        .basic_ack(tag, BasicAckOptions::default())
                        .await?
                }
                Outcome::GaveUp(why) => {
                    tracing::warn!(reason = %why, "job dead-lettered");
                    metrics::counter!("reelay_jobs_dead_lettered_total").increment(1);
                    self.channel
                        .basic_nack(
                            tag,
                            BasicNackOptions {
                                requeue: false,
                                multiple: false,
                            },
                        )
                        .await?
                }
                Outcome::RetryLater(after) => {
                    // The message stays unacked meanwhile (it counts against
                    // the prefetch); a consumer that restarts returns it at once.
                    let (channel, after) = (self.channel.clone(), *after);
                    tokio::spawn(
                        async move {
                            tokio::time::sleep(after).await;
                            let returned = channel
                                .basic_nack(
                                    tag,
                                    BasicNackOptions {
                                        requeue: true,
                                        multiple: false,
                                    },
                                )
                                .await;
                            if let Err(e) = returned {
                                tracing::debug!(error = %e, "returning a job failed; its channel is gone and returned it already");
                            }
                        }
                        .in_current_span(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Consumes `queue` with manual acks and at most `prefetch` unacked messages.
pub async fn subscribe(
    channel: &Channel,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
) -> Result<Consumer, lapin::Error> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    channel
        .basic_consume(
            queue.into(),
            consumer_tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// The next delivery of `queue`, or why the consumer must start over.
pub fn delivered(
    next: Option<Result<Delivery, lapin::Error>>,
    queue: &str,
) -> anyhow::Result<Delivery> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(e)) => Err(anyhow::Error::new(e).context(format!("consuming {queue}"))),
        None => Err(anyhow::anyhow!("the consumer of {queue} was cancelled")),
    }
}

/// How often the broker delivered this message before (0 the first time):
/// quorum queues count returns in `x-delivery-count`.
pub fn earlier_deliveries(properties: &BasicProperties) -> u32 {
    let count = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => n.max(0) as u32,
        Some(AMQPValue::LongInt(n)) => n.max(0) as u32,
        Some(AMQPValue::ShortInt(n)) => n.max(0) as u32,
        _ => 0,
    }
}

/// Resolves once shutdown was asked for.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A queue of independent jobs.
pub struct Unordered {
    pub queue: String,
    pub consumer_tag: String,
    /// Jobs run at once (and unacked messages held).
    pub concurrency: u16,
    pub stop: watch::Receiver<bool>,
    pub channel: Channel,
}

/// Runs the jobs of an unordered queue, up to `concurrency` at once, each in
/// a task of its own and in the span `span` gives it, until shutdown (the
/// jobs running then stop, and closing the channel returns their messages).
/// A message `parse` does not recognise is dead-lettered; `run` gets the
/// job and how often it was delivered before. An `Err` from `run` ends the
/// consumer so that it starts over.
pub async fn run_unordered<J, P, S, R, Fut>(
    consumer: Unordered,
    parse: P,
    span: S,
    run: R,
) -> anyhow::Result<()>
where
    J: Send + 'static,
    P: Fn(&BasicProperties) -> Option<J>,
    S: Fn(&J) -> tracing::Span,
    R: Fn(J, u32) -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>> + Send + 'static,
{
    let Unordered {
        queue,
        consumer_tag,
        concurrency,
        stop,
        channel,
    } = consumer;
    let acker = Acker::new(channel.clone());
    let mut deliveries = subscribe(&channel, &queue, &consumer_tag, concurrency).await?;
    let mut running: JoinSet<anyhow::Result<()>> = JoinSet::new();
    loop {
        let delivery = tokio::select! {
            () = stopped(stop.clone()) => {
                running.shutdown().await;
                return Ok(());
            }
            Some(ended) = running.join_next() => {
                ended.map_err(|e| anyhow::anyhow!("a job task panicked: {e}"))??;
                continue;
            }
            delivery = deliveries.next() => delivered(delivery, &queue)?,
        };
        let tag = delivery.delivery_tag;
        let Some(job) = parse(&delivery.properties) else {
            tracing::error!(queue, delivery.tag = tag, "not a job this queue carries");
            acker
                .settle([tag], &Outcome::GaveUp("unrecognised message".into()))
                .await?;
            continue;
        };
        let span = span(&job);
        let attempt = earlier_deliveries(&delivery.properties);
        let outcome = run(job, attempt);
        let acker = acker.clone();
        running.spawn(
            async move {
                let outcome = outcome.await?;
                acker.settle([tag], &outcome).await?;
                Ok(())
            }
            .instrument(span),
        );
    }
}

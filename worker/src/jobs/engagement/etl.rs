//! Reading a stream into ClickHouse, exactly once.
//!
//! One reader per stream across every worker (a lease each: `etl:playback`,
//! `etl:ugc`). The reader starts at the offset after the largest one its
//! table holds (offsets are stored in the rows they came in), takes
//! messages until it has `REELAY_ETL_BATCH` events or the oldest waited
//! `REELAY_ETL_FLUSH_MS`, and flushes them: the loader's last insert is the
//! raw rows, so once they are in, the offset moved with them. Then it acks
//! (which, on a stream, only makes room for more deliveries).
//!
//! - A reader killed mid-batch: its successor starts after what was
//!   inserted; whatever was half done (summaries, counts) is recomputed from
//!   the same messages, to the same result.
//! - ClickHouse down: the flush is retried with backoff, holding the batch;
//!   the offset does not move and the broker keeps the messages.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use reelay_shared::{
    clickhouse::ClickHouse,
    engagement::analytics,
    lease::{self, Lease},
    mq, retry,
};
use tokio::{sync::watch, time::Instant};

use crate::{consumer::stopped, jobs::Context};

/// Messages a reader holds unacked at most.
const PREFETCH: u16 = 2000;

/// One message of a stream.
pub struct Message {
    pub offset: u64,
    pub body: Vec<u8>,
}

/// What a stream's messages become in ClickHouse.
pub trait Loader: Send + Sync + 'static {
    /// The stream's short name (`playback`): the lease's, the metrics'.
    const NAME: &'static str;
    /// The table whose largest `stream_offset` is where reading resumes.
    const TABLE: &'static str;

    /// How many events a message holds (for the batch's size).
    fn events_in(&self, message: &Message) -> usize;

    /// Forgets what it keeps in memory of earlier batches: reading starts
    /// over (another reader may have stored more meanwhile).
    fn reset(&self) {}

    /// Stores a batch, the raw rows last. Idempotent: a batch may be
    /// flushed again after a crash or a failed attempt.
    fn flush(
        &self,
        ctx: &Context,
        clickhouse: &ClickHouse,
        batch: &[Message],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Reads the loader's stream whenever this worker holds its lease, until
/// `stop`.
pub async fn run<L: Loader>(
    ctx: Arc<Context>,
    loader: L,
    stream: String,
    stop: watch::Receiver<bool>,
) {
    let etl = &ctx.config.etl;
    let lease = Lease::new(
        ctx.store.pool().clone(),
        &format!("etl:{}", L::NAME),
        lease::holder_name(&ctx.config.replica),
        etl.lease_ttl,
    );
    let campaign = tokio::spawn({
        let (lease, stop) = (lease.clone(), stop.clone());
        async move { lease.campaign(stop).await }
    });
    let clickhouse = ClickHouse::new(&etl.clickhouse);
    let mut failures = 0;
    loop {
        tokio::select! {
            () = lease.leading() => {}
            () = stopped(stop.clone()) => break,
        }
        match read(&ctx, &loader, &clickhouse, &stream, &lease, stop.clone()).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                let wait =
                    retry::backoff(Duration::from_millis(200), Duration::from_secs(5), failures);
                tracing::warn!(
                    stream = L::NAME,
                    error = format!("{e:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "the ETL reader stopped; starting over"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stopped(stop.clone()) => break,
                }
            }
        }
    }
    let _ = campaign.await;
}

/// Reads from the stored offset until the lease is lost or `stop` (Ok), or
/// something fails (Err: start over from the stored offset).
async fn read<L: Loader>(
    ctx: &Context,
    loader: &L,
    clickhouse: &ClickHouse,
    stream: &str,
    lease: &Lease,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loader.reset();
    analytics::migrate(clickhouse)
        .await
        .context("creating the analytics tables")?;
    let resume = analytics::resume_offset(clickhouse, L::TABLE)
        .await
        .context("reading the stored offset")?;
    let connection = mq::connect(
        &ctx.config.amqp.url,
        &format!("{}-etl-{}", ctx.config.replica, L::NAME),
    )
    .await
    .context("connecting to the broker")?;
    let channel = connection.create_channel().await?;
    // The stream may not exist yet: the reader can start before this
    // worker's (or the api's) declarations on a fresh broker.
    mq::declare(
        &channel,
        &reelay_shared::queues(&mq::Topology::new(&ctx.config.amqp)),
    )
    .await
    .context("declaring the streams")?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        match resume {
            Some(offset) => AMQPValue::LongLongInt(offset as i64),
            None => AMQPValue::LongString("first".into()),
        },
    );
    let mut consumer = channel
        .basic_consume(
            stream.into(),
            format!("{}.etl.{}", ctx.config.replica, L::NAME)
                .as_str()
                .into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .context("reading the stream")?;
    tracing::info!(stream = L::NAME, from = ?resume, "reading the stream");
    let resume = resume.unwrap_or(0);
    let etl = &ctx.config.etl;
    let mut batch: Vec<Message> = Vec::new();
    let (mut events, mut last_tag) = (0, 0);
    let mut deadline = Instant::now() + etl.flush;
    let mut lease_check = tokio::time::interval(lease.ttl() / 6);
    let outcome = loop {
        tokio::select! {
            delivery = consumer.next() => {
                let delivery: Delivery = match delivery {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => break Err(anyhow::Error::new(e).context("the stream's consumer failed")),
                    None => break Err(anyhow::anyhow!("the broker ended the stream's consumer")),
                };
                let Some(offset) = offset_of(&delivery) else {
                    break Err(anyhow::anyhow!("a stream delivery without x-stream-offset"));
                };
                last_tag = delivery.delivery_tag;
                // A consumer may get the start of the chunk its offset is in.
                if offset < resume {
                    channel.basic_ack(last_tag, BasicAckOptions::default()).await?;
                    continue;
                }
                if batch.is_empty() {
                    deadline = Instant::now() + etl.flush;
                }
                let message = Message { offset, body: delivery.data };
                events += loader.events_in(&message);
                batch.push(message);
                if events >= etl.batch {
                    flush(ctx, loader, clickhouse, lease, &mut batch).await?;
                    channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await?;
                    events = 0;
                }
            }
            () = tokio::time::sleep_until(deadline), if !batch.is_empty() => {
                flush(ctx, loader, clickhouse, lease, &mut batch).await?;
                channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await?;
                events = 0;
            }
            _ = lease_check.tick() => {
                if !lease.is_leader() {
                    tracing::warn!(stream = L::NAME, "lost the ETL lease; another worker reads on");
                    break Ok(());
                }
            }
            () = stopped(stop.clone()) => break Ok(()),
        }
    };
    // What was not flushed is read again by whoever reads next.
    let _ = connection.close(200, "ETL reader stopping".into()).await;
    outcome
}

/// Flushes `batch` until it is stored (retrying with backoff while
/// ClickHouse or PostgreSQL is down), or the lease is lost (Err).
async fn flush<L: Loader>(
    ctx: &Context,
    loader: &L,
    clickhouse: &ClickHouse,
    lease: &Lease,
    batch: &mut Vec<Message>,
) -> anyhow::Result<()> {
    let events: usize = batch.iter().map(|m| loader.events_in(m)).sum();
    let mut attempt = 0;
    loop {
        if !lease.is_leader() {
            anyhow::bail!("lost the ETL lease while flushing");
        }
        match loader.flush(ctx, clickhouse, batch).await {
            Ok(()) => break,
            Err(e) => {
                attempt += 1;
                metrics::counter!("reelay_etl_flush_failures_total", "stream" => L::NAME)
                    .increment(1);
                let wait =
                    retry::backoff(Duration::from_millis(200), Duration::from_secs(5), attempt);
                tracing::warn!(
                    stream = L::NAME,
                    error = format!("{e:#}"),
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    "flushing a batch failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
    if let Some(last) = batch.last() {
        metrics::gauge!("reelay_etl_offset", "stream" => L::NAME).set(last.offset as f64);
    }
    metrics::counter!("reelay_etl_events_total", "stream" => L::NAME).increment(events as u64);
    batch.clear();
    Ok(())
}

/// `rows` (in stream order) in runs of consecutive rows of one monthly
/// partition (`date` is `YYYY-MM-DD`): each run is one insert and so one
/// part, all or nothing, and runs go in stream order, so the largest offset
/// stored always ends a whole prefix of the batch, whatever failed after.
pub fn month_runs<T>(rows: &[T], date: impl Fn(&T) -> &str) -> impl Iterator<Item = &[T]> {
    rows.chunk_by(move |a, b| date(a).get(..7) == date(b).get(..7))
}

/// The offset RabbitMQ gives each message of a stream.
fn offset_of(delivery: &Delivery) -> Option<u64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_across_months_is_inserted_in_runs_of_one_partition() {
        let rows = [
            ("2026-11-30", 1),
            ("2026-11-30", 2),
            ("2026-12-01", 3),
            ("2026-11-30", 4),
        ];
        let runs: Vec<Vec<u64>> = month_runs(&rows, |r| r.0)
            .map(|run| run.iter().map(|r| r.1).collect())
            .collect();
        assert_eq!(runs, [vec![1, 2], vec![3], vec![4]]);
    }
}

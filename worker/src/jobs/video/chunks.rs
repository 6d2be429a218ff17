//! The consumer of one chunk shard: an upload's chunk jobs, then its delete
//! job, in order. Each upload with bytes in memory has an [`Upload`]; every
//! event (a chunk, a part upload ending, a buffer that must be staged) is
//! one call into it, and the [`Progress`] it returns is settled here, through
//! the consumer framework: durable deliveries acked, a failed upload's
//! dead-lettered, anything untrustworthy a restart from committed state.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::{Channel, message::Delivery, options::BasicCancelOptions};
use reelay_shared::{
    VideoId, VideoStatus,
    fleet::{FirmwareId, jobs::FleetJob},
    storage,
    store::AppendError,
    video::{
        Verification, VideoEvent,
        jobs::{JobHeader, JobKind},
    },
};
use tokio::{
    sync::{
        mpsc::{self, UnboundedReceiver, UnboundedSender},
        watch,
    },
    time::Instant,
};
use tracing::Instrument;

use super::{
    StepError, delete, job_span,
    upload::{Loaded, Progress, Upload},
};
use crate::{
    consumer::{Acker, Outcome, delivered, stopped, subscribe},
    jobs::{Context, S3_STRIKES},
};

/// How long a finished upload waits for its last chunks to reach fflow.
const FORWARD_DRAIN: Duration = Duration::from_secs(5);
/// How often idle buffers are looked for.
const IDLE_TICK: Duration = Duration::from_millis(500);

/// One shard's consumer: its queue, tag and prefetch.
pub struct ShardConsumer {
    pub queue: String,
    pub consumer_tag: String,
    pub prefetch: u16,
}

/// Consumes a shard until shutdown, or until it is to be handed over
/// (`hand_over` then says by when): it takes no more deliveries, lets the
/// parts in flight commit, stages what it buffers, and closes its channel,
/// which returns whatever is still unacked, in order, for the next owner.
/// An error means the consumer must start over (its channel closes,
/// returning every unacked message in order).
pub async fn consume(
    ctx: &Context,
    channel: Channel,
    consumer: ShardConsumer,
    stop: watch::Receiver<bool>,
    mut hand_over: watch::Receiver<Option<Instant>>,
) -> anyhow::Result<()> {
    let ShardConsumer {
        queue,
        consumer_tag,
        prefetch,
    } = consumer;
    let mut deliveries = subscribe(&channel, &queue, &consumer_tag, prefetch).await?;
    let (mut shard, mut parts_ended) = Shard::new(ctx, Acker::new(channel.clone()), prefetch);
    let mut tick = tokio::time::interval(IDLE_TICK);
    let failed = |e: anyhow::Error| e.context(format!("consumer of {queue}"));
    loop {
        tokio::select! {
            () = stopped(stop.clone()) => return Ok(()),
            Ok(deadline) = hand_over.wait_for(Option::is_some).map(|r| r.map(|d| (*d).expect("waited for"))) => {
                // With no time left (the lease is about to lapse), close at
                // once: cancelling first would let the broker make a waiting
                // consumer active while this channel still holds deliveries.
                if deadline > Instant::now() {
                    // No more deliveries: those in hand and not yet taken
                    // return when the channel closes.
                    let cancelled = channel
                        .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
                        .await;
                    if let Err(e) = cancelled {
                        return Err(failed(e.into()));
                    }
                    match tokio::time::timeout_at(deadline, shard.hand_over(&mut parts_ended)).await {
                        Ok(handed) => handed.map_err(failed)?,
                        Err(_) => tracing::warn!(queue, "hand-over ran out of time; the chunks it held go back to the queue"),
                    }
                }
                drop(shard);
                let _ = channel.close(200, "shard handed over".into()).await;
                return Ok(());
            }
            delivery = deliveries.next() => {
                shard.handle(delivered(delivery, &queue)?).await.map_err(failed)?;
            }
            Some(video) = parts_ended.recv() => {
                shard.part_ended(video).instrument(job_span(video, "chunk")).await.map_err(failed)?;
            }
            _ = tick.tick() => shard.stage_idle().await.map_err(failed)?,
        }
    }
}

struct Shard<'a> {
    ctx: &'a Context,
    acker: Acker,
    /// Bytes of each chunk delivery held unacked, by tag, counted in the
    /// worker's [`HeldBytes`] until settled.
    sizes: HashMap<u64, usize>,
    /// Unacked messages the broker lets this consumer hold.
    prefetch: u16,
    uploads: HashMap<VideoId, Box<Upload>>,
    /// Part upload tasks report here when they end; see [`Shard::part_ended`].
    parts_ended: UnboundedSender<VideoId>,
}

impl Drop for Shard<'_> {
    fn drop(&mut self) {
        // Whatever is unacked now goes back to the queue with the channel.
        self.ctx.held.sub(self.sizes.values().sum());
    }
}

/// Chunk bytes a worker holds in unacked deliveries across all its shards,
/// and the most it ever held: `reelay_worker_buffered_bytes` and
/// `reelay_worker_buffered_bytes_peak` (the budget they stay within is the
/// consumers' prefetch, `jobs::video::shards::prefetch_for`).
#[derive(Default)]
pub struct HeldBytes {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl HeldBytes {
    fn add(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        metrics::gauge!("reelay_worker_buffered_bytes").increment(n as f64);
        if self.peak.fetch_max(now, Ordering::Relaxed) < now {
            metrics::gauge!("reelay_worker_buffered_bytes_peak").set(now as f64);
        }
    }

    fn sub(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::Relaxed);
        metrics::gauge!("reelay_worker_buffered_bytes").decrement(n as f64);
    }
}

impl<'a> Shard<'a> {
    /// The shard and the receiver its part uploads report on.
    fn new(ctx: &'a Context, acker: Acker, prefetch: u16) -> (Self, UnboundedReceiver<VideoId>) {
        let (parts_ended, reports) = mpsc::unbounded_channel();
        let shard = Self {
            ctx,
            acker,
            sizes: HashMap::new(),
            prefetch,
            uploads: HashMap::new(),
            parts_ended,
        };
        (shard, reports)
    }

    async fn handle(&mut self, delivery: Delivery) -> anyhow::Result<()> {
        let tag = delivery.delivery_tag;
        let Some(header) = JobHeader::parse(&delivery.properties) else {
            tracing::error!(delivery.tag = tag, "a message without a video job header");
            return self.give_up(vec![tag], "unrecognised message").await;
        };
        let span = super::span_of(&header);
        match header.kind {
            JobKind::Chunk { offset } => {
                // The broker client grows a body frame by frame, so a 4 MiB
                // chunk arrives in an 8 MiB allocation; it is held until its
                // part is stored: give the unused half back (in place).
                let mut data = delivery.data;
                data.shrink_to_fit();
                self.chunk(tag, header.video, offset, Bytes::from(data))
                    .instrument(span)
                    .await
            }
            JobKind::Delete => self.delete(tag, header.video).instrument(span).await,
            JobKind::Verify | JobKind::Encode => {
                self.give_up(vec![tag], "a verify or encode job on a chunk queue")
                    .instrument(span)
                    .await
            }
        }
    }

    async fn chunk(
        &mut self,
        tag: u64,
        video: VideoId,
        offset: u64,
        data: Bytes,
    ) -> anyhow::Result<()> {
        metrics::counter!("reelay_chunks_received_total").increment(1);
        self.ctx.held.add(data.len());
        self.sizes.insert(tag, data.len());
        if !self.uploads.contains_key(&video) && !self.load(video, tag).await? {
            return Ok(());
        }
        let upload = self.uploads.get_mut(&video).expect("loaded above");
        let step = upload
            .take_chunk(self.ctx, tag, offset, data, &self.parts_ended)
            .await;
        self.settle(video, step).await?;
        self.relieve_pressure().await
    }

    /// Brings `video`'s upload into memory for its chunk `tag`; false when
    /// the chunk was settled instead (the upload is closed, or its stored
    /// state unreadable).
    async fn load(&mut self, video: VideoId, tag: u64) -> anyhow::Result<bool> {
        let state = self.ctx.store.load(video).await?;
        match Upload::load(self.ctx, video, &state) {
            Ok(Loaded::Active(mut upload)) => {
                // A firmware file is not a video: no encoder copy.
                if let Some(fflow) = self
                    .ctx
                    .fflow
                    .as_ref()
                    .filter(|_| upload.firmware().is_none())
                {
                    let (size, durable) = upload.size_and_durable();
                    upload.forwarder = fflow.forwarder(video, size, durable).await;
                }
                self.uploads.insert(video, upload);
                Ok(true)
            }
            Ok(Loaded::Closed) => {
                // A worker that died between committing Uploaded and
                // publishing the follow-up jobs left this chunk unacked.
                if let Some(v) = &state.video
                    && v.status == VideoStatus::Uploaded
                {
                    self.after_upload(
                        video,
                        v.verification == Verification::Unverified,
                        v.firmware_id,
                    )
                    .await?;
                }
                tracing::debug!("chunk for a closed upload dropped");
                self.finish([tag], &Outcome::Done).await?;
                Ok(false)
            }
            // Unreadable stored state fails the video; this chunk goes to
            // the dead-letter queue with it.
            Err(e) => {
                self.settle(video, Err(e)).await?;
                self.give_up(vec![tag], "the upload's stored state is unreadable")
                    .await?;
                Ok(false)
            }
        }
    }

    /// A part upload of `video` ended.
    async fn part_ended(&mut self, video: VideoId) -> anyhow::Result<()> {
        let Some(upload) = self.uploads.get_mut(&video) else {
            return Ok(());
        };
        let step = upload.part_ended(self.ctx, &self.parts_ended).await;
        self.settle(video, step).await
    }

    /// Settles what a step of `video`'s upload did: acks what became
    /// durable; once complete, publishes what follows and lets the upload
    /// go; on failure, fails the video and dead-letters its deliveries, or
    /// starts over when the failure says nothing about the upload.
    async fn settle(
        &mut self,
        video: VideoId,
        step: Result<Progress, StepError>,
    ) -> anyhow::Result<()> {
        let error = match step {
            Ok(Progress {
                durable,
                complete: false,
            }) => return Ok(self.finish(durable, &Outcome::Done).await?),
            Ok(Progress {
                durable,
                complete: true,
            }) => {
                tracing::info!("upload stored");
                self.ctx.s3_forgive(video);
                let (forwarder, firmware) = match self.uploads.remove(&video) {
                    Some(mut upload) => (upload.forwarder.take(), upload.firmware()),
                    None => (None, None),
                };
                // The encode reads the replica's copy if it is whole.
                if let Some(forwarder) = forwarder {
                    forwarder.finish(FORWARD_DRAIN).await;
                }
                // Before the last acks: if this fails, redelivery of those
                // chunks publishes the jobs again.
                self.after_upload(video, true, firmware).await?;
                return Ok(self.finish(durable, &Outcome::Done).await?);
            }
            Err(e) => e,
        };
        // The video was closed meanwhile (deleted, or failed and its
        // multipart upload aborted by the reaper): S3 refusing its parts is
        // expected, and its bytes are not wanted any more.
        let maybe_closed = matches!(
            error,
            StepError::Storage { .. } | StepError::State(AppendError::Rejected(_))
        );
        if maybe_closed && self.is_closed(video).await? {
            tracing::info!(reason = %error, "upload closed while storing; dropping its chunks");
            let held = self.release(video);
            return Ok(self.finish(held, &Outcome::Done).await?);
        }
        // S3 away says nothing about the upload: its chunks stay in the
        // broker and it starts over from committed state (as below), once
        // S3 answers again. Failing while S3 answers, again and again, is
        // S3 refusing this upload after all.
        if let StepError::Storage { source, .. } = &error
            && storage::unavailable(source)
            && (!self.ctx.storage.reachable().await || self.ctx.s3_strike(video) < S3_STRIKES)
        {
            tracing::warn!(reason = %error, "S3 unavailable; starting over from committed state");
            return Err(anyhow::Error::new(error).context(format!("upload {video}")));
        }
        match error {
            StepError::Storage { .. } | StepError::Corrupt(_) => {
                self.ctx.s3_forgive(video);
                let reason = error.to_string();
                tracing::error!(reason = %reason, "upload failed");
                self.ctx
                    .store
                    .append(video, |current| match &current.video {
                        Some(v) if !v.status.is_gone() => Ok((
                            vec![VideoEvent::Failed {
                                reason: reason.clone(),
                            }],
                            (),
                        )),
                        _ => Ok((vec![], ())),
                    })
                    .await
                    .context("recording the failure")?;
                let held = self.release(video);
                self.give_up(held, &reason).await
            }
            // Postgres trouble, or another writer moved the video on. Nacking
            // just this upload's messages would let its later chunks overtake
            // them; closing the channel returns everything unacked in order.
            other => Err(anyhow::Error::new(other).context(format!("upload {video}"))),
        }
    }

    async fn delete(&mut self, tag: u64, video: VideoId) -> anyhow::Result<()> {
        // Chunks before the delete no longer matter.
        let held = self.release(video);
        self.finish(held, &Outcome::Done).await?;
        let outcome = match delete::remove_objects(self.ctx, video).await {
            Ok(()) => Outcome::Done,
            Err(StepError::Storage { step, source }) if !storage::unavailable(&source) => {
                Outcome::GaveUp(format!("deleting objects failed at S3 {step}: {source}"))
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("deleting {video}"))),
        };
        Ok(self.finish([tag], &outcome).await?)
    }

    /// Settles deliveries `tags` (through the consumer framework) and stops
    /// counting their bytes as held.
    async fn finish(
        &mut self,
        tags: impl IntoIterator<Item = u64>,
        outcome: &Outcome,
    ) -> Result<(), lapin::Error> {
        let tags: Vec<u64> = tags.into_iter().collect();
        let freed: usize = tags.iter().filter_map(|t| self.sizes.remove(t)).sum();
        self.ctx.held.sub(freed);
        self.acker.settle(tags, outcome).await
    }

    /// Drops `video`'s upload from memory; the deliveries it held.
    fn release(&mut self, video: VideoId) -> Vec<u64> {
        self.uploads
            .remove(&video)
            .map(|mut u| u.release())
            .unwrap_or_default()
    }

    async fn give_up(&mut self, tags: Vec<u64>, why: &str) -> anyhow::Result<()> {
        Ok(self.finish(tags, &Outcome::GaveUp(why.to_owned())).await?)
    }

    /// The jobs that follow a finished upload: a verify job (when
    /// moderation is configured and `review` holds) and an encode job (when
    /// fflow is). Both are idempotent, so publishing twice is harmless.
    /// A firmware's file instead gets the fleet's seal job, and nothing of
    /// a video's.
    async fn after_upload(
        &self,
        video: VideoId,
        review: bool,
        firmware: Option<uuid::Uuid>,
    ) -> anyhow::Result<()> {
        if let Some(firmware) = firmware {
            return self
                .ctx
                .publisher
                .publish_fleet_job(FleetJob::Seal(FirmwareId(firmware)))
                .await
                .context("publishing the seal job");
        }
        let mut kinds = Vec::new();
        if review && self.ctx.config.moderation.is_some() {
            kinds.push(JobKind::Verify);
        }
        if self.ctx.fflow.is_some() {
            kinds.push(JobKind::Encode);
        }
        for kind in kinds {
            self.ctx
                .publisher
                .publish_job_confirmed(JobHeader { video, kind })
                .await
                .with_context(|| format!("publishing the {} job", kind.name()))?;
        }
        Ok(())
    }

    /// Whether the video takes no more bytes (deleted, failed, finished).
    async fn is_closed(&self, video: VideoId) -> anyhow::Result<bool> {
        let state = self.ctx.store.load(video).await?;
        Ok(!state.video.is_some_and(|v| v.status.accepts_bytes()))
    }

    /// Unacked messages held in memory across uploads.
    fn unacked(&self) -> usize {
        self.uploads.values().map(|u| u.pending()).sum()
    }

    /// Near the prefetch window, no new message arrives until some are
    /// acked: stage the upload holding the most. A small window (the byte
    /// budget spread over many shards) is used up to its last message, so
    /// two chunks can still fill a part without staging.
    async fn relieve_pressure(&mut self) -> anyhow::Result<()> {
        let prefetch = usize::from(self.prefetch);
        let high_water = prefetch - prefetch / 4;
        while self.unacked() >= high_water {
            // Chunks held ahead of a gap can't be staged, nor buffers behind
            // parts in flight: those are acked as the parts commit.
            let Some(video) = self
                .uploads
                .iter()
                .filter(|(_, u)| u.stageable())
                .max_by_key(|(_, u)| u.pending())
                .map(|(v, _)| *v)
            else {
                return Ok(());
            };
            self.stage(video)
                .instrument(job_span(video, "chunk"))
                .await?;
        }
        Ok(())
    }

    /// Stages every buffer that saw no chunk for the idle time.
    async fn stage_idle(&mut self) -> anyhow::Result<()> {
        let idle: Vec<VideoId> = self
            .uploads
            .iter()
            .filter(|(_, u)| u.stageable() && u.idle_for() >= self.ctx.config.stage_idle)
            .map(|(v, _)| *v)
            .collect();
        for video in idle {
            self.stage(video)
                .instrument(job_span(video, "chunk"))
                .await?;
        }
        Ok(())
    }

    /// Lets the parts in flight commit (acking their messages), then stages
    /// every buffer, so the next owner of the shard has little to read again.
    async fn hand_over(
        &mut self,
        parts_ended: &mut UnboundedReceiver<VideoId>,
    ) -> anyhow::Result<()> {
        while self.uploads.values().any(|u| u.parts_in_flight() > 0) {
            let Some(video) = parts_ended.recv().await else {
                break;
            };
            self.part_ended(video)
                .instrument(job_span(video, "chunk"))
                .await?;
        }
        let stageable: Vec<VideoId> = self
            .uploads
            .iter()
            .filter(|(_, u)| u.stageable())
            .map(|(v, _)| *v)
            .collect();
        for video in stageable {
            self.stage(video)
                .instrument(job_span(video, "chunk"))
                .await?;
        }
        Ok(())
    }

    async fn stage(&mut self, video: VideoId) -> anyhow::Result<()> {
        let Some(upload) = self.uploads.get_mut(&video) else {
            return Ok(());
        };
        let step = upload.stage(self.ctx).await;
        self.settle(video, step).await
    }
}

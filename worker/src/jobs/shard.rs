//! Consumes one shard queue: dispatches each job, acks what is durable,
//! dead-letters what failed for good, stages buffers that can't wait.

use std::collections::HashMap;

use bytes::Bytes;
use lapin::{
    Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicRejectOptions},
};
use reelay_shared::{
    VideoId, VideoStatus,
    domain::{Verification, VideoEvent},
    mq::{JobHeader, JobKind},
    store::{Aggregate, AppendError},
};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::{
    Context,
    chunks::{Accepted, Loaded, StepError, Upload},
    delete,
};

/// How long a finished upload waits for its last chunks to reach fflow.
const FORWARD_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The consumer must start over from committed state (broker or Postgres
/// trouble); everything held in memory is dropped.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("state: {0}")]
    State(String),
}

pub struct Shard<'a> {
    ctx: &'a Context,
    channel: Channel,
    uploads: HashMap<VideoId, Box<Upload>>,
    /// Part upload tasks report here when they end; see [`Shard::part_done`].
    parts_done: UnboundedSender<VideoId>,
}

impl<'a> Shard<'a> {
    /// The shard and the receiver its part uploads report on.
    pub fn new(ctx: &'a Context, channel: Channel) -> (Self, UnboundedReceiver<VideoId>) {
        let (parts_done, reports) = mpsc::unbounded_channel();
        let shard = Self {
            ctx,
            channel,
            uploads: HashMap::new(),
            parts_done,
        };
        (shard, reports)
    }

    /// A part upload of `video` ended: commit what is done, in order, ack
    /// what became durable, and start the parts that were waiting.
    pub async fn part_done(&mut self, video: VideoId) -> Result<(), ShardError> {
        let Some(upload) = self.uploads.get_mut(&video) else {
            return Ok(());
        };
        let mut result = upload.commit_finished_parts(self.ctx).await;
        if result.is_ok() {
            result = upload.start_ready_parts(self.ctx, &self.parts_done).await;
        }
        self.settle(video, result).await
    }

    pub async fn handle(&mut self, delivery: Delivery) -> Result<(), ShardError> {
        let tag = delivery.delivery_tag;
        let Some(header) = JobHeader::parse(&delivery.properties) else {
            tracing::error!(
                delivery.tag = tag,
                "a message without a reelay job header; dead-lettering it"
            );
            return self.dead_letter(vec![tag]).await;
        };
        match header.kind {
            JobKind::Chunk { offset } => {
                self.chunk(tag, header.video, offset, Bytes::from(delivery.data))
                    .await
            }
            JobKind::Delete => self.delete(tag, header.video).await,
            JobKind::Verify | JobKind::Encode => {
                tracing::error!(upload.id = %header.video, kind = ?header.kind, "a verify or encode job on a chunk queue; dead-lettering it");
                self.dead_letter(vec![tag]).await
            }
        }
    }

    async fn chunk(
        &mut self,
        tag: u64,
        video: VideoId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ShardError> {
        if !self.uploads.contains_key(&video) {
            let aggregate = self.aggregate(video).await?;
            match Upload::load(self.ctx, video, &aggregate) {
                Ok(Loaded::Active(mut upload)) => {
                    if let Some(fflow) = &self.ctx.fflow {
                        let (size, durable) = upload.progress();
                        upload.forwarder = fflow.forwarder(video, size, durable).await;
                    }
                    self.uploads.insert(video, upload);
                }
                Ok(Loaded::Closed) => {
                    // A worker that died between committing Uploaded and
                    // publishing the follow-up jobs left this chunk unacked.
                    if let Some(v) = aggregate.video.as_ref()
                        && v.status == VideoStatus::Uploaded
                    {
                        self.after_upload(video, v.verification == Verification::Unverified)
                            .await?;
                    }
                    tracing::debug!(upload.id = %video, offset_bytes = offset, "chunk for a closed upload dropped");
                    return self.ack(vec![tag]).await;
                }
                Err(e) => {
                    // Unreadable stored state fails the video; this chunk
                    // goes to the dead-letter queue with it.
                    self.settle(video, Err(e)).await?;
                    return self.dead_letter(vec![tag]).await;
                }
            }
        }
        let upload = self.uploads.get_mut(&video).expect("loaded above");
        match upload.accept(tag, offset, data) {
            Accepted::Buffered => {}
            Accepted::Duplicate => return self.ack(vec![tag]).await,
            Accepted::Ahead { expected } => {
                tracing::info!(upload.id = %video, offset_bytes = offset, expected_bytes = expected, "chunk ahead of the stream held until the gap fills");
                return self.relieve_pressure().await;
            }
        }
        let result = upload.start_ready_parts(self.ctx, &self.parts_done).await;
        self.settle(video, result).await?;
        self.relieve_pressure().await
    }

    /// Acks what became durable, or handles the step's failure.
    async fn settle(
        &mut self,
        video: VideoId,
        result: Result<(), StepError>,
    ) -> Result<(), ShardError> {
        let error = match result {
            Ok(()) => {
                let Some(upload) = self.uploads.get_mut(&video) else {
                    return Ok(());
                };
                let done = upload.ackable();
                if upload.is_complete() {
                    tracing::info!(upload.id = %video, "upload stored");
                    let rest = upload.take_pending();
                    let forwarder = upload.forwarder.take();
                    self.uploads.remove(&video);
                    // The encode reads the replica's copy if it is whole.
                    if let Some(forwarder) = forwarder {
                        forwarder.finish(FORWARD_DRAIN).await;
                    }
                    // Before the last acks: if this fails, redelivery of
                    // those chunks publishes the jobs again.
                    self.after_upload(video, true).await?;
                    self.ack(rest).await?;
                }
                return self.ack(done).await;
            }
            Err(e) => e,
        };
        // The video was closed meanwhile (deleted, or failed and its
        // multipart upload aborted by the reaper): S3 refusing its parts is
        // expected, and its bytes are not wanted any more.
        let closed_under_us = matches!(
            error,
            StepError::Storage { .. } | StepError::State(AppendError::Rejected(_))
        ) && self.is_closed(video).await?;
        if closed_under_us {
            tracing::info!(upload.id = %video, reason = %error, "upload closed while storing; dropping its chunks");
            let pending = self
                .uploads
                .remove(&video)
                .map(|mut u| u.take_pending())
                .unwrap_or_default();
            return self.ack(pending).await;
        }
        match error {
            StepError::Storage { .. } | StepError::Corrupt(_) => {
                let pending = self
                    .uploads
                    .remove(&video)
                    .map(|mut u| u.take_pending())
                    .unwrap_or_default();
                let reason = error.to_string();
                tracing::error!(upload.id = %video, reason = %reason, "upload failed");
                self.ctx
                    .store
                    .append(video, |current| match &current.video {
                        Some(v) if !v.status.is_gone() => {
                            Ok((vec![VideoEvent::Failed { reason }], ()))
                        }
                        _ => Ok((vec![], ())),
                    })
                    .await
                    .map_err(|e| ShardError::State(e.to_string()))?;
                self.dead_letter(pending).await
            }
            // Postgres trouble, or another writer moved the video on. Nacking
            // just this upload's messages would let its later chunks overtake
            // them; closing the channel returns everything unacked in order.
            other => Err(ShardError::State(format!("upload {video}: {other}"))),
        }
    }

    async fn delete(&mut self, tag: u64, video: VideoId) -> Result<(), ShardError> {
        // Chunks before the delete no longer matter.
        if let Some(mut upload) = self.uploads.remove(&video) {
            let pending = upload.take_pending();
            self.ack(pending).await?;
        }
        match delete::remove_objects(self.ctx, video).await {
            Ok(()) => self.ack(vec![tag]).await,
            Err(StepError::Storage { step, source }) => {
                tracing::error!(upload.id = %video, step, error = %source, "deleting objects failed; dead-lettering the job");
                self.dead_letter(vec![tag]).await
            }
            Err(e) => Err(ShardError::State(format!("deleting {video}: {e}"))),
        }
    }

    /// The jobs that follow a finished upload: a verify job (when
    /// moderation is configured and `review` holds) and an encode job (when
    /// fflow is). Both are idempotent, so publishing twice is harmless.
    async fn after_upload(&self, video: VideoId, review: bool) -> Result<(), ShardError> {
        let mut kinds = Vec::new();
        if review && self.ctx.moderation.is_some() {
            kinds.push(JobKind::Verify);
        }
        if self.ctx.fflow.is_some() {
            kinds.push(JobKind::Encode);
        }
        for kind in kinds {
            self.ctx
                .publisher
                .publish_confirmed(JobHeader { video, kind })
                .await?;
        }
        Ok(())
    }

    /// Whether the video takes no more bytes (deleted, failed, finished).
    async fn is_closed(&self, video: VideoId) -> Result<bool, ShardError> {
        let aggregate = self.aggregate(video).await?;
        Ok(!aggregate.video.is_some_and(|v| v.status.accepts_bytes()))
    }

    /// The video's committed state; failing to read it means starting over.
    async fn aggregate(&self, video: VideoId) -> Result<Aggregate, ShardError> {
        self.ctx
            .store
            .aggregate(video)
            .await
            .map_err(|e| ShardError::State(e.to_string()))
    }

    /// Unacked messages held in memory across uploads.
    fn unacked(&self) -> usize {
        self.uploads.values().map(|u| u.pending()).sum()
    }

    /// Near the prefetch window, no new message arrives until some are
    /// acked: stage the upload holding the most.
    async fn relieve_pressure(&mut self) -> Result<(), ShardError> {
        let high_water = usize::from(self.ctx.prefetch) * 3 / 4;
        while self.unacked() >= high_water {
            // Chunks held ahead of a gap can't be staged, nor buffers behind
            // parts in flight: those are acked as the parts commit.
            let Some(video) = self
                .uploads
                .iter()
                .filter(|(_, u)| u.buffered() > 0 && u.parts_in_flight() == 0)
                .max_by_key(|(_, u)| u.pending())
                .map(|(v, _)| *v)
            else {
                return Ok(());
            };
            self.stage(video).await?;
        }
        Ok(())
    }

    /// Stages every buffer that saw no chunk for the idle time.
    pub async fn stage_idle(&mut self) -> Result<(), ShardError> {
        let idle: Vec<VideoId> = self
            .uploads
            .iter()
            .filter(|(_, u)| {
                u.buffered() > 0
                    && u.parts_in_flight() == 0
                    && u.last_chunk_at.elapsed() >= self.ctx.stage_idle
            })
            .map(|(v, _)| *v)
            .collect();
        for video in idle {
            self.stage(video).await?;
        }
        Ok(())
    }

    async fn stage(&mut self, video: VideoId) -> Result<(), ShardError> {
        let Some(upload) = self.uploads.get_mut(&video) else {
            return Ok(());
        };
        let result = upload.stage(self.ctx).await;
        self.settle(video, result).await
    }

    async fn ack(&self, tags: Vec<u64>) -> Result<(), ShardError> {
        for tag in tags {
            self.channel
                .basic_ack(tag, BasicAckOptions::default())
                .await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, tags: Vec<u64>) -> Result<(), ShardError> {
        for tag in tags {
            self.channel
                .basic_reject(tag, BasicRejectOptions { requeue: false })
                .await?;
        }
        Ok(())
    }
}

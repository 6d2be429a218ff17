//! One upload in a worker's memory: its bytes, in order, on their way into
//! an S3 multipart upload.
//!
//! Bytes sit in an in-memory buffer (backed by unacked messages) until a part
//! is full; the part is uploaded, `PartStored` committed with the SHA-256
//! midstate, and only then are the messages acked. A buffer that can't wait
//! (idle, or the prefetch window filling) is staged to an S3 object first.
//! See docs/architecture.md.
//!
//! The chunk consumer (`chunks.rs`) makes one call per thing that happens
//! (a chunk came, a part upload ended, the buffer must be staged) and gets
//! back a [`Progress`]: which deliveries are durable now, and whether the
//! upload is complete. It decides nothing about the upload; this file
//! decides nothing about acks.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Instant,
};

use bytes::Bytes;
use object_store::{
    ObjectStoreExt, PutPayload,
    multipart::{MultipartStore, PartId},
    path::Path,
};
use reelay_shared::{
    VideoId, hashing,
    video::{
        VideoEvent, VideoRejection, VideoState,
        domain::{StagedSegment, StoredPart},
    },
};
use sha2::{Digest, Sha256};
use tokio::{
    sync::{mpsc::UnboundedSender, oneshot},
    task::JoinHandle,
};
use tracing::Instrument;

use super::{StepError, fflow::Forwarder};
use crate::jobs::Context;

/// What a chunk did to the upload's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// New bytes; the message stays unacked until they are durable.
    Buffered,
    /// Bytes we already have (a resend or redelivery): ack now.
    Duplicate,
    /// Bytes past what we have. Held (unacked) until the bytes before them
    /// arrive: a redelivery may come out of order, or, if the broker refused
    /// an earlier chunk, the client resends it and these become duplicates.
    Ahead { expected: u64 },
}

/// What a step did to an upload's deliveries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Deliveries whose bytes are durable now (or were duplicates): ack.
    pub durable: Vec<u64>,
    /// The whole original is stored and `Uploaded` committed; `durable`
    /// then holds every delivery the upload still had.
    pub complete: bool,
}

/// Bytes held in memory, as the message bodies they came in (no copies).
#[derive(Default)]
struct Buffer {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Buffer {
    fn push(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        self.chunks.push_back(bytes);
    }

    /// Takes the first `n` bytes (splitting a chunk if needed).
    fn take(&mut self, mut n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        while n > 0 {
            let Some(mut front) = self.chunks.pop_front() else {
                break;
            };
            if front.len() > n {
                let rest = front.split_off(n);
                self.chunks.push_front(rest);
            }
            n -= front.len();
            self.len -= front.len();
            out.push(front);
        }
        out
    }
}

/// One upload in a worker's memory.
pub struct Upload {
    pub video: VideoId,
    size: u64,
    part_size: u64,
    key: Path,
    multipart_id: Option<String>,
    /// The whole original is stored and `Uploaded` committed.
    completed: bool,
    parts: Vec<StoredPart>,
    staged: Vec<StagedSegment>,
    /// End of the bytes durable in parts and staged segments.
    durable: u64,
    /// SHA-256 of `[0, durable)`.
    hasher: Sha256,
    buffer: Buffer,
    /// Unacked deliveries and the offset up to which each one's bytes reach.
    pending: Vec<(u64, u64)>,
    /// Chunks that arrived ahead of a gap, by offset, with their delivery tag.
    ahead: BTreeMap<u64, (u64, Bytes)>,
    /// Parts being uploaded, oldest first; committed in this order.
    in_flight: VecDeque<InFlight>,
    last_chunk_at: Instant,
    /// Sends new bytes on to the upload's fflow replica, when it has one.
    pub forwarder: Option<Forwarder>,
    /// The fleet firmware whose file this is, if it is one.
    firmware: Option<uuid::Uuid>,
}

/// Parts of one upload sent to S3 at once. Each holds its bytes (no copy:
/// the same buffers as the unacked messages), so prefetch still bounds memory.
pub const PARTS_IN_FLIGHT: usize = 3;

/// A part whose upload runs in a task; committed when it reaches the front.
struct InFlight {
    number: u32,
    end: u64,
    tail: Vec<Bytes>,
    staged: Vec<StagedSegment>,
    /// The upload's ETag or error, sent before the task reports on `done`:
    /// whoever hears `done` finds it here. (Not the task's own result: a
    /// task that has sent on `done` may not count as finished yet, and a
    /// part committed only once it does could wait for a `done` that never
    /// comes again.)
    result: oneshot::Receiver<PartPut>,
    task: JoinHandle<()>,
}

impl InFlight {
    /// The part upload's result once it has one; `None` while it runs.
    fn ended(&mut self) -> Option<Result<PartPut, StepError>> {
        match self.result.try_recv() {
            Ok(put) => Some(Ok(put)),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StepError::Corrupt(
                "a part upload task ended without a result".into(),
            ))),
        }
    }
}

/// What S3 answered a part upload: its ETag, or why not.
type PartPut = Result<String, object_store::Error>;

/// How a part upload's task ends: its result first, then `done`, so that
/// whoever hears `done` finds the result ([`InFlight::ended`]).
fn report_end(
    result: oneshot::Sender<PartPut>,
    done: &UnboundedSender<VideoId>,
    video: VideoId,
    put: PartPut,
) {
    let _ = result.send(put);
    let _ = done.send(video);
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Dropped state (a failure, a consumer restart) leaves no task
        // behind; redelivery uploads those parts again.
        for part in &self.in_flight {
            part.task.abort();
        }
    }
}

/// The result of loading an upload from Postgres.
pub enum Loaded {
    Active(Box<Upload>),
    /// Unknown, finished, failed or deleted: chunks for it are dropped.
    Closed,
}

impl Upload {
    pub fn load(ctx: &Context, video: VideoId, state: &VideoState) -> Result<Loaded, StepError> {
        let (Some(v), Some(session)) = (&state.video, &state.session) else {
            return Ok(Loaded::Closed);
        };
        if !v.status.accepts_bytes() {
            return Ok(Loaded::Closed);
        }
        let hasher =
            hashing::restore(&session.hash_state).map_err(|e| StepError::Corrupt(e.to_string()))?;
        Ok(Loaded::Active(Box::new(Self {
            video,
            size: v.size(),
            part_size: session.part_size_bytes as u64,
            key: Path::from(ctx.storage.original_key(video)),
            multipart_id: session.multipart_id.clone(),
            completed: false,
            parts: session.parts.0.clone(),
            staged: session.staged.0.clone(),
            durable: session.durable_bytes as u64,
            hasher,
            buffer: Buffer::default(),
            pending: Vec::new(),
            ahead: BTreeMap::new(),
            in_flight: VecDeque::new(),
            last_chunk_at: Instant::now(),
            forwarder: None,
            firmware: v.firmware_id,
        })))
    }

    /// A chunk at `offset` came with delivery `tag`: keep its new bytes and
    /// start every part they fill (each part's task reports on `done`).
    pub async fn take_chunk(
        &mut self,
        ctx: &Context,
        tag: u64,
        offset: u64,
        data: Bytes,
        done: &UnboundedSender<VideoId>,
    ) -> Result<Progress, StepError> {
        match self.accept(tag, offset, data) {
            Accepted::Buffered => {
                self.start_ready_parts(ctx, done).await?;
                Ok(self.progress())
            }
            Accepted::Duplicate => Ok(Progress {
                durable: vec![tag],
                complete: false,
            }),
            Accepted::Ahead { expected } => {
                tracing::info!(
                    offset_bytes = offset,
                    expected_bytes = expected,
                    "chunk ahead of the stream held until the gap fills"
                );
                Ok(Progress::default())
            }
        }
    }

    /// A part upload ended: commit what is done, in order, and start the
    /// parts that were waiting for room.
    pub async fn part_ended(
        &mut self,
        ctx: &Context,
        done: &UnboundedSender<VideoId>,
    ) -> Result<Progress, StepError> {
        self.commit_finished_parts(ctx).await?;
        self.start_ready_parts(ctx, done).await?;
        Ok(self.progress())
    }

    /// Writes the buffer to a staging object so its messages can be acked.
    pub async fn stage(&mut self, ctx: &Context) -> Result<Progress, StepError> {
        self.stage_buffer(ctx).await?;
        Ok(self.progress())
    }

    /// Whether the buffer can be staged now: it holds bytes, and no part
    /// upload runs (those ack their messages as they commit).
    pub fn stageable(&self) -> bool {
        self.buffer.len > 0 && self.in_flight.is_empty()
    }

    /// How long since the last chunk came.
    pub fn idle_for(&self) -> std::time::Duration {
        self.last_chunk_at.elapsed()
    }

    /// Every delivery still held, for the caller to ack or dead-letter; the
    /// upload is to be dropped after.
    pub fn release(&mut self) -> Vec<u64> {
        let ahead = std::mem::take(&mut self.ahead);
        self.pending
            .drain(..)
            .map(|(tag, _)| tag)
            .chain(ahead.into_values().map(|(tag, _)| tag))
            .collect()
    }

    /// The deliveries now durable; all of them once the upload is complete.
    fn progress(&mut self) -> Progress {
        if self.completed {
            return Progress {
                durable: self.release(),
                complete: true,
            };
        }
        let durable = self.durable;
        let (done, keep): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|(_, end)| *end <= durable);
        self.pending = keep;
        Progress {
            durable: done.into_iter().map(|(tag, _)| tag).collect(),
            complete: false,
        }
    }

    /// End of the bytes durable or handed to a part upload.
    fn assigned(&self) -> u64 {
        self.in_flight.back().map_or(self.durable, |p| p.end)
    }

    /// Bytes durable, being uploaded, or buffered.
    fn have(&self) -> u64 {
        self.assigned() + self.buffer.len as u64
    }

    /// End offset of the part being filled.
    fn part_end(&self) -> u64 {
        ((self.parts.len() + self.in_flight.len()) as u64 + 1)
            .saturating_mul(self.part_size)
            .min(self.size)
    }

    /// Part uploads still running or not yet committed.
    pub fn parts_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Deliveries held unacked.
    pub fn pending(&self) -> usize {
        self.pending.len() + self.ahead.len()
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len
    }

    /// Takes a chunk at `offset` delivered with `tag`; then any held chunks
    /// it makes contiguous.
    fn accept(&mut self, tag: u64, offset: u64, data: Bytes) -> Accepted {
        self.last_chunk_at = Instant::now();
        let have = self.have();
        if offset > have {
            self.ahead.insert(offset, (tag, data));
            return Accepted::Ahead { expected: have };
        }
        let accepted = self.accept_contiguous(tag, offset, data);
        loop {
            let have = self.have();
            let Some(entry) = self.ahead.first_entry() else {
                break;
            };
            if *entry.key() > have {
                break;
            }
            let (offset, (tag, data)) = entry.remove_entry();
            if self.accept_contiguous(tag, offset, data) == Accepted::Duplicate {
                // Its bytes came again in between: nothing of it is needed.
                self.pending.push((tag, 0));
            }
        }
        accepted
    }

    fn accept_contiguous(&mut self, tag: u64, offset: u64, mut data: Bytes) -> Accepted {
        if self.size == 0 {
            // The one empty chunk of an empty upload: held until the empty
            // object is stored.
            self.pending.push((tag, 0));
            return Accepted::Buffered;
        }
        let have = self.have();
        let skip = (have - offset) as usize;
        if skip >= data.len() {
            return Accepted::Duplicate;
        }
        let data = data.split_off(skip);
        let room = self.size.saturating_sub(have) as usize;
        if room == 0 {
            return Accepted::Duplicate;
        }
        let data = if data.len() > room {
            data.slice(..room)
        } else {
            data
        };
        if let Some(forwarder) = &self.forwarder {
            // The same bytes, not a copy.
            forwarder.send(have, data.clone());
        }
        self.buffer.push(data);
        self.pending.push((tag, self.have()));
        Accepted::Buffered
    }

    /// The fleet firmware whose file this is, if it is one (not forwarded
    /// to fflow, not encoded).
    pub fn firmware(&self) -> Option<uuid::Uuid> {
        self.firmware
    }

    /// The upload's size and the end of what is durable.
    pub fn size_and_durable(&self) -> (u64, u64) {
        (self.size, self.durable)
    }

    /// Starts uploading every part the buffer can fill, up to
    /// [`PARTS_IN_FLIGHT`] at once; each task sends `video` on `done` when it
    /// ends. An empty upload is stored at once.
    async fn start_ready_parts(
        &mut self,
        ctx: &Context,
        done: &UnboundedSender<VideoId>,
    ) -> Result<(), StepError> {
        if self.size == 0 {
            if !self.completed {
                self.store_empty(ctx).await?;
            }
            return Ok(());
        }
        while self.in_flight.len() < PARTS_IN_FLIGHT
            && self.assigned() < self.size
            && self.have() >= self.part_end()
        {
            self.start_part(ctx, done).await?;
        }
        Ok(())
    }

    async fn store_empty(&mut self, ctx: &Context) -> Result<(), StepError> {
        let s3 = &ctx.storage.s3;
        ctx.retry()
            .run("put", || s3.put(&self.key, PutPayload::default()))
            .await
            .map_err(|source| StepError::Storage {
                step: "put",
                source,
            })?;
        let sha256 = hex::encode(Sha256::digest(b""));
        ctx.store
            .append(self.video, |current| {
                current.open()?;
                Ok((vec![VideoEvent::Uploaded { sha256 }], ()))
            })
            .await?;
        self.completed = true;
        Ok(())
    }

    async fn ensure_multipart(&mut self, ctx: &Context) -> Result<String, StepError> {
        if let Some(id) = &self.multipart_id {
            return Ok(id.clone());
        }
        let s3 = &ctx.storage.s3;
        let id = ctx
            .retry()
            .run("create_multipart", || s3.create_multipart(&self.key))
            .await
            .map_err(|source| StepError::Storage {
                step: "create_multipart",
                source,
            })?;
        let recorded = id.clone();
        ctx.store
            .append(self.video, |current| {
                current.open()?;
                match current
                    .session
                    .as_ref()
                    .and_then(|s| s.multipart_id.as_deref())
                {
                    None => Ok((
                        vec![VideoEvent::MultipartStarted {
                            multipart_id: recorded,
                        }],
                        (),
                    )),
                    Some(other) => Err(VideoRejection::MultipartStarted(other.to_owned())),
                }
            })
            .await?;
        self.multipart_id = Some(id.clone());
        Ok(id)
    }

    async fn start_part(
        &mut self,
        ctx: &Context,
        done: &UnboundedSender<VideoId>,
    ) -> Result<(), StepError> {
        let multipart_id = self.ensure_multipart(ctx).await?;
        let end = self.part_end();
        let number = (self.parts.len() + self.in_flight.len()) as u32 + 1;
        let tail = self.buffer.take((end - self.assigned()) as usize);
        // Staging never runs while parts are in flight, so staged segments
        // belong to the first part after them.
        let staged = std::mem::take(&mut self.staged);
        let mut body: Vec<Bytes> = Vec::with_capacity(staged.len() + tail.len());
        for segment in &staged {
            let path = Path::from(segment.key.as_str());
            let bytes = ctx
                .retry()
                .run("get_staged", || async {
                    ctx.storage.s3.get(&path).await?.bytes().await
                })
                .await
                .map_err(|source| StepError::Storage {
                    step: "get_staged",
                    source,
                })?;
            if bytes.len() as u64 != segment.len {
                return Err(StepError::Corrupt(format!(
                    "staged segment {} has {} bytes",
                    segment.key,
                    bytes.len()
                )));
            }
            body.push(bytes);
        }
        body.extend(tail.iter().cloned());
        let payload: PutPayload = body.into_iter().collect();
        let (s3, key, retry, video, done) = (
            ctx.storage.s3.clone(),
            self.key.clone(),
            ctx.retry(),
            self.video,
            done.clone(),
        );
        let (sender, result) = oneshot::channel();
        let task = tokio::spawn(
            async move {
                let started = Instant::now();
                let put = retry
                    .run("put_part", || {
                        s3.put_part(&key, &multipart_id, number as usize - 1, payload.clone())
                    })
                    .await
                    .map(|part| part.content_id);
                metrics::histogram!("reelay_part_upload_seconds")
                    .record(started.elapsed().as_secs_f64());
                report_end(sender, &done, video, put);
            }
            .in_current_span(),
        );
        self.in_flight.push_back(InFlight {
            number,
            end,
            tail,
            staged,
            result,
            task,
        });
        Ok(())
    }

    /// Commits, in order, every part at the front whose upload has ended.
    async fn commit_finished_parts(&mut self, ctx: &Context) -> Result<(), StepError> {
        while let Some(put) = self.in_flight.front_mut().and_then(InFlight::ended) {
            let part = self.in_flight.pop_front().expect("checked above");
            self.commit_part(ctx, part.number, part.end, part.tail, part.staged, put?)
                .await?;
        }
        Ok(())
    }

    async fn commit_part(
        &mut self,
        ctx: &Context,
        number: u32,
        end: u64,
        tail: Vec<Bytes>,
        staged: Vec<StagedSegment>,
        put: Result<String, object_store::Error>,
    ) -> Result<(), StepError> {
        let is_last = end == self.size;
        let etag = match put {
            Ok(etag) => etag,
            // After a crash between completing and committing, the
            // multipart upload is gone but the object is whole.
            Err(source) if is_last && self.object_is_whole(ctx).await => {
                tracing::info!(error = %source, "multipart already completed");
                String::new()
            }
            Err(source) => {
                return Err(StepError::Storage {
                    step: "put_part",
                    source,
                });
            }
        };
        for bytes in &tail {
            self.hasher.update(bytes);
        }
        let part = StoredPart { number, etag };
        let mut events = vec![VideoEvent::PartStored {
            part: part.clone(),
            stored_bytes: end,
            hash_state: hashing::save(&self.hasher),
        }];
        if is_last {
            if !part.etag.is_empty() {
                self.complete_multipart(ctx, &part).await?;
            }
            events.push(VideoEvent::Uploaded {
                sha256: hex::encode(self.hasher.clone().finalize()),
            });
        }
        ctx.store
            .append(self.video, |current| {
                current.open()?;
                let parts = current
                    .session
                    .as_ref()
                    .map_or(0, |s| s.parts.0.len() as u32);
                if parts + 1 != number {
                    return Err(VideoRejection::PartOutOfOrder {
                        number,
                        stored: parts,
                    });
                }
                Ok((events, ()))
            })
            .await?;
        self.parts.push(part);
        self.durable = end;
        self.completed = is_last;
        metrics::counter!("reelay_parts_stored_total").increment(1);
        tracing::debug!(part = number, stored_bytes = end, "part stored");
        remove_staged(ctx, staged).await;
        Ok(())
    }

    async fn complete_multipart(&self, ctx: &Context, last: &StoredPart) -> Result<(), StepError> {
        let multipart_id = self.multipart_id.clone().unwrap_or_default();
        let ids: Vec<PartId> = self
            .parts
            .iter()
            .chain(std::iter::once(last))
            .map(|p| PartId {
                content_id: p.etag.clone(),
            })
            .collect();
        let s3 = &ctx.storage.s3;
        let completed = ctx
            .retry()
            .run("complete_multipart", || {
                s3.complete_multipart(&self.key, &multipart_id, ids.clone())
            })
            .await;
        match completed {
            Err(source) if !self.object_is_whole(ctx).await => Err(StepError::Storage {
                step: "complete_multipart",
                source,
            }),
            _ => Ok(()),
        }
    }

    async fn stage_buffer(&mut self, ctx: &Context) -> Result<(), StepError> {
        if self.buffer.len == 0 || !self.in_flight.is_empty() {
            return Ok(());
        }
        let offset = self.durable;
        let len = self.buffer.len as u64;
        let chunks = self.buffer.take(self.buffer.len);
        let key = ctx.storage.staging_key(self.video, offset);
        let path = Path::from(key.as_str());
        let payload: PutPayload = chunks.iter().cloned().collect();
        let s3 = &ctx.storage.s3;
        ctx.retry()
            .run("put_staged", || s3.put(&path, payload.clone()))
            .await
            .map_err(|source| StepError::Storage {
                step: "put_staged",
                source,
            })?;
        for bytes in &chunks {
            self.hasher.update(bytes);
        }
        let segment = StagedSegment { offset, len, key };
        let event = VideoEvent::SegmentStaged {
            segment: segment.clone(),
            hash_state: hashing::save(&self.hasher),
        };
        ctx.store
            .append(self.video, |current| {
                current.open()?;
                let durable = current
                    .session
                    .as_ref()
                    .map_or(0, |s| s.durable_bytes as u64);
                if durable != offset {
                    return Err(VideoRejection::OffsetMoved {
                        expected: offset,
                        actual: durable,
                    });
                }
                Ok((vec![event], ()))
            })
            .await?;
        self.staged.push(segment);
        self.durable += len;
        metrics::counter!("reelay_segments_staged_total").increment(1);
        tracing::debug!(offset_bytes = offset, size_bytes = len, "buffer staged");
        Ok(())
    }

    async fn object_is_whole(&self, ctx: &Context) -> bool {
        matches!(ctx.storage.s3.head(&self.key).await, Ok(meta) if meta.size == self.size)
    }
}

/// Staged segments are consumed once their part is committed; a failure
/// here leaves litter for the reaper, not a wrong object.
async fn remove_staged(ctx: &Context, staged: Vec<StagedSegment>) {
    for segment in staged {
        if let Err(e) = ctx
            .storage
            .s3
            .delete(&Path::from(segment.key.as_str()))
            .await
        {
            tracing::warn!(key = %segment.key, error = %e, "removing a staged segment failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(size: u64) -> Upload {
        Upload {
            video: VideoId::new(),
            size,
            part_size: 8,
            key: Path::from("k"),
            multipart_id: None,
            completed: false,
            parts: Vec::new(),
            staged: Vec::new(),
            durable: 0,
            hasher: Sha256::new(),
            buffer: Buffer::default(),
            pending: Vec::new(),
            ahead: BTreeMap::new(),
            in_flight: VecDeque::new(),
            last_chunk_at: Instant::now(),
            forwarder: None,
            firmware: None,
        }
    }

    /// The race the bench found: a part's task reports on `done` and is
    /// only then finished; the consumer that hears `done` first must find
    /// the part ended (before, it checked the task, saw it running, and the
    /// upload waited for a `done` that had already come).
    #[tokio::test]
    async fn a_part_has_ended_once_its_result_is_sent_though_its_task_still_runs() {
        let (sender, result) = oneshot::channel();
        let (done, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let (release, hold) = oneshot::channel::<()>();
        let video = VideoId::new();
        let task = tokio::spawn(async move {
            report_end(sender, &done, video, Ok("etag".to_owned()));
            let _ = hold.await;
        });
        let mut part = InFlight {
            number: 1,
            end: 8,
            tail: Vec::new(),
            staged: Vec::new(),
            result,
            task,
        };
        // What the consumer does: hear `done`, then look at the part.
        assert_eq!(heard.recv().await, Some(video));
        let ended = part.ended();
        assert!(!part.task.is_finished(), "the task still runs");
        let put = ended.expect("ended").expect("a result");
        assert_eq!(put.expect("stored"), "etag");
        let _ = release.send(());

        let (sender, result) = oneshot::channel::<PartPut>();
        let mut running = InFlight {
            result,
            task: tokio::spawn(std::future::pending()),
            ..part
        };
        assert!(running.ended().is_none(), "no result yet: still running");
        drop(sender);
        assert!(
            matches!(running.ended(), Some(Err(StepError::Corrupt(_)))),
            "a task gone without a result is an error, not a wait"
        );
        running.task.abort();
    }

    #[test]
    fn chunks_out_of_order_or_repeated_end_as_one_contiguous_stream() {
        let mut u = upload(12);
        assert_eq!(
            u.accept(1, 4, Bytes::from_static(b"efgh")),
            Accepted::Ahead { expected: 0 }
        );
        assert_eq!(
            u.accept(2, 0, Bytes::from_static(b"abcd")),
            Accepted::Buffered
        );
        assert_eq!(u.buffered(), 8, "the held chunk joined once the gap filled");
        assert_eq!(
            u.accept(3, 2, Bytes::from_static(b"cdefgh")),
            Accepted::Duplicate
        );
        assert_eq!(
            u.accept(4, 6, Bytes::from_static(b"ghijkl")),
            Accepted::Buffered
        );
        assert_eq!(u.buffered(), 12);
        assert_eq!(u.buffer.take(12).concat(), b"abcdefghijkl");
        assert_eq!(u.pending(), 3);
    }

    #[test]
    fn a_chunk_is_acked_only_once_all_its_bytes_are_durable() {
        let mut u = upload(12);
        u.accept(1, 0, Bytes::from_static(b"abcdef"));
        u.accept(2, 6, Bytes::from_static(b"ghijkl"));
        u.durable = 8;
        assert_eq!(u.progress().durable, vec![1]);
        u.durable = 12;
        assert_eq!(u.progress().durable, vec![2]);
    }

    #[test]
    fn a_buffer_splits_chunks_at_the_boundary_asked() {
        let mut buffer = Buffer::default();
        buffer.push(Bytes::from_static(b"abcd"));
        buffer.push(Bytes::from_static(b"efgh"));
        let taken: Vec<u8> = buffer.take(6).concat();
        assert_eq!(taken, b"abcdef");
        assert_eq!(buffer.len, 2);
        assert_eq!(buffer.take(10).concat(), b"gh");
        assert_eq!(buffer.len, 0);
    }
}

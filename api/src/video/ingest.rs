//! Streams a PATCH body into chunk jobs on RabbitMQ. Each chunk is published
//! persistent with a publisher confirm; the offset that counts is the end of
//! the last chunk the broker confirmed, also when the body breaks off. The
//! body is never held whole: at most one chunk is buffered, plus the chunks
//! awaiting confirmation, and what all PATCHes buffer together stays within
//! the api's budget (`budget.rs`).

use std::collections::VecDeque;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::{Channel, Confirmation, PublisherConfirm};
use reelay_shared::{
    VideoId,
    lock::LockGuard,
    video::{
        VideoEvent, VideoRejection,
        jobs::{JobHeader, JobKind},
    },
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::tus::{Checksum, ChecksumHasher};
use crate::{error::ApiError, state::AppState};

/// Body pieces at least this large are buffered as the server read them;
/// smaller ones are copied into a tail buffer. A kept piece holds its read
/// buffer (at most 64 KiB, `serve.rs`) alive, so a client sending its body
/// in small pieces would otherwise pin a read buffer per piece: this way a
/// buffered byte holds at most two in memory.
const KEEP_PIECES_FROM: usize = 32 * 1024;
/// The tail buffer small pieces are copied into.
const TAIL_CAPACITY: usize = 64 * 1024;

/// Chunks published but not yet confirmed, per PATCH.
const MAX_IN_FLIGHT: usize = 2;
/// A confirm that takes longer than this counts as a broker failure.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Confirmed bytes are recorded (a `BytesReceived`) as a long PATCH goes,
/// every this many chunks: an api that dies mid-PATCH loses no confirmed
/// progress past the last record, at one event per 16 MiB (by default).
const RECORD_EVERY_CHUNKS: u64 = 4;

/// How far a PATCH got: the confirmed end offset, what of it is recorded
/// already, and why it stopped early.
pub struct Ingested {
    pub confirmed: u64,
    pub recorded: u64,
    pub error: Option<ApiError>,
}

/// Publishes `body` as the bytes from `start` of an upload of `size` bytes.
pub async fn ingest(
    state: &AppState,
    video: VideoId,
    start: u64,
    size: u64,
    body: Body,
    checksum: Option<Checksum>,
    lock: &LockGuard,
) -> Ingested {
    let mut chunker = match Chunker::open(state, video, start).await {
        Ok(c) => c,
        Err(error) => {
            return Ingested {
                confirmed: start,
                recorded: start,
                error: Some(error),
            };
        }
    };
    let result = match checksum {
        None => stream_body(state, &mut chunker, size, body, lock).await,
        Some(checksum) => spool_and_verify(state, &mut chunker, size, body, &checksum, lock).await,
    };
    let error = match result {
        Ok(()) => chunker.finish().await.err(),
        Err(e) => {
            // Keep what the broker has confirmed; the client resumes from it.
            let _ = chunker.settle().await;
            Some(e)
        }
    };
    Ingested {
        confirmed: chunker.confirmed,
        recorded: chunker.recorded,
        error,
    }
}

struct Chunker<'a> {
    state: &'a AppState,
    channel: Channel,
    video: VideoId,
    /// Body bytes not yet published.
    buffer: Pieces,
    /// Offset of the buffer's first byte.
    offset: u64,
    confirmed: u64,
    /// The offset the log holds for this upload.
    recorded: u64,
    /// Published chunks awaiting their confirm: their end offset, the
    /// confirm, and the budget's room they hold (their bytes sit in the
    /// broker client's buffers until the broker has them).
    in_flight: VecDeque<(u64, PublisherConfirm, usize)>,
    /// Room taken in the api's budget for the bytes buffered here.
    held: usize,
}

impl Drop for Chunker<'_> {
    fn drop(&mut self) {
        let in_flight: usize = self.in_flight.iter().map(|(_, _, room)| room).sum();
        self.state
            .budget
            .give(std::mem::take(&mut self.held) + in_flight);
    }
}

impl<'a> Chunker<'a> {
    async fn open(state: &'a AppState, video: VideoId, start: u64) -> Result<Self, ApiError> {
        let channel = state.publisher.channel().await.map_err(|e| {
            tracing::warn!(error = %e, "broker unavailable");
            ApiError::Unavailable("the message broker is unavailable; retry later")
        })?;
        Ok(Self {
            state,
            channel,
            video,
            buffer: Pieces::default(),
            offset: start,
            confirmed: start,
            recorded: start,
            in_flight: VecDeque::new(),
            held: 0,
        })
    }

    async fn push(&mut self, bytes: Bytes) -> Result<(), ApiError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.take_room(bytes.len()).await?;
        self.accept(bytes).await
    }

    /// Takes room in the api's budget for `bytes` more. When it is full:
    /// publishes what this PATCH holds (a short chunk) and awaits its
    /// confirms, so that it holds nothing while it waits (no PATCH waits on
    /// room another waiter holds); meanwhile its body is not read.
    async fn take_room(&mut self, bytes: usize) -> Result<(), ApiError> {
        self.reap_confirmed().await?;
        let state = self.state;
        let budget = &state.budget;
        let taken = match budget.try_take(bytes) {
            Some(taken) => taken,
            None => {
                self.publish_buffered().await?;
                self.settle().await?;
                metrics::counter!("reelay_api_budget_waits_total").increment(1);
                // Others give room back as the broker confirms; a budget
                // that stays full this long means the broker is stuck.
                let patience = state.config.lock.patch_idle_timeout * 4;
                tokio::time::timeout(patience, budget.take(bytes))
                    .await
                    .map_err(|_| {
                        metrics::counter!("reelay_api_budget_timeouts_total").increment(1);
                        ApiError::Unavailable("the api is busy; resume from HEAD's offset later")
                    })?
            }
        };
        self.held += taken;
        Ok(())
    }

    /// Buffers or publishes `bytes`, for which room was taken.
    async fn accept(&mut self, mut bytes: Bytes) -> Result<(), ApiError> {
        let chunk_size = self.state.config.upload.chunk_size;
        let result = self.split_into_chunks(&mut bytes, chunk_size).await;
        // Room beyond what stays buffered is not needed any more.
        let keep = self.buffer.len().min(self.held);
        self.state.budget.give(self.held - keep);
        self.held = keep;
        result
    }

    async fn split_into_chunks(
        &mut self,
        bytes: &mut Bytes,
        chunk_size: usize,
    ) -> Result<(), ApiError> {
        while !bytes.is_empty() {
            if self.buffer.len() == 0 && bytes.len() >= chunk_size {
                let chunk = bytes.split_to(chunk_size);
                self.publish(&chunk).await?;
                continue;
            }
            let take = (chunk_size - self.buffer.len()).min(bytes.len());
            self.buffer.push(bytes.split_to(take));
            if self.buffer.len() == chunk_size {
                self.publish_buffered().await?;
            }
        }
        Ok(())
    }

    /// Publishes the buffered pieces as one chunk, if there are any.
    async fn publish_buffered(&mut self) -> Result<(), ApiError> {
        match self.buffer.take() {
            Some(chunk) => self.publish(&chunk).await,
            None => Ok(()),
        }
    }

    /// Publishes `chunk`; the room of its bytes moves with it until its
    /// confirm.
    async fn publish(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.confirm_oldest().await?;
        }
        let header = JobHeader {
            video: self.video,
            kind: JobKind::Chunk {
                offset: self.offset,
            },
        };
        let confirm = self
            .state
            .publisher
            .publish_job(&self.channel, header, chunk)
            .await
            .map_err(|e| self.broker_failed(e))?;
        self.offset += chunk.len() as u64;
        let room = chunk.len().min(self.held);
        self.held -= room;
        self.in_flight.push_back((self.offset, confirm, room));
        metrics::counter!("reelay_chunk_bytes_published_total").increment(chunk.len() as u64);
        Ok(())
    }

    async fn confirm_oldest(&mut self) -> Result<(), ApiError> {
        // Awaited in place and removed after: a request dropped while it
        // waits (the client went away) leaves the entry for Drop, which
        // gives its room back.
        let Some((_, confirm, _)) = self.in_flight.front_mut() else {
            return Ok(());
        };
        let answer = tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await;
        self.conclude_oldest(answer).await
    }

    /// Concludes the confirms that have come already, without waiting: their
    /// room goes back to the budget now rather than at the next publish.
    async fn reap_confirmed(&mut self) -> Result<(), ApiError> {
        while let Some((_, confirm, _)) = self.in_flight.front_mut() {
            let Some(answer) = futures_util::FutureExt::now_or_never(confirm) else {
                break;
            };
            self.conclude_oldest(Ok(answer)).await?;
        }
        Ok(())
    }

    async fn conclude_oldest(
        &mut self,
        answer: Result<Result<Confirmation, lapin::Error>, tokio::time::error::Elapsed>,
    ) -> Result<(), ApiError> {
        let Some((end, _, room)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        self.state.budget.give(room);
        match answer {
            // Mandatory publishing: an unroutable chunk comes back as Ack(Some(_)).
            Ok(Ok(Confirmation::Ack(None))) => {
                self.confirmed = end;
                let every = RECORD_EVERY_CHUNKS * self.state.config.upload.chunk_size as u64;
                if self.confirmed - self.recorded >= every {
                    self.recorded =
                        record_received(self.state, self.video, self.recorded, self.confirmed)
                            .await?
                            .0;
                }
                Ok(())
            }
            Ok(Ok(_)) => {
                // Unconfirmed bytes may still arrive; the worker drops any
                // it already has when the client sends them again.
                self.forget_in_flight();
                Err(ApiError::Unavailable(
                    "the message broker refused the chunk; retry later",
                ))
            }
            Ok(Err(e)) => {
                self.forget_in_flight();
                Err(self.broker_failed(e))
            }
            Err(_) => {
                self.forget_in_flight();
                Err(ApiError::Unavailable(
                    "the message broker did not confirm in time; retry later",
                ))
            }
        }
    }

    /// Drops the confirms still awaited (the broker failed), giving back
    /// the room their chunks held.
    fn forget_in_flight(&mut self) {
        let room: usize = self.in_flight.drain(..).map(|(_, _, room)| room).sum();
        self.state.budget.give(room);
    }

    fn broker_failed(&self, error: lapin::Error) -> ApiError {
        tracing::warn!(error = %error, "publishing a chunk failed");
        let publisher = self.state.publisher.clone();
        tokio::spawn(async move { publisher.reset().await });
        ApiError::Unavailable("the message broker is unavailable; retry later")
    }

    /// Awaits every chunk in flight.
    async fn settle(&mut self) -> Result<(), ApiError> {
        while !self.in_flight.is_empty() {
            self.confirm_oldest().await?;
        }
        Ok(())
    }

    /// Publishes what is buffered and awaits every confirm.
    async fn finish(&mut self) -> Result<(), ApiError> {
        self.publish_buffered().await?;
        self.settle().await
    }
}

/// Body bytes buffered for the next chunk: large pieces as the server read
/// them (no copy), small ones copied together ([`KEEP_PIECES_FROM`]).
#[derive(Default)]
struct Pieces {
    kept: Vec<Bytes>,
    /// Small pieces after the last of `kept`, copied together.
    tail: BytesMut,
    len: usize,
}

impl Pieces {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        if piece.len() >= KEEP_PIECES_FROM {
            self.seal_tail();
            self.kept.push(piece);
            return;
        }
        if self.tail.len() + piece.len() > TAIL_CAPACITY {
            self.seal_tail();
        }
        if self.tail.capacity() == 0 {
            self.tail = BytesMut::with_capacity(TAIL_CAPACITY);
        }
        self.tail.extend_from_slice(&piece);
    }

    /// Moves the tail into `kept`: its allocation if at least half full,
    /// else a copy of exactly its bytes. Either way the PATCH keeps no tail
    /// allocation between chunks.
    fn seal_tail(&mut self) {
        let tail = std::mem::take(&mut self.tail);
        if tail.len() >= TAIL_CAPACITY / 2 {
            self.kept.push(tail.freeze());
        } else if !tail.is_empty() {
            self.kept.push(Bytes::copy_from_slice(&tail));
        }
    }

    /// Everything buffered as one chunk, if anything is. The broker client
    /// takes a chunk as one slice: the pieces are copied into a buffer of
    /// exactly their size and freed (one piece is returned as it is).
    fn take(&mut self) -> Option<Bytes> {
        self.seal_tail();
        self.len = 0;
        let mut kept = std::mem::take(&mut self.kept);
        match kept.len() {
            0 => None,
            1 => kept.pop(),
            _ => Some(Bytes::from(kept.concat())),
        }
    }
}

/// Next frame of the body, or why there is none: the body ended (`None`),
/// broke off, sent nothing for the idle timeout, or ran past `size`
/// (`received` counts the upload's bytes so far, frames included).
async fn next_frame(
    state: &AppState,
    stream: &mut (impl futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin),
    received: &mut u64,
    size: u64,
) -> Result<Option<Bytes>, ApiError> {
    let bytes =
        match tokio::time::timeout(state.config.lock.patch_idle_timeout, stream.next()).await {
            Err(_) => {
                return Err(ApiError::BadRequest(
                    "the request body stalled; resume from HEAD's offset".into(),
                ));
            }
            Ok(None) => return Ok(None),
            Ok(Some(Ok(bytes))) => bytes,
            Ok(Some(Err(_))) => {
                return Err(ApiError::BadRequest(
                    "the request body broke off; resume from HEAD's offset".into(),
                ));
            }
        };
    *received += bytes.len() as u64;
    if *received > size {
        return Err(ApiError::TooLarge(format!(
            "the body runs past Upload-Length ({size} bytes)"
        )));
    }
    Ok(Some(bytes))
}

async fn stream_body(
    state: &AppState,
    chunker: &mut Chunker<'_>,
    size: u64,
    body: Body,
    lock: &LockGuard,
) -> Result<(), ApiError> {
    let mut stream = body.into_data_stream();
    let mut received = chunker.offset;
    while let Some(bytes) = next_frame(state, &mut stream, &mut received, size).await? {
        if lock.lost() {
            return Err(ApiError::Locked);
        }
        chunker.push(bytes).await?;
    }
    Ok(())
}

/// With Upload-Checksum nothing may be published before the whole body is
/// verified, so the body goes to an anonymous temporary file first (disk,
/// not memory), then to the broker.
async fn spool_and_verify(
    state: &AppState,
    chunker: &mut Chunker<'_>,
    size: u64,
    body: Body,
    checksum: &Checksum,
    lock: &LockGuard,
) -> Result<(), ApiError> {
    let file = tempfile::tempfile()
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("temp file")))?;
    let mut file = tokio::fs::File::from_std(file);
    let io = |e: std::io::Error| {
        ApiError::Internal(anyhow::Error::new(e).context("spooling a checksummed body"))
    };
    let mut hasher = ChecksumHasher::new(checksum);
    let mut stream = body.into_data_stream();
    let mut received = chunker.offset;
    while let Some(bytes) = next_frame(state, &mut stream, &mut received, size).await? {
        hasher.update(&bytes);
        file.write_all(&bytes).await.map_err(io)?;
    }
    if !hasher.matches(checksum) {
        return Err(ApiError::ChecksumMismatch);
    }
    file.flush().await.map_err(io)?;
    file.rewind().await.map_err(io)?;
    let chunk_size = state.config.upload.chunk_size;
    loop {
        // Room first: the chunk read from the spool counts too.
        chunker.take_room(chunk_size).await?;
        let mut chunk = BytesMut::zeroed(chunk_size);
        let mut filled = 0;
        while filled < chunk_size {
            let n = file.read(&mut chunk[filled..]).await.map_err(io)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        chunk.truncate(filled);
        if lock.lost() {
            return Err(ApiError::Locked);
        }
        // Empty at the end: accepting nothing gives the room back.
        chunker.accept(chunk.freeze()).await?;
        if filled == 0 {
            return Ok(());
        }
    }
}

/// Records `confirmed` as the upload's received offset if it moved past
/// `from` (what the log holds, checked: another writer is a 409); returns
/// the offset and, when it moved, the upload's new expiry.
pub async fn record_received(
    state: &AppState,
    id: VideoId,
    from: u64,
    confirmed: u64,
) -> Result<(u64, Option<DateTime<Utc>>), ApiError> {
    if confirmed == from {
        return Ok((from, None));
    }
    let expires_at = Utc::now() + state.config.upload.expiry;
    Ok(state
        .store
        .append(id, |current| {
            let video = current.existing()?;
            if video.received() != from {
                return Err(VideoRejection::OffsetMoved {
                    expected: from,
                    actual: video.received(),
                });
            }
            Ok((
                vec![VideoEvent::BytesReceived {
                    received_bytes: confirmed,
                    expires_at,
                }],
                (confirmed, Some(expires_at)),
            ))
        })
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_pieces_are_copied_and_large_ones_kept_in_order() {
        let read = Bytes::from(vec![7u8; 64 * 1024]);
        let mut pieces = Pieces::default();
        for at in 0..100 {
            pieces.push(read.slice(at..at + 1));
        }
        assert!(
            read.is_unique(),
            "small pieces must not keep the server's read buffer alive"
        );
        let large = Bytes::from((0..KEEP_PIECES_FROM).map(|i| i as u8).collect::<Vec<_>>());
        pieces.push(large.clone());
        assert!(!large.is_unique(), "a large piece is kept, not copied");
        pieces.push(Bytes::from_static(b"end"));
        assert_eq!(pieces.len(), 100 + KEEP_PIECES_FROM + 3);

        let chunk = pieces.take().expect("something is buffered");
        let mut expected = vec![7u8; 100];
        expected.extend_from_slice(&large);
        expected.extend_from_slice(b"end");
        assert_eq!(chunk, expected);
        assert!(large.is_unique(), "taking the chunk frees the pieces");
        assert_eq!((pieces.len(), pieces.take()), (0, None));
    }

    #[test]
    fn a_lone_piece_is_the_chunk_itself() {
        let mut pieces = Pieces::default();
        let read = Bytes::from(vec![1u8; KEEP_PIECES_FROM * 2]);
        pieces.push(read.clone());
        let chunk = pieces.take().unwrap();
        assert_eq!(chunk.as_ptr(), read.as_ptr(), "not copied");
    }
}

//! Encode jobs: once a video is UPLOADED, ask the fflow replica that holds
//! its session to encode it, follow the encode to its end, and record it:
//! ENCODING → READY, or FAILED with ffmpeg's reason.
//!
//! When the routed replica is gone, does not know the session, or holds an
//! incomplete copy, the encode moves to a live replica that reads the
//! original from S3: the same input, the same result. A job redelivered
//! after its worker died picks the encode up where it runs (asking to
//! encode is idempotent on the replica). Every event is appended only if
//! the video is still where the job expects it, so two jobs for one video
//! do nothing twice.

use std::time::Duration;

use reelay_shared::{
    VideoId, VideoStatus,
    retry::RetryPolicy,
    video::{
        VideoEvent,
        domain::Playback,
        fflow::{EncodeState, Encoded, Source},
    },
};

use super::{
    StepError,
    fflow::{CallError, Fflow},
};
use crate::{consumer::Outcome, jobs::Context};

/// Replicas one job tries before it gives up.
const MAX_REPLICAS: usize = 3;
/// Failed status calls in a row after which a replica counts as gone.
const LOST_AFTER: u32 = 3;
/// Progress is recorded in steps of this many percent.
const PROGRESS_STEP: u8 = 10;

/// Done once READY or FAILED is recorded (or there was nothing to do);
/// gives up, with the video FAILED, when no replica could take it.
pub async fn run(ctx: &Context, fflow: &Fflow, video: VideoId) -> Result<Outcome, StepError> {
    let Some(v) = ctx.store.video(video).await? else {
        return Ok(Outcome::Done);
    };
    if !matches!(v.status, VideoStatus::Uploaded | VideoStatus::Encoding) {
        return Ok(Outcome::Done);
    }
    let size = v.size();
    let mut address = fflow.route(video).await;
    let mut source = Source::Local;
    let mut tried = 0;
    while tried < MAX_REPLICAS {
        let current = match address.take() {
            Some(address) => address,
            None => match start_anywhere(fflow, video, size, None).await {
                Some(address) => {
                    source = Source::S3;
                    address
                }
                None => break,
            },
        };
        tried += 1;
        let asked = match fflow.encode(&current, video, source).await {
            // The forwarder may still be sending the last chunks.
            Err(CallError::Incomplete) if source == Source::Local => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                fflow.encode(&current, video, source).await
            }
            other => other,
        };
        match asked {
            Ok(_) => {}
            Err(CallError::Incomplete) => {
                tracing::info!(fflow = %current, "the replica's copy is incomplete; it reads the original from S3");
                source = Source::S3;
                address = Some(current);
                continue;
            }
            Err(e) => {
                tracing::warn!(fflow = %current, error = %e, "the routed replica can't encode; moving to another");
                address = start_anywhere(fflow, video, size, Some(&current)).await;
                source = Source::S3;
                continue;
            }
        }
        started(ctx, video, &current, source, tried > 1).await?;
        match follow(ctx, fflow, video, &current, source).await? {
            Followed::Finished => return Ok(Outcome::Done),
            Followed::S3Away => {
                // Each return counts as a delivery (50 dead-letter the job,
                // leaving the video ENCODING): returned once S3 answers,
                // not every few seconds through a long outage.
                wait_for_s3(ctx).await;
                return Ok(Outcome::RetryLater(S3_AWAY_RETRY));
            }
            Followed::Lost => {
                tracing::warn!(fflow = %current, "the replica went away mid-encode; moving to another");
                address = start_anywhere(fflow, video, size, Some(&current)).await;
                source = Source::S3;
            }
        }
    }
    let reason = "no encoder replica could take the video".to_owned();
    fail(ctx, video, reason.clone()).await?;
    fflow.forget_route(video).await;
    Ok(Outcome::GaveUp(reason))
}

/// How long an encode waits for any fflow replica to answer (a restart of
/// them all, say) before the video fails: 1 s doubling to 32 s, ten times,
/// about three minutes.
const NO_REPLICA: RetryPolicy = RetryPolicy {
    attempts: 10,
    base: Duration::from_secs(1),
};

/// A session on any live replica but `dead`, retried with backoff while
/// none answers.
async fn start_anywhere(
    fflow: &Fflow,
    video: VideoId,
    size: u64,
    dead: Option<&str>,
) -> Option<String> {
    NO_REPLICA
        .run("start_fflow_session", || async {
            fflow
                .start_session(video, size, dead)
                .await
                .ok_or("no fflow replica answered")
        })
        .await
        .ok()
}

enum Followed {
    Finished,
    Lost,
    /// S3 was away: the job comes back after [`S3_AWAY_RETRY`].
    S3Away,
}

/// How long an encode that met S3 away waits before it is asked again.
const S3_AWAY_RETRY: Duration = Duration::from_secs(15);
/// The longest an encode job waits in one go for S3 to answer again.
const S3_AWAY_WAIT: Duration = Duration::from_secs(600);

/// Waits, within [`S3_AWAY_WAIT`], until S3 answers a probe.
async fn wait_for_s3(ctx: &Context) {
    let until = tokio::time::Instant::now() + S3_AWAY_WAIT;
    while !ctx.storage.reachable().await && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Polls the replica until the encode ends, recording progress in steps.
async fn follow(
    ctx: &Context,
    fflow: &Fflow,
    video: VideoId,
    address: &str,
    source: Source,
) -> Result<Followed, StepError> {
    let mut recorded = 0u8;
    let mut misses = 0u32;
    loop {
        let info = match fflow.status(address, video, fflow.config().poll).await {
            Ok(info) => {
                misses = 0;
                info
            }
            Err(e) => {
                misses += 1;
                tracing::debug!(fflow = %address, error = %e, "encode status unavailable");
                if misses >= LOST_AFTER {
                    return Ok(Followed::Lost);
                }
                tokio::time::sleep(fflow.config().poll).await;
                continue;
            }
        };
        match info.encode {
            // A replica that restarted took the session back idle: ask again.
            EncodeState::Idle => {
                if let Err(e) = fflow.encode(address, video, source).await {
                    tracing::warn!(error = %e, "asking again to encode failed");
                    return Ok(Followed::Lost);
                }
            }
            // The long poll waited already.
            EncodeState::Queued => {}
            EncodeState::Running { percent } => {
                if percent >= recorded.saturating_add(PROGRESS_STEP) {
                    progressed(ctx, video, percent).await?;
                    recorded = percent - percent % PROGRESS_STEP;
                }
            }
            EncodeState::Done { result } => {
                encoded(ctx, video, result).await?;
                fflow.drop_session(address, video).await;
                fflow.forget_route(video).await;
                return Ok(Followed::Finished);
            }
            EncodeState::Failed { reason } => {
                tracing::warn!(reason, "encode failed");
                fail(ctx, video, reason).await?;
                fflow.drop_session(address, video).await;
                fflow.forget_route(video).await;
                return Ok(Followed::Finished);
            }
            // Nothing wrong with the video: a later attempt starts afresh
            // from the original in S3.
            EncodeState::Unavailable { reason } => {
                tracing::warn!(reason, "S3 was away during the encode; asking again later");
                fflow.drop_session(address, video).await;
                fflow.forget_route(video).await;
                return Ok(Followed::S3Away);
            }
        }
        // Deleted meanwhile: stop the encode; the delete job cleans up.
        if ctx
            .store
            .video(video)
            .await?
            .is_some_and(|v| v.status == VideoStatus::Deleted)
        {
            fflow.drop_session(address, video).await;
            fflow.forget_route(video).await;
            return Ok(Followed::Finished);
        }
    }
}

/// Records where the encode runs: when it starts, and again when it moved
/// to another replica (`moved`).
async fn started(
    ctx: &Context,
    video: VideoId,
    address: &str,
    source: Source,
    moved: bool,
) -> Result<(), StepError> {
    let event = VideoEvent::EncodingStarted {
        replica: address.to_owned(),
        source,
    };
    ctx.store
        .append(video, |current| {
            Ok(match current.video.as_ref().map(|v| v.status) {
                Some(VideoStatus::Uploaded) => (vec![event], ()),
                Some(VideoStatus::Encoding) if moved => (vec![event], ()),
                _ => (vec![], ()),
            })
        })
        .await?;
    Ok(())
}

async fn progressed(ctx: &Context, video: VideoId, percent: u8) -> Result<(), StepError> {
    ctx.store
        .append(video, |current| {
            Ok(match current.video.as_ref() {
                Some(v)
                    if v.status == VideoStatus::Encoding
                        && i16::from(percent) > v.encoding_percentage =>
                {
                    (vec![VideoEvent::EncodingProgressed { percent }], ())
                }
                _ => (vec![], ()),
            })
        })
        .await?;
    Ok(())
}

async fn encoded(ctx: &Context, video: VideoId, result: Encoded) -> Result<(), StepError> {
    let event = VideoEvent::Encoded {
        renditions: result.renditions,
        playback: Playback {
            prefix: result.prefix,
            hls: result.hls,
            dash: result.dash,
            poster: result.poster,
            duration_ms: result.duration_ms,
        },
    };
    let status = ctx
        .store
        .append(video, |current| {
            let status = current.video.as_ref().map(|v| v.status);
            Ok(match status {
                Some(VideoStatus::Encoding) => (vec![event], status),
                _ => (vec![], status),
            })
        })
        .await?;
    match status {
        Some(VideoStatus::Encoding) => {
            tracing::info!("video ready");
        }
        // Deleted while encoding: the delete job may have run before the
        // renditions landed, so remove them too.
        Some(VideoStatus::Deleted) => {
            ctx.storage.remove_video(video, None, &ctx.retry()).await?;
        }
        _ => {}
    }
    Ok(())
}

async fn fail(ctx: &Context, video: VideoId, reason: String) -> Result<(), StepError> {
    ctx.store
        .append(video, |current| {
            Ok(match current.video.as_ref().map(|v| v.status) {
                Some(VideoStatus::Uploaded | VideoStatus::Encoding) => {
                    (vec![VideoEvent::Failed { reason }], ())
                }
                _ => (vec![], ()),
            })
        })
        .await?;
    Ok(())
}

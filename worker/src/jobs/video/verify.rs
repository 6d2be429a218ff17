//! Verify jobs: send an uploaded video to the moderation webhook and record
//! the decision if its answer carries one. The body is JSON with the video
//! id and a presigned link, signed with HMAC-SHA256 (`x-reelay-signature`).
//! While the webhook is down the job goes back to its queue and comes again
//! after a backoff; past the retries it goes to the dead-letter queue and
//! the video stays pending_review.

use std::time::Duration;

use reelay_shared::{
    VideoId, VideoStatus,
    retry::RetryPolicy,
    signing,
    video::{Verification, VideoEvent, domain::Moderator},
};
use serde::Deserialize;
use serde_json::json;

use super::StepError;
use crate::{config::ModerationConfig, consumer::Outcome, jobs::Context};

/// What the webhook may answer.
#[derive(Deserialize)]
struct Answer {
    decision: Option<String>,
    reason: Option<String>,
}

/// One try at the webhook; `attempt` is how many tries came before.
pub async fn review(
    ctx: &Context,
    moderation: &ModerationConfig,
    video: VideoId,
    attempt: u32,
) -> Result<Outcome, StepError> {
    let state = ctx.store.load(video).await?;
    let Some(v) = state.video else {
        return Ok(Outcome::Done);
    };
    let reviewable = matches!(
        v.status,
        VideoStatus::Uploaded | VideoStatus::Encoding | VideoStatus::Ready
    ) && matches!(
        v.verification,
        Verification::Unverified | Verification::PendingReview
    );
    if !reviewable {
        return Ok(Outcome::Done);
    }
    if v.verification == Verification::Unverified {
        ctx.store
            .append(video, |current| {
                match current.video.as_ref().map(|v| v.verification) {
                    Some(Verification::Unverified) => Ok((vec![VideoEvent::ReviewRequested], ())),
                    _ => Ok((vec![], ())),
                }
            })
            .await?;
    }
    let url = ctx
        .storage
        .presign_get(&ctx.storage.original_key(video), moderation.link_ttl);
    let body = serde_json::to_vec(&json!({ "video_id": video, "url": url.as_str() }))
        .expect("JSON of strings");
    let signature = signing::sign(&moderation.secret, &body);
    let sent = async {
        let response = ctx
            .http
            .post(&moderation.webhook_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::SIGNATURE_HEADER, &signature)
            .timeout(Duration::from_secs(30))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(format!("answered {status}"));
        }
        Ok(response)
    }
    .await;
    let response = match sent {
        Ok(response) => response,
        Err(why) if attempt < moderation.retries as u32 => {
            let policy = RetryPolicy {
                attempts: moderation.retries,
                base: moderation.retry_base,
            };
            let after = policy.delay(attempt);
            tracing::warn!(error = %why, attempt, retry_in_ms = after.as_millis() as u64, "moderation webhook failed; retrying");
            return Ok(Outcome::RetryLater(after));
        }
        Err(why) => return Ok(Outcome::GaveUp(format!("moderation webhook {why}"))),
    };
    if !response.status().is_success() {
        return Ok(Outcome::GaveUp(format!(
            "moderation webhook refused: {}",
            response.status()
        )));
    }
    let answer: Option<Answer> = response.json().await.ok();
    let decision = match answer.as_ref().and_then(|a| a.decision.as_deref()) {
        Some("verified") => Verification::Verified,
        Some("rejected") => Verification::Rejected,
        // No decision yet: it comes later on POST /v1/moderation/{id}.
        _ => return Ok(Outcome::Done),
    };
    let reason = answer.and_then(|a| a.reason);
    ctx.store
        .append(video, |current| match current.video.as_ref() {
            Some(v) if v.status != VideoStatus::Deleted => Ok((
                vec![VideoEvent::Moderated {
                    verification: decision,
                    reason,
                    by: Moderator::Webhook,
                }],
                (),
            )),
            _ => Ok((vec![], ())),
        })
        .await?;
    tracing::info!(verification = ?decision, "moderation decided");
    Ok(Outcome::Done)
}

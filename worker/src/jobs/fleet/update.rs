//! Update jobs: ask the fleet backend to update one device component, then
//! wait for the device's report (which the api records). The call is
//! `POST {backend}/updates`, signed (`x-reelay-signature`), with the update
//! id as `Idempotency-Key`, at most the rollout's rate a second across all
//! workers (a shared limiter in Redis). 2xx: acknowledged; 4xx: failed with
//! the answer; 5xx, 429 or no answer: tried again after a backoff, until the
//! scheduler times the update out.
//!
//! Cancel jobs: `DELETE {backend}/updates/{id}`, signed over the empty body,
//! until the backend answers (404 counts: it has nothing to drop).

use std::time::Duration;

use reelay_shared::{
    fleet::{
        FirmwareStatus, UpdateEvent, UpdateId, UpdateRejection, UpdateState,
        jobs::{self, FleetJob},
    },
    retry::RetryPolicy,
    signing,
};
use serde_json::json;

use crate::{config::FleetBackend, consumer::Outcome, jobs::Context};

/// The limiter runs a little under the rollout's rate, so the jitter between
/// a slot and the request's arrival never puts one second over the rate.
const RATE_MARGIN: f64 = 0.96;
/// Backoff of repeated calls: from 1 s, doubling to 32 s.
const CALL_RETRY: RetryPolicy = RetryPolicy {
    attempts: 0,
    base: Duration::from_secs(1),
};
/// A wait for a rate slot after which the update's state is read again.
const LONG_WAIT: Duration = Duration::from_secs(2);
/// Tries of a cancel before it is dead-lettered.
const CANCEL_TRIES: u32 = 10;

/// How the fleet backend answered.
enum Answer {
    Accepted,
    Refused(String),
    Unavailable(String),
}

async fn call(ctx: &Context, request: reqwest::RequestBuilder) -> Answer {
    match request.timeout(ctx.config.fleet.timeout).send().await {
        Err(e) => Answer::Unavailable(format!("unreachable: {e}")),
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Answer::Accepted;
            }
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            let said = format!("{status}: {body}");
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Answer::Unavailable(said)
            } else {
                Answer::Refused(said)
            }
        }
    }
}

fn backend(ctx: &Context) -> Option<&FleetBackend> {
    let backend = ctx.config.fleet.backend.as_ref();
    if backend.is_none() {
        tracing::error!("REELAY_FLEET_BACKEND_URL is not set: device updates can't be sent");
    }
    backend
}

/// Appends `event` if the update is still in one of `states`; whether it was.
async fn record(
    ctx: &Context,
    id: UpdateId,
    states: &[UpdateState],
    event: UpdateEvent,
) -> anyhow::Result<bool> {
    Ok(ctx
        .store
        .append(id, |current| {
            let u = current.as_ref().ok_or(UpdateRejection::NotFound)?;
            Ok(match states.contains(&u.state) {
                true => (vec![event], true),
                false => (vec![], false),
            })
        })
        .await?)
}

pub async fn request(ctx: &Context, id: UpdateId, attempt: u32) -> anyhow::Result<Outcome> {
    let Some(update) = ctx.store.device_update(id).await? else {
        return Ok(Outcome::Done);
    };
    if update.state != UpdateState::Requested {
        return Ok(Outcome::Done);
    }
    let Some(backend) = backend(ctx) else {
        return Ok(Outcome::GaveUp("no fleet backend configured".into()));
    };
    let rollout = ctx
        .store
        .rollout(update.rollout_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the update's rollout is gone"))?;
    let firmware = ctx
        .store
        .firmware(update.firmware_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the update's firmware is gone"))?;
    let (FirmwareStatus::Available, Some(key)) = (firmware.status, &firmware.object_key) else {
        record(
            ctx,
            id,
            &[UpdateState::Requested],
            UpdateEvent::Cancelled {
                reason: format!("the firmware is {:?}", firmware.status),
            },
        )
        .await?;
        return Ok(Outcome::Done);
    };
    let url = ctx.storage.presign_get(key, ctx.config.fleet.link_ttl);
    let body = serde_json::to_vec(&json!({
        "update_id": id,
        "device": update.external_id,
        "component": update.component,
        "version": firmware.version,
        "version_num": firmware.version_num,
        "url": url.as_str(),
        "sha256": firmware.sha256,
        "signature": firmware.signature,
    }))?;
    let rate = f64::from(rollout.spec.rate_per_sec) * RATE_MARGIN;
    let waited = ctx
        .limiter
        .acquire(&format!("fleet:{}", rollout.id), rate)
        .await?;
    // After a long wait, the update may have been cancelled or timed out
    // meanwhile. (Only then: a read between the slot and the call would
    // bunch calls together and break the rate.)
    if waited > LONG_WAIT
        && !ctx
            .store
            .device_update(id)
            .await?
            .is_some_and(|u| u.state == UpdateState::Requested)
    {
        return Ok(Outcome::Done);
    }
    let answer = call(
        ctx,
        ctx.http
            .post(format!("{}/updates", backend.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", id.to_string())
            .header(
                signing::SIGNATURE_HEADER,
                signing::sign(&backend.secret, &body),
            )
            .body(body),
    )
    .await;
    match answer {
        Answer::Accepted => {
            let acknowledged = record(
                ctx,
                id,
                &[UpdateState::Requested],
                UpdateEvent::Acknowledged,
            )
            .await?;
            if !acknowledged {
                withdraw_if_ended(ctx, id).await?;
            }
            Ok(Outcome::Done)
        }
        Answer::Refused(reason) => {
            tracing::warn!(reason, "the fleet backend refused the update");
            record(
                ctx,
                id,
                &[UpdateState::Requested],
                UpdateEvent::Failed { reason },
            )
            .await?;
            Ok(Outcome::Done)
        }
        Answer::Unavailable(reason) => {
            let after = CALL_RETRY.delay(attempt);
            tracing::info!(
                reason,
                retry_in_ms = after.as_millis() as u64,
                "the fleet backend is unavailable; retrying"
            );
            let still = record(
                ctx,
                id,
                &[UpdateState::Requested],
                UpdateEvent::RequestFailed { reason },
            )
            .await?;
            if !still {
                // The request may have reached the backend all the same.
                withdraw_if_ended(ctx, id).await?;
            }
            Ok(match still {
                true => Outcome::RetryLater(after),
                false => Outcome::Done,
            })
        }
    }
}

/// After a call for an update that is no longer `requested`: if it was
/// cancelled or timed out while the call was on its way, the cancel's
/// DELETE may have reached the backend first (and found nothing to drop),
/// so it is sent again: here, and through a cancel job (which retries) if
/// the backend does not take it now.
async fn withdraw_if_ended(ctx: &Context, id: UpdateId) -> anyhow::Result<()> {
    let ended = ctx
        .store
        .device_update(id)
        .await?
        .is_some_and(|u| matches!(u.state, UpdateState::Cancelled | UpdateState::TimedOut));
    if !ended {
        return Ok(());
    }
    tracing::info!(update.id = %id, "an update ended while it was sent; withdrawing it");
    if !matches!(cancel(ctx, id, 0).await?, Outcome::Done) {
        // Through the outbox: written before it is published, so a failed
        // publish leaves it to the rollout driver's next pass.
        let mut conn = ctx.store.pool().acquire().await?;
        jobs::enqueue(&mut conn, &[FleetJob::Cancel(id)]).await?;
        drop(conn);
        jobs::relay(ctx.store.pool(), &ctx.publisher).await?;
    }
    Ok(())
}

pub async fn cancel(ctx: &Context, id: UpdateId, attempt: u32) -> anyhow::Result<Outcome> {
    let Some(backend) = backend(ctx) else {
        return Ok(Outcome::GaveUp("no fleet backend configured".into()));
    };
    let answer = call(
        ctx,
        ctx.http
            .delete(format!("{}/updates/{id}", backend.url))
            .header("idempotency-key", id.to_string())
            .header(
                signing::SIGNATURE_HEADER,
                signing::sign(&backend.secret, b""),
            ),
    )
    .await;
    Ok(match answer {
        Answer::Accepted => Outcome::Done,
        Answer::Refused(reason) if reason.starts_with("404") || reason.starts_with("410") => {
            Outcome::Done
        }
        Answer::Refused(reason) => Outcome::GaveUp(format!("the fleet backend refused: {reason}")),
        Answer::Unavailable(reason) if attempt + 1 >= CANCEL_TRIES => {
            Outcome::GaveUp(format!("the fleet backend stayed unavailable: {reason}"))
        }
        Answer::Unavailable(_) => Outcome::RetryLater(CALL_RETRY.delay(attempt)),
    })
}

//! The video product's application layer: what more than one route does
//! (find the caller's video, presign a link, delete a video, set or clear a
//! profile video, publish a job), the tus protocol's headers, and streaming
//! PATCH bodies to the broker. Routes call these; these never call routes.

pub mod budget;
pub mod ingest;
pub mod tus;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reelay_shared::{
    UserId, VideoId, VideoStatus,
    video::{
        ProfileEvent, ProfileId, Verification, Video, VideoEvent, VideoRejection,
        jobs::{JobHeader, JobKind},
    },
};
use serde::Serialize;

use crate::{
    auth::{Caller, Role},
    error::{ApiError, ApiResult},
    state::AppState,
};

/// Notes the video a request is about in its span.
pub fn record_video(id: VideoId) {
    tracing::Span::current().record("video.id", tracing::field::display(id));
}

/// The caller's video, or 404 (also for someone else's: its existence is not
/// revealed).
pub async fn owned_video(state: &AppState, user: UserId, id: &str) -> ApiResult<Video> {
    let id = VideoId::parse(id).ok_or(ApiError::NotFound)?;
    record_video(id);
    match state.store.video(id).await? {
        Some(video) if video.owner_id == user => Ok(video),
        _ => Err(ApiError::NotFound),
    }
}

/// A video the caller may have links to: their own, or any (also a
/// rejected one) for an admin; 404 for a deleted one; services get theirs
/// through `POST /v1/links`.
pub async fn linkable_video(state: &AppState, caller: Caller, id: &str) -> ApiResult<Video> {
    let video = match caller.role {
        Role::Admin => {
            let id = VideoId::parse(id).ok_or(ApiError::NotFound)?;
            record_video(id);
            state.store.video(id).await?.ok_or(ApiError::NotFound)?
        }
        Role::User => owned_video(state, caller.user, id).await?,
        Role::Service => {
            return Err(ApiError::Forbidden(
                "services get links through POST /v1/links",
            ));
        }
    };
    if video.status == VideoStatus::Deleted {
        return Err(ApiError::NotFound);
    }
    Ok(video)
}

/// Whether a video in `status` can be linked to at all: its original is
/// whole from UPLOADED on, also while it encodes.
pub fn linkable(status: VideoStatus) -> bool {
    matches!(
        status,
        VideoStatus::Uploaded | VideoStatus::Encoding | VideoStatus::Ready
    )
}

/// Whether `role` may have a link to a video in this moderation state, the
/// owner apart (owners always may): rejected videos only for admins;
/// unverified or pending ones for services as `REELAY_SERVICE_LINKS_UNVERIFIED`
/// says.
pub fn moderation_allows(state: &AppState, role: Role, verification: Verification) -> bool {
    match (role, verification) {
        (Role::Admin, _) => true,
        (_, Verification::Rejected) => false,
        (_, Verification::Verified) => true,
        (_, Verification::Unverified | Verification::PendingReview) => {
            state.config.service_links_unverified
        }
    }
}

/// A link's life: `REELAY_LINK_TTL_SECS` unless asked, capped at
/// `REELAY_LINK_MAX_TTL_SECS`; 0 is refused.
pub fn link_ttl(state: &AppState, asked: Option<i64>) -> ApiResult<Duration> {
    match asked.map(u64::try_from) {
        Some(Ok(0) | Err(_)) => Err(ApiError::BadRequest("ttl must be at least 1 second".into())),
        Some(Ok(secs)) => Ok(Duration::from_secs(secs).min(state.config.link_max_ttl)),
        None => Ok(state.config.link_ttl),
    }
}

/// A temporary link and when it stops working.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Link {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// A presigned GET of the object at `key` (local computation, no request).
pub async fn presign(state: &AppState, key: &str, ttl: Duration) -> ApiResult<Link> {
    // What the URL honours: at most SigV4's seven days, from a whole second
    // no later than its X-Amz-Date.
    let ttl = ttl.min(reelay_shared::presign::MAX_EXPIRES);
    let mut signer = state.storage.presigner(ttl);
    Ok(Link {
        url: signer.url(key),
        expires_at: signer.signed_at() + ttl,
    })
}

/// A presigned GET of `video`'s original.
pub async fn presign_original(state: &AppState, video: VideoId, ttl: Duration) -> ApiResult<Link> {
    presign(state, &state.storage.original_key(video), ttl).await
}

/// Publishes one job and waits for the broker's confirm; 503 if it can't.
pub async fn publish_job(state: &AppState, header: JobHeader) -> ApiResult<()> {
    state
        .publisher
        .publish_job_confirmed(header)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, job.kind = header.kind.name(), "publishing a job failed");
            ApiError::Unavailable("the message broker is unavailable; retry later")
        })
}

/// Marks the video DELETED (personal metadata leaves the projections),
/// clears it from its owner's profile, and enqueues the job that removes its
/// objects. Idempotent: repeated on every call until it is through, since
/// removing objects twice is harmless.
#[tracing::instrument(skip_all, fields(video.id = %id))]
pub async fn delete_video(state: &AppState, id: VideoId) -> ApiResult<()> {
    let owner = state
        .store
        .append(id, |current| {
            let video = current.existing()?;
            let events = match video.status {
                VideoStatus::Deleted => vec![],
                _ => vec![VideoEvent::Deleted],
            };
            Ok::<_, VideoRejection>((events, video.owner_id))
        })
        .await?;
    // A deleted video is nobody's profile video any more.
    clear_profile_if_current(state, owner, id).await?;
    publish_job(
        state,
        JobHeader {
            video: id,
            kind: JobKind::Delete,
        },
    )
    .await?;
    tracing::info!("video deleted");
    Ok(())
}

/// Attempts at the profile aggregate before a concurrent writer's conflict
/// is reported as 423.
const PROFILE_ATTEMPTS: usize = 5;

/// Records `video` as `user`'s profile video; returns the one it replaced.
/// A concurrent change of the same profile makes it decide again on the
/// winner's result.
pub async fn set_profile_video(
    state: &AppState,
    user: UserId,
    video: VideoId,
) -> ApiResult<Option<VideoId>> {
    change_profile(state, user, |current| {
        let previous = current.as_ref().and_then(|p| p.video_id);
        if previous == Some(video) {
            return (vec![], None);
        }
        let set = ProfileEvent::VideoSet {
            video_id: video,
            previous,
        };
        (vec![set], previous)
    })
    .await
}

/// Puts `previous` back as `user`'s profile video (or none, if it was
/// deleted too) if `video`, set a moment ago, is still current: `video` was
/// deleted meanwhile. Whether it changed the profile (if not, another set
/// replaced `video` already, and `previous` is no one's profile video).
pub async fn restore_profile_video(
    state: &AppState,
    user: UserId,
    video: VideoId,
    previous: Option<VideoId>,
) -> ApiResult<bool> {
    let alive = |v: Option<reelay_shared::video::Video>| {
        v.is_some_and(|v| v.status != VideoStatus::Deleted)
    };
    let previous = match previous {
        Some(p) if alive(state.store.video(p).await?) => Some(p),
        _ => None,
    };
    let restored = change_profile(state, user, |current| {
        match (current.as_ref().and_then(|p| p.video_id), previous) {
            (Some(current), Some(previous)) if current == video => (
                vec![ProfileEvent::VideoSet {
                    video_id: previous,
                    previous: Some(video),
                }],
                true,
            ),
            (Some(current), None) if current == video => {
                (vec![ProfileEvent::VideoCleared { video_id: video }], true)
            }
            _ => (vec![], false),
        }
    })
    .await?;
    // The same check as the set's: a delete of `previous` meanwhile.
    if let Some(p) = previous.filter(|_| restored)
        && !alive(state.store.video(p).await?)
    {
        clear_profile_if_current(state, user, p).await?;
    }
    Ok(restored)
}

/// Clears `user`'s profile if `video` is its current video (it was deleted).
pub async fn clear_profile_if_current(
    state: &AppState,
    user: UserId,
    video: VideoId,
) -> ApiResult<()> {
    change_profile(state, user, |current| {
        match current.as_ref().and_then(|p| p.video_id) {
            Some(current) if current == video => {
                (vec![ProfileEvent::VideoCleared { video_id: video }], ())
            }
            _ => (vec![], ()),
        }
    })
    .await
}

/// Appends what `decide` says to `user`'s profile, deciding again when
/// another writer got there first.
async fn change_profile<R>(
    state: &AppState,
    user: UserId,
    decide: impl Fn(&Option<reelay_shared::video::Profile>) -> (Vec<ProfileEvent>, R),
) -> ApiResult<R> {
    Ok(state
        .store
        .append_retrying(ProfileId(user), PROFILE_ATTEMPTS, |current| {
            Ok(decide(current))
        })
        .await?)
}

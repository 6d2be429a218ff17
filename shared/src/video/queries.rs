//! What the api, workers and the scheduler read of the video product's
//! projections and log.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    aggregate::Video,
    domain::{UserId, Verification, VideoId, VideoStatus},
    profile::Profile,
};
use crate::store::{RecordedEvent, Store};

/// A user's current profile video as the feed's batch links need it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ProfileVideo {
    pub user_id: Uuid,
    pub video_id: Option<VideoId>,
    pub status: Option<VideoStatus>,
    pub verification: Option<Verification>,
}

impl Store {
    pub async fn video(&self, id: VideoId) -> Result<Option<Video>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM videos WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
    }

    /// A page of `owner`'s videos, newest first, after the `(created_at, id)`
    /// cursor if given. Without a status filter, deleted videos are left out.
    pub async fn list_videos(
        &self,
        owner: UserId,
        status: Option<VideoStatus>,
        after: Option<(DateTime<Utc>, VideoId)>,
        limit: i64,
    ) -> Result<Vec<Video>, sqlx::Error> {
        let (after_at, after_id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        sqlx::query_as(
            "SELECT * FROM videos WHERE owner_id = $1 AND firmware_id IS NULL \
             AND (CASE WHEN $2::video_status IS NULL THEN status <> 'DELETED' ELSE status = $2 END) \
             AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(owner)
        .bind(status)
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// The moderation queue: whole videos (UPLOADED, ENCODING or READY)
    /// awaiting a decision (`unverified` or `pending_review`), oldest first,
    /// after the `(created_at, id)` cursor if given.
    pub async fn moderation_queue(
        &self,
        after: Option<(DateTime<Utc>, VideoId)>,
        limit: i64,
    ) -> Result<Vec<Video>, sqlx::Error> {
        let (after_at, after_id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        sqlx::query_as(
            "SELECT * FROM videos WHERE firmware_id IS NULL \
             AND status IN ('UPLOADED', 'ENCODING', 'READY') \
             AND verification IN ('unverified', 'pending_review') \
             AND ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2)) \
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// The onboarding collection in order: position, then creation.
    pub async fn onboarding(&self) -> Result<Vec<Video>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM videos WHERE onboarding_position IS NOT NULL AND status <> 'DELETED' \
             ORDER BY onboarding_position, created_at, id",
        )
        .fetch_all(self.pool())
        .await
    }

    /// The position after the last onboarding video.
    pub async fn next_onboarding_position(&self) -> Result<i32, sqlx::Error> {
        let (next,): (i32,) =
            sqlx::query_as("SELECT coalesce(max(onboarding_position) + 1, 0) FROM videos")
                .fetch_one(self.pool())
                .await?;
        Ok(next)
    }

    /// The video's history, oldest first: its own events, and the profile
    /// events that made it (or stopped it being) someone's profile video.
    pub async fn events(&self, id: VideoId) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        sqlx::query_as(
            "SELECT seq, version, kind, payload, recorded_at FROM events \
             WHERE (aggregate_type = 'video' AND aggregate_id = $1) \
                OR (aggregate_type = 'profile' AND payload->>'video_id' = $1::text) \
             ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
    }

    /// `user`'s profile, if they ever set a profile video.
    pub async fn profile(&self, user: UserId) -> Result<Option<Profile>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM profiles WHERE user_id = $1")
            .bind(user)
            .fetch_optional(self.pool())
            .await
    }

    /// For each user id, in the order given, their current profile video:
    /// one round trip however many users.
    pub async fn profile_videos(&self, users: &[Uuid]) -> Result<Vec<ProfileVideo>, sqlx::Error> {
        sqlx::query_as(
            "SELECT u.user_id, v.id AS video_id, v.status, v.verification \
             FROM unnest($1::uuid[]) WITH ORDINALITY AS u (user_id, n) \
             LEFT JOIN profiles p ON p.user_id = u.user_id \
             LEFT JOIN videos v ON v.id = p.video_id \
             ORDER BY u.n",
        )
        .bind(users)
        .fetch_all(self.pool())
        .await
    }
}

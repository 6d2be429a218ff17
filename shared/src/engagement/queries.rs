//! What the api and the ETL read and write of the engagement product in
//! PostgreSQL.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{
    aggregates::Comment,
    domain::{CommentId, Reaction},
};
use crate::{
    store::Store,
    video::{UserId, Video, VideoId},
};

/// A video's counts and settings, and the viewer's own reaction and
/// bookmark.
#[derive(Clone, Debug, Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Engagement {
    pub likes: i64,
    pub dislikes: i64,
    pub comments: i64,
    pub views: i64,
    pub reactions_enabled: bool,
    pub comments_enabled: bool,
    pub my_reaction: Option<Reaction>,
    pub bookmarked: bool,
}

/// Where a viewer stopped a video.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = WatchPosition)]
pub struct Position {
    #[schema(value_type = uuid::Uuid)]
    pub video_id: VideoId,
    /// Where to resume, in milliseconds from the start.
    pub position_ms: i64,
    /// When the position was last recorded.
    pub updated_at: DateTime<Utc>,
}

/// A position to record: the newest of a batch for one viewer and video.
#[derive(Clone, Debug)]
pub struct NewPosition {
    pub user_id: Uuid,
    pub video_id: Uuid,
    pub position_ms: i64,
    pub client_time: DateTime<Utc>,
}

impl Store {
    /// One query: the video's counts and settings (defaults when nothing
    /// happened yet) and, for a signed-in viewer, their reaction and
    /// bookmark.
    pub async fn engagement(
        &self,
        video: VideoId,
        viewer: Option<UserId>,
    ) -> Result<Engagement, sqlx::Error> {
        sqlx::query_as(
            "SELECT coalesce(e.likes, 0)::bigint AS likes, coalesce(e.dislikes, 0)::bigint AS dislikes, \
               coalesce(e.comments, 0)::bigint AS comments, coalesce(w.views, 0) AS views, \
               coalesce(e.reactions_enabled, true) AS reactions_enabled, \
               coalesce(e.comments_enabled, true) AS comments_enabled, \
               u.reaction AS my_reaction, (u.bookmarked_at IS NOT NULL) AS bookmarked \
             FROM (SELECT $1::uuid AS video_id) v \
             LEFT JOIN engagement e ON e.video_id = v.video_id \
             LEFT JOIN video_views w ON w.video_id = v.video_id \
             LEFT JOIN user_videos u ON u.video_id = v.video_id AND u.user_id = $2",
        )
        .bind(video)
        .bind(viewer)
        .fetch_one(self.pool())
        .await
    }

    /// A video and its engagement as `viewer` sees it, in one round trip:
    /// what the app polls.
    pub async fn video_with_engagement(
        &self,
        video: VideoId,
        viewer: Option<UserId>,
    ) -> Result<Option<(Video, Engagement)>, sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            video: Video,
            #[sqlx(flatten)]
            engagement: Engagement,
        }
        let row: Option<Row> = sqlx::query_as(
            "SELECT v.*, coalesce(e.likes, 0)::bigint AS likes, coalesce(e.dislikes, 0)::bigint AS dislikes, \
               coalesce(e.comments, 0)::bigint AS comments, coalesce(w.views, 0) AS views, \
               coalesce(e.reactions_enabled, true) AS reactions_enabled, \
               coalesce(e.comments_enabled, true) AS comments_enabled, \
               u.reaction AS my_reaction, (u.bookmarked_at IS NOT NULL) AS bookmarked \
             FROM videos v \
             LEFT JOIN engagement e ON e.video_id = v.id \
             LEFT JOIN video_views w ON w.video_id = v.id \
             LEFT JOIN user_videos u ON u.video_id = v.id AND u.user_id = $2 \
             WHERE v.id = $1",
        )
        .bind(video)
        .bind(viewer)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (r.video, r.engagement)))
    }

    /// `user`'s bookmarks, newest first, before the `(bookmarked_at,
    /// video)` cursor.
    pub async fn bookmarks(
        &self,
        user: UserId,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<(VideoId, DateTime<Utc>)>, sqlx::Error> {
        let (at, id) = before.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        sqlx::query_as(
            "SELECT video_id, bookmarked_at FROM user_videos WHERE user_id = $1 AND bookmarked_at IS NOT NULL \
             AND ($2::timestamptz IS NULL OR (bookmarked_at, video_id) < ($2, $3)) \
             ORDER BY bookmarked_at DESC, video_id DESC LIMIT $4",
        )
        .bind(user)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    pub async fn comment(&self, id: CommentId) -> Result<Option<Comment>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM comments WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
    }

    /// A video's comments, newest first, before the `(created_at, id)` cursor.
    pub async fn comments_of(
        &self,
        video: VideoId,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Comment>, sqlx::Error> {
        let (at, id) = before.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        sqlx::query_as(
            "SELECT * FROM comments WHERE video_id = $1 AND deleted_at IS NULL \
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(video)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    pub async fn position(
        &self,
        user: UserId,
        video: VideoId,
    ) -> Result<Option<Position>, sqlx::Error> {
        sqlx::query_as(
            "SELECT video_id, position_ms, updated_at FROM watch_positions WHERE user_id = $1 AND video_id = $2",
        )
        .bind(user)
        .bind(video)
        .fetch_optional(self.pool())
        .await
    }

    /// `user`'s watch history, most recently watched first, before the
    /// `(updated_at, video)` cursor.
    pub async fn watch_history(
        &self,
        user: UserId,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Position>, sqlx::Error> {
        let (at, id) = before.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        sqlx::query_as(
            "SELECT video_id, position_ms, updated_at FROM watch_positions WHERE user_id = $1 \
             AND ($2::timestamptz IS NULL OR (updated_at, video_id) < ($2, $3)) \
             ORDER BY updated_at DESC, video_id DESC LIMIT $4",
        )
        .bind(user)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    pub async fn clear_watch_history(&self, user: UserId) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM watch_positions WHERE user_id = $1")
                .bind(user)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    /// One playback batch's PostgreSQL writes, in one transaction: the
    /// sessions that are views, `(video, session)`, and the viewers'
    /// positions. A session counts once, ever: one already counted (by
    /// this batch read again after a crash, by a reader that lost its
    /// lease, or before its fold changed) is skipped by its row in
    /// `counted_views`.
    pub async fn record_playback(
        &self,
        viewed: &[(Uuid, Uuid)],
        positions: &[NewPosition],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        if !viewed.is_empty() {
            // In key order: two readers inserting the same sessions wait on
            // each other instead of deadlocking.
            let mut viewed = viewed.to_vec();
            viewed.sort_unstable();
            let videos: Vec<Uuid> = viewed.iter().map(|v| v.0).collect();
            let sessions: Vec<Uuid> = viewed.iter().map(|v| v.1).collect();
            sqlx::query(
                "WITH counted AS (\
                   INSERT INTO counted_views (video_id, session_id, counted_at) \
                   SELECT v, s, now() FROM unnest($1::uuid[], $2::uuid[]) AS x (v, s) \
                   ON CONFLICT DO NOTHING RETURNING video_id) \
                 INSERT INTO video_views (video_id, views, updated_at) \
                 SELECT video_id, count(*), now() FROM counted GROUP BY video_id ORDER BY video_id \
                 ON CONFLICT (video_id) DO UPDATE SET views = video_views.views + excluded.views, \
                   updated_at = excluded.updated_at",
            )
            .bind(&videos)
            .bind(&sessions)
            .execute(&mut *tx)
            .await?;
        }
        if !positions.is_empty() {
            let users: Vec<Uuid> = positions.iter().map(|p| p.user_id).collect();
            let videos: Vec<Uuid> = positions.iter().map(|p| p.video_id).collect();
            let at: Vec<i64> = positions.iter().map(|p| p.position_ms).collect();
            let times: Vec<DateTime<Utc>> = positions.iter().map(|p| p.client_time).collect();
            sqlx::query(
                "INSERT INTO watch_positions (user_id, video_id, position_ms, client_time, updated_at) \
                 SELECT u, v, p, t, now() FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[]) AS x (u, v, p, t) \
                 ON CONFLICT (user_id, video_id) DO UPDATE SET position_ms = excluded.position_ms, \
                   client_time = excluded.client_time, updated_at = excluded.updated_at \
                 WHERE watch_positions.client_time <= excluded.client_time",
            )
            .bind(&users)
            .bind(&videos)
            .bind(&at)
            .bind(&times)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Forgets the sessions counted before `before` (the api refuses events
    /// whose clock is over 30 days behind, so a player's session is long
    /// over; one whose events come further apart than this could count
    /// again).
    pub async fn forget_counted_views(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM counted_views WHERE counted_at < $1")
                .bind(before)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    /// The duration (ms) of each of these videos that has streams.
    pub async fn durations(&self, videos: &[Uuid]) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, (playback->>'duration_ms')::bigint FROM videos \
             WHERE id = ANY($1) AND playback IS NOT NULL",
        )
        .bind(videos)
        .fetch_all(self.pool())
        .await
    }
}

//! The engagement aggregates and their projections: a user's relation to a
//! video (`user_videos`), comments (`comments`), and a video's settings
//! (`engagement`, which also holds the counts the other two keep exact in
//! their events' transactions). Every event also goes to the UGC outbox.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    domain::{CommentId, Reaction, SettingsId, UserVideoId},
    events::{CommentEvent, SettingsEvent, UserVideoEvent},
    outbox::{self, UgcMessage},
};
use crate::{
    store::{Aggregate, AggregateId, Event},
    video::{UserId, VideoId},
};

/// The `user_videos` projection.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserVideo {
    pub id: UserVideoId,
    pub user_id: UserId,
    pub video_id: VideoId,
    pub reaction: Option<Reaction>,
    pub reacted_at: Option<DateTime<Utc>>,
    pub bookmarked_at: Option<DateTime<Utc>>,
    pub version: i32,
}

/// The `comments` projection.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = VideoComment, description = "A comment on a video.")]
pub struct Comment {
    #[schema(value_type = uuid::Uuid)]
    pub id: CommentId,
    #[schema(value_type = uuid::Uuid)]
    pub video_id: VideoId,
    #[schema(value_type = uuid::Uuid)]
    pub author_id: UserId,
    pub text: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub deleted_by: Option<UserId>,
    #[serde(skip)]
    pub version: i32,
}

/// The settings part of the `engagement` projection.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Settings {
    pub video_id: VideoId,
    pub reactions_enabled: bool,
    pub comments_enabled: bool,
    pub settings_version: i32,
}

/// Why an engagement command is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngagementRejection {
    #[error("no such comment")]
    NoSuchComment,
    #[error("the comment exists")]
    CommentExists,
    #[error("only its author or an admin deletes a comment")]
    NotTheAuthor,
}

async fn ensure_counts(conn: &mut PgConnection, video: VideoId) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO engagement (video_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(video)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Moves the video's reaction counts from `from` to `to`.
async fn recount(
    conn: &mut PgConnection,
    video: VideoId,
    from: Option<Reaction>,
    to: Option<Reaction>,
) -> Result<(), sqlx::Error> {
    if from == to {
        return Ok(());
    }
    let delta = |r: Reaction| -> (i32, i32) {
        match r {
            Reaction::Like => (1, 0),
            Reaction::Dislike => (0, 1),
        }
    };
    let (mut likes, mut dislikes) = (0, 0);
    if let Some(r) = from {
        let (l, d) = delta(r);
        likes -= l;
        dislikes -= d;
    }
    if let Some(r) = to {
        let (l, d) = delta(r);
        likes += l;
        dislikes += d;
    }
    ensure_counts(conn, video).await?;
    sqlx::query(
        "UPDATE engagement SET likes = likes + $2, dislikes = dislikes + $3 WHERE video_id = $1",
    )
    .bind(video)
    .bind(likes)
    .bind(dislikes)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The outbox row of an event.
#[allow(clippy::too_many_arguments)]
async fn to_outbox(
    conn: &mut PgConnection,
    seq: i64,
    event: &impl Event,
    aggregate: Uuid,
    video: VideoId,
    user: UserId,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let message = UgcMessage {
        seq,
        kind: event.kind().to_owned(),
        aggregate_id: aggregate,
        video_id: video.0,
        user_id: user.0,
        recorded_at: at,
        event: serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
    };
    outbox::enqueue(conn, &message).await
}

pub struct UserVideoAggregate;

impl AggregateId for UserVideoId {
    type Aggregate = UserVideoAggregate;

    fn uuid(self) -> Uuid {
        self.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Aggregate for UserVideoAggregate {
    const TYPE: &'static str = "user_video";
    const TABLES: &'static [&'static str] = &["user_videos"];
    type Id = UserVideoId;
    type Event = UserVideoEvent;
    type State = Option<UserVideo>;
    type Rejection = EngagementRejection;

    async fn load(
        conn: &mut PgConnection,
        id: UserVideoId,
        for_update: bool,
    ) -> Result<Option<UserVideo>, sqlx::Error> {
        let query = if for_update {
            "SELECT * FROM user_videos WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT * FROM user_videos WHERE id = $1"
        };
        sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    fn version(state: &Option<UserVideo>) -> i32 {
        state.as_ref().map_or(0, |u| u.version)
    }

    async fn apply(
        conn: &mut PgConnection,
        id: UserVideoId,
        version: i32,
        event: &UserVideoEvent,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (user, video) = event.pair();
        let before: Option<(Option<Reaction>,)> =
            sqlx::query_as("SELECT reaction FROM user_videos WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        let before = before.and_then(|(r,)| r);
        sqlx::query(
            "INSERT INTO user_videos (id, user_id, video_id, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET version = $4",
        )
        .bind(id)
        .bind(user)
        .bind(video)
        .bind(version)
        .execute(&mut *conn)
        .await?;
        let query = match event {
            UserVideoEvent::Reacted { reaction, .. } => {
                recount(conn, video, before, Some(*reaction)).await?;
                sqlx::query("UPDATE user_videos SET reaction = $2, reacted_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(reaction)
                    .bind(at)
            }
            UserVideoEvent::ReactionRemoved { .. } => {
                recount(conn, video, before, None).await?;
                sqlx::query(
                    "UPDATE user_videos SET reaction = NULL, reacted_at = NULL WHERE id = $1",
                )
                .bind(id)
            }
            UserVideoEvent::Bookmarked { .. } => {
                sqlx::query("UPDATE user_videos SET bookmarked_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(at)
            }
            UserVideoEvent::BookmarkRemoved { .. } => {
                sqlx::query("UPDATE user_videos SET bookmarked_at = NULL WHERE id = $1").bind(id)
            }
        };
        query.execute(&mut *conn).await?;
        Ok(())
    }

    async fn recorded(
        conn: &mut PgConnection,
        id: UserVideoId,
        _before: &Option<UserVideo>,
        event: &UserVideoEvent,
        seq: i64,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (user, video) = event.pair();
        to_outbox(conn, seq, event, id.0, video, user, at).await
    }
}

pub struct CommentAggregate;

impl AggregateId for CommentId {
    type Aggregate = CommentAggregate;

    fn uuid(self) -> Uuid {
        self.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Aggregate for CommentAggregate {
    const TYPE: &'static str = "comment";
    const TABLES: &'static [&'static str] = &["comments"];
    type Id = CommentId;
    type Event = CommentEvent;
    type State = Option<Comment>;
    type Rejection = EngagementRejection;

    async fn load(
        conn: &mut PgConnection,
        id: CommentId,
        for_update: bool,
    ) -> Result<Option<Comment>, sqlx::Error> {
        let query = if for_update {
            "SELECT * FROM comments WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT * FROM comments WHERE id = $1"
        };
        sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    fn version(state: &Option<Comment>) -> i32 {
        state.as_ref().map_or(0, |c| c.version)
    }

    async fn apply(
        conn: &mut PgConnection,
        id: CommentId,
        version: i32,
        event: &CommentEvent,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (video, delta): (VideoId, i32) = match event {
            CommentEvent::Posted {
                video_id,
                author_id,
                text,
            } => {
                sqlx::query(
                    "INSERT INTO comments (id, video_id, author_id, text, created_at, version) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(video_id)
                .bind(author_id)
                .bind(text)
                .bind(at)
                .bind(version)
                .execute(&mut *conn)
                .await?;
                (*video_id, 1)
            }
            CommentEvent::Deleted { by } => {
                let (video,): (VideoId,) = sqlx::query_as(
                    "UPDATE comments SET deleted_at = $2, deleted_by = $3, version = $4 \
                     WHERE id = $1 RETURNING video_id",
                )
                .bind(id)
                .bind(at)
                .bind(by)
                .bind(version)
                .fetch_one(&mut *conn)
                .await?;
                (video, -1)
            }
        };
        ensure_counts(conn, video).await?;
        sqlx::query("UPDATE engagement SET comments = comments + $2 WHERE video_id = $1")
            .bind(video)
            .bind(delta)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn recorded(
        conn: &mut PgConnection,
        id: CommentId,
        before: &Option<Comment>,
        event: &CommentEvent,
        seq: i64,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (video, user) = match (event, before) {
            (
                CommentEvent::Posted {
                    video_id,
                    author_id,
                    ..
                },
                _,
            ) => (*video_id, *author_id),
            (CommentEvent::Deleted { by }, Some(c)) => (c.video_id, *by),
            (CommentEvent::Deleted { by }, None) => (VideoId(Uuid::nil()), *by),
        };
        to_outbox(conn, seq, event, id.0, video, user, at).await
    }
}

pub struct SettingsAggregate;

impl AggregateId for SettingsId {
    type Aggregate = SettingsAggregate;

    fn uuid(self) -> Uuid {
        self.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Aggregate for SettingsAggregate {
    const TYPE: &'static str = "engagement_settings";
    const TABLES: &'static [&'static str] = &["engagement"];
    type Id = SettingsId;
    type Event = SettingsEvent;
    /// The settings, or the defaults (both on) before any event.
    type State = Option<Settings>;
    type Rejection = EngagementRejection;

    /// The video's engagement row, once a settings event named it.
    async fn load(
        conn: &mut PgConnection,
        id: SettingsId,
        for_update: bool,
    ) -> Result<Option<Settings>, sqlx::Error> {
        let query = if for_update {
            "SELECT video_id, reactions_enabled, comments_enabled, settings_version FROM engagement \
             WHERE settings_id = $1 FOR UPDATE"
        } else {
            "SELECT video_id, reactions_enabled, comments_enabled, settings_version FROM engagement \
             WHERE settings_id = $1"
        };
        sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    fn version(state: &Option<Settings>) -> i32 {
        state.as_ref().map_or(0, |s| s.settings_version)
    }

    async fn apply(
        conn: &mut PgConnection,
        id: SettingsId,
        version: i32,
        event: &SettingsEvent,
        _at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (video, column, enabled) = match event {
            SettingsEvent::ReactionsSet { video_id, enabled } => {
                (*video_id, "reactions_enabled", *enabled)
            }
            SettingsEvent::CommentsSet { video_id, enabled } => {
                (*video_id, "comments_enabled", *enabled)
            }
        };
        ensure_counts(conn, video).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE engagement SET {column} = $2, settings_version = $3, settings_id = $4 WHERE video_id = $1"
        )))
        .bind(video)
        .bind(enabled)
        .bind(version)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn recorded(
        conn: &mut PgConnection,
        id: SettingsId,
        _before: &Option<Settings>,
        event: &SettingsEvent,
        seq: i64,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let video = match event {
            SettingsEvent::ReactionsSet { video_id, .. }
            | SettingsEvent::CommentsSet { video_id, .. } => *video_id,
        };
        to_outbox(conn, seq, event, id.0, video, UserId(Uuid::nil()), at).await
    }
}

//! The profile aggregate: a user's current profile video (aggregate id =
//! the user id, aggregate type `profile`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    domain::{UserId, VideoId},
    events::ProfileEvent,
};
use crate::store::{Aggregate, AggregateId};

/// The `profiles` projection.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Profile {
    pub user_id: UserId,
    pub video_id: Option<VideoId>,
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

/// A user's profile, as an aggregate id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileId(pub UserId);

/// A command on a profile is never refused: every decision is made against
/// the version it read, and a lost race is a conflict, not a rejection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileRejection {}

pub struct ProfileAggregate;

impl AggregateId for ProfileId {
    type Aggregate = ProfileAggregate;

    fn uuid(self) -> Uuid {
        self.0.0
    }

    fn from_uuid(id: Uuid) -> Self {
        Self(UserId(id))
    }
}

impl Aggregate for ProfileAggregate {
    const TYPE: &'static str = "profile";
    const TABLES: &'static [&'static str] = &["profiles"];
    type Id = ProfileId;
    type Event = ProfileEvent;
    /// The profile, if the user ever set a profile video.
    type State = Option<Profile>;
    type Rejection = ProfileRejection;

    async fn load(
        conn: &mut PgConnection,
        id: ProfileId,
        for_update: bool,
    ) -> Result<Option<Profile>, sqlx::Error> {
        let query = if for_update {
            "SELECT * FROM profiles WHERE user_id = $1 FOR UPDATE"
        } else {
            "SELECT * FROM profiles WHERE user_id = $1"
        };
        sqlx::query_as(query)
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await
    }

    fn version(state: &Option<Profile>) -> i32 {
        state.as_ref().map_or(0, |p| p.version)
    }

    async fn apply(
        conn: &mut PgConnection,
        id: ProfileId,
        version: i32,
        event: &ProfileEvent,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let video = match event {
            ProfileEvent::VideoSet { video_id, .. } => Some(*video_id),
            ProfileEvent::VideoCleared { .. } => None,
        };
        sqlx::query(
            "INSERT INTO profiles (user_id, video_id, version, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE SET video_id = $2, version = $3, updated_at = $4",
        )
        .bind(id.0)
        .bind(video)
        .bind(version)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

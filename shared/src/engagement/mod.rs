//! The engagement product: reactions, bookmarks and comments of registered
//! users (events in the log, projections with exact counts, and an outbox
//! to the UGC stream); player events from every viewer (through a stream
//! into ClickHouse, summed up per session); statistics; watch history.

pub mod aggregates;
pub mod analytics;
pub mod audience;
pub mod domain;
pub mod events;
pub mod outbox;
pub mod queries;
pub mod sessions;
pub mod stats;
pub mod streams;

pub use aggregates::{
    Comment, CommentAggregate, EngagementRejection, SettingsAggregate, UserVideo,
    UserVideoAggregate,
};
pub use audience::Audience;
pub use domain::{CommentId, PlayerEvent, PlayerEventType, Reaction, SettingsId, UserVideoId};
pub use events::{CommentEvent, SettingsEvent, UserVideoEvent};

//! What happens to reactions, bookmarks, comments and a video's engagement
//! settings, as appended to the event log.

use serde::{Deserialize, Serialize};

use super::domain::Reaction;
use crate::{
    store::Event,
    video::{UserId, VideoId},
};

/// One user's relation to one video.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserVideoEvent {
    /// A like or dislike (replacing the other); the first event names the
    /// pair.
    Reacted {
        user_id: UserId,
        video_id: VideoId,
        reaction: Reaction,
    },
    ReactionRemoved {
        user_id: UserId,
        video_id: VideoId,
    },
    Bookmarked {
        user_id: UserId,
        video_id: VideoId,
    },
    BookmarkRemoved {
        user_id: UserId,
        video_id: VideoId,
    },
}

impl Event for UserVideoEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Reacted { .. } => "reacted",
            Self::ReactionRemoved { .. } => "reaction_removed",
            Self::Bookmarked { .. } => "bookmarked",
            Self::BookmarkRemoved { .. } => "bookmark_removed",
        }
    }
}

impl UserVideoEvent {
    pub fn pair(&self) -> (UserId, VideoId) {
        match self {
            Self::Reacted {
                user_id, video_id, ..
            }
            | Self::ReactionRemoved { user_id, video_id }
            | Self::Bookmarked { user_id, video_id }
            | Self::BookmarkRemoved { user_id, video_id } => (*user_id, *video_id),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommentEvent {
    Posted {
        video_id: VideoId,
        author_id: UserId,
        text: String,
    },
    /// By its author or an admin.
    Deleted { by: UserId },
}

impl Event for CommentEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Posted { .. } => "comment_posted",
            Self::Deleted { .. } => "comment_deleted",
        }
    }
}

/// A video's engagement settings, set by its owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SettingsEvent {
    ReactionsSet { video_id: VideoId, enabled: bool },
    CommentsSet { video_id: VideoId, enabled: bool },
}

impl Event for SettingsEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::ReactionsSet { .. } => "reactions_set",
            Self::CommentsSet { .. } => "comments_set",
        }
    }
}

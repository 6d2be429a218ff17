//! The engagement product's application layer: which videos a viewer may
//! engage with, and the commands on reactions, bookmarks, comments and a
//! video's settings. Player events go through `events.rs`.

pub mod events;

use reelay_shared::{
    VideoId,
    engagement::{
        Audience, CommentEvent, CommentId, EngagementRejection, Reaction, SettingsEvent,
        SettingsId, UserVideoEvent, UserVideoId,
    },
    video::Video,
};

use crate::{
    auth::{Caller, Role},
    error::{ApiError, ApiResult},
    state::AppState,
    video::record_video,
};

/// Attempts at an aggregate two requests race on (the first reaction of a
/// pair) before the loser hears 423.
const ATTEMPTS: usize = 5;

/// The longest comment, in characters.
pub const MAX_COMMENT: usize = 2000;

/// Whether `viewer` (None: anonymous) may watch, and so engage with, the
/// video (see [`Audience`]).
pub fn admits(audience: &Audience, viewer: Option<Caller>) -> bool {
    audience.admits(
        viewer.map(|c| c.user),
        viewer.is_some_and(|c| c.role == Role::Admin),
    )
}

/// The video `viewer` may watch, or 404 (whether it exists is not
/// revealed otherwise).
pub async fn watchable_video(
    state: &AppState,
    viewer: Option<Caller>,
    id: &str,
) -> ApiResult<Video> {
    let id = VideoId::parse(id).ok_or(ApiError::NotFound)?;
    record_video(id);
    match state.store.video(id).await? {
        Some(video) if admits(&Audience::of(&video), viewer) => Ok(video),
        _ => Err(ApiError::NotFound),
    }
}

/// What an owner may switch off per video.
#[derive(Clone, Copy)]
enum Switch {
    Reactions,
    Comments,
}

/// A video `user` may engage with: 404 unless they may watch it, 409 when
/// its owner switched `switch` off.
async fn open_for(
    state: &AppState,
    user: Caller,
    id: &str,
    switch: Option<Switch>,
) -> ApiResult<VideoId> {
    let video = watchable_video(state, Some(user), id).await?;
    let Some(switch) = switch else {
        return Ok(video.id);
    };
    let settings = state.store.engagement(video.id, None).await?;
    let (on, name) = match switch {
        Switch::Reactions => (settings.reactions_enabled, "reactions"),
        Switch::Comments => (settings.comments_enabled, "comments"),
    };
    if !on {
        return Err(ApiError::WrongState(format!(
            "the video's owner turned {name} off"
        )));
    }
    Ok(video.id)
}

/// Sets (Some) or removes (None) `user`'s reaction; repeating it changes
/// nothing.
pub async fn react(
    state: &AppState,
    user: Caller,
    video: &str,
    reaction: Option<Reaction>,
) -> ApiResult<VideoId> {
    // Taking a reaction back is fine also once reactions are off.
    let switch = reaction.map(|_| Switch::Reactions);
    let video = open_for(state, user, video, switch).await?;
    let user_id = user.user;
    state
        .store
        .append_retrying(UserVideoId::of(user_id, video), ATTEMPTS, |current| {
            let now = current.as_ref().and_then(|u| u.reaction);
            let events = match reaction {
                _ if now == reaction => vec![],
                Some(reaction) => vec![UserVideoEvent::Reacted {
                    user_id,
                    video_id: video,
                    reaction,
                }],
                None => vec![UserVideoEvent::ReactionRemoved {
                    user_id,
                    video_id: video,
                }],
            };
            Ok((events, ()))
        })
        .await?;
    Ok(video)
}

/// Bookmarks (true) or un-bookmarks a video; repeating it changes nothing.
pub async fn bookmark(state: &AppState, user: Caller, video: &str, on: bool) -> ApiResult<()> {
    // Removing a bookmark works on any video id the user bookmarked, also
    // one deleted since.
    let video = match on {
        true => open_for(state, user, video, None).await?,
        false => VideoId::parse(video).ok_or(ApiError::NotFound)?,
    };
    let user_id = user.user;
    state
        .store
        .append_retrying(UserVideoId::of(user_id, video), ATTEMPTS, |current| {
            let marked = current.as_ref().is_some_and(|u| u.bookmarked_at.is_some());
            let events = match (marked, on) {
                (false, true) => vec![UserVideoEvent::Bookmarked {
                    user_id,
                    video_id: video,
                }],
                (true, false) => vec![UserVideoEvent::BookmarkRemoved {
                    user_id,
                    video_id: video,
                }],
                _ => vec![],
            };
            Ok((events, ()))
        })
        .await?;
    Ok(())
}

/// Checks a comment's text: 1 to [`MAX_COMMENT`] characters, not only
/// spaces, no NUL (PostgreSQL text can't hold it).
pub fn check_comment(text: &str) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest("text must not be empty".into()));
    }
    crate::text::check("text", text, MAX_COMMENT)
}

pub async fn post_comment(
    state: &AppState,
    user: Caller,
    video: &str,
    text: String,
) -> ApiResult<CommentId> {
    check_comment(&text)?;
    let video = open_for(state, user, video, Some(Switch::Comments)).await?;
    let id = CommentId::new();
    state
        .store
        .append(id, |current| match current {
            Some(_) => Err(EngagementRejection::CommentExists),
            None => Ok((
                vec![CommentEvent::Posted {
                    video_id: video,
                    author_id: user.user,
                    text,
                }],
                (),
            )),
        })
        .await?;
    Ok(id)
}

/// Deletes a comment, by its author or an admin; deleting it again
/// changes nothing.
pub async fn delete_comment(state: &AppState, user: Caller, id: &str) -> ApiResult<()> {
    let id = CommentId::parse(id).ok_or(ApiError::NoSuch("comment"))?;
    state
        .store
        .append(id, |current| {
            let comment = current.as_ref().ok_or(EngagementRejection::NoSuchComment)?;
            if comment.author_id != user.user && user.role != Role::Admin {
                return Err(EngagementRejection::NotTheAuthor);
            }
            let events = match comment.deleted_at {
                Some(_) => vec![],
                None => vec![CommentEvent::Deleted { by: user.user }],
            };
            Ok((events, ()))
        })
        .await?;
    Ok(())
}

/// The owner's switches: reactions and comments on or off; a switch left
/// out stays as it is.
pub async fn set_switches(
    state: &AppState,
    video: VideoId,
    reactions: Option<bool>,
    comments: Option<bool>,
) -> ApiResult<()> {
    state
        .store
        .append_retrying(SettingsId::of(video), ATTEMPTS, |current| {
            let (r, c) = current
                .as_ref()
                .map_or((true, true), |s| (s.reactions_enabled, s.comments_enabled));
            let mut events = Vec::new();
            if let Some(enabled) = reactions.filter(|on| *on != r) {
                events.push(SettingsEvent::ReactionsSet {
                    video_id: video,
                    enabled,
                });
            }
            if let Some(enabled) = comments.filter(|on| *on != c) {
                events.push(SettingsEvent::CommentsSet {
                    video_id: video,
                    enabled,
                });
            }
            Ok((events, ()))
        })
        .await?;
    Ok(())
}

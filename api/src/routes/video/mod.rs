//! The video product's routes: tus uploads, videos, profile videos, links,
//! moderation, onboarding and playback.

pub mod links;
pub mod moderation;
pub mod onboarding;
pub mod playback;
pub mod profile;
pub mod tus;
pub mod videos;

use super::Routes;

pub fn router() -> Routes {
    Routes::new()
        .merge(tus::router())
        .merge(videos::router())
        .merge(profile::router())
        .merge(links::router())
        .merge(moderation::router())
        .merge(onboarding::router())
        .merge(playback::router())
}

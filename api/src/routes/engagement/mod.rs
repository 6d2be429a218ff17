//! The engagement product's routes: reactions, bookmarks and the owner's
//! switches; comments; player events; statistics; watch history.

pub mod comments;
pub mod events;
pub mod history;
pub mod reactions;
pub mod stats;

use super::Routes;

pub fn router() -> Routes {
    Routes::new()
        .merge(reactions::router())
        .merge(comments::router())
        .merge(events::router())
        .merge(stats::router())
        .merge(history::router())
}

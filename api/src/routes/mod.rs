//! Every route group, each a `router()` merged here: the runtime's
//! operations endpoints, the web console and push devices, and one folder
//! per product.

pub mod console;
pub mod devices;
pub mod engagement;
pub mod fleet;
pub mod ops;
pub mod video;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(ops::router())
        .merge(console::router())
        .merge(devices::router())
        .merge(video::router())
        .merge(fleet::router())
        .merge(engagement::router())
}

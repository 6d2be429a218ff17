//! Every route group, each a `router()` merged here: the runtime's
//! operations endpoints, the web console and push devices, and one folder
//! per product. Each group registers its handlers with `routes!`, which
//! puts their `#[utoipa::path]` operations in the OpenAPI document as it
//! routes them (see `crate::openapi`).

pub mod console;
pub mod devices;
pub mod engagement;
pub mod fleet;
pub mod ops;
pub mod video;

use utoipa_axum::router::OpenApiRouter;

use crate::{openapi, state::AppState};

/// A route group and its part of the OpenAPI document.
pub type Routes = OpenApiRouter<AppState>;

pub fn router() -> Routes {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(ops::router())
        .merge(console::router())
        .merge(devices::router())
        .merge(video::router())
        .merge(fleet::router())
        .merge(engagement::router())
}

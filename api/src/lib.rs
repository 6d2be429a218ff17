//! The thin reelay api: tus 1.0.0 uploads, the /v1 REST API and auth. It
//! never touches S3 objects: PATCH bodies become chunk jobs on RabbitMQ.
//!
//! Routes are leaves (`routes/<product>/`): each parses its request, calls
//! the product's application layer (`video/`, `fleet/`) for anything more
//! than reading, and shapes the answer. `error.rs` maps every failure to HTTP
//! once.

pub mod auth;
pub mod config;
pub mod cursor;
pub mod engagement;
pub mod error;
pub mod etag;
pub mod fleet;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod state;
pub mod text;
pub mod throttle;
pub mod video;

pub use startup::Application;
pub use state::AppState;

//! The thin reelay api: tus 1.0.0 uploads, the /v1 REST API and auth. It
//! never touches S3: PATCH bodies become chunk jobs on RabbitMQ.

pub mod auth;
pub mod config;
pub mod error;
pub mod ingest;
pub mod routes;
pub mod startup;
pub mod tus;

pub use startup::{AppState, Application};

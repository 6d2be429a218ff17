//! reelay's worker: consumes chunk and delete jobs from RabbitMQ and builds
//! each original in S3, recording every step as events in PostgreSQL.

pub mod config;
pub mod jobs;
pub mod retry;
pub mod startup;

pub use startup::Worker;

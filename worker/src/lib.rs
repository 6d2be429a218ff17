//! reelay's worker: consumes chunk, delete and verify jobs from RabbitMQ and
//! builds each original in S3, recording every step as events in
//! PostgreSQL; with `REELAY_SCHEDULER=true` it also runs the scheduler.

pub mod config;
pub mod fflow;
pub mod jobs;
pub mod startup;

pub use startup::Worker;

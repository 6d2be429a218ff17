//! reelay's worker: consumes the jobs of every product from RabbitMQ (the
//! video product's chunk, delete, verify and encode jobs today), recording
//! every step as events in PostgreSQL; with `REELAY_SCHEDULER=true` it also
//! runs the scheduler.
//!
//! `consumer` is the one consumer framework (outcomes to acks); `jobs/` has
//! one folder per product.

pub mod config;
pub mod consumer;
pub mod jobs;
pub mod startup;

pub use startup::Worker;

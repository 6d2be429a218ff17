//! What every reelay binary shares: the domain model (ids, states, events),
//! the Postgres event store and projections, the RabbitMQ topology and chunk
//! messages, S3 storage, Redis locks and routing keys, push devices and
//! their outbox, retries, configuration, telemetry, operations endpoints
//! and shutdown.

pub mod config;
pub mod domain;
pub mod fflow;
pub mod hashing;
pub mod lock;
pub mod mq;
pub mod ops;
pub mod push;
pub mod retry;
pub mod routing;
pub mod shutdown;
pub mod signing;
pub mod storage;
pub mod store;
pub mod telemetry;

pub use domain::{UserId, VideoId, VideoStatus};

//! What every reelay binary shares.
//!
//! The runtime, written once: configuration ([`config`]), the event store
//! and its rebuild ([`store`]), RabbitMQ ([`mq`]), S3 ([`storage`]), Redis
//! locks ([`lock`]) and rate limits ([`ratelimit`]), push devices and their
//! outbox ([`push`]), retries,
//! signing, telemetry, operations endpoints and shutdown.
//!
//! Beside it, one folder per product with its domain, events, projections
//! and queries: [`video`], [`fleet`] and [`engagement`]. A product joins the runtime through the
//! two lists below: its projections (for the rebuild) and its queues.

pub mod clickhouse;
pub mod config;
pub mod engagement;
pub mod fleet;
pub mod fresh;
pub mod hashing;
pub mod lease;
pub mod lock;
pub mod memory;
pub mod mq;
pub mod ops;
pub mod presign;
pub mod push;
pub mod ratelimit;
pub mod retry;
pub mod shards;
pub mod shutdown;
pub mod signing;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod video;

use store::{Projection, ProjectionOf};

pub use video::{UserId, VideoId, VideoStatus};

/// Every product's projections, in the order their tables refer to each
/// other (a rebuild empties them last first and replays the log in order).
pub const PROJECTIONS: &[&dyn Projection] = &[
    &ProjectionOf::<video::VideoAggregate>::new(),
    &ProjectionOf::<video::ProfileAggregate>::new(),
    &ProjectionOf::<fleet::FirmwareAggregate>::new(),
    &ProjectionOf::<fleet::DeviceAggregate>::new(),
    &ProjectionOf::<fleet::RolloutAggregate>::new(),
    &ProjectionOf::<fleet::UpdateAggregate>::new(),
    &ProjectionOf::<engagement::SettingsAggregate>::new(),
    &ProjectionOf::<engagement::UserVideoAggregate>::new(),
    &ProjectionOf::<engagement::CommentAggregate>::new(),
];

/// Every product's queues, as the api and workers declare them.
pub fn queues(topology: &mq::Topology) -> Vec<mq::QueueSpec> {
    let mut queues = video::jobs::queues(topology);
    queues.extend(fleet::jobs::queues(topology));
    queues.extend(engagement::streams::queues(
        topology,
        &topology.stream_max_age,
    ));
    queues
}

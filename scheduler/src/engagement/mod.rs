//! The engagement product's work that runs once: relaying the UGC outbox.

pub mod relay;

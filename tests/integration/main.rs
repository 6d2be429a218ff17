//! Integration tests against the real PostgreSQL, RabbitMQ, Redis and Garage.

mod auth;
mod authorization;
mod bad_input;
mod browser;
mod concurrency;
mod console;
mod contract;
mod encoding;
mod engagement;
mod failures;
mod fleet;
mod leadership;
mod moderation;
mod onboarding;
mod profile;
mod projections;
mod push;
mod rate_limits;
mod reaper;
mod resume;
mod security;
mod staging;
mod termination;
mod tus_client;
mod videos;
mod worker_crash;

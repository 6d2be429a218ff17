//! The scheduler's work for the fleet product: the rollout driver.

pub mod driver;

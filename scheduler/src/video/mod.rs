//! The scheduler's work for the video product: the reaper.

pub mod reaper;

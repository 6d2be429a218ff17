//! The engagement product's readers: the playback and UGC streams into
//! ClickHouse (`etl.rs` is how a stream is read exactly once; `playback.rs`
//! and `ugc.rs` what each becomes).

pub mod etl;
pub mod playback;
pub mod ugc;

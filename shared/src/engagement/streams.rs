//! The engagement product's streams on RabbitMQ: `<prefix>.playback` (player
//! events, high rate) and `<prefix>.ugc` (reactions, bookmarks, comments,
//! low rate), separate as the seed proposes. Stream queues are RabbitMQ's
//! append-only, replayable log (in place of the seed's Kafka): readers keep
//! their own offset and may read again from any.

use crate::mq::{QueueSpec, Topology};

impl Topology {
    pub fn playback_stream(&self) -> String {
        self.queue("playback")
    }

    pub fn ugc_stream(&self) -> String {
        self.queue("ugc")
    }
}

/// The engagement streams, each keeping messages for `max_age`.
pub fn queues(topology: &Topology, max_age: &str) -> Vec<QueueSpec> {
    vec![
        QueueSpec::stream(topology.playback_stream(), max_age.to_owned()),
        QueueSpec::stream(topology.ugc_stream(), max_age.to_owned()),
    ]
}

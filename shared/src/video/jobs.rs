//! The video product's jobs on RabbitMQ: their queues and their headers.
//!
//! - `<prefix>.chunks.<n>`: chunk and delete jobs of the uploads whose id
//!   hashes to shard n, single-active-consumer, so one worker sees an
//!   upload's messages in order; failures go to `<prefix>.chunks.dlq`.
//! - `<prefix>.verify`: moderation jobs, any worker, any order.
//! - `<prefix>.encode`: encode jobs, any worker, any order.

use lapin::{
    BasicProperties, Channel, PublisherConfirm,
    types::{AMQPValue, FieldTable},
};

use super::domain::VideoId;
use crate::mq::{self, Publisher, QueueSpec, Topology};

/// What a video job asks of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Bytes of the original at `offset` (on the video's chunk shard).
    Chunk { offset: u64 },
    /// Remove every object of the video, after tus termination or DELETE
    /// (on the video's chunk shard, after its chunks).
    Delete,
    /// Send the video to the moderation webhook (on the verify queue).
    Verify,
    /// Encode the video's renditions (on the encode queue).
    Encode,
}

impl JobKind {
    /// The name in the message's `kind` header, and in logs and spans.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chunk { .. } => "chunk",
            Self::Delete => "delete",
            Self::Verify => "verify",
            Self::Encode => "encode",
        }
    }
}

/// The header fields of a job; a chunk's body is its bytes, other jobs have
/// none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobHeader {
    pub video: VideoId,
    pub kind: JobKind,
}

impl JobHeader {
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            "video_id".into(),
            AMQPValue::LongString(self.video.to_string().as_str().into()),
        );
        let offset = match self.kind {
            JobKind::Chunk { offset } => offset,
            _ => 0,
        };
        headers.insert(
            "kind".into(),
            AMQPValue::LongString(self.kind.name().into()),
        );
        headers.insert("offset".into(), AMQPValue::LongLongInt(offset as i64));
        mq::persistent(headers)
    }

    /// Reads a job's header back; `None` for a message we did not write.
    pub fn parse(properties: &BasicProperties) -> Option<Self> {
        let headers = properties.headers().as_ref()?;
        let field = |name: &str| headers.inner().get(name);
        let text = |v: &AMQPValue| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        };
        let video = VideoId::parse(&text(field("video_id")?)?)?;
        let kind = match text(field("kind")?)?.as_str() {
            "chunk" => match field("offset")? {
                AMQPValue::LongLongInt(o) if *o >= 0 => JobKind::Chunk { offset: *o as u64 },
                _ => return None,
            },
            "delete" => JobKind::Delete,
            "verify" => JobKind::Verify,
            "encode" => JobKind::Encode,
            _ => return None,
        };
        Some(Self { video, kind })
    }
}

impl Topology {
    /// The shard that carries every chunk and delete job of `video`.
    pub fn shard_of_video(&self, video: VideoId) -> u16 {
        self.shard_of(video.0)
    }

    pub fn chunk_queue(&self, shard: u16) -> String {
        self.queue(&format!("chunks.{shard}"))
    }

    pub fn chunk_queue_of(&self, video: VideoId) -> String {
        self.chunk_queue(self.shard_of_video(video))
    }

    pub fn dead_letter_queue(&self) -> String {
        self.queue("chunks.dlq")
    }

    pub fn verify_queue(&self) -> String {
        self.queue("verify")
    }

    pub fn verify_dead_letter_queue(&self) -> String {
        self.queue("verify.dlq")
    }

    pub fn encode_queue(&self) -> String {
        self.queue("encode")
    }

    pub fn encode_dead_letter_queue(&self) -> String {
        self.queue("encode.dlq")
    }

    /// Where a job goes.
    pub fn queue_of(&self, header: &JobHeader) -> String {
        match header.kind {
            JobKind::Verify => self.verify_queue(),
            JobKind::Encode => self.encode_queue(),
            JobKind::Chunk { .. } | JobKind::Delete => self.chunk_queue_of(header.video),
        }
    }
}

/// The video product's queues, dead-letter queues first.
pub fn queues(topology: &Topology) -> Vec<QueueSpec> {
    let mut queues = vec![
        QueueSpec::plain(topology.dead_letter_queue()),
        QueueSpec::plain(topology.verify_dead_letter_queue()),
        QueueSpec::plain(topology.encode_dead_letter_queue()),
    ];
    queues.extend((0..topology.shards).map(|shard| {
        QueueSpec::ordered(topology.chunk_queue(shard), topology.dead_letter_queue())
    }));
    queues.push(QueueSpec::work(
        topology.verify_queue(),
        topology.verify_dead_letter_queue(),
    ));
    queues.push(QueueSpec::work(
        topology.encode_queue(),
        topology.encode_dead_letter_queue(),
    ));
    queues
}

impl Publisher {
    /// Publishes a job; await the confirm before counting it durable.
    pub async fn publish_job(
        &self,
        channel: &Channel,
        header: JobHeader,
        body: &[u8],
    ) -> Result<PublisherConfirm, lapin::Error> {
        let queue = self.topology().queue_of(&header);
        self.publish(channel, &queue, header.properties(), body)
            .await
    }

    /// Publishes a job without a body and waits for the broker's confirm.
    pub async fn publish_job_confirmed(&self, header: JobHeader) -> Result<(), lapin::Error> {
        let queue = self.topology().queue_of(&header);
        self.publish_confirmed(&queue, header.properties(), &[])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_header_reads_back_as_written() {
        let video = VideoId::new();
        for kind in [
            JobKind::Chunk { offset: 0 },
            JobKind::Chunk { offset: 1 << 40 },
            JobKind::Delete,
            JobKind::Verify,
            JobKind::Encode,
        ] {
            let header = JobHeader { video, kind };
            assert_eq!(JobHeader::parse(&header.properties()), Some(header));
        }
        assert_eq!(JobHeader::parse(&BasicProperties::default()), None);
    }

    #[test]
    fn every_message_of_a_video_goes_to_one_shard() {
        let topology = Topology {
            prefix: "t".into(),
            shards: 3,
            stream_max_age: "1D".into(),
        };
        let video = VideoId::new();
        for kind in [JobKind::Chunk { offset: 9 }, JobKind::Delete] {
            assert_eq!(
                topology.queue_of(&JobHeader { video, kind }),
                topology.chunk_queue_of(video)
            );
        }
        assert!(topology.shard_of_video(video) < 3);
        assert_eq!(topology.chunk_queue(2), "t.chunks.2");
    }
}

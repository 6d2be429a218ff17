//! RabbitMQ: the queue topology, chunk and delete messages, and a publisher
//! with confirms that reconnects after the broker comes back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use tokio::sync::Mutex;

use crate::{config::AmqpConfig, domain::VideoId};

/// How long connecting to the broker may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Channels the api publishes on, round robin.
const PUBLISH_CHANNELS: usize = 4;
/// A message redelivered this often is dead-lettered (a poison message).
const DELIVERY_LIMIT: i64 = 50;

/// Queue names, all under one prefix so tests and deployments don't meet.
#[derive(Clone, Debug)]
pub struct Topology {
    pub prefix: String,
    pub shards: u16,
}

impl Topology {
    pub fn new(config: &AmqpConfig) -> Self {
        Self {
            prefix: config.queue_prefix.clone(),
            shards: config.shards,
        }
    }

    /// The shard that carries every message of `video`.
    pub fn shard_of(&self, video: VideoId) -> u16 {
        (video.0.as_u128() % u128::from(self.shards)) as u16
    }

    pub fn chunk_queue(&self, shard: u16) -> String {
        format!("{}.chunks.{shard}", self.prefix)
    }

    pub fn chunk_queue_of(&self, video: VideoId) -> String {
        self.chunk_queue(self.shard_of(video))
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.chunks.dlq", self.prefix)
    }

    /// Verify jobs: any worker takes any of them, in no particular order.
    pub fn verify_queue(&self) -> String {
        format!("{}.verify", self.prefix)
    }

    pub fn verify_dead_letter_queue(&self) -> String {
        format!("{}.verify.dlq", self.prefix)
    }

    /// Encode jobs: any worker takes any of them.
    pub fn encode_queue(&self) -> String {
        format!("{}.encode", self.prefix)
    }

    pub fn encode_dead_letter_queue(&self) -> String {
        format!("{}.encode.dlq", self.prefix)
    }

    /// Where a job goes.
    pub fn queue_of(&self, header: &JobHeader) -> String {
        match header.kind {
            JobKind::Verify => self.verify_queue(),
            JobKind::Encode => self.encode_queue(),
            JobKind::Chunk { .. } | JobKind::Delete => self.chunk_queue_of(header.video),
        }
    }

    pub fn all_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = (0..self.shards).map(|s| self.chunk_queue(s)).collect();
        queues.push(self.dead_letter_queue());
        queues.push(self.verify_queue());
        queues.push(self.verify_dead_letter_queue());
        queues.push(self.encode_queue());
        queues.push(self.encode_dead_letter_queue());
        queues
    }

    /// Declares the quorum queues: each shard with single-active-consumer
    /// (one worker sees an upload's chunks in order) and dead-lettering into
    /// the DLQ. Idempotent; the api and every worker call it.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let quorum = || {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            args
        };
        let dead_lettered = |dlq: String| {
            let mut args = quorum();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(dlq.as_str().into()),
            );
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            args
        };
        for dlq in [
            self.dead_letter_queue(),
            self.verify_dead_letter_queue(),
            self.encode_dead_letter_queue(),
        ] {
            channel
                .queue_declare(dlq.as_str().into(), durable, quorum())
                .await?;
        }
        for shard in 0..self.shards {
            let mut args = dead_lettered(self.dead_letter_queue());
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            channel
                .queue_declare(self.chunk_queue(shard).as_str().into(), durable, args)
                .await?;
        }
        channel
            .queue_declare(
                self.verify_queue().as_str().into(),
                durable,
                dead_lettered(self.verify_dead_letter_queue()),
            )
            .await?;
        channel
            .queue_declare(
                self.encode_queue().as_str().into(),
                durable,
                dead_lettered(self.encode_dead_letter_queue()),
            )
            .await?;
        Ok(())
    }
}

/// What a message on a chunk queue asks of the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Bytes of the original at `offset`.
    Chunk { offset: u64 },
    /// Remove every object of the video (tus termination, DELETE).
    Delete,
    /// Send the video to the moderation webhook (on the verify queue).
    Verify,
    /// Encode the video's renditions (on the encode queue).
    Encode,
}

/// The header fields of a job; the body is the chunk's bytes.
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
        let (kind, offset) = match self.kind {
            JobKind::Chunk { offset } => ("chunk", offset),
            JobKind::Delete => ("delete", 0),
            JobKind::Verify => ("verify", 0),
            JobKind::Encode => ("encode", 0),
        };
        headers.insert("kind".into(), AMQPValue::LongString(kind.into()));
        headers.insert("offset".into(), AMQPValue::LongLongInt(offset as i64));
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/octet-stream"))
            .with_headers(headers)
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

/// Connects to the broker, failing after [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(result) => result,
        Err(_) => Err(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to the broker timed out",
            ),
        )))),
    }
}

struct Connected {
    connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

/// Publishes jobs with publisher confirms over a few channels of one
/// connection; connects lazily and again after the connection broke.
pub struct Publisher {
    url: String,
    name: String,
    topology: Topology,
    connected: Mutex<Option<Arc<Connected>>>,
}

impl Publisher {
    pub fn new(url: String, name: String, topology: Topology) -> Self {
        Self {
            url,
            name,
            topology,
            connected: Mutex::new(None),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A channel in confirm mode, connecting first if needed.
    pub async fn channel(&self) -> Result<Channel, lapin::Error> {
        let mut guard = self.connected.lock().await;
        if let Some(c) = guard.as_ref()
            && c.connection.status().connected()
        {
            let i = c.next.fetch_add(1, Ordering::Relaxed) % c.channels.len();
            if c.channels[i].status().connected() {
                return Ok(c.channels[i].clone());
            }
        }
        *guard = None;
        let connection = connect(&self.url, &self.name).await?;
        let mut channels = Vec::with_capacity(PUBLISH_CHANNELS);
        for _ in 0..PUBLISH_CHANNELS {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        self.topology.declare(&channels[0]).await?;
        let first = channels[0].clone();
        *guard = Some(Arc::new(Connected {
            connection,
            channels,
            next: AtomicUsize::new(1),
        }));
        Ok(first)
    }

    /// Whether the broker connection is up (for /readyz); connects if needed.
    pub async fn ready(&self) -> bool {
        self.channel().await.is_ok()
    }

    /// Publishes one job with no body and waits for the broker's confirm.
    pub async fn publish_confirmed(&self, header: JobHeader) -> Result<(), lapin::Error> {
        let channel = self.channel().await?;
        let confirm = match self.publish(&channel, header, &[]).await {
            Ok(confirm) => confirm,
            Err(e) => {
                self.reset().await;
                return Err(e);
            }
        };
        match confirm.await? {
            Confirmation::Ack(None) => Ok(()),
            _ => Err(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(
                std::io::Error::other("the broker did not take the job"),
            )))),
        }
    }

    /// Publishes one job; await the returned confirm before counting it durable.
    pub async fn publish(
        &self,
        channel: &Channel,
        header: JobHeader,
        body: &[u8],
    ) -> Result<PublisherConfirm, lapin::Error> {
        channel
            .basic_publish(
                ShortString::from(""),
                self.topology.queue_of(&header).as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                header.properties(),
            )
            .await
    }

    /// Forgets the connection so the next call reconnects.
    pub async fn reset(&self) {
        if let Some(c) = self.connected.lock().await.take() {
            let _ = c.connection.close(200, "reset".into()).await;
        }
    }

    pub async fn close(&self) {
        self.reset().await;
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
        };
        let video = VideoId::new();
        assert_eq!(
            topology.chunk_queue_of(video),
            topology.chunk_queue_of(video)
        );
        assert!(topology.shard_of(video) < 3);
    }
}

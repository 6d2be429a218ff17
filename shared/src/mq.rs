//! RabbitMQ: queue names under one prefix, declaring quorum queues, and a
//! publisher with confirms that reconnects after the broker comes back.
//! Each product names its queues and messages (`video/jobs.rs`); the crate
//! root lists every product's queues (`reelay_shared::queues`).

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
use uuid::Uuid;

use crate::config::AmqpConfig;

/// How long connecting to the broker may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Channels the api publishes on, round robin.
const PUBLISH_CHANNELS: usize = 4;
/// A message redelivered this often is dead-lettered (a poison message).
const DELIVERY_LIMIT: i64 = 50;

/// Queue names, all under one prefix so tests and deployments don't meet,
/// and the number of shards ordered work is spread over.
#[derive(Clone, Debug)]
pub struct Topology {
    pub prefix: String,
    pub shards: u16,
    /// How long stream queues keep messages.
    pub stream_max_age: String,
}

impl Topology {
    pub fn new(config: &AmqpConfig) -> Self {
        Self {
            prefix: config.queue_prefix.clone(),
            shards: config.shards,
            stream_max_age: config.stream_max_age.clone(),
        }
    }

    /// `<prefix>.<name>`.
    pub fn queue(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// The shard that carries every message about `id`.
    pub fn shard_of(&self, id: Uuid) -> u16 {
        (id.as_u128() % u128::from(self.shards)) as u16
    }
}

/// One durable queue: a quorum queue, or a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    /// Where messages go when rejected or past the delivery limit.
    pub dead_letter: Option<String>,
    /// One consumer at a time, so messages are handled in order.
    pub single_active_consumer: bool,
    /// A stream queue (RabbitMQ's append-only, replayable log) that keeps
    /// messages this long (`7D`, `24h`…), whoever read them.
    pub stream_max_age: Option<String>,
}

impl QueueSpec {
    /// A plain queue (a dead-letter queue itself).
    pub fn plain(name: String) -> Self {
        Self {
            name,
            dead_letter: None,
            single_active_consumer: false,
            stream_max_age: None,
        }
    }

    /// A work queue whose failures go to `dead_letter`.
    pub fn work(name: String, dead_letter: String) -> Self {
        Self {
            dead_letter: Some(dead_letter),
            ..Self::plain(name)
        }
    }

    /// A stream queue that keeps messages for `max_age`; consumers read it
    /// from an offset of their own (`x-stream-offset`).
    pub fn stream(name: String, max_age: String) -> Self {
        Self {
            stream_max_age: Some(max_age),
            ..Self::plain(name)
        }
    }

    /// A queue consumed in order by one consumer at a time.
    pub fn ordered(name: String, dead_letter: String) -> Self {
        Self {
            single_active_consumer: true,
            ..Self::work(name, dead_letter)
        }
    }

    fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(max_age) = &self.stream_max_age {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("stream".into()),
            );
            args.insert(
                "x-max-age".into(),
                AMQPValue::LongString(max_age.as_str().into()),
            );
            return args;
        }
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        if let Some(dlq) = &self.dead_letter {
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
        }
        if self.single_active_consumer {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        args
    }
}

/// Declares the queues; idempotent (the api and every worker call it).
pub async fn declare(channel: &Channel, queues: &[QueueSpec]) -> Result<(), lapin::Error> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for queue in queues {
        channel
            .queue_declare(queue.name.as_str().into(), durable, queue.arguments())
            .await?;
    }
    Ok(())
}

/// Connects to the broker, failing after [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(result) => result,
        Err(_) => Err(io_error(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting to the broker timed out",
        ))),
    }
}

fn io_error(e: std::io::Error) -> lapin::Error {
    lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(e)))
}

/// A persistent message's properties with `headers`.
pub fn persistent(headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/octet-stream"))
        .with_headers(headers)
}

struct Connected {
    connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

/// Publishes messages with publisher confirms over a few channels of one
/// connection; connects lazily (declaring its queues) and again after the
/// connection broke.
pub struct Publisher {
    url: String,
    name: String,
    topology: Topology,
    queues: Vec<QueueSpec>,
    connected: Mutex<Option<Arc<Connected>>>,
}

impl Publisher {
    pub fn new(url: String, name: String, topology: Topology, queues: Vec<QueueSpec>) -> Self {
        Self {
            url,
            name,
            topology,
            queues,
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
        declare(&channels[0], &self.queues).await?;
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

    /// Publishes one message and waits for the broker's confirm.
    pub async fn publish_confirmed(
        &self,
        queue: &str,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), lapin::Error> {
        let channel = self.channel().await?;
        let confirm = match self.publish(&channel, queue, properties, body).await {
            Ok(confirm) => confirm,
            Err(e) => {
                self.reset().await;
                return Err(e);
            }
        };
        match confirm.await? {
            Confirmation::Ack(None) => Ok(()),
            _ => Err(io_error(std::io::Error::other(
                "the broker did not take the message",
            ))),
        }
    }

    /// Publishes many messages on one channel without waiting in between,
    /// then waits for every confirm: a batch costs one round of confirms,
    /// not one per message.
    pub async fn publish_all_confirmed(
        &self,
        messages: Vec<(String, BasicProperties, Vec<u8>)>,
    ) -> Result<(), lapin::Error> {
        let channel = self.channel().await?;
        let mut confirms = Vec::new();
        for (queue, properties, body) in messages {
            match self.publish(&channel, &queue, properties, &body).await {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => {
                    self.reset().await;
                    return Err(e);
                }
            }
        }
        for confirm in confirms {
            if !matches!(confirm.await?, Confirmation::Ack(None)) {
                return Err(io_error(std::io::Error::other(
                    "the broker did not take a message",
                )));
            }
        }
        Ok(())
    }

    /// Publishes one message (mandatory: an unroutable one comes back); await
    /// the returned confirm before counting it durable.
    pub async fn publish(
        &self,
        channel: &Channel,
        queue: &str,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<PublisherConfirm, lapin::Error> {
        channel
            .basic_publish(
                ShortString::from(""),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
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

//! The fleet product's jobs on RabbitMQ, all on one unordered queue
//! (`<prefix>.fleet`, dead letters in `<prefix>.fleet.dlq`): any worker
//! takes any of them.

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use uuid::Uuid;

use super::domain::{FirmwareId, UpdateId};
use crate::mq::{self, Publisher, QueueSpec, Topology};

/// What a fleet job asks of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetJob {
    /// Hash-check, sign and make available a firmware whose file is whole.
    Seal(FirmwareId),
    /// Ask the fleet backend to update a device (a requested device update).
    Update(UpdateId),
    /// Tell the fleet backend to drop a device update (its rollout was
    /// cancelled, or it timed out).
    Cancel(UpdateId),
}

impl FleetJob {
    pub fn name(self) -> &'static str {
        match self {
            Self::Seal(_) => "seal",
            Self::Update(_) => "update",
            Self::Cancel(_) => "cancel",
        }
    }

    fn id(self) -> Uuid {
        match self {
            Self::Seal(id) => id.0,
            Self::Update(id) | Self::Cancel(id) => id.0,
        }
    }

    pub fn properties(self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("kind".into(), AMQPValue::LongString(self.name().into()));
        headers.insert(
            "id".into(),
            AMQPValue::LongString(self.id().to_string().as_str().into()),
        );
        mq::persistent(headers)
    }

    /// Reads a job back; `None` for a message we did not write.
    pub fn parse(properties: &BasicProperties) -> Option<Self> {
        let headers = properties.headers().as_ref()?;
        let text = |name: &str| match headers.inner().get(name)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        };
        let id = Uuid::parse_str(&text("id")?).ok()?;
        Self::of(&text("kind")?, id)
    }

    /// The job named `kind` (as [`FleetJob::name`] says) of `id`.
    fn of(kind: &str, id: Uuid) -> Option<Self> {
        match kind {
            "seal" => Some(Self::Seal(FirmwareId(id))),
            "update" => Some(Self::Update(UpdateId(id))),
            "cancel" => Some(Self::Cancel(UpdateId(id))),
            _ => None,
        }
    }
}

/// Fleet jobs relayed per transaction.
const RELAY_BATCH: i64 = 500;

/// Writes `jobs` to the fleet outbox in the transaction that makes them
/// due; [`relay`] publishes them once it has committed.
pub async fn enqueue(conn: &mut sqlx::PgConnection, jobs: &[FleetJob]) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = jobs.iter().map(|j| j.name()).collect();
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id()).collect();
    sqlx::query("INSERT INTO fleet_outbox (kind, id) SELECT * FROM unnest($1::text[], $2::uuid[])")
        .bind(&kinds)
        .bind(&ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Why the outbox could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// Publishes every job waiting in the fleet outbox, oldest first, and
/// removes it once the broker confirmed it; how many. Rows being relayed
/// are locked, so relays running at once (a writer's own and the driver's)
/// publish each row once; a relay that dies before its delete commits
/// leaves its rows to be published again: at least once, and an update's
/// call carries its id as the idempotency key.
pub async fn relay(pool: &sqlx::PgPool, publisher: &Publisher) -> Result<usize, RelayError> {
    let mut relayed = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(i64, String, Uuid)> = sqlx::query_as(
            "SELECT seq, kind, id FROM fleet_outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(RELAY_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(relayed);
        }
        let jobs: Vec<FleetJob> = rows
            .iter()
            .filter_map(|(seq, kind, id)| {
                let job = FleetJob::of(kind, *id);
                if job.is_none() {
                    tracing::error!(seq, kind, "an unknown fleet job in the outbox; dropped");
                }
                job
            })
            .collect();
        publisher.publish_fleet_jobs(&jobs).await?;
        let seqs: Vec<i64> = rows.iter().map(|(seq, _, _)| *seq).collect();
        sqlx::query("DELETE FROM fleet_outbox WHERE seq = ANY($1)")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        relayed += rows.len();
        if rows.len() < RELAY_BATCH as usize {
            return Ok(relayed);
        }
    }
}

impl Topology {
    pub fn fleet_queue(&self) -> String {
        self.queue("fleet")
    }

    pub fn fleet_dead_letter_queue(&self) -> String {
        self.queue("fleet.dlq")
    }
}

/// The fleet product's queues.
pub fn queues(topology: &Topology) -> Vec<QueueSpec> {
    vec![
        QueueSpec::plain(topology.fleet_dead_letter_queue()),
        QueueSpec::work(topology.fleet_queue(), topology.fleet_dead_letter_queue()),
    ]
}

impl Publisher {
    /// Publishes fleet jobs and waits for the broker's confirms (all at once).
    pub async fn publish_fleet_jobs(&self, jobs: &[FleetJob]) -> Result<(), lapin::Error> {
        let queue = self.topology().fleet_queue();
        let messages = jobs
            .iter()
            .map(|job| (queue.clone(), job.properties(), Vec::new()))
            .collect();
        self.publish_all_confirmed(messages).await
    }

    /// Publishes a fleet job and waits for the broker's confirm.
    pub async fn publish_fleet_job(&self, job: FleetJob) -> Result<(), lapin::Error> {
        let queue = self.topology().fleet_queue();
        self.publish_confirmed(&queue, job.properties(), &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_job_reads_back_as_written() {
        for job in [
            FleetJob::Seal(FirmwareId::new()),
            FleetJob::Update(UpdateId::new()),
            FleetJob::Cancel(UpdateId::new()),
        ] {
            assert_eq!(FleetJob::parse(&job.properties()), Some(job));
        }
        assert_eq!(FleetJob::parse(&BasicProperties::default()), None);
    }
}

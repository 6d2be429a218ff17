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
        match text("kind")?.as_str() {
            "seal" => Some(Self::Seal(FirmwareId(id))),
            "update" => Some(Self::Update(UpdateId(id))),
            "cancel" => Some(Self::Cancel(UpdateId(id))),
            _ => None,
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

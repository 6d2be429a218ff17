//! Chunk shards shared out among the live workers.
//!
//! An upload's chunks always go to one shard queue, consumed in order by one
//! worker at a time. Which worker is decided here, in PostgreSQL, not by
//! which one subscribed first: every worker renews a row in `shard_members`,
//! and the live members, ordered by name, split the shards evenly (with `s`
//! shards and `n` members the first `s mod n` take ⌈s/n⌉, the others ⌊s/n⌋).
//! A worker holds a lease per shard it consumes; each tick it renews them,
//! takes free or expired shards up to its share, and hands over any past
//! it: its consumer finishes what it holds for the shard, closes its channel
//! (returning whatever is unacked, in order), and only then is the lease
//! deleted for the next worker to take. A worker that dies stops renewing;
//! its membership and leases expire and the others take its shards.
//!
//! Fencing as in [`crate::lease`]: each lease has a local deadline (when
//! its renewal was *sent* plus the lease's life, so it never outlives the
//! row), and a shard whose deadline would pass before the next renewal is
//! taken out of [`Assignment::consume`] at once, so its consumer stops
//! before anyone else may take it. Single-active-consumer on the queue
//! stays as the broker's safety net.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::{
    sync::watch,
    time::{Instant, sleep},
};

use crate::mq::Topology;

/// How long a hand-over may hold a lease past the decision to let it go;
/// after that the lease is left to expire.
const HANDOVER_LIMIT: Duration = Duration::from_secs(20);

/// What this worker consumes now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The shards to consume, each with the deadline its lease holds until.
    pub consume: BTreeMap<u16, Instant>,
    /// How many shards this worker takes when all is settled (its share).
    pub share: u16,
    /// Live workers, this one included.
    pub members: usize,
}

/// This worker's share of the shards: `shards` split over the `members`
/// (sorted), the first `shards mod n` taking one more; 0 when it is not a
/// member (yet).
pub fn share_of(shards: u16, members: &[String], me: &str) -> u16 {
    let Some(index) = members.iter().position(|m| m == me) else {
        return 0;
    };
    let n = members.len() as u16;
    shards / n + u16::from((index as u16) < shards % n)
}

/// A worker's leases on the shards of one deployment; clones share state.
#[derive(Clone)]
pub struct ShardLeases {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    group: String,
    holder: String,
    shards: u16,
    ttl: Duration,
    held: Mutex<Held>,
    view: watch::Sender<Assignment>,
    /// Whether the worker can consume (its broker connection is up and
    /// PostgreSQL and S3 answer); a worker that can't takes no shards.
    active: AtomicBool,
}

#[derive(Default)]
struct Held {
    /// Shards whose lease is ours, and until when locally.
    until: BTreeMap<u16, Instant>,
    /// Those of them being handed over, and since when.
    releasing: BTreeMap<u16, Instant>,
    share: u16,
    members: usize,
}

impl ShardLeases {
    /// `group` names the deployment (its queue prefix); `holder` must be
    /// unique per process ([`crate::lease::holder_name`]).
    pub fn new(pool: PgPool, group: &str, holder: String, shards: u16, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                group: group.to_owned(),
                holder,
                shards,
                ttl,
                held: Mutex::default(),
                view: watch::Sender::new(Assignment::default()),
                active: AtomicBool::new(true),
            }),
        }
    }

    /// Says whether the worker can consume. One that can't (its broker
    /// connection is down, or it waits for PostgreSQL or S3) leaves at its
    /// next tick, so the others take its shards; it joins again once it can.
    pub fn set_active(&self, active: bool) {
        let was = self.inner.active.swap(active, Ordering::Relaxed);
        if was != active {
            tracing::info!(active, "shard leases: this worker can consume: {active}");
        }
    }

    /// What to consume; changes as leases are taken, handed over or lapse.
    pub fn assignment(&self) -> watch::Receiver<Assignment> {
        self.inner.view.subscribe()
    }

    /// Renews, takes and hands over shards every third of the lease's life
    /// until `stop`. The worker calls [`ShardLeases::leave`] once its
    /// consumers stopped.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let every = self.inner.ttl / 3;
        loop {
            if !self.inner.active.load(Ordering::Relaxed) {
                let held = !self
                    .inner
                    .held
                    .lock()
                    .expect("not poisoned")
                    .until
                    .is_empty();
                if held || self.inner.view.borrow().members > 0 {
                    self.leave().await;
                }
                tokio::select! {
                    () = sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            // A round that hangs (PostgreSQL away) must not hold up the
            // fencing below.
            match tokio::time::timeout(every / 2, self.tick()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing shard leases failed"),
                Err(_) => tracing::warn!("renewing shard leases timed out"),
            }
            self.publish(every);
            tokio::select! {
                () = sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One round: renew the membership and our leases, then take or hand
    /// over shards to reach our share.
    async fn tick(&self) -> Result<(), sqlx::Error> {
        let inner = &self.inner;
        let sent = Instant::now();
        let ttl = inner.ttl.as_secs_f64();
        sqlx::query(
            "INSERT INTO shard_members (grp, holder, expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3)) \
             ON CONFLICT (grp, holder) DO UPDATE SET expires_at = EXCLUDED.expires_at",
        )
        .bind(&inner.group)
        .bind(&inner.holder)
        .bind(ttl)
        .execute(&inner.pool)
        .await?;
        // Workers that died long ago (each process has a holder of its own).
        sqlx::query(
            "DELETE FROM shard_members WHERE grp = $1 AND expires_at < now() - interval '1 hour'",
        )
        .bind(&inner.group)
        .execute(&inner.pool)
        .await?;
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT holder FROM shard_members \
             WHERE grp = $1 AND expires_at > now() ORDER BY holder",
        )
        .bind(&inner.group)
        .fetch_all(&inner.pool)
        .await?;
        let share = share_of(inner.shards, &members, &inner.holder);
        // Renew what we hold, except hand-overs that ran too long: those
        // lapse by themselves.
        let keep: Vec<i32> = {
            let held = inner.held.lock().expect("not poisoned");
            held.until
                .keys()
                .filter(|s| {
                    held.releasing
                        .get(s)
                        .is_none_or(|since| since.elapsed() < HANDOVER_LIMIT)
                })
                .map(|s| i32::from(*s))
                .collect()
        };
        let renewed: Vec<i32> = sqlx::query_scalar(
            "UPDATE shard_leases SET expires_at = now() + make_interval(secs => $4) \
             WHERE grp = $1 AND holder = $2 AND shard = ANY($3) RETURNING shard",
        )
        .bind(&inner.group)
        .bind(&inner.holder)
        .bind(&keep)
        .bind(ttl)
        .fetch_all(&inner.pool)
        .await?;
        let consuming = {
            let mut held = inner.held.lock().expect("not poisoned");
            let renewed: BTreeSet<u16> = renewed.iter().map(|s| *s as u16).collect();
            for (shard, until) in held.until.iter_mut() {
                if renewed.contains(shard) {
                    *until = sent + inner.ttl;
                }
            }
            held.share = share;
            held.members = members.len();
            // Past our share: hand over the highest, so shares settle the
            // same way on every worker.
            let consuming: Vec<u16> = held
                .until
                .keys()
                .filter(|s| !held.releasing.contains_key(s))
                .copied()
                .collect();
            for shard in consuming.iter().skip(usize::from(share)) {
                tracing::info!(shard, share, "handing over a shard");
                held.releasing.insert(*shard, Instant::now());
            }
            consuming.len()
        };
        let wanted = usize::from(share).saturating_sub(consuming);
        if wanted > 0 {
            self.take(wanted, sent).await?;
        }
        Ok(())
    }

    /// Takes up to `wanted` shards that nobody holds (or whose lease expired).
    async fn take(&self, wanted: usize, sent: Instant) -> Result<(), sqlx::Error> {
        let inner = &self.inner;
        // In random order, so workers starting together rarely race.
        let free: Vec<i32> = sqlx::query_scalar(
            "SELECT s FROM generate_series(0, $2 - 1) AS s \
             WHERE NOT EXISTS (SELECT 1 FROM shard_leases l \
                               WHERE l.grp = $1 AND l.shard = s AND l.expires_at > now()) \
             ORDER BY random() LIMIT $3",
        )
        .bind(&inner.group)
        .bind(i32::from(inner.shards))
        .bind(wanted as i64)
        .fetch_all(&inner.pool)
        .await?;
        for shard in free {
            let taken: Option<i64> = sqlx::query_scalar(
                "INSERT INTO shard_leases (grp, shard, holder, term, expires_at) \
                 VALUES ($1, $2, $3, 1, now() + make_interval(secs => $4)) \
                 ON CONFLICT (grp, shard) DO UPDATE SET \
                   holder = EXCLUDED.holder, term = shard_leases.term + 1, \
                   expires_at = EXCLUDED.expires_at \
                 WHERE shard_leases.expires_at <= now() \
                 RETURNING term",
            )
            .bind(&inner.group)
            .bind(shard)
            .bind(&inner.holder)
            .bind(inner.ttl.as_secs_f64())
            .fetch_optional(&inner.pool)
            .await?;
            if let Some(term) = taken {
                tracing::info!(shard, term, "took a shard");
                let mut held = inner.held.lock().expect("not poisoned");
                held.until.insert(shard as u16, sent + inner.ttl);
            }
        }
        Ok(())
    }

    /// Publishes what to consume: held shards not being handed over whose
    /// lease outlasts the next round with room to spare (rounds come up to
    /// half the lease apart: a pause of a third and a round that timed out
    /// after a sixth), so one failed renewal stops their consumers well
    /// before anyone else may take them; drops leases that lapsed.
    fn publish(&self, every: Duration) {
        let fence = Instant::now() + every * 7 / 4;
        let mut held = self.inner.held.lock().expect("not poisoned");
        let now = Instant::now();
        let lapsed: Vec<u16> = held
            .until
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(s, _)| *s)
            .collect();
        for shard in lapsed {
            tracing::warn!(shard, "a shard lease lapsed");
            held.until.remove(&shard);
            held.releasing.remove(&shard);
        }
        let consume = held
            .until
            .iter()
            .filter(|(s, until)| **until > fence && !held.releasing.contains_key(s))
            .map(|(s, until)| (*s, *until))
            .collect();
        let assignment = Assignment {
            consume,
            share: held.share,
            members: held.members,
        };
        metrics::gauge!("reelay_worker_shards_consumed").set(assignment.consume.len() as f64);
        self.inner.view.send_if_modified(|current| {
            let changed = *current != assignment;
            *current = assignment;
            changed
        });
    }

    /// The consumer of `shard` stopped after a hand-over: the next worker
    /// may take it now.
    pub async fn let_go(&self, shard: u16) {
        let inner = &self.inner;
        {
            let mut held = inner.held.lock().expect("not poisoned");
            held.until.remove(&shard);
            held.releasing.remove(&shard);
        }
        let deleted =
            sqlx::query("DELETE FROM shard_leases WHERE grp = $1 AND shard = $2 AND holder = $3")
                .bind(&inner.group)
                .bind(i32::from(shard))
                .bind(&inner.holder)
                .execute(&inner.pool)
                .await;
        match deleted {
            Ok(_) => tracing::info!(shard, "handed over a shard"),
            Err(e) => {
                tracing::warn!(shard, error = %e, "letting a shard go failed; its lease expires by itself")
            }
        }
    }

    /// Whether `shard` is being handed over (its consumer stopped for that,
    /// not for a lapsed lease or a new prefetch).
    pub fn releasing(&self, shard: u16) -> bool {
        let held = self.inner.held.lock().expect("not poisoned");
        held.releasing.contains_key(&shard)
    }

    /// Until when the lease on `shard` is ours, locally, if it is.
    pub fn deadline(&self, shard: u16) -> Option<Instant> {
        let held = self.inner.held.lock().expect("not poisoned");
        held.until.get(&shard).copied()
    }

    /// The shards being handed over.
    pub fn releasing_shards(&self) -> Vec<u16> {
        let held = self.inner.held.lock().expect("not poisoned");
        held.releasing.keys().copied().collect()
    }

    /// Gives up every lease and the membership, so the others take over at
    /// their next tick; for a worker whose consumers stopped.
    pub async fn leave(&self) {
        let inner = &self.inner;
        *inner.held.lock().expect("not poisoned") = Held::default();
        inner.view.send_replace(Assignment::default());
        let left = async {
            sqlx::query("DELETE FROM shard_leases WHERE grp = $1 AND holder = $2")
                .bind(&inner.group)
                .bind(&inner.holder)
                .execute(&inner.pool)
                .await?;
            sqlx::query("DELETE FROM shard_members WHERE grp = $1 AND holder = $2")
                .bind(&inner.group)
                .bind(&inner.holder)
                .execute(&inner.pool)
                .await
        };
        match left.await {
            Ok(_) => tracing::info!("gave up the shard leases"),
            Err(e) => tracing::warn!(error = %e, "giving up the shard leases failed; they expire"),
        }
    }
}

/// The number of shards is fixed once a deployment ran: every upload's
/// chunks go to shard (id mod shards), so another number would send an
/// upload's next chunks to a queue whose consumer knows nothing of the ones
/// before. Records the topology's count for its queue prefix on first start
/// and refuses another number after.
///
/// A deployment from before counts were recorded (their default was 4) has
/// no record: on the first start the broker's chunk queues are counted
/// instead, and if they are of another number and still hold ready chunks,
/// the start is refused too. Drained queues of another number are no
/// obstacle (that is how the number is changed). Chunks that processes of
/// the old number still hold unacked are not seen (nor, on quorum queues,
/// their consumers: RabbitMQ 3.10's passive declare counted none in our
/// test), hence the README's "stop every api and worker" first. A broker
/// that can't be asked leaves the number unrecorded, with a warning: a
/// later start records it.
pub async fn check_count(
    pool: &PgPool,
    topology: &Topology,
    amqp_url: &str,
    name: &str,
) -> anyhow::Result<()> {
    let (group, shards) = (&topology.prefix, topology.shards);
    let recorded: Option<i32> =
        sqlx::query_scalar("SELECT shards FROM shard_counts WHERE grp = $1")
            .bind(group)
            .fetch_optional(pool)
            .await?;
    if recorded.is_none() {
        let counted =
            tokio::time::timeout(PROBE_TIMEOUT, chunk_queues_found(topology, amqp_url, name))
                .await
                .map_err(|_| anyhow::anyhow!("the broker did not answer in {PROBE_TIMEOUT:?}"))
                .and_then(|counted| Ok(counted?));
        match counted {
            Ok(found) if found.queues != 0 && found.queues != shards && found.ready > 0 => {
                anyhow::bail!(
                    "REELAY_SHARDS is {shards} but the broker's chunk queues under prefix \
                     {group:?} are {queues} and hold {ready} chunks of uploads in progress \
                     (left by a deployment that ran {queues}, such as one from before shard \
                     counts were recorded, whose default was 4): an upload's chunks must keep \
                     going to the same shard. Start with REELAY_SHARDS={queues}, or change the \
                     number as the README's 'Scaling workers' says (stop every api and worker \
                     and let the chunk queues drain first)",
                    queues = found.queues,
                    ready = found.ready,
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "could not count the broker's chunk queues; REELAY_SHARDS={shards} is \
                     recorded by a later start that can"
                );
                return Ok(());
            }
        }
        sqlx::query(
            "INSERT INTO shard_counts (grp, shards) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(group)
        .bind(i32::from(shards))
        .execute(pool)
        .await?;
    }
    let recorded: i32 = sqlx::query_scalar("SELECT shards FROM shard_counts WHERE grp = $1")
        .bind(group)
        .fetch_one(pool)
        .await?;
    if recorded != i32::from(shards) {
        anyhow::bail!(
            "REELAY_SHARDS is {shards} but the deployment with queue prefix {group:?} runs \
             {recorded} chunk shards: an upload's chunks must keep going to the same shard. \
             Start with REELAY_SHARDS={recorded}, or change the number as the README's \
             'Scaling workers' says (stop every api and worker, let the chunk queues drain, \
             then delete the recorded number)"
        );
    }
    Ok(())
}

/// How long counting the broker's chunk queues may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The chunk queues the broker has under a prefix.
#[derive(Debug, Default)]
struct ChunkQueues {
    /// `chunks.0` upward, up to the first missing.
    queues: u16,
    /// Messages ready in them.
    ready: u64,
}

async fn chunk_queues_found(
    topology: &Topology,
    amqp_url: &str,
    name: &str,
) -> Result<ChunkQueues, lapin::Error> {
    let connection = crate::mq::connect(amqp_url, &format!("{name}-shard-count")).await?;
    let channel = connection.create_channel().await?;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let mut found = ChunkQueues::default();
    let counted = loop {
        if found.queues == u16::MAX {
            break Ok(());
        }
        let queue = topology.chunk_queue(found.queues);
        match channel
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await
        {
            Ok(queue) => {
                found.ready += u64::from(queue.message_count());
                found.queues += 1;
            }
            // 404 (which closes the channel): the end of the count.
            Err(e) if is_not_found(&e) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let _ = connection.close(200, "counted".into()).await;
    counted.map(|()| found)
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w{i}")).collect()
    }

    #[test]
    fn shares_split_the_shards_evenly_and_add_up() {
        for shards in [1u16, 2, 4, 7, 32, 64] {
            for n in 1..=9 {
                let members = names(n);
                let shares: Vec<u16> = members
                    .iter()
                    .map(|m| share_of(shards, &members, m))
                    .collect();
                assert_eq!(shares.iter().sum::<u16>(), shards, "{shards} over {n}");
                let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(max - min <= 1, "{shards} over {n}: {shares:?}");
                assert!(*max <= shards.div_ceil(n as u16));
            }
        }
    }

    #[test]
    fn a_worker_not_yet_a_member_takes_nothing() {
        assert_eq!(share_of(32, &names(3), "stranger"), 0);
    }
}

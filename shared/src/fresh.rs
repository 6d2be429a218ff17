//! Rows cached in each replica and kept exact by PostgreSQL's
//! LISTEN/NOTIFY: what the app's status poll reads, served without a
//! query per poll.
//!
//! Triggers on the cached tables notify the key of every changed row in
//! the writing transaction (`migrations/0013_fresh_caches.sql`), whoever
//! writes it: an append, a rebuild, an ETL, a hand-made fix. A cached
//! answer is exact, not merely recent: before it looks, a read waits for a
//! *sync*, a `SELECT 1` on the listening connection sent after the read
//! began. PostgreSQL hands a session the notifications it has received
//! before that statement's `ReadyForQuery`, and a commit has signalled
//! every listener before its own client hears it committed; so when the
//! sync returns, every change the reader could have seen has evicted its
//! rows, on this replica as on any other. Reads that arrive together share
//! one sync: PostgreSQL answers one trivial statement for many polls.
//!
//! A miss reads the database and keeps the row only if nothing evicted
//! its key meanwhile (a placeholder marks the fill; an eviction removes
//! it). When the listening connection fails, the cache empties and reads
//! go straight to the database until a new connection listens again.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{
    PgPool,
    postgres::{PgListener, PgPoolOptions},
};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// The channel the triggers notify a changed video's id on (`*`: all).
pub const VIDEO_CHANGED: &str = "video_changed";

/// The channel the triggers notify a user's id on when their profile or
/// its video changes (`*`: all).
pub const PROFILE_CHANGED: &str = "profile_changed";

/// How the listening connection names itself in `pg_stat_activity`.
pub const LISTENER_NAME: &str = "reelay fresh cache";

/// How long a read waits for a sync before it asks the database itself.
const SYNC_WAIT: Duration = Duration::from_secs(2);
/// How long a sync may take before its connection counts as lost.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Between attempts to listen again after a failure.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// An idle listener still drains its notifications this often (and ends
/// this long after its cache is dropped).
const IDLE_SYNC: Duration = Duration::from_secs(1);
/// Askers kept per row; past it the row's askers start over.
const ASKERS_PER_ROW: usize = 64;

/// Values of type `V` per (row, asker), where the row is what the
/// notifications name and the asker is who the value was read for (what
/// one viewer sees of a video differs from what another sees).
pub struct FreshCache<V> {
    shared: Arc<Shared<V>>,
}

impl<V> Clone for FreshCache<V> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<V> {
    /// `None` when the cache is off: every read asks the database.
    entries: Option<Mutex<Entries<V>>>,
    /// What the logs and metrics call it.
    name: &'static str,
    counters: Counters,
    /// Syncs begun; a read waits for one numbered above what it saw.
    begun: AtomicU64,
    /// Asks the listener for a sync.
    wake: Notify,
    /// The last sync that ended.
    ended: watch::Sender<Ended>,
}

/// `reelay_cache_reads_total` by outcome and `reelay_cache_syncs_total`,
/// registered once (a lookup per read shows in a poll's profile).
struct Counters {
    hits: metrics::Counter,
    misses: metrics::Counter,
    bypasses: metrics::Counter,
    syncs: metrics::Counter,
}

impl Counters {
    fn of(cache: &'static str) -> Self {
        // Handles made before the recorder exists would count nowhere.
        crate::telemetry::metrics_handle();
        let reads = |outcome: &'static str| metrics::counter!("reelay_cache_reads_total", "cache" => cache, "outcome" => outcome);
        Self {
            hits: reads("hit"),
            misses: reads("miss"),
            bypasses: reads("bypass"),
            syncs: metrics::counter!("reelay_cache_syncs_total", "cache" => cache),
        }
    }
}

#[derive(Clone, Copy)]
struct Ended {
    sync: u64,
    /// The connection listened throughout: the cache may answer.
    vouched: bool,
}

struct Entries<V> {
    rows: HashMap<Uuid, Vec<(Uuid, Slot<V>)>>,
    /// Slots held, over all rows and askers.
    len: usize,
    /// Slots held at most.
    capacity: usize,
    next_fill: u64,
}

enum Slot<V> {
    /// A read of the database is under way; it may keep its value.
    Filling(u64),
    Ready(V),
}

impl<V> Entries<V> {
    fn slot(&mut self, row: Uuid, asker: Uuid) -> Option<&mut Slot<V>> {
        let askers = self.rows.get_mut(&row)?;
        askers.iter_mut().find(|(a, _)| *a == asker).map(|(_, s)| s)
    }

    /// Marks a fill of `(row, asker)` and returns its number.
    fn begin_fill(&mut self, row: Uuid, asker: Uuid) -> u64 {
        self.next_fill += 1;
        let fill = self.next_fill;
        if let Some(slot) = self.slot(row, asker) {
            *slot = Slot::Filling(fill);
            return fill;
        }
        if self.len >= self.capacity {
            // Full: start over rather than track what was used when.
            self.clear();
        }
        let askers = self.rows.entry(row).or_default();
        if askers.len() >= ASKERS_PER_ROW {
            self.len -= askers.len();
            askers.clear();
        }
        askers.push((asker, Slot::Filling(fill)));
        self.len += 1;
        fill
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.len = 0;
    }

    /// Keeps `value` if fill `fill` is still the one marked.
    fn end_fill(&mut self, row: Uuid, asker: Uuid, fill: u64, value: &V)
    where
        V: Clone,
    {
        if let Some(slot) = self.slot(row, asker)
            && matches!(slot, Slot::Filling(f) if *f == fill)
        {
            *slot = Slot::Ready(value.clone());
        }
    }

    fn evict(&mut self, payload: &str) {
        match payload.parse::<Uuid>() {
            Ok(row) => {
                if let Some(askers) = self.rows.remove(&row) {
                    self.len -= askers.len();
                }
            }
            // `*`, or anything else: all of it may have changed.
            Err(_) => self.clear(),
        }
    }
}

impl<V: Clone + Send + 'static> FreshCache<V> {
    /// A cache of at most `capacity` values (0: off, every read asks the
    /// database), evicted by the notifications on `channel`, with its own
    /// listening connection to `pool`'s database.
    pub fn start(
        pool: &PgPool,
        channel: &'static str,
        name: &'static str,
        capacity: usize,
    ) -> Self {
        let (ended, _) = watch::channel(Ended {
            sync: 0,
            vouched: false,
        });
        let shared = Arc::new(Shared {
            entries: (capacity > 0).then(|| {
                Mutex::new(Entries {
                    rows: HashMap::new(),
                    len: 0,
                    capacity,
                    next_fill: 0,
                })
            }),
            name,
            counters: Counters::of(name),
            begun: AtomicU64::new(0),
            wake: Notify::new(),
            ended,
        });
        if capacity > 0 {
            let options = pool
                .connect_options()
                .as_ref()
                .clone()
                .application_name(LISTENER_NAME);
            // One connection: reads that arrive while a sync is under way
            // share the next (a second, syncing alongside, gave no more
            // polls per second).
            let listen_to = PgPoolOptions::new()
                .max_connections(1)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_lazy_with(options);
            tokio::spawn(listen(Arc::downgrade(&shared), listen_to, channel));
        }
        Self { shared }
    }

    /// `(row, asker)`'s value as the database holds it now: from the cache,
    /// or from `load` (kept for the next read if nothing changed meanwhile).
    pub async fn get<F, Fut, E>(&self, row: Uuid, asker: Uuid, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let shared = &self.shared;
        let Some(entries) = &shared.entries else {
            return load().await;
        };
        if !shared.sync().await {
            shared.counters.bypasses.increment(1);
            return load().await;
        }
        let fill = {
            let mut entries = entries.lock().expect("cache lock");
            if let Some(Slot::Ready(value)) = entries.slot(row, asker) {
                shared.counters.hits.increment(1);
                return Ok(value.clone());
            }
            entries.begin_fill(row, asker)
        };
        shared.counters.misses.increment(1);
        let value = load().await?;
        entries
            .lock()
            .expect("cache lock")
            .end_fill(row, asker, fill, &value);
        Ok(value)
    }

    /// The values of `rows` for `asker`, in their order, after one sync:
    /// the cached ones, and the others from one `load` of those missing
    /// (answering each with its row; `None` for a row it did not answer).
    pub async fn get_many<F, Fut, E>(
        &self,
        rows: &[Uuid],
        asker: Uuid,
        load: F,
    ) -> Result<Vec<Option<V>>, E>
    where
        F: FnOnce(Vec<Uuid>) -> Fut,
        Fut: Future<Output = Result<Vec<(Uuid, V)>, E>>,
    {
        let shared = &self.shared;
        let entries = match &shared.entries {
            Some(entries) if shared.sync().await => entries,
            entries => {
                if entries.is_some() {
                    shared.counters.bypasses.increment(rows.len() as u64);
                }
                let loaded: HashMap<Uuid, V> = load(rows.to_vec()).await?.into_iter().collect();
                return Ok(rows.iter().map(|row| loaded.get(row).cloned()).collect());
            }
        };
        let mut found = Vec::with_capacity(rows.len());
        let mut fills = Vec::new();
        {
            let mut entries = entries.lock().expect("cache lock");
            for &row in rows {
                match entries.slot(row, asker) {
                    Some(Slot::Ready(value)) => found.push(Some(value.clone())),
                    _ => {
                        fills.push((row, entries.begin_fill(row, asker)));
                        found.push(None);
                    }
                }
            }
        }
        let (hits, misses) = (rows.len() - fills.len(), fills.len());
        shared.counters.hits.increment(hits as u64);
        shared.counters.misses.increment(misses as u64);
        if fills.is_empty() {
            return Ok(found);
        }
        let loaded: HashMap<Uuid, V> = load(fills.iter().map(|(row, _)| *row).collect())
            .await?
            .into_iter()
            .collect();
        let mut entries = entries.lock().expect("cache lock");
        for &(row, fill) in &fills {
            if let Some(value) = loaded.get(&row) {
                entries.end_fill(row, asker, fill, value);
            }
        }
        drop(entries);
        for (row, slot) in rows.iter().zip(found.iter_mut()) {
            if slot.is_none() {
                *slot = loaded.get(row).cloned();
            }
        }
        Ok(found)
    }
}

impl<V> Shared<V> {
    /// Waits for a sync begun after this call; true if the cache may answer.
    async fn sync(&self) -> bool {
        let mut ended = self.ended.subscribe();
        let after = self.begun.load(Ordering::SeqCst);
        self.wake.notify_one();
        match tokio::time::timeout(SYNC_WAIT, ended.wait_for(|e| e.sync > after)).await {
            Ok(Ok(ended)) => ended.vouched,
            _ => false,
        }
    }

    fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.lock().expect("cache lock").clear();
        }
    }

    fn evict(&self, payload: &str) {
        if let Some(entries) = &self.entries {
            entries.lock().expect("cache lock").evict(payload);
        }
    }
}

/// The listener: syncs when asked (or every [`IDLE_SYNC`]), evicting what
/// each sync brought; ends once the cache is dropped.
async fn listen<V>(shared: Weak<Shared<V>>, pool: PgPool, channel: &'static str) {
    let mut listener: Option<PgListener> = None;
    let mut retry_at = Instant::now();
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let _ = tokio::time::timeout(IDLE_SYNC, shared.wake.notified()).await;
        let sync = shared.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let vouched = sync_once(&shared, &mut listener, &mut retry_at, &pool, channel).await;
        shared.counters.syncs.increment(1);
        shared.ended.send_replace(Ended { sync, vouched });
    }
}

async fn sync_once<V>(
    shared: &Shared<V>,
    listener: &mut Option<PgListener>,
    retry_at: &mut Instant,
    pool: &PgPool,
    channel: &str,
) -> bool {
    if listener.is_none() {
        if Instant::now() < *retry_at {
            return false;
        }
        let listening = async {
            let mut l = PgListener::connect_with(pool).await?;
            l.ignore_pool_close_event(true);
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match tokio::time::timeout(SYNC_TIMEOUT, listening).await {
            Ok(Ok(l)) => {
                // Nothing kept from before this connection listened.
                shared.clear();
                *listener = Some(l);
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(cache = shared.name, %error, "cannot listen for changes; reads go to the database");
                *retry_at = Instant::now() + RECONNECT_PAUSE;
                return false;
            }
        }
    }
    let l = listener.as_mut().expect("listening");
    // The simple protocol: one message each way, nothing to bind.
    let sync = sqlx::raw_sql("SELECT 1").execute(&mut *l);
    match tokio::time::timeout(SYNC_TIMEOUT, sync).await {
        Ok(Ok(_)) => {
            while let Some(notification) = l.next_buffered() {
                shared.evict(notification.payload());
            }
            true
        }
        failed => {
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            tracing::warn!(cache = shared.name, %error, "lost the connection that listens for changes; the cache is emptied");
            *listener = None;
            shared.clear();
            *retry_at = Instant::now() + RECONNECT_PAUSE;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Entries<u32> {
        Entries {
            rows: HashMap::new(),
            len: 0,
            capacity: 2,
            next_fill: 0,
        }
    }

    #[test]
    fn a_fill_is_kept_only_if_nothing_evicted_its_row_meanwhile() {
        let (row, asker) = (Uuid::new_v4(), Uuid::new_v4());
        let mut e = entries();
        let fill = e.begin_fill(row, asker);
        e.evict(&row.to_string());
        e.end_fill(row, asker, fill, &1);
        assert!(e.slot(row, asker).is_none(), "an evicted fill is not kept");

        let fill = e.begin_fill(row, asker);
        e.end_fill(row, asker, fill, &2);
        assert!(matches!(e.slot(row, asker), Some(Slot::Ready(2))));

        // Two fills at once: only the later one's value is kept.
        let first = e.begin_fill(row, asker);
        let second = e.begin_fill(row, asker);
        e.end_fill(row, asker, first, &3);
        assert!(matches!(e.slot(row, asker), Some(Slot::Filling(f)) if *f == second));
        e.end_fill(row, asker, second, &4);
        assert!(matches!(e.slot(row, asker), Some(Slot::Ready(4))));
    }

    #[test]
    fn an_eviction_names_a_row_for_every_asker_or_everything() {
        let (row, other) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut e = entries();
        for (r, asker) in [(row, a), (row, b), (other, a)] {
            let fill = e.begin_fill(r, asker);
            e.end_fill(r, asker, fill, &7);
        }
        e.evict(&row.to_string());
        assert!(e.slot(row, a).is_none() && e.slot(row, b).is_none());
        assert!(e.slot(other, a).is_some());
        e.evict("*");
        assert!(e.rows.is_empty());
    }

    #[test]
    fn a_full_cache_starts_over_counting_every_asker() {
        let mut e = entries();
        let row = Uuid::new_v4();
        for asker in [Uuid::new_v4(), Uuid::new_v4()] {
            let fill = e.begin_fill(row, asker);
            e.end_fill(row, asker, fill, &0);
        }
        assert_eq!(e.len, 2);
        let other = Uuid::new_v4();
        e.begin_fill(other, Uuid::nil());
        assert_eq!(
            (e.rows.len(), e.len),
            (1, 1),
            "the third value started a new cache"
        );
        assert!(e.slot(other, Uuid::nil()).is_some());
        e.evict(&other.to_string());
        assert_eq!(e.len, 0);
    }
}

//! Leader election by lease, as River does it: one row in `leases` names the
//! holder and an expiry that the holder renews every third of the lease's
//! life. Anyone may take the row once it has expired, so a dead leader is
//! replaced within the lease's life plus one renewal interval.
//!
//! The holder keeps a local deadline: the instant it *sent* the renewal plus
//! the lease's life. The database set its expiry from its own `now()`, which
//! came later, so the local deadline never outlives the row; work that
//! checks [`Lease::held_for`] before each step can't overlap the next
//! leader's.

use std::time::Duration;

use sqlx::PgPool;
use tokio::{
    sync::watch,
    time::{Instant, sleep},
};

/// This replica's view of the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Grows by one each time the lease changes hands.
    pub term: i64,
    /// Until when this replica may act as leader.
    pub until: Instant,
}

/// A handle on one named lease; clones share the same state.
#[derive(Clone)]
pub struct Lease {
    pool: PgPool,
    name: String,
    holder: String,
    ttl: Duration,
    state: watch::Sender<Option<Held>>,
}

impl Lease {
    /// `holder` must be unique per process (replica name plus a random part),
    /// so a restarted replica never mistakes its predecessor's lease for its own.
    pub fn new(pool: PgPool, name: &str, holder: String, ttl: Duration) -> Self {
        Self {
            pool,
            name: name.to_owned(),
            holder,
            ttl,
            state: watch::Sender::new(None),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The term, while this replica leads with at least `margin` of the lease
    /// left: a step that takes at most `margin` ends before anyone else can
    /// take over.
    pub fn held_for(&self, margin: Duration) -> Option<i64> {
        let held = (*self.state.borrow())?;
        (held.until > Instant::now() + margin).then_some(held.term)
    }

    pub fn is_leader(&self) -> bool {
        self.held_for(Duration::ZERO).is_some()
    }

    /// Resolves once this replica leads (at once if it does).
    pub async fn leading(&self) {
        let mut state = self.state.subscribe();
        let _ = state
            .wait_for(|held| held.is_some_and(|h| h.until > Instant::now()))
            .await;
    }

    /// Campaigns for the lease and renews it until `stop`, then gives it up
    /// so a standby takes over at once.
    pub async fn campaign(&self, mut stop: watch::Receiver<bool>) {
        let every = self.ttl / 3;
        loop {
            let sent = Instant::now();
            let was = *self.state.borrow();
            match self.try_acquire().await {
                Ok(Some(term)) => {
                    if was.is_none_or(|h| h.term != term) {
                        tracing::info!(lease = %self.name, holder = %self.holder, term, "leading");
                        metrics::gauge!("reelay_scheduler_leader").set(1.0);
                    }
                    self.state.send_replace(Some(Held {
                        term,
                        until: sent + self.ttl,
                    }));
                }
                Ok(None) => {
                    if was.is_some() {
                        tracing::warn!(lease = %self.name, holder = %self.holder, "lost the lease to another replica");
                        metrics::gauge!("reelay_scheduler_leader").set(0.0);
                    }
                    self.state.send_replace(None);
                }
                // Keep the local deadline: it lapses by itself unless a
                // renewal gets through first.
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "renewing the lease failed");
                }
            }
            tokio::select! {
                () = sleep(every) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if self.state.send_replace(None).is_some() {
            self.release().await;
            metrics::gauge!("reelay_scheduler_leader").set(0.0);
            tracing::info!(lease = %self.name, holder = %self.holder, "gave up the lease");
        }
    }

    /// Takes the lease if it is free or expired, renews it if it is ours;
    /// the term when we hold it.
    async fn try_acquire(&self) -> Result<Option<i64>, sqlx::Error> {
        let row: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO leases (name, holder, term, acquired_at, expires_at) \
             VALUES ($1, $2, 1, now(), now() + make_interval(secs => $3)) \
             ON CONFLICT (name) DO UPDATE SET \
               holder = EXCLUDED.holder, \
               term = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > now() \
                      THEN leases.term ELSE leases.term + 1 END, \
               acquired_at = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > now() \
                      THEN leases.acquired_at ELSE now() END, \
               expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= now() \
             RETURNING term",
        )
        .bind(&self.name)
        .bind(&self.holder)
        .bind(self.ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(term,)| term))
    }

    async fn release(&self) {
        let released = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(&self.name)
            .bind(&self.holder)
            .execute(&self.pool)
            .await;
        if let Err(e) = released {
            tracing::warn!(lease = %self.name, error = %e, "releasing the lease failed; it expires by itself");
        }
    }
}

/// A holder name unique to this process: the replica's name and a random part.
pub fn holder_name(replica: &str) -> String {
    format!(
        "{replica}/{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Who holds a lease now, if anyone (for `/readyz` and tests).
pub async fn current_holder(pool: &PgPool, name: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT holder FROM leases WHERE name = $1 AND expires_at > now()")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(holder,)| holder))
}

//! The event store, written once for every product: an append-only log with
//! a per-aggregate version (optimistic concurrency) and a global sequence,
//! projections applied in the same transaction as each event, and the
//! rebuild that replays the log into them.
//!
//! A product describes each of its aggregates with [`Aggregate`]: how its
//! current state is loaded, how an event changes its projections, and what
//! else an event writes in its transaction (an outbox). Writers then call
//! [`Store::append`] with the aggregate's id and a `decide` function; the
//! product's queries are its own (`impl Store` blocks in its folder).

use std::future::Future;

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{PgConnection, PgPool, Postgres, Transaction, postgres::PgPoolOptions, types::Json};
use uuid::Uuid;

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The advisory lock that orders writers against a projection rebuild.
/// Every append takes it shared as the first step of its transaction; a
/// rebuild takes it exclusively. So a rebuild waits for the appends in
/// flight and holds up new ones before they lock anything else, and the two
/// can never deadlock on the row and table locks each takes afterwards
/// (which they would, taken in opposite orders: an append locks its
/// projection row, then the log; a rebuild, the log, then the projections).
const PROJECTIONS_LOCK: i64 = 0x7265_656c_6179_0001;

/// An event of some aggregate, as stored in `events.payload`.
pub trait Event: Serialize + DeserializeOwned + Send + Sync {
    /// `events.kind`: the event's name in the log.
    fn kind(&self) -> &'static str;
}

/// One kind of aggregate: its events, the state `decide` sees, and its
/// projections.
pub trait Aggregate: Send + Sync + 'static {
    /// `events.aggregate_type`, which tells the rebuild whose event it is.
    const TYPE: &'static str;
    /// Its projection tables, in the order a rebuild empties them.
    const TABLES: &'static [&'static str];
    /// Whether it may be appended in bulk ([`AppendTx::append_many`]): it
    /// has no [`Aggregate::recorded`] hook to miss.
    const BULK: bool = false;
    type Id: AggregateId<Aggregate = Self>;
    type Event: Event;
    /// What `decide` sees: the aggregate's projection rows.
    type State: Send + Sync;
    /// Why `decide` refuses a command, per aggregate: mapped to HTTP once,
    /// at the api's boundary.
    type Rejection: std::error::Error + Send + Sync + 'static;

    /// The current state; with `for_update`, its rows locked for the
    /// transaction.
    fn load(
        conn: &mut PgConnection,
        id: Self::Id,
        for_update: bool,
    ) -> impl Future<Output = Result<Self::State, sqlx::Error>> + Send;

    /// The version of the last event applied (0 before the first).
    fn version(state: &Self::State) -> i32;

    /// Applies one event to the projections. Uses only the event and its
    /// `recorded_at`, so replaying the log reproduces the rows exactly.
    fn apply(
        conn: &mut PgConnection,
        id: Self::Id,
        version: i32,
        event: &Self::Event,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// What else an event writes in its transaction, once recorded as `seq`
    /// (an outbox row); `before` is the state `decide` saw. Not replayed by
    /// a rebuild: it is delivery state, not a projection.
    fn recorded(
        conn: &mut PgConnection,
        id: Self::Id,
        before: &Self::State,
        event: &Self::Event,
        seq: i64,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        let _ = (conn, id, before, event, seq, at);
        async { Ok(()) }
    }

    /// The states of many aggregates, locked, in the order of `ids`: what
    /// [`AppendTx::append_many`] decides on. The default loads them one by
    /// one; an aggregate written in bulk loads them in one statement.
    fn load_many(
        conn: &mut PgConnection,
        ids: &[Self::Id],
    ) -> impl Future<Output = Result<Vec<Self::State>, sqlx::Error>> + Send {
        async move {
            let mut states = Vec::with_capacity(ids.len());
            for id in ids {
                states.push(Self::load(&mut *conn, *id, true).await?);
            }
            Ok(states)
        }
    }

    /// Applies many events, in order, as [`Aggregate::apply`] would one by
    /// one (a rebuild does exactly that, so the rows must come out the
    /// same). The default loops; an aggregate written in bulk applies them
    /// in a few set-based statements.
    fn apply_many(
        conn: &mut PgConnection,
        events: &[(Self::Id, i32, &Self::Event)],
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move {
            for (id, version, event) in events {
                Self::apply(&mut *conn, *id, *version, event, at).await?;
            }
            Ok(())
        }
    }
}

/// The id of an aggregate: its type says which aggregate it names.
pub trait AggregateId: Copy + Send + Sync + 'static {
    type Aggregate: Aggregate<Id = Self>;
    fn uuid(self) -> Uuid;
    fn from_uuid(id: Uuid) -> Self;
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError<R> {
    /// The command does not fit the aggregate's current state.
    #[error("rejected: {0}")]
    Rejected(R),
    /// Another writer appended the same version first.
    #[error("another writer changed it at the same time")]
    Conflict,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An append's outcome, for the aggregate `I` names.
pub type Appended<R, I> =
    Result<R, AppendError<<<I as AggregateId>::Aggregate as Aggregate>::Rejection>>;

/// One entry of the event log.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RecordedEvent {
    pub seq: i64,
    pub version: i32,
    pub kind: String,
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&config.url)
            .await?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// The aggregate's current state, unlocked.
    pub async fn load<I: AggregateId>(
        &self,
        id: I,
    ) -> Result<<I::Aggregate as Aggregate>::State, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        I::Aggregate::load(&mut conn, id, false).await
    }

    /// Runs `decide` against the aggregate's current state (locked for the
    /// transaction) and appends the events it returns, applying each to the
    /// projections in the same transaction. `decide` returns the events and
    /// a value handed back to the caller, or a rejection.
    pub async fn append<I, R>(
        &self,
        id: I,
        decide: impl FnOnce(
            &<I::Aggregate as Aggregate>::State,
        ) -> Result<
            (Vec<<I::Aggregate as Aggregate>::Event>, R),
            <I::Aggregate as Aggregate>::Rejection,
        >,
    ) -> Appended<R, I>
    where
        I: AggregateId,
    {
        let mut tx = self.begin().await?;
        let out = tx.append(id, decide).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// As [`Store::append`], deciding again (on the winner's result) when
    /// another writer appended first, up to `attempts` times: for commands
    /// that concurrent requests may race on (the first reaction of a pair,
    /// a profile's video). Still a [`AppendError::Conflict`] after that.
    pub async fn append_retrying<I, R>(
        &self,
        id: I,
        attempts: usize,
        decide: impl Fn(
            &<I::Aggregate as Aggregate>::State,
        ) -> Result<
            (Vec<<I::Aggregate as Aggregate>::Event>, R),
            <I::Aggregate as Aggregate>::Rejection,
        >,
    ) -> Appended<R, I>
    where
        I: AggregateId,
    {
        for _ in 1..attempts {
            match self.append(id, &decide).await {
                Err(AppendError::Conflict) => continue,
                done => return done,
            }
        }
        self.append(id, &decide).await
    }

    /// The events of one aggregate, oldest first.
    pub async fn history<I: AggregateId>(&self, id: I) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        sqlx::query_as(
            "SELECT seq, version, kind, payload, recorded_at FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY seq",
        )
        .bind(I::Aggregate::TYPE)
        .bind(id.uuid())
        .fetch_all(&self.pool)
        .await
    }

    /// A transaction for appends to several aggregates at once (a report
    /// that also ends a device's update, say): all of them commit or none
    /// does. Lock aggregates in a fixed order (by id) to avoid deadlocks.
    pub async fn begin(&self) -> Result<AppendTx, sqlx::Error> {
        Ok(AppendTx {
            tx: begin_append(&self.pool).await?,
        })
    }

    /// Empties the projections and replays the whole log into them, in one
    /// transaction, so readers see either the old rows or the rebuilt ones
    /// and are never blocked; appends wait until it commits. Tables are
    /// emptied last projection first (a later one may refer to an earlier
    /// one's rows). Returns how many events were replayed.
    pub async fn rebuild_projections(
        &self,
        projections: &[&dyn Projection],
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PROJECTIONS_LOCK)
            .execute(&mut *tx)
            .await?;
        // DELETE rather than TRUNCATE: TRUNCATE's exclusive table locks would
        // block every reader until the replay ends.
        for table in projections.iter().rev().flat_map(|p| p.tables()) {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await?;
        }
        // Page through the log so memory does not grow with its length.
        const PAGE: i64 = 1000;
        let (mut replayed, mut after) = (0u64, 0i64);
        loop {
            let rows: Vec<StoredEvent> = sqlx::query_as(
                "SELECT seq, aggregate_type, aggregate_id, version, payload, recorded_at \
                 FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            replayed += rows.len() as u64;
            for row in rows {
                let projection = projections
                    .iter()
                    .find(|p| p.aggregate_type() == row.aggregate_type)
                    .ok_or_else(|| {
                        sqlx::Error::Protocol(format!(
                            "event {} is of aggregate type '{}', which no projection replays",
                            row.seq, row.aggregate_type
                        ))
                    })?;
                projection.replay(&mut tx, row).await?;
            }
        }
        tx.commit().await?;
        Ok(replayed)
    }

    /// Every row of the projections as JSON, ordered, for comparing two states.
    pub async fn projections_snapshot(
        &self,
        projections: &[&dyn Projection],
    ) -> Result<serde_json::Value, sqlx::Error> {
        let mut snapshot = serde_json::Map::new();
        for table in projections.iter().flat_map(|p| p.tables()) {
            let (rows,): (serde_json::Value,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]') FROM {table} t"
            )))
            .fetch_one(&self.pool)
            .await?;
            snapshot.insert((*table).to_owned(), rows);
        }
        Ok(serde_json::Value::Object(snapshot))
    }
}

/// Appends to any aggregates in one transaction; see [`Store::begin`].
pub struct AppendTx {
    tx: Transaction<'static, Postgres>,
}

impl AppendTx {
    /// As [`Store::append`], inside this transaction.
    pub async fn append<I, R>(
        &mut self,
        id: I,
        decide: impl FnOnce(
            &<I::Aggregate as Aggregate>::State,
        ) -> Result<
            (Vec<<I::Aggregate as Aggregate>::Event>, R),
            <I::Aggregate as Aggregate>::Rejection,
        >,
    ) -> Appended<R, I>
    where
        I: AggregateId,
    {
        type A<I> = <I as AggregateId>::Aggregate;
        let current = A::<I>::load(&mut self.tx, id, true).await?;
        let (events, out) = decide(&current).map_err(AppendError::Rejected)?;
        let mut version = A::<I>::version(&current);
        let recorded_at = Utc::now().trunc_subsecs(6);
        for event in &events {
            version += 1;
            let seq = insert_event(
                &mut self.tx,
                A::<I>::TYPE,
                id.uuid(),
                version,
                event.kind(),
                event,
                recorded_at,
            )
            .await?;
            A::<I>::apply(&mut self.tx, id, version, event, recorded_at).await?;
            A::<I>::recorded(&mut self.tx, id, &current, event, seq, recorded_at).await?;
        }
        Ok(out)
    }

    /// Appends to many aggregates of one type at once: their states are
    /// loaded (locked) together, `decide` runs for each in the order of
    /// `ids`, and every event is inserted with one statement and applied
    /// with [`Aggregate::apply_many`]. For bulk writes (a thousand device
    /// reports) where one append per aggregate costs a round trip each.
    /// `ids` must be distinct and sorted (the locking order). The
    /// [`Aggregate::recorded`] hook is not called: only aggregates without
    /// an outbox (`Aggregate::BULK`) may be written this way.
    pub async fn append_many<I, R>(
        &mut self,
        ids: &[I],
        mut decide: impl FnMut(
            I,
            &<I::Aggregate as Aggregate>::State,
        ) -> Result<
            (Vec<<I::Aggregate as Aggregate>::Event>, R),
            <I::Aggregate as Aggregate>::Rejection,
        >,
    ) -> Result<Vec<R>, AppendError<<I::Aggregate as Aggregate>::Rejection>>
    where
        I: AggregateId,
    {
        type A<I> = <I as AggregateId>::Aggregate;
        assert!(
            A::<I>::BULK,
            "{} has an outbox; it is appended one at a time",
            A::<I>::TYPE
        );
        let states = A::<I>::load_many(&mut self.tx, ids).await?;
        let mut outs = Vec::with_capacity(ids.len());
        let mut decided = Vec::new();
        for (id, state) in ids.iter().zip(&states) {
            let (events, out) = decide(*id, state).map_err(AppendError::Rejected)?;
            outs.push(out);
            let mut version = A::<I>::version(state);
            for event in events {
                version += 1;
                decided.push((*id, version, event));
            }
        }
        if decided.is_empty() {
            return Ok(outs);
        }
        let recorded_at = Utc::now().trunc_subsecs(6);
        let (mut uuids, mut versions, mut kinds, mut payloads) = (
            Vec::with_capacity(decided.len()),
            Vec::with_capacity(decided.len()),
            Vec::with_capacity(decided.len()),
            Vec::with_capacity(decided.len()),
        );
        for (id, version, event) in &decided {
            uuids.push(id.uuid());
            versions.push(*version);
            kinds.push(event.kind());
            payloads
                .push(serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        }
        let inserted = sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, version, kind, payload, recorded_at) \
             SELECT $1, i, v, k, p, $6 FROM unnest($2::uuid[], $3::int[], $4::text[], $5::jsonb[]) AS u (i, v, k, p)",
        )
        .bind(A::<I>::TYPE)
        .bind(&uuids)
        .bind(&versions)
        .bind(&kinds)
        .bind(&payloads)
        .bind(recorded_at)
        .execute(&mut *self.tx)
        .await;
        if let Err(e) = inserted {
            return Err(match e.as_database_error().and_then(|d| d.constraint()) {
                Some("events_aggregate_version_key") => AppendError::Conflict,
                _ => AppendError::Database(e),
            });
        }
        let applied: Vec<(I, i32, &<A<I> as Aggregate>::Event)> =
            decided.iter().map(|(id, v, e)| (*id, *v, e)).collect();
        A::<I>::apply_many(&mut self.tx, &applied, recorded_at).await?;
        Ok(outs)
    }

    /// The connection, for the reads and locks a decision needs beyond one
    /// aggregate's state.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// A row of the log as the rebuild reads it.
#[derive(sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub version: i32,
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// What the rebuild needs of one aggregate's projections, as an object, so
/// the list of them is data: see `reelay_shared::PROJECTIONS`.
pub trait Projection: Send + Sync {
    fn aggregate_type(&self) -> &'static str;
    fn tables(&self) -> &'static [&'static str];
    fn replay<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: StoredEvent,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

/// The projections of aggregate `A`, for the rebuild.
pub struct ProjectionOf<A>(std::marker::PhantomData<A>);

impl<A> ProjectionOf<A> {
    pub const fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<A> Default for ProjectionOf<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregate> Projection for ProjectionOf<A> {
    fn aggregate_type(&self) -> &'static str {
        A::TYPE
    }

    fn tables(&self) -> &'static [&'static str] {
        A::TABLES
    }

    fn replay<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        row: StoredEvent,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let event: A::Event = serde_json::from_value(row.payload)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let id = <A::Id as AggregateId>::from_uuid(row.aggregate_id);
            A::apply(conn, id, row.version, &event, row.recorded_at).await
        })
    }
}

/// Starts an append's transaction: the shared side of [`PROJECTIONS_LOCK`]
/// comes before any other lock.
async fn begin_append(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(PROJECTIONS_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Appends one event with the next version of its aggregate and returns its
/// global sequence number; a version someone else took first is a
/// [`AppendError::Conflict`].
async fn insert_event<R>(
    conn: &mut PgConnection,
    aggregate_type: &str,
    id: Uuid,
    version: i32,
    kind: &str,
    payload: &(impl Serialize + Sync),
    recorded_at: DateTime<Utc>,
) -> Result<i64, AppendError<R>> {
    let inserted: Result<(i64,), _> = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, version, kind, payload, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
    )
    .bind(aggregate_type)
    .bind(id)
    .bind(version)
    .bind(kind)
    .bind(Json(payload))
    .bind(recorded_at)
    .fetch_one(&mut *conn)
    .await;
    match inserted {
        Ok((seq,)) => Ok(seq),
        Err(e) => Err(match e.as_database_error().and_then(|d| d.constraint()) {
            Some("events_aggregate_version_key") => AppendError::Conflict,
            _ => AppendError::Database(e),
        }),
    }
}

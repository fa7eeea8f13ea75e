//! PostgreSQL implementation of the metadata seam (feature `postgres`): the tables many nodes
//! share (docs/DESIGN.md section 15).
//!
//! - **Rows.** Each table keeps the row encodings of `format.rs` as given (`bytea`), keyed as
//!   redb keys them; names are `text COLLATE "C"`, so scans come back in byte order, as redb
//!   returns them. Unsigned ids are stored as `bigint`: every id the engine writes is below
//!   2^63 (user numbers below 2^56, domain kinds below 128, pack ids and counters count up from
//!   zero).
//! - **Snapshots.** `read()` holds a `REPEATABLE READ, READ ONLY` transaction on a pooled
//!   connection for the snapshot's life, and ends it when the snapshot is dropped.
//! - **Writes.** `write(f)` runs `f` in a `SERIALIZABLE` transaction. Its changes are kept in
//!   memory (reads inside it see them) and sent at the end as one statement per table and kind
//!   of change (`UNNEST` of arrays), then `COMMIT`. A serialisation failure or deadlock
//!   (SQLSTATE 40001, 40P01) runs `f` again in a fresh transaction, as the seam allows; a
//!   commit whose outcome is unknown (the connection lost during `COMMIT`) poisons this handle,
//!   so no later write builds on a state that may or may not have committed.
//! - **Round trips.** Point reads are one round trip each (statements are sent with their
//!   parameter types, so no prepare round trip), [`MetaRead::chunks`] is one for any number of
//!   keys, the `state` and `counters` tables are read whole once per transaction, and chunk
//!   entries read in a write are cached in it.
//! - **Schema.** `ls_schema` holds the schema version; [`MIGRATIONS`] brings an older schema
//!   up to date in one transaction. A newer one is refused.
//!
//! The SQL stays within what CockroachDB and YugabyteDB run: no advisory locks, no server-side
//! functions; `ON CONFLICT`, `UNNEST` of several arrays and `COLLATE "C"` are in both.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{NoTls, Row};
use r2d2_postgres::PostgresConnectionManager;

use super::{Lease, MetaRead, MetaStore, MetaWrite, stored_track_key, stored_user_id};
use crate::error::{Error, Result};
use crate::format::{
    CHUNK_ENTRY_LEN, ChunkEntry, PACK_ROW_LEN, PackRow, QUOTA_ROW_LEN, QuotaRow, TrackRecord,
    USER_ROW_LEN, UserRow,
};
use crate::ids::{AudioFingerprint, ChunkId, Domain, PackId, UserNo};
use crate::index::filter::ChunkFilter;
#[cfg(feature = "object-store")]
use crate::index::journal::{MetaOp, node_local};
use crate::names::{TrackKey, UserId};

type Manager = PostgresConnectionManager<NoTls>;
type Conn = r2d2::PooledConnection<Manager>;

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i32 = 1;

/// The schema, one step per version: step `i` takes version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &["
    CREATE TABLE ls_state (
        key text COLLATE \"C\" PRIMARY KEY,
        value bytea NOT NULL
    );
    CREATE TABLE ls_counters (
        key text COLLATE \"C\" PRIMARY KEY,
        value bigint NOT NULL
    );
    CREATE TABLE ls_users (
        name text COLLATE \"C\" PRIMARY KEY,
        data bytea NOT NULL
    );
    CREATE TABLE ls_user_names (
        no bigint PRIMARY KEY,
        name text COLLATE \"C\" NOT NULL
    );
    CREATE TABLE ls_tracks (
        user_no bigint NOT NULL,
        key text COLLATE \"C\" NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (user_no, key)
    );
    CREATE TABLE ls_chunks (
        domain bigint NOT NULL,
        id bytea NOT NULL,
        entry bytea NOT NULL,
        garbage_since timestamptz,
        PRIMARY KEY (domain, id)
    );
    CREATE TABLE ls_packs (
        id bigint PRIMARY KEY,
        data bytea NOT NULL
    );
    CREATE TABLE ls_recordings (
        fingerprint bytea NOT NULL,
        user_no bigint NOT NULL,
        key text COLLATE \"C\" NOT NULL,
        PRIMARY KEY (fingerprint, user_no, key)
    );
    CREATE TABLE ls_quotas (
        user_no bigint PRIMARY KEY,
        data bytea NOT NULL
    );
    CREATE TABLE ls_quota_exempt (
        user_no bigint NOT NULL,
        key text COLLATE \"C\" NOT NULL,
        PRIMARY KEY (user_no, key)
    );
    CREATE TABLE ls_leases (
        name text COLLATE \"C\" PRIMARY KEY,
        holder text NOT NULL,
        token bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
"];

/// The name of the lease migration and GC run under.
const MAINTENANCE: &str = "maintenance";

/// Timing of the coordination between nodes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// How long an entry must have been garbage, untouched, before GC may remove it: longer
    /// than any ingest may take.
    pub(crate) garbage_grace: Duration,
    /// How long a lease lasts unless renewed; its holder renews it every third of that.
    pub(crate) lease_ttl: Duration,
    /// The longest a statement of a write may run or wait for a lock: the ingest time limit.
    pub(crate) statement_timeout: Duration,
}

thread_local! {
    /// The lease this thread's write transactions are fenced by: (name, token).
    static FENCE: RefCell<Option<(String, i64)>> = const { RefCell::new(None) };
}

/// Attempts of one write before a run of serialisation failures is reported.
const WRITE_ATTEMPTS: u32 = 64;

/// A database error as the crate's error, with its SQLSTATE when the server sent one.
fn db_error(operation: &str, e: postgres::Error) -> Error {
    // The error's own text is only "db error" for the server's errors: the message, its
    // detail and hint are in the `DbError` (and an I/O cause in the source chain).
    let message = match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                m.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("; hint: {h}"));
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                m.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            m
        }
    };
    Error::Database {
        operation: operation.to_owned(),
        code: e.code().map(|c| c.code().to_owned()),
        message,
    }
}

/// Whether `e` is a failure that running the transaction again may not meet: a serialisation
/// failure or a deadlock.
fn retryable(e: &Error) -> bool {
    matches!(e, Error::Database { code: Some(c), .. } if c == "40001" || c == "40P01")
}

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Metadata(format!("{what} {v} does not fit a bigint")))
}

fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::corrupted(format!("stored {what} {v} is negative")))
}

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N]> {
    v.try_into()
        .map_err(|_| Error::corrupted(format!("stored {what} has {} bytes, not {N}", v.len())))
}

fn chunk_key(domain: i64, id: &[u8]) -> Result<(Domain, ChunkId)> {
    let d = Domain::from_u64(to_u64(domain, "domain")?)
        .ok_or_else(|| Error::corrupted("chunk key: unknown domain"))?;
    Ok((d, ChunkId(fixed(id, "chunk id")?)))
}

/// Metadata in a PostgreSQL database, through a pool of connections. Clones share the pool,
/// the filter and the poisoned flag.
#[derive(Clone)]
pub(crate) struct PgMeta {
    pool: r2d2::Pool<Manager>,
    /// Where the database is, without the password, for messages.
    place: Arc<str>,
    filter: Arc<OnceLock<Arc<ChunkFilter>>>,
    /// Set when a `COMMIT` failed without an answer: whether it committed is unknown.
    poisoned: Arc<AtomicBool>,
    timing: Timing,
}

impl std::fmt::Debug for PgMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMeta")
            .field("place", &self.place)
            .finish()
    }
}

/// What [`PgMeta::connect`] found in the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Schema {
    /// The schema was there, at this build's version (after migrating an older one).
    Existing,
    /// The schema was created by this call.
    Created,
}

impl PgMeta {
    /// Connects to the database at `url` (a libpq URL or key-value string) with up to
    /// `max_connections` connections, and brings its schema to [`SCHEMA_VERSION`]. Without
    /// `create`, a database without the schema is `Error::NoStore`.
    pub(crate) fn connect(
        url: &str,
        max_connections: u32,
        create: bool,
        timing: Timing,
    ) -> Result<(PgMeta, Schema)> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| Error::InvalidOptions(format!("PostgreSQL URL: {e}")))?;
        let place = format!(
            "postgres://{}{}/{}",
            config
                .get_user()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            config
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default(),
            config.get_dbname().unwrap_or_default()
        );
        // One connection first, outside the pool: a refused one (bad credentials, no such
        // database) is reported with the server's reason, not as a pool timeout; it then
        // brings the schema up to date.
        let mut first = config
            .connect(NoTls)
            .map_err(|e| db_error(&format!("connect to {place}"), e))?;
        let schema = migrate(&mut first, &place, create)?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(max_connections.max(1))
            .min_idle(Some(0))
            // A checkout is not worth a round trip: a broken connection fails its statement
            // and is dropped on return (`has_broken`).
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(30))
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        let meta = PgMeta {
            pool,
            place: place.into(),
            filter: Default::default(),
            poisoned: Default::default(),
            timing,
        };
        Ok((meta, schema))
    }

    /// Where the database is, without credentials.
    pub(crate) fn place(&self) -> &str {
        &self.place
    }

    fn conn(&self) -> Result<Conn> {
        self.pool.get().map_err(|e| Error::Database {
            operation: format!("connect to {}", self.place),
            code: None,
            message: e.to_string(),
        })
    }

    fn write_once(&self, f: &mut dyn FnMut(&mut dyn MetaWrite) -> Result<()>) -> Result<()> {
        let mut conn = self.conn()?;
        // No statement of a write waits longer than a put may take (a lock held elsewhere),
        // so a put's commit lands soon after its deadline check or not at all (15.3).
        let limit = millis(self.timing.statement_timeout).max(1);
        conn.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL statement_timeout = {limit}; \
             SET LOCAL lock_timeout = {limit}"
        ))
        .map_err(|e| db_error("begin a write", e))?;
        let mut w = PgWrite {
            open: true,
            txn: Txn {
                conn: RefCell::new(conn),
                snapshot: false,
            },
            filter: self.filter.get().cloned(),
            pending: RefCell::new(Pending::default()),
            cache: RefCell::new(Cache::default()),
            grace_ms: millis(self.timing.garbage_grace),
        };
        let outcome = f(&mut w)
            .and_then(|()| w.flush())
            .and_then(|()| w.check_fence());
        // Ended here; `Drop` rolls back only a transaction a panic left open.
        w.open = false;
        let conn = w.txn.conn.get_mut();
        if let Err(e) = outcome {
            // A failed rollback leaves a broken connection, which the pool drops.
            let _ = conn.batch_execute("ROLLBACK");
            return Err(e);
        }
        match conn.batch_execute("COMMIT") {
            Ok(()) => Ok(()),
            // A transaction-rollback class error (40xxx: serialisation failure, deadlock) is a
            // definite "not committed"; any other failure of COMMIT (the server shutting down,
            // the connection lost) leaves the outcome unknown.
            Err(e) if e.code().is_some_and(|c| c.code().starts_with("40")) => {
                Err(db_error("commit", e))
            }
            Err(e) => {
                self.poisoned.store(true, Ordering::SeqCst);
                Err(Error::Poisoned(format!(
                    "the connection to {} failed during COMMIT, so whether that write \
                     committed is unknown: {e}",
                    self.place
                )))
            }
        }
    }
}

impl MetaStore for PgMeta {
    fn read(&self) -> Result<Box<dyn MetaRead>> {
        let mut conn = self.conn()?;
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(|e| db_error("begin a read", e))?;
        Ok(Box::new(Txn {
            conn: RefCell::new(conn),
            snapshot: true,
        }))
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn MetaWrite) -> Result<()>) -> Result<()> {
        let mut attempt = 0;
        loop {
            if self.poisoned.load(Ordering::SeqCst) {
                return Err(Error::Poisoned(format!(
                    "an earlier COMMIT to {} ended without an answer",
                    self.place
                )));
            }
            attempt += 1;
            match self.write_once(f) {
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                    // Spread the retries of writers that collided.
                    let jitter = u64::from(
                        crate::random::random_bytes::<1>("a retry's delay")
                            .map(|b| b[0])
                            .unwrap_or(0),
                    );
                    std::thread::sleep(Duration::from_micros(
                        (100 << attempt.min(6)) + jitter * 20,
                    ));
                }
                other => return other,
            }
        }
    }

    fn watch_chunks(&self, filter: Arc<ChunkFilter>) {
        let _ = self.filter.set(filter);
    }

    fn handle(&self) -> Option<Box<dyn MetaStore>> {
        Some(Box::new(self.clone()))
    }

    fn state_now(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Txn {
            conn: RefCell::new(self.conn()?),
            snapshot: false,
        }
        .state(key)
    }

    fn chunks_now(&self, keys: &[(Domain, ChunkId)]) -> Result<Vec<Option<ChunkEntry>>> {
        // One statement outside a transaction block is its own snapshot.
        Txn {
            conn: RefCell::new(self.conn()?),
            snapshot: false,
        }
        .chunks(keys)
    }

    fn shared(&self) -> bool {
        true
    }

    fn maintenance_lease(&self, holder: &str) -> Result<Option<Box<dyn Lease>>> {
        let ttl = millis(self.timing.lease_ttl);
        let token = loop {
            let mut c = self.conn()?;
            let rows = c
                .query_typed(
                    "INSERT INTO ls_leases (name, holder, token, expires_at) \
                     VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond') \
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                     token = ls_leases.token + 1, expires_at = EXCLUDED.expires_at \
                     WHERE ls_leases.expires_at < now() \
                     RETURNING token",
                    &[
                        (&MAINTENANCE, Type::TEXT),
                        (&holder, Type::TEXT),
                        (&ttl, Type::INT8),
                    ],
                )
                .map_err(|e| db_error("take the maintenance lease", e))?;
            if let Some(r) = rows.first() {
                break r.get::<_, i64>(0);
            }
            drop(c);
            // Held by a live node: wait for it to give the lease up or to die.
            std::thread::sleep(self.timing.lease_ttl.min(Duration::from_secs(1)) / 4);
        };
        Ok(Some(Box::new(PgLease::start(
            self.clone(),
            MAINTENANCE,
            token,
        )?)))
    }

    fn touch_garbage(&self, domain: Domain, id: &ChunkId) -> Result<bool> {
        let mut c = self.conn()?;
        let rows = c
            .query_typed(
                "UPDATE ls_chunks SET garbage_since = \
                 CASE WHEN garbage_since IS NULL THEN NULL ELSE now() END \
                 WHERE domain = $1 AND id = $2 RETURNING 1",
                &[
                    (&to_i64(domain.to_u64(), "domain")?, Type::INT8),
                    (&id.0.as_slice(), Type::BYTEA),
                ],
            )
            .map_err(|e| db_error("touch a garbage entry", e))?;
        Ok(!rows.is_empty())
    }
}

/// Creates or upgrades the schema in one transaction; two nodes doing it at once are
/// serialised by the lock on `ls_schema`.
fn migrate(c: &mut postgres::Client, place: &str, create: bool) -> Result<Schema> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match migrate_once(c, place, create) {
            // Two first connections racing to create `ls_schema` itself: the loser sees
            // a unique violation on the catalog, and then the winner's table.
            Err(Error::Database { code: Some(c), .. })
                if (c == "23505" || c == "42P07" || c == "40001" || c == "40P01")
                    && attempt < 10 =>
            {
                continue;
            }
            other => return other,
        }
    }
}

fn migrate_once(c: &mut postgres::Client, place: &str, create: bool) -> Result<Schema> {
    let e = |what: &'static str| move |err| db_error(what, err);
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS ls_schema (version integer NOT NULL);
         BEGIN;
         LOCK TABLE ls_schema IN EXCLUSIVE MODE;",
    )
    .map_err(e("create the schema table"))?;
    let outcome = (|| {
        let rows = c
            .query("SELECT version FROM ls_schema", &[])
            .map_err(e("read the schema version"))?;
        let found: i32 = match rows.as_slice() {
            [] => 0,
            [row] => row.get(0),
            _ => return Err(Error::corrupted("ls_schema holds more than one row")),
        };
        if found > SCHEMA_VERSION {
            return Err(Error::UnsupportedVersion {
                path: format!("{} (ls_schema)", place).into(),
                found: found as u32,
                supported: SCHEMA_VERSION as u32,
            });
        }
        if found == 0 && !create {
            return Err(Error::NoStore(place.into()));
        }
        for step in &MIGRATIONS[found as usize..] {
            c.batch_execute(step).map_err(e("migrate the schema"))?;
        }
        if found == 0 {
            c.execute(
                "INSERT INTO ls_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .map_err(e("write the schema version"))?;
        } else if found < SCHEMA_VERSION {
            c.execute("UPDATE ls_schema SET version = $1", &[&SCHEMA_VERSION])
                .map_err(e("write the schema version"))?;
        }
        Ok(if found == 0 {
            Schema::Created
        } else {
            Schema::Existing
        })
    })();
    match outcome {
        Ok(s) => {
            c.batch_execute("COMMIT").map_err(e("commit the schema"))?;
            Ok(s)
        }
        Err(err) => {
            let _ = c.batch_execute("ROLLBACK");
            Err(err)
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A lease this process holds: renewed every third of its time to live by a thread of its own,
/// fencing this thread's write transactions (`FENCE`) while held.
struct PgLease {
    meta: PgMeta,
    name: &'static str,
    token: i64,
    lost: Arc<AtomicBool>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl PgLease {
    fn start(meta: PgMeta, name: &'static str, token: i64) -> Result<PgLease> {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let renewer = {
            let (meta, lost) = (meta.clone(), lost.clone());
            std::thread::Builder::new()
                .name("lease renewer".into())
                .spawn(move || {
                    let every = meta.timing.lease_ttl / 3;
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(every)
                    {
                        match meta.renew(name, token) {
                            Ok(true) => {}
                            // Gone: another node took it over. A failed renewal is retried
                            // until the lease would have expired anyway.
                            Ok(false) => {
                                lost.store(true, Ordering::SeqCst);
                                return;
                            }
                            Err(_) => {}
                        }
                    }
                })
                .map_err(|e| Error::Io {
                    op: "start the lease renewer for",
                    path: name.into(),
                    source: e,
                })?
        };
        FENCE.with(|f| *f.borrow_mut() = Some((name.to_owned(), token)));
        Ok(PgLease {
            meta,
            name,
            token,
            lost,
            stop: Some(stop),
            renewer: Some(renewer),
        })
    }
}

impl PgMeta {
    /// Extends lease `name` if `token` still holds it; `false` when it does not.
    fn renew(&self, name: &str, token: i64) -> Result<bool> {
        let ttl = millis(self.timing.lease_ttl);
        let mut c = self.conn()?;
        let rows = c
            .query_typed(
                "UPDATE ls_leases SET expires_at = now() + $3::bigint * interval '1 millisecond' \
                 WHERE name = $1 AND token = $2 AND expires_at > now() RETURNING 1",
                &[
                    (&name, Type::TEXT),
                    (&token, Type::INT8),
                    (&ttl, Type::INT8),
                ],
            )
            .map_err(|e| db_error("renew a lease", e))?;
        Ok(!rows.is_empty())
    }
}

impl Lease for PgLease {
    fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LeaseLost(format!(
                "the {} lease (token {}) expired or was taken over",
                self.name, self.token
            )));
        }
        Ok(())
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        FENCE.with(|f| *f.borrow_mut() = None);
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        // Given up at once, so another node need not wait for it to expire.
        if let Ok(mut c) = self.meta.conn() {
            let _ = c.query_typed(
                "UPDATE ls_leases SET expires_at = now() - interval '1 second' \
                 WHERE name = $1 AND token = $2",
                &[(&self.name, Type::TEXT), (&self.token, Type::INT8)],
            );
        }
    }
}

/// One open transaction on one connection.
struct Txn {
    conn: RefCell<Conn>,
    /// A snapshot (`MetaStore::read`): ended (rolled back) when dropped, so an idle pooled
    /// connection never holds back the server's cleanup. Otherwise its owner ends it (a
    /// write), or there is none (one statement outside a transaction block).
    snapshot: bool,
}

impl Drop for Txn {
    fn drop(&mut self) {
        if self.snapshot {
            // A connection that cannot is dropped by the pool.
            let _ = self.conn.get_mut().batch_execute("ROLLBACK");
        }
    }
}

impl Txn {
    fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        self.conn
            .borrow_mut()
            .query_typed(sql, params)
            .map_err(|e| db_error(what, e))
    }

    /// Runs a query and hands its rows to `f` as they arrive.
    fn each(
        &self,
        what: &str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        f: &mut dyn FnMut(&Row) -> Result<()>,
    ) -> Result<()> {
        let mut conn = self.conn.borrow_mut();
        let mut rows = conn
            .query_typed_raw(sql, params.iter().map(|(v, t)| (*v, t.clone())))
            .map_err(|e| db_error(what, e))?;
        while let Some(row) = rows.next().map_err(|e| db_error(what, e))? {
            f(&row)?;
        }
        Ok(())
    }

    fn state_all(&self) -> Result<HashMap<String, Vec<u8>>> {
        let rows = self.query("read state", "SELECT key, value FROM ls_state", &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn counters_all(&self) -> Result<HashMap<String, u64>> {
        let rows = self.query("read counters", "SELECT key, value FROM ls_counters", &[])?;
        rows.iter()
            .map(|r| Ok((r.get(0), to_u64(r.get(1), "counter")?)))
            .collect()
    }

    /// The entries of `keys`, each with whether it has been garbage for more than `grace_ms`
    /// milliseconds (by the server's clock); one round trip.
    fn lookup(
        &self,
        keys: &[(Domain, ChunkId)],
        grace_ms: i64,
    ) -> Result<Vec<Option<(ChunkEntry, bool)>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let domains: Vec<i64> = keys
            .iter()
            .map(|(d, _)| to_i64(d.to_u64(), "domain"))
            .collect::<Result<_>>()?;
        let ids: Vec<&[u8]> = keys.iter().map(|(_, id)| id.0.as_slice()).collect();
        let rows = self.query(
            "look chunks up",
            "SELECT c.domain, c.id, c.entry, \
             COALESCE(c.garbage_since <= now() - $3::bigint * interval '1 millisecond', false) \
             FROM ls_chunks c \
             JOIN UNNEST($1::bigint[], $2::bytea[]) AS k(domain, id) \
             ON c.domain = k.domain AND c.id = k.id",
            &[
                (&domains, Type::INT8_ARRAY),
                (&ids, Type::BYTEA_ARRAY),
                (&grace_ms, Type::INT8),
            ],
        )?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let key = chunk_key(r.get(0), r.get(1))?;
            let entry = ChunkEntry::decode(&fixed::<CHUNK_ENTRY_LEN>(r.get(2), "chunk entry")?)?;
            found.insert(key, (entry, r.get::<_, bool>(3)));
        }
        Ok(keys.iter().map(|k| found.get(k).copied()).collect())
    }
}

impl MetaRead for Txn {
    fn chunk(&self, domain: Domain, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        Ok(self.chunks(&[(domain, *id)])?.pop().flatten())
    }
    fn state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let rows = self.query(
            "read state",
            "SELECT value FROM ls_state WHERE key = $1",
            &[(&key, Type::TEXT)],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn counter(&self, key: &str) -> Result<u64> {
        let rows = self.query(
            "read a counter",
            "SELECT value FROM ls_counters WHERE key = $1",
            &[(&key, Type::TEXT)],
        )?;
        rows.first().map_or(Ok(0), |r| to_u64(r.get(0), "counter"))
    }

    fn user(&self, id: &UserId) -> Result<Option<UserRow>> {
        let rows = self.query(
            "read a user",
            "SELECT data FROM ls_users WHERE name = $1",
            &[(&id.as_str(), Type::TEXT)],
        )?;
        rows.first()
            .map(|r| {
                Ok(UserRow::decode(&fixed::<USER_ROW_LEN>(
                    r.get(0),
                    "user row",
                )?))
            })
            .transpose()
    }

    fn user_name(&self, no: UserNo) -> Result<Option<UserId>> {
        let rows = self.query(
            "read a user name",
            "SELECT name FROM ls_user_names WHERE no = $1",
            &[(&to_i64(no.0, "user number")?, Type::INT8)],
        )?;
        rows.first().map(|r| stored_user_id(r.get(0))).transpose()
    }

    fn users_raw(&self) -> Result<Vec<(String, UserRow)>> {
        let mut out = Vec::new();
        self.each(
            "list users",
            "SELECT name, data FROM ls_users ORDER BY name",
            &[],
            &mut |r| {
                out.push((
                    r.get(0),
                    UserRow::decode(&fixed::<USER_ROW_LEN>(r.get(1), "user row")?),
                ));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn track(&self, user: UserNo, key: &TrackKey) -> Result<Option<TrackRecord>> {
        let rows = self.query(
            "read a track",
            "SELECT record FROM ls_tracks WHERE user_no = $1 AND key = $2",
            &[
                (&to_i64(user.0, "user number")?, Type::INT8),
                (&key.as_str(), Type::TEXT),
            ],
        )?;
        rows.first()
            .map(|r| TrackRecord::decode(r.get(0)))
            .transpose()
    }

    fn tracks_of(&self, user: UserNo) -> Result<Vec<(TrackKey, TrackRecord)>> {
        let mut out = Vec::new();
        self.each(
            "list a user's tracks",
            "SELECT key, record FROM ls_tracks WHERE user_no = $1 ORDER BY key",
            &[(&to_i64(user.0, "user number")?, Type::INT8)],
            &mut |r| {
                out.push((stored_track_key(r.get(0))?, TrackRecord::decode(r.get(1))?));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn for_each_track_raw(
        &self,
        f: &mut dyn FnMut(UserNo, &str, TrackRecord) -> Result<()>,
    ) -> Result<()> {
        self.each(
            "list tracks",
            "SELECT user_no, key, record FROM ls_tracks ORDER BY user_no, key",
            &[],
            &mut |r| {
                f(
                    UserNo(to_u64(r.get(0), "user number")?),
                    r.get(1),
                    TrackRecord::decode(r.get(2))?,
                )
            },
        )
    }

    fn chunks(&self, keys: &[(Domain, ChunkId)]) -> Result<Vec<Option<ChunkEntry>>> {
        Ok(self
            .lookup(keys, 0)?
            .into_iter()
            .map(|e| e.map(|(e, _)| e))
            .collect())
    }

    fn for_each_chunk(
        &self,
        f: &mut dyn FnMut(Domain, ChunkId, ChunkEntry) -> Result<()>,
    ) -> Result<()> {
        self.each(
            "list chunks",
            "SELECT domain, id, entry FROM ls_chunks ORDER BY domain, id",
            &[],
            &mut |r| {
                let (d, id) = chunk_key(r.get(0), r.get(1))?;
                f(
                    d,
                    id,
                    ChunkEntry::decode(&fixed::<CHUNK_ENTRY_LEN>(r.get(2), "chunk entry")?)?,
                )
            },
        )
    }

    fn pack(&self, id: PackId) -> Result<Option<PackRow>> {
        let rows = self.query(
            "read a pack",
            "SELECT data FROM ls_packs WHERE id = $1",
            &[(&to_i64(id.0, "pack id")?, Type::INT8)],
        )?;
        rows.first()
            .map(|r| PackRow::decode(&fixed::<PACK_ROW_LEN>(r.get(0), "pack row")?))
            .transpose()
    }

    fn packs(&self) -> Result<Vec<(PackId, PackRow)>> {
        let mut out = Vec::new();
        self.each(
            "list packs",
            "SELECT id, data FROM ls_packs ORDER BY id",
            &[],
            &mut |r| {
                out.push((
                    PackId(to_u64(r.get(0), "pack id")?),
                    PackRow::decode(&fixed::<PACK_ROW_LEN>(r.get(1), "pack row")?)?,
                ));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn quota(&self, user: UserNo) -> Result<Option<QuotaRow>> {
        let rows = self.query(
            "read a quota",
            "SELECT data FROM ls_quotas WHERE user_no = $1",
            &[(&to_i64(user.0, "user number")?, Type::INT8)],
        )?;
        rows.first()
            .map(|r| {
                Ok(QuotaRow::decode(&fixed::<QUOTA_ROW_LEN>(
                    r.get(0),
                    "quota row",
                )?))
            })
            .transpose()
    }

    fn quota_exempt(&self, user: UserNo, key: &TrackKey) -> Result<bool> {
        let rows = self.query(
            "read a quota exemption",
            "SELECT 1 FROM ls_quota_exempt WHERE user_no = $1 AND key = $2",
            &[
                (&to_i64(user.0, "user number")?, Type::INT8),
                (&key.as_str(), Type::TEXT),
            ],
        )?;
        Ok(!rows.is_empty())
    }

    fn recording_holders(
        &self,
        fp: &AudioFingerprint,
        limit: usize,
    ) -> Result<Vec<(UserNo, TrackKey)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "read a recording's tracks",
            "SELECT user_no, key FROM ls_recordings WHERE fingerprint = $1 \
             ORDER BY user_no, key LIMIT $2",
            &[(&fp.0.as_slice(), Type::BYTEA), (&limit, Type::INT8)],
        )?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserNo(to_u64(r.get(0), "user number")?),
                    stored_track_key(r.get(1))?,
                ))
            })
            .collect()
    }

    #[cfg(feature = "object-store")]
    fn dump(&self, f: &mut dyn FnMut(MetaOp) -> Result<()>) -> Result<()> {
        let mut state: Vec<_> = self.state_all()?.into_iter().collect();
        state.sort();
        for (k, v) in state {
            if !node_local(&k) {
                f(MetaOp::SetState(k, v))?;
            }
        }
        let mut counters: Vec<_> = self.counters_all()?.into_iter().collect();
        counters.sort();
        for (k, v) in counters {
            f(MetaOp::SetCounter(k, v))?;
        }
        for (name, row) in self.users_raw()? {
            f(MetaOp::PutUser(name, row.encode()))?;
        }
        self.each(
            "list user names",
            "SELECT no, name FROM ls_user_names ORDER BY no",
            &[],
            &mut |r| {
                f(MetaOp::PutUserName(
                    to_u64(r.get(0), "user number")?,
                    r.get(1),
                ))
            },
        )?;
        self.for_each_track_raw(&mut |no, key, t| {
            f(MetaOp::PutTrack(no.0, key.to_owned(), t.encode()))
        })?;
        self.for_each_chunk(&mut |d, id, e| f(MetaOp::PutChunk(d.to_u64(), id.0, e.encode())))?;
        for (id, row) in self.packs()? {
            f(MetaOp::PutPack(id.0, row.encode()))?;
        }
        self.each(
            "list recordings",
            "SELECT fingerprint, user_no, key FROM ls_recordings \
             ORDER BY fingerprint, user_no, key",
            &[],
            &mut |r| {
                f(MetaOp::PutRecording(
                    fixed(r.get(0), "audio fingerprint")?,
                    to_u64(r.get(1), "user number")?,
                    r.get(2),
                ))
            },
        )?;
        self.each(
            "list quotas",
            "SELECT user_no, data FROM ls_quotas ORDER BY user_no",
            &[],
            &mut |r| {
                f(MetaOp::PutQuota(
                    to_u64(r.get(0), "user number")?,
                    fixed(r.get(1), "quota row")?,
                ))
            },
        )?;
        self.each(
            "list quota exemptions",
            "SELECT user_no, key FROM ls_quota_exempt ORDER BY user_no, key",
            &[],
            &mut |r| {
                f(MetaOp::SetQuotaExempt(
                    to_u64(r.get(0), "user number")?,
                    r.get(1),
                    true,
                ))
            },
        )
    }
}

/// Changes of a write transaction not yet sent; `None` removes the row.
#[derive(Default)]
struct Pending {
    state: BTreeMap<String, Vec<u8>>,
    counters: BTreeMap<String, u64>,
    users: BTreeMap<String, [u8; USER_ROW_LEN]>,
    user_names: BTreeMap<u64, String>,
    tracks: BTreeMap<(u64, String), Option<Vec<u8>>>,
    chunks: BTreeMap<(Domain, ChunkId), Option<ChunkEntry>>,
    packs: BTreeMap<u64, Option<[u8; PACK_ROW_LEN]>>,
    quotas: BTreeMap<u64, [u8; QUOTA_ROW_LEN]>,
    exempt: BTreeMap<(u64, String), bool>,
    recordings: BTreeMap<([u8; 32], u64, String), bool>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.state.is_empty()
            && self.counters.is_empty()
            && self.users.is_empty()
            && self.user_names.is_empty()
            && self.tracks.is_empty()
            && self.chunks.is_empty()
            && self.packs.is_empty()
            && self.quotas.is_empty()
            && self.exempt.is_empty()
            && self.recordings.is_empty()
    }
}

/// Committed rows a write transaction has read, as of its snapshot.
#[derive(Default)]
struct Cache {
    state: Option<HashMap<String, Vec<u8>>>,
    counters: Option<HashMap<String, u64>>,
    chunks: HashMap<(Domain, ChunkId), Option<ChunkEntry>>,
    /// Committed garbage entries read, settled past the grace period or not.
    settled: HashMap<(Domain, ChunkId), bool>,
}

/// A write transaction: reads see its own changes, which are sent when it ends (or before a
/// scan, which reads them back from the server).
struct PgWrite {
    /// The transaction is still open (a panic in the engine's closure leaves it so).
    open: bool,
    txn: Txn,
    filter: Option<Arc<ChunkFilter>>,
    pending: RefCell<Pending>,
    cache: RefCell<Cache>,
    /// `Timing::garbage_grace`, in milliseconds.
    grace_ms: i64,
}

impl Drop for PgWrite {
    fn drop(&mut self) {
        if self.open {
            // Never hand a connection back to the pool inside a transaction.
            let _ = self.txn.conn.get_mut().batch_execute("ROLLBACK");
        }
    }
}

impl PgWrite {
    /// Fails unless the lease this thread holds (if any) is still this holder's: run last, in
    /// the transaction, so a takeover and this commit cannot both succeed (SERIALIZABLE).
    fn check_fence(&self) -> Result<()> {
        let Some((name, token)) = FENCE.with(|f| f.borrow().clone()) else {
            return Ok(());
        };
        let rows = self.txn.query(
            "check the lease",
            // The clock now, not the transaction's start (`now()`), and the row locked, so a
            // takeover waits for this commit or this check sees it.
            "SELECT 1 FROM ls_leases WHERE name = $1 AND token = $2 \
             AND expires_at > clock_timestamp() FOR SHARE",
            &[(&name.as_str(), Type::TEXT), (&token, Type::INT8)],
        )?;
        if rows.is_empty() {
            return Err(Error::LeaseLost(format!(
                "the {name} lease (token {token}) expired or was taken over before this commit"
            )));
        }
        Ok(())
    }

    /// Sends every pending change (at commit, or before a read of everything).
    fn flush(&self) -> Result<()> {
        let p = std::mem::take(&mut *self.pending.borrow_mut());
        self.send(p)
    }

    /// Sends the pending rows `part` takes out (those of the table a read is about to read),
    /// leaving the others for the commit.
    fn flush_part(&self, part: impl FnOnce(&mut Pending) -> Pending) -> Result<()> {
        let p = part(&mut self.pending.borrow_mut());
        self.send(p)
    }

    /// Sends changes: one statement per table and kind of change.
    ///
    /// Lock order: every table's rows go out in key order, tables in one fixed order, and the
    /// rows many writers share go last: a user's row and quota, then the store's state and
    /// counters (written by every commit). A read flushes only its own table's rows early.
    /// Writers that touch the same rows then mostly wait for each other instead of
    /// deadlocking: PostgreSQL finds a deadlock only after `deadlock_timeout` (1 s), and
    /// concurrent uploads of one album met hundreds of them when chunk rows went out in hash
    /// order and reads flushed everything.
    fn send(&self, p: Pending) -> Result<()> {
        if p.is_empty() {
            return Ok(());
        }
        let t = &self.txn;
        {
            // What this transaction wrote is what its later reads must see.
            let mut cache = self.cache.borrow_mut();
            if let Some(state) = &mut cache.state {
                state.extend(p.state.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            if let Some(counters) = &mut cache.counters {
                counters.extend(p.counters.iter().map(|(k, v)| (k.clone(), *v)));
            }
        }
        {
            let (put, del) = split(p.chunks.iter().map(|(k, v)| (*k, v)));
            if !put.is_empty() {
                let d = bigints(put.iter().map(|((d, _), _)| d.to_u64()), "domain")?;
                let id: Vec<&[u8]> = put.iter().map(|((_, id), _)| id.0.as_slice()).collect();
                let e: Vec<[u8; CHUNK_ENTRY_LEN]> = put.iter().map(|(_, e)| e.encode()).collect();
                let e: Vec<&[u8]> = e.iter().map(|e| e.as_slice()).collect();
                let garbage: Vec<bool> = put.iter().map(|(_, e)| e.refcount == 0).collect();
                // An entry's garbage clock starts when it becomes garbage and stops when it is
                // live again; rewriting a garbage entry (a move) keeps its clock.
                t.query(
                    "write chunk entries",
                    "INSERT INTO ls_chunks (domain, id, entry, garbage_since) \
                     SELECT d, i, e, CASE WHEN g THEN now() END \
                     FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::bool[]) \
                     AS u(d, i, e, g) \
                     ON CONFLICT (domain, id) DO UPDATE SET entry = EXCLUDED.entry, \
                     garbage_since = CASE WHEN EXCLUDED.garbage_since IS NULL THEN NULL \
                     ELSE COALESCE(ls_chunks.garbage_since, EXCLUDED.garbage_since) END",
                    &[
                        (&d, Type::INT8_ARRAY),
                        (&id, Type::BYTEA_ARRAY),
                        (&e, Type::BYTEA_ARRAY),
                        (&garbage, Type::BOOL_ARRAY),
                    ],
                )?;
            }
            if !del.is_empty() {
                let d = bigints(del.iter().map(|(d, _)| d.to_u64()), "domain")?;
                let id: Vec<&[u8]> = del.iter().map(|(_, id)| id.0.as_slice()).collect();
                t.query(
                    "remove chunk entries",
                    "DELETE FROM ls_chunks WHERE (domain, id) IN \
                     (SELECT * FROM UNNEST($1::bigint[], $2::bytea[]))",
                    &[(&d, Type::INT8_ARRAY), (&id, Type::BYTEA_ARRAY)],
                )?;
            }
            let mut cache = self.cache.borrow_mut();
            cache.chunks.extend(p.chunks.iter().map(|(k, v)| (*k, *v)));
        }
        {
            let (put, del) = split(p.packs.iter().map(|(k, v)| (*k, v)));
            if !put.is_empty() {
                let id = bigints(put.iter().map(|(id, _)| *id), "pack id")?;
                let v: Vec<&[u8]> = put.iter().map(|(_, v)| v.as_slice()).collect();
                t.query(
                    "write packs",
                    "INSERT INTO ls_packs (id, data) SELECT * FROM UNNEST($1::bigint[], $2::bytea[]) \
                     ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data",
                    &[(&id, Type::INT8_ARRAY), (&v, Type::BYTEA_ARRAY)],
                )?;
            }
            if !del.is_empty() {
                let id = bigints(del.iter().copied(), "pack id")?;
                t.query(
                    "remove packs",
                    "DELETE FROM ls_packs WHERE id IN (SELECT * FROM UNNEST($1::bigint[]))",
                    &[(&id, Type::INT8_ARRAY)],
                )?;
            }
        }
        {
            let (put, del) = split(p.tracks.iter().map(|((u, k), v)| ((*u, k.as_str()), v)));
            if !put.is_empty() {
                let u = bigints(put.iter().map(|((u, _), _)| *u), "user number")?;
                let k: Vec<&str> = put.iter().map(|((_, k), _)| *k).collect();
                let v: Vec<&[u8]> = put.iter().map(|(_, v)| v.as_slice()).collect();
                t.query(
                    "write tracks",
                    "INSERT INTO ls_tracks (user_no, key, record) \
                     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bytea[]) \
                     ON CONFLICT (user_no, key) DO UPDATE SET record = EXCLUDED.record",
                    &[
                        (&u, Type::INT8_ARRAY),
                        (&k, Type::TEXT_ARRAY),
                        (&v, Type::BYTEA_ARRAY),
                    ],
                )?;
            }
            if !del.is_empty() {
                let u = bigints(del.iter().map(|(u, _)| *u), "user number")?;
                let k: Vec<&str> = del.iter().map(|(_, k)| *k).collect();
                t.query(
                    "remove tracks",
                    "DELETE FROM ls_tracks WHERE (user_no, key) IN \
                     (SELECT * FROM UNNEST($1::bigint[], $2::text[]))",
                    &[(&u, Type::INT8_ARRAY), (&k, Type::TEXT_ARRAY)],
                )?;
            }
        }
        if !p.recordings.is_empty() {
            for on in [true, false] {
                let rows: Vec<_> = p.recordings.iter().filter(|(_, v)| **v == on).collect();
                if rows.is_empty() {
                    continue;
                }
                let f: Vec<&[u8]> = rows.iter().map(|((f, _, _), _)| f.as_slice()).collect();
                let u: Vec<i64> = rows
                    .iter()
                    .map(|((_, u, _), _)| to_i64(*u, "user number"))
                    .collect::<Result<_>>()?;
                let k: Vec<&str> = rows.iter().map(|((_, _, k), _)| k.as_str()).collect();
                let sql = if on {
                    "INSERT INTO ls_recordings (fingerprint, user_no, key) \
                     SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::text[]) \
                     ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM ls_recordings WHERE (fingerprint, user_no, key) IN \
                     (SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::text[]))"
                };
                t.query(
                    "write recordings",
                    sql,
                    &[
                        (&f, Type::BYTEA_ARRAY),
                        (&u, Type::INT8_ARRAY),
                        (&k, Type::TEXT_ARRAY),
                    ],
                )?;
            }
        }
        for on in [true, false] {
            let rows: Vec<_> = p.exempt.iter().filter(|(_, v)| **v == on).collect();
            if rows.is_empty() {
                continue;
            }
            let u = bigints(rows.iter().map(|((u, _), _)| *u), "user number")?;
            let k: Vec<&str> = rows.iter().map(|((_, k), _)| k.as_str()).collect();
            let sql = if on {
                "INSERT INTO ls_quota_exempt (user_no, key) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM ls_quota_exempt WHERE (user_no, key) IN \
                 (SELECT * FROM UNNEST($1::bigint[], $2::text[]))"
            };
            t.query(
                "write quota exemptions",
                sql,
                &[(&u, Type::INT8_ARRAY), (&k, Type::TEXT_ARRAY)],
            )?;
        }
        if !p.user_names.is_empty() {
            let k: Vec<i64> = p
                .user_names
                .keys()
                .map(|k| to_i64(*k, "user number"))
                .collect::<Result<_>>()?;
            let v: Vec<&str> = p.user_names.values().map(String::as_str).collect();
            t.query(
                "write user names",
                "INSERT INTO ls_user_names (no, name) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[]) \
                 ON CONFLICT (no) DO UPDATE SET name = EXCLUDED.name",
                &[(&k, Type::INT8_ARRAY), (&v, Type::TEXT_ARRAY)],
            )?;
        }
        if !p.users.is_empty() {
            let (k, v): (Vec<&str>, Vec<&[u8]>) = p
                .users
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .unzip();
            t.query(
                "write users",
                "INSERT INTO ls_users (name, data) SELECT * FROM UNNEST($1::text[], $2::bytea[]) \
                 ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data",
                &[(&k, Type::TEXT_ARRAY), (&v, Type::BYTEA_ARRAY)],
            )?;
        }
        if !p.quotas.is_empty() {
            let k: Vec<i64> = p
                .quotas
                .keys()
                .map(|k| to_i64(*k, "user number"))
                .collect::<Result<_>>()?;
            let v: Vec<&[u8]> = p.quotas.values().map(|v| v.as_slice()).collect();
            t.query(
                "write quotas",
                "INSERT INTO ls_quotas (user_no, data) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bytea[]) \
                 ON CONFLICT (user_no) DO UPDATE SET data = EXCLUDED.data",
                &[(&k, Type::INT8_ARRAY), (&v, Type::BYTEA_ARRAY)],
            )?;
        }
        if !p.state.is_empty() {
            let (k, v): (Vec<&str>, Vec<&[u8]>) = p
                .state
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .unzip();
            t.query(
                "write state",
                "INSERT INTO ls_state (key, value) SELECT * FROM UNNEST($1::text[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[(&k, Type::TEXT_ARRAY), (&v, Type::BYTEA_ARRAY)],
            )?;
        }
        if !p.counters.is_empty() {
            let k: Vec<&str> = p.counters.keys().map(String::as_str).collect();
            let v: Vec<i64> = p
                .counters
                .iter()
                .map(|(k, v)| to_i64(*v, k))
                .collect::<Result<_>>()?;
            t.query(
                "write counters",
                "INSERT INTO ls_counters (key, value) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[(&k, Type::TEXT_ARRAY), (&v, Type::INT8_ARRAY)],
            )?;
        }
        Ok(())
    }

    fn state_cache(&self) -> Result<()> {
        if self.cache.borrow().state.is_none() {
            let all = self.txn.state_all()?;
            self.cache.borrow_mut().state = Some(all);
        }
        Ok(())
    }

    fn counter_cache(&self) -> Result<()> {
        if self.cache.borrow().counters.is_none() {
            let all = self.txn.counters_all()?;
            self.cache.borrow_mut().counters = Some(all);
        }
        Ok(())
    }
}

/// Splits changes into rows to write and keys to delete.
fn split<'a, K, V: 'a>(
    rows: impl Iterator<Item = (K, &'a Option<V>)>,
) -> (Vec<(K, &'a V)>, Vec<K>) {
    let mut put = Vec::new();
    let mut del = Vec::new();
    for (k, v) in rows {
        match v {
            Some(v) => put.push((k, v)),
            None => del.push(k),
        }
    }
    (put, del)
}

fn bigints(v: impl Iterator<Item = u64>, what: &str) -> Result<Vec<i64>> {
    v.map(|v| to_i64(v, what)).collect()
}

impl MetaRead for PgWrite {
    fn state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.borrow().state.get(key) {
            return Ok(Some(v.clone()));
        }
        self.state_cache()?;
        Ok(self
            .cache
            .borrow()
            .state
            .as_ref()
            .and_then(|s| s.get(key).cloned()))
    }
    fn counter(&self, key: &str) -> Result<u64> {
        if let Some(v) = self.pending.borrow().counters.get(key) {
            return Ok(*v);
        }
        self.counter_cache()?;
        Ok(self
            .cache
            .borrow()
            .counters
            .as_ref()
            .and_then(|c| c.get(key).copied())
            .unwrap_or(0))
    }
    fn user(&self, id: &UserId) -> Result<Option<UserRow>> {
        if let Some(v) = self.pending.borrow().users.get(id.as_str()) {
            return Ok(Some(UserRow::decode(v)));
        }
        self.txn.user(id)
    }
    fn user_name(&self, no: UserNo) -> Result<Option<UserId>> {
        if let Some(v) = self.pending.borrow().user_names.get(&no.0) {
            return stored_user_id(v).map(Some);
        }
        self.txn.user_name(no)
    }
    fn users_raw(&self) -> Result<Vec<(String, UserRow)>> {
        self.flush_part(|p| Pending {
            users: std::mem::take(&mut p.users),
            ..Pending::default()
        })?;
        self.txn.users_raw()
    }
    fn track(&self, user: UserNo, key: &TrackKey) -> Result<Option<TrackRecord>> {
        if let Some(v) = self
            .pending
            .borrow()
            .tracks
            .get(&(user.0, key.as_str().to_owned()))
        {
            return v.as_deref().map(TrackRecord::decode).transpose();
        }
        self.txn.track(user, key)
    }
    fn tracks_of(&self, user: UserNo) -> Result<Vec<(TrackKey, TrackRecord)>> {
        self.flush_part(|p| Pending {
            tracks: std::mem::take(&mut p.tracks),
            ..Pending::default()
        })?;
        self.txn.tracks_of(user)
    }
    fn for_each_track_raw(
        &self,
        f: &mut dyn FnMut(UserNo, &str, TrackRecord) -> Result<()>,
    ) -> Result<()> {
        self.flush_part(|p| Pending {
            tracks: std::mem::take(&mut p.tracks),
            ..Pending::default()
        })?;
        self.txn.for_each_track_raw(f)
    }
    fn chunk(&self, domain: Domain, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        Ok(self.chunks(&[(domain, *id)])?.pop().flatten())
    }
    fn chunks(&self, keys: &[(Domain, ChunkId)]) -> Result<Vec<Option<ChunkEntry>>> {
        let missing: Vec<(Domain, ChunkId)> = {
            let p = self.pending.borrow();
            let c = self.cache.borrow();
            let mut seen = std::collections::HashSet::new();
            keys.iter()
                .filter(|k| !p.chunks.contains_key(k) && !c.chunks.contains_key(k))
                .filter(|k| seen.insert(**k))
                .copied()
                .collect()
        };
        if !missing.is_empty() {
            let found = self.txn.lookup(&missing, self.grace_ms)?;
            let mut c = self.cache.borrow_mut();
            for (k, v) in missing.into_iter().zip(found) {
                if let Some((_, settled)) = v {
                    c.settled.insert(k, settled);
                }
                c.chunks.insert(k, v.map(|(e, _)| e));
            }
        }
        let p = self.pending.borrow();
        let c = self.cache.borrow();
        Ok(keys
            .iter()
            .map(|k| match p.chunks.get(k) {
                Some(v) => *v,
                None => c.chunks.get(k).copied().flatten(),
            })
            .collect())
    }
    fn for_each_chunk(
        &self,
        f: &mut dyn FnMut(Domain, ChunkId, ChunkEntry) -> Result<()>,
    ) -> Result<()> {
        self.flush_part(|p| Pending {
            chunks: std::mem::take(&mut p.chunks),
            ..Pending::default()
        })?;
        self.txn.for_each_chunk(f)
    }
    fn pack(&self, id: PackId) -> Result<Option<PackRow>> {
        if let Some(v) = self.pending.borrow().packs.get(&id.0) {
            return v.as_ref().map(PackRow::decode).transpose();
        }
        self.txn.pack(id)
    }
    fn packs(&self) -> Result<Vec<(PackId, PackRow)>> {
        self.flush_part(|p| Pending {
            packs: std::mem::take(&mut p.packs),
            ..Pending::default()
        })?;
        self.txn.packs()
    }
    fn quota(&self, user: UserNo) -> Result<Option<QuotaRow>> {
        if let Some(v) = self.pending.borrow().quotas.get(&user.0) {
            return Ok(Some(QuotaRow::decode(v)));
        }
        self.txn.quota(user)
    }
    fn quota_exempt(&self, user: UserNo, key: &TrackKey) -> Result<bool> {
        if let Some(v) = self
            .pending
            .borrow()
            .exempt
            .get(&(user.0, key.as_str().to_owned()))
        {
            return Ok(*v);
        }
        self.txn.quota_exempt(user, key)
    }
    fn recording_holders(
        &self,
        fp: &AudioFingerprint,
        limit: usize,
    ) -> Result<Vec<(UserNo, TrackKey)>> {
        self.flush_part(|p| Pending {
            recordings: std::mem::take(&mut p.recordings),
            ..Pending::default()
        })?;
        self.txn.recording_holders(fp, limit)
    }
    #[cfg(feature = "object-store")]
    fn dump(&self, f: &mut dyn FnMut(MetaOp) -> Result<()>) -> Result<()> {
        self.flush()?;
        self.cache.replace(Cache::default());
        self.txn.dump(f)
    }
}

impl MetaWrite for PgWrite {
    fn prefetch_chunks(&self, keys: &[(Domain, ChunkId)]) -> Result<()> {
        self.chunks(keys).map(drop)
    }
    fn garbage_settled(&self, domain: Domain, id: &ChunkId) -> Result<bool> {
        if self.pending.borrow().chunks.contains_key(&(domain, *id)) {
            // Changed by this transaction: not garbage for long, whatever it is now.
            return Ok(false);
        }
        self.chunks(&[(domain, *id)])?;
        Ok(self
            .cache
            .borrow()
            .settled
            .get(&(domain, *id))
            .copied()
            .unwrap_or(false))
    }
    fn set_state(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.pending
            .get_mut()
            .state
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn set_counter(&mut self, key: &str, value: u64) -> Result<()> {
        to_i64(value, key)?;
        self.pending
            .get_mut()
            .counters
            .insert(key.to_owned(), value);
        Ok(())
    }
    fn put_user(&mut self, id: &UserId, row: &UserRow) -> Result<()> {
        self.pending
            .get_mut()
            .users
            .insert(id.as_str().to_owned(), row.encode());
        Ok(())
    }
    fn put_user_name(&mut self, no: UserNo, id: &UserId) -> Result<()> {
        self.pending
            .get_mut()
            .user_names
            .insert(no.0, id.as_str().to_owned());
        Ok(())
    }
    fn put_track(&mut self, user: UserNo, key: &TrackKey, track: &TrackRecord) -> Result<()> {
        self.pending
            .get_mut()
            .tracks
            .insert((user.0, key.as_str().to_owned()), Some(track.encode()));
        Ok(())
    }
    fn remove_track(&mut self, user: UserNo, key: &TrackKey) -> Result<()> {
        self.pending
            .get_mut()
            .tracks
            .insert((user.0, key.as_str().to_owned()), None);
        Ok(())
    }
    fn put_chunk(&mut self, domain: Domain, id: &ChunkId, entry: &ChunkEntry) -> Result<()> {
        if let Some(f) = &self.filter {
            f.insert(domain, id);
        }
        self.pending
            .get_mut()
            .chunks
            .insert((domain, *id), Some(*entry));
        Ok(())
    }
    fn remove_chunk(&mut self, domain: Domain, id: &ChunkId) -> Result<()> {
        self.pending.get_mut().chunks.insert((domain, *id), None);
        Ok(())
    }
    fn put_pack(&mut self, id: PackId, row: &PackRow) -> Result<()> {
        self.pending
            .get_mut()
            .packs
            .insert(id.0, Some(row.encode()));
        Ok(())
    }
    fn remove_pack(&mut self, id: PackId) -> Result<()> {
        self.pending.get_mut().packs.insert(id.0, None);
        Ok(())
    }
    fn put_quota(&mut self, user: UserNo, row: &QuotaRow) -> Result<()> {
        self.pending.get_mut().quotas.insert(user.0, row.encode());
        Ok(())
    }
    fn set_quota_exempt(&mut self, user: UserNo, key: &TrackKey, exempt: bool) -> Result<()> {
        self.pending
            .get_mut()
            .exempt
            .insert((user.0, key.as_str().to_owned()), exempt);
        Ok(())
    }
    fn put_recording(&mut self, fp: &AudioFingerprint, user: UserNo, key: &TrackKey) -> Result<()> {
        self.pending
            .get_mut()
            .recordings
            .insert((fp.0, user.0, key.as_str().to_owned()), true);
        Ok(())
    }
    fn remove_recording(
        &mut self,
        fp: &AudioFingerprint,
        user: UserNo,
        key: &TrackKey,
    ) -> Result<()> {
        self.pending
            .get_mut()
            .recordings
            .insert((fp.0, user.0, key.as_str().to_owned()), false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The lease fence against the scratch PostgreSQL (`.ci/postgres.sh` starts it and sets
    //! `LOCKERSTORE_PG_URL`; without it these tests say so and do nothing, except under `CI`).

    use super::*;

    /// A connection URL to a new, empty schema of the scratch server.
    fn fresh_schema() -> Option<String> {
        let Ok(server) = std::env::var("LOCKERSTORE_PG_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must start PostgreSQL and set LOCKERSTORE_PG_URL (.ci/postgres.sh)"
            );
            eprintln!("no PostgreSQL (set LOCKERSTORE_PG_URL): PostgreSQL test not run");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let schema = format!("unit_fence_{}_{nanos}", std::process::id());
        let mut c = postgres::Client::connect(&server, NoTls).unwrap();
        c.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
        let sep = if server.contains('?') { '&' } else { '?' };
        Some(format!("{server}{sep}options=-csearch_path%3D{schema}"))
    }

    /// A store's metadata whose lease is renewed only every 20 s: within a test, it expires
    /// or moves only when the test says so.
    fn meta(url: &str) -> PgMeta {
        let timing = Timing {
            garbage_grace: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(60),
            statement_timeout: Duration::from_secs(60),
        };
        PgMeta::connect(url, 4, true, timing).unwrap().0
    }

    fn probe_write(meta: &PgMeta, value: &[u8]) -> Result<()> {
        meta.write(&mut |w| w.set_state("fence probe", value))
    }

    fn lost(r: Result<()>) -> bool {
        matches!(r, Err(Error::LeaseLost(_)))
    }

    #[test]
    fn a_lease_taken_over_fences_the_old_holders_commits() {
        let Some(url) = fresh_schema() else { return };
        let meta = meta(&url);
        let mut other = postgres::Client::connect(&url, NoTls).unwrap();
        let lease = meta.maintenance_lease("node a").unwrap().unwrap();
        probe_write(&meta, b"held").unwrap();
        // Node b takes the lease over (as it does once the lease has expired).
        other
            .batch_execute(
                "UPDATE ls_leases SET holder = 'node b', token = token + 1, \
                 expires_at = now() + interval '1 minute'",
            )
            .unwrap();
        assert!(lost(probe_write(&meta, b"after the takeover")));
        assert_eq!(
            meta.state_now("fence probe").unwrap().as_deref(),
            Some(&b"held"[..])
        );
        drop(lease);
        // Without a lease, the thread's writes are not fenced.
        probe_write(&meta, b"unfenced").unwrap();
    }

    #[test]
    fn a_lease_that_expires_during_a_transaction_fences_its_commit() {
        let Some(url) = fresh_schema() else { return };
        let meta = meta(&url);
        let mut other = postgres::Client::connect(&url, NoTls).unwrap();
        let _lease = meta.maintenance_lease("node a").unwrap().unwrap();
        // The lease is valid when the transaction starts and expires before it commits: the
        // fence compares with the clock at the check, not with the transaction's start.
        let r = meta.write(&mut |w| {
            w.set_state("fence probe", b"late")?;
            other
                .batch_execute(
                    "UPDATE ls_leases SET expires_at = clock_timestamp() + interval '200 ms'",
                )
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        });
        assert!(matches!(r, Err(Error::LeaseLost(_))), "{r:?}");
        assert_eq!(meta.state_now("fence probe").unwrap(), None);
    }
}

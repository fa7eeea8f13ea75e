//! The server's own tables in PostgreSQL (`--meta`): what every node must see alike (accounts,
//! operators, Subsonic user data, web sessions), beside the store's `ls_*` tables in the same
//! schema.
//!
//! - **Tables** are named `srv_*`; `srv_schema` holds their version and [`MIGRATIONS`] brings
//!   an older schema up to date in one transaction, as the library does with `ls_schema`. Nodes
//!   that start together race to create them: the loser's transaction fails (serialisation
//!   failure, or the table or its type exists) and is run again, then finds the schema made.
//! - **SQL** stays within what CockroachDB also runs: no advisory locks, no server-side
//!   functions; conditional updates (`... WHERE version = $n`) instead of `SELECT ... FOR
//!   UPDATE` where a row is read, changed and written back.
//! - **Client**: the synchronous `postgres` crate with an `r2d2` pool, the library's own client
//!   (already in the build, one pool type). The server's handlers are async, so every call goes
//!   through [`blocking`]: on a runtime's worker it runs inside `block_in_place` (the worker's
//!   other tasks move to another thread meanwhile), elsewhere directly. One query is one round
//!   trip on loopback (about 0.1-0.3 ms), the same order as the engine calls the handlers make.

use std::time::Duration;

use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

type Manager = PostgresConnectionManager<NoTls>;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 1;

/// The schema, one step per version: step `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE srv_accounts (
        name text COLLATE \"C\" PRIMARY KEY,
        subsonic_password text NOT NULL
    );
    CREATE TABLE srv_operators (
        name text COLLATE \"C\" PRIMARY KEY
    );
    CREATE TABLE srv_keys (
        hash text PRIMARY KEY,
        kind text NOT NULL,
        name text COLLATE \"C\" NOT NULL
    );
    CREATE INDEX srv_keys_by_name ON srv_keys (kind, name);
    CREATE TABLE srv_userdata (
        name text COLLATE \"C\" PRIMARY KEY,
        version bigint NOT NULL,
        data text NOT NULL
    );
    CREATE TABLE srv_sessions (
        hash bytea PRIMARY KEY,
        kind text NOT NULL,
        name text COLLATE \"C\" NOT NULL,
        csrf text NOT NULL,
        created_ms bigint NOT NULL,
        last_used_ms bigint NOT NULL
    );
    CREATE INDEX srv_sessions_by_principal ON srv_sessions (kind, name);
    CREATE INDEX srv_sessions_by_last_use ON srv_sessions (last_used_ms);
"];

/// A pool of connections to the server's tables.
pub struct Pg {
    pool: r2d2::Pool<Manager>,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").finish_non_exhaustive()
    }
}

/// Runs `f`, which blocks on the network, without stalling an async runtime: inside
/// `block_in_place` on a multi-threaded runtime's worker, on a thread of its own on a
/// current-thread runtime (the synchronous client runs a runtime of its own, which may not
/// start on a thread that is inside one), directly elsewhere.
pub fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        Ok(_) => std::thread::scope(|s| s.spawn(f).join().expect("a database call panicked")),
        Err(_) => f(),
    }
}

/// Whether running the transaction again may succeed: a serialisation failure or deadlock, or
/// (while making the schema) a race with another node making the same table.
fn retryable(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.code().is_some_and(|c| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_OBJECT,
        ]
        .contains(c)
    })
}

impl Pg {
    /// Connects to `url` (a libpq URL, as `--meta` takes it) with at most `connections`
    /// connections, and creates or updates the server's tables.
    pub fn connect(url: &str, connections: u32) -> std::io::Result<Pg> {
        let config: postgres::Config = url.parse().map_err(std::io::Error::other)?;
        let pool = blocking(|| {
            r2d2::Pool::builder()
                .max_size(connections.max(1))
                .min_idle(Some(1))
                .connection_timeout(Duration::from_secs(30))
                .build(PostgresConnectionManager::new(config, NoTls))
        })
        .map_err(std::io::Error::other)?;
        let pg = Pg { pool };
        pg.migrate()?;
        Ok(pg)
    }

    /// Runs `f` on a pooled connection, again (up to 30 times) when it fails in a way another
    /// attempt may not (see [`retryable`]): `f` must therefore be a whole transaction, or one
    /// statement.
    pub fn with<T: Send>(
        &self,
        mut f: impl FnMut(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> std::io::Result<T> {
        blocking(|| {
            let mut conn = self.pool.get().map_err(std::io::Error::other)?;
            let mut attempt = 0u32;
            loop {
                match f(&mut conn) {
                    Ok(v) => return Ok(v),
                    Err(e) if attempt < 30 && retryable(&e) => {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 3));
                    }
                    Err(e) => return Err(std::io::Error::other(e)),
                }
            }
        })
    }

    /// Brings the `srv_*` tables to [`SCHEMA_VERSION`]; refuses a newer schema.
    fn migrate(&self) -> std::io::Result<()> {
        let found = self.with(|c| {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS srv_schema (id int PRIMARY KEY, version int NOT NULL)",
            )?;
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::Serializable)
                .start()?;
            let version: i32 = tx
                .query_opt("SELECT version FROM srv_schema WHERE id = 1", &[])?
                .map_or(0, |r| r.get(0));
            if version >= SCHEMA_VERSION {
                tx.commit()?;
                return Ok(version);
            }
            for step in &MIGRATIONS[usize::try_from(version).unwrap_or(0)..] {
                tx.batch_execute(step)?;
            }
            tx.execute(
                "INSERT INTO srv_schema (id, version) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                &[&SCHEMA_VERSION],
            )?;
            tx.commit()?;
            Ok(SCHEMA_VERSION)
        })?;
        if found > SCHEMA_VERSION {
            return Err(std::io::Error::other(format!(
                "the server's tables are at schema version {found}, newer than this build's \
                 {SCHEMA_VERSION}: upgrade the server"
            )));
        }
        Ok(())
    }
}

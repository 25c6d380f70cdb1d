//! Herald's storage: SQLite (embedded default) and PostgreSQL (several nodes, one database),
//! from one code base.
//!
//! Every query is written once, in SQL both databases accept (`$1` placeholders, `ON CONFLICT`,
//! `RETURNING`), and compiled once per backend by the [`read!`] and [`write_tx!`] macros, so
//! both stay type-checked. Backend-specific SQL is allowed only where it buys something, in a
//! small named branch. The conformance suite (the `herald` crate's integration tests) runs the
//! same tests on both.
//!
//! SQLite: WAL, `synchronous = FULL` (an accepted write survives power loss), foreign keys on, a
//! busy timeout, and one writer connection with `BEGIN IMMEDIATE` beside a pool of read-only
//! readers, so writers queue in the pool instead of failing on lock upgrades.

mod accept;
mod audit;
mod auth;
mod bulk;
mod bulk_delivery;
mod callbacks;
mod consent;
mod convert;
mod delivery;
mod error;
mod incidents;
mod keys;
mod limits;
mod messages;
pub mod migrations;
mod oauth;
pub mod recovery;
mod rights;
pub mod snapshot;
mod subject_rights;
mod subjects;
mod vendors;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use herald_domain::store::{Backend, Store, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub(crate) use error::from_sqlx;

/// Why a database URL or connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "unsupported database URL: it must start with sqlite:// or postgres:// (postgresql://)"
    )]
    UnsupportedScheme,
    #[error("in-memory SQLite databases are refused: they lose every message on restart")]
    InMemory,
    #[error("invalid database URL: {0}")]
    Invalid(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Which backend a URL selects. Anything but `sqlite://…` and `postgres://…` is refused rather
/// than guessed.
pub fn backend_of(url: &str) -> Result<Backend, ConnectError> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        if rest.is_empty() || rest.starts_with(":memory:") || rest.contains("mode=memory") {
            return Err(ConnectError::InMemory);
        }
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(ConnectError::UnsupportedScheme)
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size (PostgreSQL) or number of reader connections (SQLite).
    pub max_connections: u32,
    /// How long a request waits for a connection before the store reports itself unavailable.
    pub acquire_timeout: Duration,
    /// How long SQLite waits for a lock held by another process (e.g. the CLI).
    pub busy_timeout: Duration,
    /// Create the SQLite file if it does not exist (first start). PostgreSQL databases are
    /// never created: a wrong URL must not produce a fresh empty database.
    pub create_if_missing: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            create_if_missing: true,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Pools {
    Sqlite {
        reader: SqlitePool,
        writer: SqlitePool,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to a pool to read from; the body is compiled once per
/// backend.
macro_rules! read {
    ($db:expr, |$pool:ident| $body:expr) => {
        match &$db.pools {
            $crate::Pools::Sqlite { reader: $pool, .. } => $body,
            $crate::Pools::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in one write transaction `$tx` and commits it; an early return (`?`) rolls it
/// back. The body is compiled once per backend.
macro_rules! write_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        match &$db.pools {
            $crate::Pools::Sqlite { writer, .. } => {
                // IMMEDIATE takes the write lock up front: no deadlock-prone lock upgrade later.
                let mut $tx = writer
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err($crate::from_sqlx)?;
                let out = $body;
                $tx.commit().await.map_err($crate::from_sqlx)?;
                out
            }
            $crate::Pools::Postgres(pool) => {
                let mut $tx = pool.begin().await.map_err($crate::from_sqlx)?;
                let out = $body;
                $tx.commit().await.map_err($crate::from_sqlx)?;
                out
            }
        }
    };
}

/// `SELECT … WHERE column IN (…)` for a batch of keys, on `$pool`: rows of type `$row`. The list
/// is padded to the next power of two (repeating the last key), so batched look-ups take only
/// a handful of statement shapes and prepared-statement caches stay warm.
macro_rules! select_in {
    ($pool:expr, $row:ty, $prefix:expr, $keys:expr, $bind:expr) => {{
        let keys = $keys;
        let mut query = sqlx::QueryBuilder::new($prefix);
        query.push(" IN (");
        let mut list = query.separated(", ");
        if let Some(last) = keys.last() {
            let padded = keys.len().next_power_of_two();
            for i in 0..padded {
                list.push_bind($bind(keys.get(i).unwrap_or(last)));
            }
        }
        query.push(")");
        query
            .build_query_as::<$row>()
            .fetch_all($pool)
            .await
            .map_err($crate::from_sqlx)
    }};
}

/// A lease claim: `$sql!(lock)` expands to an `UPDATE … RETURNING` that binds the lease owner,
/// the lease's end, now and a limit, in that order. SQLite runs it on the writer (its write
/// lock already serialises claims); PostgreSQL adds `$pg_lock` (`FOR UPDATE SKIP LOCKED`…) so
/// nodes claiming at once skip each other's rows. Rows of type `$row`.
macro_rules! claim_leased {
    ($db:expr, $row:ty, $sql:ident, $pg_lock:literal,
     $owner:expr, $lease_until:expr, $now:expr, $limit:expr) => {{
        let limit = i64::from($limit.max(1));
        let (lease_until, now) = (
            $crate::convert::millis($lease_until),
            $crate::convert::millis($now),
        );
        match &$db.pools {
            $crate::Pools::Sqlite { writer, .. } => {
                sqlx::query_as::<_, $row>($sql!(""))
                    .bind($owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(writer)
                    .await
            }
            $crate::Pools::Postgres(pool) => {
                sqlx::query_as::<_, $row>($sql!($pg_lock))
                    .bind($owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
        }
        .map_err($crate::from_sqlx)
    }};
}

pub(crate) use {claim_leased, read, select_in, write_tx};

/// Rows a SQLite connection's thread may queue for its caller before it waits.
const ROW_BUFFER: usize = 1024;

/// A connected, migrated store.
#[derive(Debug, Clone)]
pub struct Database {
    pools: Pools,
}

impl Database {
    /// Connects to the database the URL names. Does not migrate; call [`Database::migrate`].
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, ConnectError> {
        let pools = match backend_of(url)? {
            Backend::Sqlite => {
                let base = SqliteConnectOptions::from_str(url)
                    .map_err(|e| ConnectError::Invalid(e.to_string()))?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(options.busy_timeout)
                    // Deleted content is overwritten where that costs no extra I/O.
                    .pragma("secure_delete", "fast")
                    // Batches pass through small temporary tables: keep them off the disk.
                    .pragma("temp_store", "memory")
                    // A connection's thread hands rows to the caller through a bounded queue;
                    // at sqlx's default of 50 a claim of 256 messages stalls the thread five
                    // times waiting for the caller to drain it (a thread switch each time).
                    .row_buffer_size(ROW_BUFFER);
                // The writer opens (and on first start creates) the file before any reader.
                // No ping before each acquire: with SQLite that is one more round trip to the
                // connection's thread per transaction, and a broken file fails the query anyway.
                let writer = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(
                        base.clone()
                            .create_if_missing(options.create_if_missing)
                            // Named apart from the readers: per-thread CPU shows the writer.
                            .thread_name(|id| format!("herald-sqlite-writer-{id}")),
                    )
                    .await
                    .map_err(ConnectError::Connect)?;
                let reader = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(options.max_connections.max(1))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(base.read_only(true))
                    .await
                    .map_err(ConnectError::Connect)?;
                Pools::Sqlite { reader, writer }
            }
            Backend::Postgres => {
                let connect = PgConnectOptions::from_str(url)
                    .map_err(|e| ConnectError::Invalid(e.to_string()))?
                    .application_name("herald");
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections.max(1))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .map_err(ConnectError::Connect)?;
                Pools::Postgres(pool)
            }
        };
        Ok(Self { pools })
    }

    /// Applies the embedded migrations that are not applied yet. Refuses a database that has
    /// migrations this binary does not know (a newer Herald wrote it) or whose applied
    /// migrations were edited.
    pub async fn migrate(&self) -> Result<(), ConnectError> {
        let migrator = migrations::migrator(self.backend());
        match &self.pools {
            Pools::Sqlite { writer, .. } => migrator.run(writer).await,
            // On PostgreSQL the migrator takes an advisory lock: nodes starting together
            // migrate once.
            Pools::Postgres(pool) => migrator.run(pool).await,
        }
        .map_err(ConnectError::Migrate)
    }
}

#[async_trait]
impl Store for Database {
    fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        read!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(from_sqlx))
    }

    async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { reader, writer } => {
                reader.close().await;
                writer.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme_only() {
        assert_eq!(
            backend_of("sqlite://./herald-data/herald.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(backend_of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            backend_of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        for refused in [
            "mysql://u@h/db",
            "herald.db",
            "sqlite:herald.db",
            "",
            "file:///x.db",
        ] {
            assert!(
                matches!(backend_of(refused), Err(ConnectError::UnsupportedScheme)),
                "{refused}"
            );
        }
        for memory in [
            "sqlite://",
            "sqlite://:memory:",
            "sqlite://x.db?mode=memory",
        ] {
            assert!(
                matches!(backend_of(memory), Err(ConnectError::InMemory)),
                "{memory}"
            );
        }
    }
}

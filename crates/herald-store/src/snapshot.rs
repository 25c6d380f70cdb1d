//! Logical snapshots of Herald's tables, for backups: read inside one consistent snapshot
//! (a SQLite read transaction in WAL mode; a PostgreSQL `REPEATABLE READ READ ONLY`
//! transaction) and written back into an empty database of either backend.
//!
//! Values leave the database typed only as what both backends share (integer, real, text,
//! bytes, boolean), so a snapshot taken on SQLite loads into PostgreSQL and back: the backup
//! format is also the migration path between the two. Loading converts by the *target's*
//! column types (SQLite keeps booleans as integers).

use futures_util::TryStreamExt;
use herald_domain::store::{Backend, StoreError};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use crate::{Database, Pools, from_sqlx};

/// Every Herald table, in an order that satisfies foreign keys when loaded front to back, with
/// the columns rows are read in order of (so snapshots are deterministic). A test checks the
/// list against the database's own catalogue: a new table cannot be forgotten.
pub const TABLES: &[(&str, &str)] = &[
    ("system_keys", "name"),
    ("subjects", "id"),
    ("subject_keys", "subject_id"),
    ("integrations", "id"),
    ("api_keys", "id"),
    ("audit_pending", "id"),
    ("audit_log", "seq"),
    ("audit_checkpoints", "seq, kind"),
    ("audit_keys", "key_id"),
    ("messages", "id"),
    ("message_history", "message_id, status"),
    ("message_attempts", "message_id, attempt"),
    ("idempotency_keys", "integration_id, key_hash"),
    ("provider_inbox", "id"),
    ("inbound_messages", "id"),
    ("webhook_endpoints", "id"),
    ("webhook_deliveries", "event_id, endpoint_id"),
    ("consent_events", "seq"),
    ("consents", "subject_id, purpose, channel"),
    ("opt_in_codes", "code_hash"),
    ("rights_requests", "id"),
    ("erasure_ledger", "seq"),
    ("subject_links", "subject_id, integration_id"),
    ("suppressions", "phone_index, channel"),
    ("oauth_clients", "id"),
    ("oauth_signing_keys", "kid"),
    ("oauth_revoked_tokens", "token_id"),
    ("oauth_assertions", "client_id, jti_hash"),
    ("oauth_generation", "id"),
    ("recovery_state", "id"),
    ("backups", "id"),
    ("incidents", "id"),
    ("incident_affected", "incident_id, subject_id"),
    ("vendors", "id"),
    ("vendor_history", "vendor_id, version"),
];

/// Tables a snapshot leaves out, and why. `audit_seal_mark` is each backend's own bookkeeping
/// for the guard on unsealed audit entries (SQLite reuses row ids, PostgreSQL does not): the
/// restored database keeps its freshly seeded mark, under which no loaded pending entry can be
/// deleted before the sealer has sealed it.
pub const NOT_COPIED: &[(&str, &str)] = &[(
    "audit_seal_mark",
    "backend-specific guard state, re-seeded by the migrations",
)];

/// Single-row tables the migrations seed: loading updates the seeded row instead of inserting.
const SEEDED: &[&str] = &["audit_seal_mark", "oauth_generation", "recovery_state"];

/// Rows per multi-row `INSERT` at most (the bind limit is the other bound).
const INSERT_ROWS: usize = 256;
const MAX_BINDS: usize = 30_000;

/// A column value as both backends can hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

/// What a snapshot reader emits, in order: a table, then its rows, then the next table.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Table {
        name: String,
        columns: Vec<String>,
    },
    Row(Vec<Value>),
    /// The producer checked what it sent (hashes, signature) and it may be committed. A load
    /// whose items stop without it is rolled back: a damaged or tampered backup leaves nothing.
    End,
}

/// While held, no other node takes a backup (PostgreSQL: a transaction-scoped advisory
/// lock, released when this is dropped, even if the process dies).
#[derive(Debug)]
pub struct BackupLock {
    held: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

impl BackupLock {
    /// Releases the lock now (dropping it also releases it, with a rollback in the
    /// background).
    pub async fn release(self) -> Result<(), StoreError> {
        if let Some(tx) = self.held {
            tx.rollback().await.map_err(from_sqlx)?;
        }
        Ok(())
    }
}

/// The advisory lock's key: "herald backup" in ASCII, as a number.
const BACKUP_LOCK_KEY: i64 = 0x6865_7261_6c64_6275;

/// The state of a database a restore would write into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// No Herald schema at all.
    Pristine,
    /// Herald's schema at this version and no rows (a restore that failed half-way left it).
    EmptySchema(i64),
    /// Holds data (or a newer schema): never restored into.
    InUse,
}

/// How a column of the target is typed, for conversions while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Real,
    Text,
    Bytes,
    Bool,
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn sqlite_value(row: &sqlx::sqlite::SqliteRow, index: usize) -> Result<Value, StoreError> {
    let raw = row.try_get_raw(index).map_err(from_sqlx)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().name().to_owned();
    Ok(match kind.as_str() {
        "INTEGER" | "BOOLEAN" => Value::Integer(row.try_get(index).map_err(from_sqlx)?),
        "REAL" => Value::Real(row.try_get(index).map_err(from_sqlx)?),
        "TEXT" => Value::Text(row.try_get(index).map_err(from_sqlx)?),
        "BLOB" => Value::Bytes(row.try_get(index).map_err(from_sqlx)?),
        other => return Err(corrupt(format!("unexpected SQLite value type {other}"))),
    })
}

fn postgres_value(row: &sqlx::postgres::PgRow, index: usize) -> Result<Value, StoreError> {
    let raw = row.try_get_raw(index).map_err(from_sqlx)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = row.column(index).type_info().name().to_owned();
    Ok(match kind.as_str() {
        "INT8" => Value::Integer(row.try_get(index).map_err(from_sqlx)?),
        "INT4" => Value::Integer(i64::from(row.try_get::<i32, _>(index).map_err(from_sqlx)?)),
        "INT2" => Value::Integer(i64::from(row.try_get::<i16, _>(index).map_err(from_sqlx)?)),
        "FLOAT8" => Value::Real(row.try_get(index).map_err(from_sqlx)?),
        "TEXT" | "VARCHAR" => Value::Text(row.try_get(index).map_err(from_sqlx)?),
        "BYTEA" => Value::Bytes(row.try_get(index).map_err(from_sqlx)?),
        "BOOL" => Value::Bool(row.try_get(index).map_err(from_sqlx)?),
        other => {
            return Err(corrupt(format!(
                "unexpected PostgreSQL column type {other}"
            )));
        }
    })
}

fn closed() -> StoreError {
    StoreError::Unavailable("the snapshot's reader stopped".into())
}

macro_rules! export_tables {
    ($tx:expr, $out:expr, $value:path) => {{
        for (table, order) in TABLES {
            let sql = format!("SELECT * FROM {table} ORDER BY {order}");
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut *$tx);
            let mut announced = false;
            while let Some(row) = rows.try_next().await.map_err(from_sqlx)? {
                if !announced {
                    let columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
                    $out.send(Item::Table {
                        name: (*table).to_owned(),
                        columns,
                    })
                    .await
                    .map_err(|_| closed())?;
                    announced = true;
                }
                let values = (0..row.len())
                    .map(|i| $value(&row, i))
                    .collect::<Result<Vec<_>, _>>()?;
                $out.send(Item::Row(values)).await.map_err(|_| closed())?;
            }
        }
    }};
}

impl Database {
    /// The highest schema migration applied.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let version: Option<i64> = crate::read!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success"
        )
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?);
        version.ok_or_else(|| corrupt("no schema migration is recorded"))
    }

    /// Streams every table's rows (tables without rows are left out) from one consistent
    /// snapshot into `out`, while the database keeps serving writes. Returns the schema
    /// version the snapshot was read at.
    pub async fn export_snapshot(&self, out: mpsc::Sender<Item>) -> Result<i64, StoreError> {
        match &self.pools {
            Pools::Sqlite { reader, .. } => {
                // A WAL read transaction: every statement in it sees the database as of its
                // first read, whatever the writer commits meanwhile.
                let mut tx = reader.begin().await.map_err(from_sqlx)?;
                let version: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                )
                .fetch_one(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                export_tables!(tx, out, sqlite_value);
                tx.rollback().await.map_err(from_sqlx)?;
                Ok(version)
            }
            Pools::Postgres(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(from_sqlx)?;
                let version: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                )
                .fetch_one(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                export_tables!(tx, out, postgres_value);
                tx.rollback().await.map_err(from_sqlx)?;
                Ok(version)
            }
        }
    }

    /// Takes the backup lock, or `None` when another node holds it. SQLite has one node: its
    /// lock is always granted (two backups at once there are merely two files).
    pub async fn backup_lock(&self) -> Result<Option<BackupLock>, StoreError> {
        match &self.pools {
            Pools::Sqlite { .. } => Ok(Some(BackupLock { held: None })),
            Pools::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(from_sqlx)?;
                let granted: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(BACKUP_LOCK_KEY)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                Ok(granted.then_some(BackupLock { held: Some(tx) }))
            }
        }
    }

    /// Whether a restore may write into this database.
    pub async fn target_state(&self) -> Result<TargetState, StoreError> {
        let has_schema: bool = match &self.pools {
            Pools::Sqlite { writer, .. } => sqlx::query_scalar(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(writer)
            .await
            .map_err(from_sqlx)?,
            Pools::Postgres(pool) => sqlx::query_scalar(
                "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
            )
            .fetch_one(pool)
            .await
            .map_err(from_sqlx)?,
        };
        if !has_schema {
            // Any other table means someone else's database: not ours to fill.
            let tables: i64 = match &self.pools {
                Pools::Sqlite { writer, .. } => sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
                )
                .fetch_one(writer)
                .await
                .map_err(from_sqlx)?,
                Pools::Postgres(pool) => sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                )
                .fetch_one(pool)
                .await
                .map_err(from_sqlx)?,
            };
            return Ok(if tables == 0 {
                TargetState::Pristine
            } else {
                TargetState::InUse
            });
        }
        let version = self.schema_version().await?;
        for (table, _) in TABLES {
            if SEEDED.contains(table) {
                continue;
            }
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {table})");
            let exists = crate::read!(self, |pool| sqlx::query_scalar::<_, bool>(
                sqlx::AssertSqlSafe(sql.clone())
            )
            .fetch_one(pool)
            .await);
            match exists {
                Ok(false) => {}
                Ok(true) => return Ok(TargetState::InUse),
                // A table of a later schema than this version: not a half-done restore.
                Err(_) => return Ok(TargetState::InUse),
            }
        }
        Ok(TargetState::EmptySchema(version))
    }

    /// Applies the embedded migrations up to and including `version` (a restore loads a
    /// snapshot into the schema it was taken at; the remaining migrations then run on it as
    /// they would have on the original).
    pub async fn migrate_through(&self, version: i64) -> Result<(), crate::ConnectError> {
        let migrator = crate::migrations::migrator_through(self.backend_kind(), version);
        match &self.pools {
            Pools::Sqlite { writer, .. } => migrator.run(writer).await,
            Pools::Postgres(pool) => migrator.run(pool).await,
        }
        .map_err(crate::ConnectError::Migrate)
    }

    fn backend_kind(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// Loads a snapshot read by [`Database::export_snapshot`] (from either backend) in one
    /// transaction: all of it or nothing. The target must be at the snapshot's schema version
    /// and hold no rows. With `restored`, the same transaction marks the database as restored
    /// (no crash can leave a restored database unmarked). Returns the rows loaded.
    pub async fn import_snapshot(
        &self,
        mut items: mpsc::Receiver<Item>,
        restored: Option<&RestoreMark>,
    ) -> Result<u64, StoreError> {
        let mut loaded = 0u64;
        crate::write_tx!(self, |tx| {
            let mut table: Option<TableLoad> = None;
            let mut batch: Vec<Vec<Value>> = Vec::new();
            let mut ended = false;
            while let Some(item) = items.recv().await {
                if ended {
                    return Err(corrupt("items follow the end of the snapshot"));
                }
                match item {
                    Item::End => ended = true,
                    Item::Table { name, columns } => {
                        if let Some(current) = table.take() {
                            self.flush(&mut tx, &current, &mut batch).await?;
                            self.finish_table(&mut tx, &current).await?;
                        }
                        table = Some(self.table_load(&mut tx, name, columns).await?);
                    }
                    Item::Row(values) => {
                        let Some(current) = &table else {
                            return Err(corrupt("a row comes before any table"));
                        };
                        if values.len() != current.columns.len() {
                            return Err(corrupt(format!(
                                "a row of {} has {} values for {} columns",
                                current.name,
                                values.len(),
                                current.columns.len()
                            )));
                        }
                        batch.push(values);
                        loaded += 1;
                        if batch.len() >= current.rows_per_insert() {
                            self.flush(&mut tx, current, &mut batch).await?;
                        }
                    }
                }
            }
            if !ended {
                // Returning here drops the transaction: nothing of the load stays.
                return Err(corrupt("the snapshot ended before its end mark"));
            }
            if let Some(current) = table.take() {
                self.flush(&mut tx, &current, &mut batch).await?;
                self.finish_table(&mut tx, &current).await?;
            }
            if let Some(mark) = restored {
                sqlx::query(
                    "UPDATE recovery_state SET restored_from = $1, restored_at = $2,
                            restored_ledger_entries = $3 WHERE id = 1",
                )
                .bind(&mark.backup_id)
                .bind(crate::convert::millis(mark.at))
                .bind(i64::try_from(mark.ledger_entries).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            }
            Ok::<(), StoreError>(())
        })?;
        Ok(loaded)
    }
}

/// What a restore records in the restored database, with the load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreMark {
    pub backup_id: String,
    pub at: herald_domain::clock::Timestamp,
    /// Erasures the backup's own copy of the ledger lists (a ledger with fewer is older).
    pub ledger_entries: u64,
}

/// A table being loaded: its snapshot columns and how the target types them.
#[derive(Debug)]
struct TableLoad {
    name: String,
    columns: Vec<String>,
    kinds: Vec<Kind>,
    /// PostgreSQL identity or serial columns: their sequences move past the loaded values.
    sequences: Vec<String>,
    identity_always: bool,
}

impl TableLoad {
    fn rows_per_insert(&self) -> usize {
        (MAX_BINDS / self.columns.len().max(1)).clamp(1, INSERT_ROWS)
    }
}

fn kind_of(declared: &str) -> Kind {
    let declared = declared.to_ascii_uppercase();
    if declared.contains("BOOL") {
        Kind::Bool
    } else if declared.contains("INT") {
        Kind::Integer
    } else if declared.contains("REAL")
        || declared.contains("DOUBLE")
        || declared.contains("FLOAT")
        || declared.contains("NUMERIC")
    {
        Kind::Real
    } else if declared.contains("BLOB") || declared.contains("BYTEA") {
        Kind::Bytes
    } else {
        Kind::Text
    }
}

/// The value as the target column wants it; a mismatch that cannot be converted losslessly is
/// corruption, never a silent change.
fn convert(value: Value, kind: Kind, table: &str, column: &str) -> Result<Value, StoreError> {
    let mismatch = || corrupt(format!("{table}.{column} holds a value of the wrong type"));
    Ok(match (value, kind) {
        (Value::Null, _) => Value::Null,
        (Value::Integer(i), Kind::Integer) => Value::Integer(i),
        (Value::Integer(i), Kind::Bool) => Value::Bool(match i {
            0 => false,
            1 => true,
            _ => return Err(mismatch()),
        }),
        (Value::Bool(b), Kind::Integer) => Value::Integer(i64::from(b)),
        (Value::Bool(b), Kind::Bool) => Value::Bool(b),
        (Value::Integer(i), Kind::Real) => Value::Real(i as f64),
        (Value::Real(r), Kind::Real) => Value::Real(r),
        (Value::Text(t), Kind::Text) => Value::Text(t),
        (Value::Bytes(b), Kind::Bytes) => Value::Bytes(b),
        _ => return Err(mismatch()),
    })
}

/// Binds a value; a NULL is typed as its column (PostgreSQL refuses a text NULL for BIGINT).
macro_rules! bind_value {
    ($list:expr, $value:expr, $kind:expr) => {
        match ($value, $kind) {
            (Value::Null, Kind::Integer) => $list.push_bind(None::<i64>),
            (Value::Null, Kind::Real) => $list.push_bind(None::<f64>),
            (Value::Null, Kind::Text) => $list.push_bind(None::<String>),
            (Value::Null, Kind::Bytes) => $list.push_bind(None::<Vec<u8>>),
            (Value::Null, Kind::Bool) => $list.push_bind(None::<bool>),
            (Value::Integer(i), _) => $list.push_bind(i),
            (Value::Real(r), _) => $list.push_bind(r),
            (Value::Text(t), _) => $list.push_bind(t),
            (Value::Bytes(b), _) => $list.push_bind(b),
            (Value::Bool(b), _) => $list.push_bind(b),
        }
    };
}

impl Database {
    async fn table_load<C>(
        &self,
        tx: &mut C,
        name: String,
        columns: Vec<String>,
    ) -> Result<TableLoad, StoreError>
    where
        C: TxConnection,
    {
        if !TABLES.iter().any(|(t, _)| *t == name) {
            // Includes NOT_COPIED tables: a snapshot that carries one was not written by us.
            return Err(corrupt(format!(
                "the snapshot holds an unknown table {name}"
            )));
        }
        let target = tx.columns(&name).await?;
        let mut kinds = Vec::with_capacity(columns.len());
        for column in &columns {
            let Some((_, declared, _)) = target.iter().find(|(c, _, _)| c == column) else {
                return Err(corrupt(format!(
                    "the snapshot's column {name}.{column} does not exist in this schema"
                )));
            };
            kinds.push(kind_of(declared));
        }
        let sequences: Vec<String> = target
            .iter()
            .filter(|(_, _, generated)| generated.is_some())
            .map(|(c, _, _)| c.clone())
            .collect();
        let identity_always = target
            .iter()
            .any(|(_, _, generated)| generated.as_deref() == Some("always"));
        Ok(TableLoad {
            name,
            columns,
            kinds,
            sequences,
            identity_always,
        })
    }

    async fn flush<C: TxConnection>(
        &self,
        tx: &mut C,
        table: &TableLoad,
        batch: &mut Vec<Vec<Value>>,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(batch.len());
        for values in batch.drain(..) {
            let mut converted = Vec::with_capacity(values.len());
            for ((value, kind), column) in values.into_iter().zip(&table.kinds).zip(&table.columns)
            {
                converted.push((convert(value, *kind, &table.name, column)?, *kind));
            }
            rows.push(converted);
        }
        let mut sql = format!("INSERT INTO {} ({})", table.name, table.columns.join(", "));
        if table.identity_always {
            sql.push_str(" OVERRIDING SYSTEM VALUE");
        }
        let conflict = if SEEDED.contains(&table.name.as_str()) {
            let updates: Vec<String> = table
                .columns
                .iter()
                .filter(|c| c.as_str() != "id")
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            if updates.is_empty() {
                " ON CONFLICT (id) DO NOTHING".to_owned()
            } else {
                format!(" ON CONFLICT (id) DO UPDATE SET {}", updates.join(", "))
            }
        } else {
            String::new()
        };
        tx.insert(&sql, rows, &conflict).await
    }

    async fn finish_table<C: TxConnection>(
        &self,
        tx: &mut C,
        table: &TableLoad,
    ) -> Result<(), StoreError> {
        for column in &table.sequences {
            tx.advance_sequence(&table.name, column).await?;
        }
        Ok(())
    }
}

/// One multi-row `INSERT` of typed values, compiled per backend.
macro_rules! insert_rows {
    ($db:ty, $executor:expr, $head:expr, $rows:expr, $conflict:expr) => {{
        let mut query = sqlx::QueryBuilder::<$db>::new($head);
        query.push(" ");
        query.push_values($rows, |mut list, values| {
            for (value, kind) in values {
                bind_value!(list, value, kind);
            }
        });
        query.push($conflict);
        query.build().execute($executor).await.map_err(from_sqlx)?;
        Ok(())
    }};
}

/// What loading needs from a transaction, per backend.
#[async_trait::async_trait]
trait TxConnection: Send {
    /// (column, declared type, `Some("always" | "default")` when generated by a sequence).
    async fn columns(
        &mut self,
        table: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError>;
    async fn insert(
        &mut self,
        head: &str,
        rows: Vec<Vec<(Value, Kind)>>,
        conflict: &str,
    ) -> Result<(), StoreError>;
    async fn advance_sequence(&mut self, table: &str, column: &str) -> Result<(), StoreError>;
}

#[async_trait::async_trait]
impl TxConnection for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn columns(
        &mut self,
        table: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, type FROM pragma_table_info($1)")
                .bind(table)
                .fetch_all(&mut **self)
                .await
                .map_err(from_sqlx)?;
        // SQLite's INTEGER PRIMARY KEY takes explicit values and moves AUTOINCREMENT on.
        Ok(rows.into_iter().map(|(c, t)| (c, t, None)).collect())
    }

    async fn insert(
        &mut self,
        head: &str,
        rows: Vec<Vec<(Value, Kind)>>,
        conflict: &str,
    ) -> Result<(), StoreError> {
        insert_rows!(sqlx::Sqlite, &mut **self, head, rows, conflict)
    }

    async fn advance_sequence(&mut self, _table: &str, _column: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl TxConnection for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn columns(
        &mut self,
        table: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT column_name::TEXT, data_type::TEXT, is_identity::TEXT,
                    identity_generation::TEXT, column_default::TEXT
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(&mut **self)
        .await
        .map_err(from_sqlx)?;
        Ok(rows
            .into_iter()
            .map(|(column, declared, identity, generation, default)| {
                let generated = if identity == "YES" {
                    Some(generation.unwrap_or_default().to_ascii_lowercase())
                } else if default.is_some_and(|d| d.starts_with("nextval(")) {
                    Some("default".to_owned())
                } else {
                    None
                };
                (column, declared, generated)
            })
            .collect())
    }

    async fn insert(
        &mut self,
        head: &str,
        rows: Vec<Vec<(Value, Kind)>>,
        conflict: &str,
    ) -> Result<(), StoreError> {
        insert_rows!(sqlx::Postgres, &mut **self, head, rows, conflict)
    }

    async fn advance_sequence(&mut self, table: &str, column: &str) -> Result<(), StoreError> {
        // The next generated value follows the largest loaded one.
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                           COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut **self)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }
}

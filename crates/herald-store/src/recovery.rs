//! What disaster recovery keeps in the database: the erasure ledger this database pairs with,
//! the mark a restore leaves until the first start, and the register of backups written.

use herald_domain::clock::Timestamp;
use herald_domain::store::StoreError;

use crate::convert::{millis, opt_millis, opt_time, time};
use crate::{Database, from_sqlx, read, write_tx};

/// The single `recovery_state` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryState {
    pub ledger_id: Option<String>,
    pub restored_from: Option<String>,
    pub restored_at: Option<Timestamp>,
    pub restored_ledger_entries: Option<u64>,
}

/// One backup in the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: String,
    pub created_at: Timestamp,
    pub file_name: String,
    pub size_bytes: u64,
    pub duration_ms: u64,
    /// The signed manifest, as JSON text.
    pub manifest: String,
    pub verified_at: Option<Timestamp>,
    pub drilled_at: Option<Timestamp>,
    pub pruned_at: Option<Timestamp>,
}

type BackupRow = (
    String,
    i64,
    String,
    i64,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn backup_of(row: BackupRow) -> Result<BackupRecord, StoreError> {
    let (id, created, file_name, size, duration, manifest, verified, drilled, pruned) = row;
    Ok(BackupRecord {
        id,
        created_at: time(created)?,
        file_name,
        size_bytes: u64::try_from(size).unwrap_or(0),
        duration_ms: u64::try_from(duration).unwrap_or(0),
        manifest,
        verified_at: opt_time(verified)?,
        drilled_at: opt_time(drilled)?,
        pruned_at: opt_time(pruned)?,
    })
}

type RecoveryRow = (Option<String>, Option<String>, Option<i64>, Option<i64>);

/// Which of a backup's marks to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMark {
    Verified,
    Drilled,
    Pruned,
}

impl Database {
    pub async fn recovery_state(&self) -> Result<RecoveryState, StoreError> {
        let row: Option<RecoveryRow> = read!(self, |pool| sqlx::query_as(
            "SELECT ledger_id, restored_from, restored_at, restored_ledger_entries
                 FROM recovery_state WHERE id = 1"
        )
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        let Some((ledger_id, restored_from, restored_at, entries)) = row else {
            return Ok(RecoveryState::default());
        };
        Ok(RecoveryState {
            ledger_id,
            restored_from,
            restored_at: opt_time(restored_at)?,
            restored_ledger_entries: entries.and_then(|n| u64::try_from(n).ok()),
        })
    }

    /// Records the ledger file's id — once, unless `replace` (an operator accepted a missing
    /// or foreign ledger): returns the id in force (another node's, if it recorded one first).
    pub async fn pair_ledger(&self, ledger_id: &str, replace: bool) -> Result<String, StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE recovery_state SET ledger_id = $1
                 WHERE id = 1 AND (ledger_id IS NULL OR $2)",
            )
            .bind(ledger_id)
            .bind(replace)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            let id: Option<String> =
                sqlx::query_scalar("SELECT ledger_id FROM recovery_state WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            Ok::<_, StoreError>(id.unwrap_or_else(|| ledger_id.to_owned()))
        })
    }

    /// The first start after a restore re-applied the ledger: the database is ordinary again.
    pub async fn clear_restored(&self) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE recovery_state SET restored_from = NULL, restored_at = NULL,
                        restored_ledger_entries = NULL WHERE id = 1",
            )
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            Ok::<_, StoreError>(())
        })
    }

    pub async fn record_backup(&self, backup: &BackupRecord) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO backups (id, created_at, file_name, size_bytes, duration_ms, manifest)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&backup.id)
            .bind(millis(backup.created_at))
            .bind(&backup.file_name)
            .bind(i64::try_from(backup.size_bytes).unwrap_or(i64::MAX))
            .bind(i64::try_from(backup.duration_ms).unwrap_or(i64::MAX))
            .bind(&backup.manifest)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            Ok::<_, StoreError>(())
        })
    }

    /// Backups newest first (pruned ones included: the register is history).
    pub async fn backups(&self, limit: u32) -> Result<Vec<BackupRecord>, StoreError> {
        let rows: Vec<BackupRow> = read!(self, |pool| sqlx::query_as(
            "SELECT id, created_at, file_name, size_bytes, duration_ms, manifest,
                    verified_at, drilled_at, pruned_at
             FROM backups ORDER BY created_at DESC, id DESC LIMIT $1"
        )
        .bind(i64::from(limit.max(1)))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(backup_of).collect()
    }

    pub async fn mark_backup(
        &self,
        id: &str,
        mark: BackupMark,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = match mark {
            BackupMark::Verified => "UPDATE backups SET verified_at = $1 WHERE id = $2",
            BackupMark::Drilled => "UPDATE backups SET drilled_at = $1 WHERE id = $2",
            BackupMark::Pruned => {
                "UPDATE backups SET pruned_at = $1 WHERE id = $2 AND pruned_at IS NULL"
            }
        };
        let changed = write_tx!(self, |tx| {
            let done = sqlx::query(sql)
                .bind(opt_millis(Some(at)))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            Ok::<_, StoreError>(done.rows_affected())
        })?;
        Ok(changed > 0)
    }
}

//! Audit storage: unsealed entries written with their actions, the sealed chain, checkpoints and
//! signing keys.

use async_trait::async_trait;
use herald_domain::audit::{
    AuditKeyRecord, AuditRecord, ChainHead, Checkpoint, CheckpointKind, PendingEntry, SealInput,
    SealPlan, SealedEntry,
};
use herald_domain::clock::Timestamp;
use herald_domain::store::{AuditStore, SealFn, StoreError};

use crate::bulk::AuditBulk;
use crate::convert::{millis, time};
use crate::{Database, Pools, from_sqlx, read, write_tx};

/// The PostgreSQL advisory lock a sealing transaction holds: one sealer at a time across nodes.
const SEALER_LOCK: i64 = 0x4845_5241_4c44_0001; // "HERALD" + 1

/// Inserts one unsealed audit entry inside the caller's transaction. A failure here is an audit
/// failure: the caller's whole transaction (the action) rolls back with it.
macro_rules! insert_audit {
    ($executor:expr, $record:expr) => {{
        let record: &herald_domain::audit::AuditRecord = $record;
        sqlx::query("INSERT INTO audit_pending (recorded_at, body) VALUES ($1, $2)")
            .bind($crate::convert::millis(record.recorded_at))
            .bind(record.body.as_str())
            .execute($executor)
            .await
            .map_err(|e| herald_domain::store::StoreError::AuditUnavailable(Box::new(e)))
    }};
}

pub(crate) use insert_audit;

/// Runs `$update` (a statement that changes at most one row) in its own write transaction and,
/// when it changed the row, writes `$audit` in the same transaction: no change without its
/// entry, no entry for a change that did not happen. Evaluates to whether the row changed.
macro_rules! update_audited {
    ($db:expr, $update:expr, $audit:expr) => {{
        let changed: bool = $crate::write_tx!($db, |tx| {
            let changed = $update
                .execute(&mut *tx)
                .await
                .map_err($crate::from_sqlx)?
                .rows_affected()
                == 1;
            if changed {
                $crate::audit::insert_audit!(&mut *tx, $audit)?;
            }
            changed
        });
        changed
    }};
}

pub(crate) use update_audited;

/// Inserts a signed checkpoint inside the caller's transaction.
macro_rules! insert_checkpoint {
    ($executor:expr, $checkpoint:expr) => {{
        let c: &Checkpoint = $checkpoint;
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, kind, head, created_at, key_id, signature)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(signed(c.seq)?)
        .bind(c.kind.as_str())
        .bind(&c.head[..])
        .bind(millis(c.time))
        .bind(c.key_id.as_str())
        .bind(&c.signature[..])
        .execute($executor)
        .await
        .map_err(from_sqlx)
    }};
}

fn seq(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt("a stored sequence number is negative".into()))
}

fn signed(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt("a sequence number is out of range".into()))
}

fn hash32(value: Vec<u8>) -> Result<[u8; 32], StoreError> {
    value
        .try_into()
        .map_err(|_| StoreError::Corrupt("a stored audit hash has the wrong length".into()))
}

type CheckpointRow = (i64, String, Vec<u8>, i64, String, Vec<u8>);

fn checkpoint(row: CheckpointRow) -> Result<Checkpoint, StoreError> {
    let (s, kind, head, created_at, key_id, signature) = row;
    Ok(Checkpoint {
        seq: seq(s)?,
        head: hash32(head)?,
        time: time(created_at)?,
        key_id,
        kind: CheckpointKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt("a stored checkpoint kind is unknown".into()))?,
        signature: signature
            .try_into()
            .map_err(|_| StoreError::Corrupt("a stored signature has the wrong length".into()))?,
    })
}

type EntryRow = (i64, Vec<u8>, i64, String);

fn sealed(row: EntryRow) -> Result<SealedEntry, StoreError> {
    let (s, hash, recorded_at, body) = row;
    Ok(SealedEntry {
        seq: seq(s)?,
        // A wrong-length hash is tampering, not corruption to stop on: verification reports it.
        hash: hash.try_into().unwrap_or([0xff; 32]),
        recorded_at: time(recorded_at)?,
        body,
    })
}

impl Database {
    fn is_postgres(&self) -> bool {
        matches!(self.pools, Pools::Postgres(_))
    }
}

#[async_trait]
impl AuditStore for Database {
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        write_tx!(self, |tx| AuditBulk::insert_pending(&mut *tx, records)
            .await
            .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?);
        Ok(())
    }

    async fn seal_audit(
        &self,
        limit: u32,
        wait_for_lock: bool,
        plan: SealFn<'_>,
    ) -> Result<Option<SealPlan>, StoreError> {
        let postgres = self.is_postgres();
        let planned: Option<SealPlan> = write_tx!(self, |tx| 'seal: {
            // SQLite: this IMMEDIATE transaction already holds the database's write lock.
            if postgres && wait_for_lock {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(SEALER_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            } else if postgres {
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(SEALER_LOCK)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                if !locked {
                    break 'seal None;
                }
            }
            let last: Option<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            let last = match last {
                Some(row) => Some(row),
                None => sqlx::query_as(
                    "SELECT seq, head FROM audit_checkpoints WHERE kind = 'horizon'
                     ORDER BY seq DESC LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?,
            };
            let head = match last {
                Some((s, hash)) => ChainHead {
                    seq: seq(s)?,
                    hash: hash32(hash)?,
                },
                None => ChainHead::GENESIS,
            };
            let last_checkpoint: Option<(i64, i64)> = sqlx::query_as(
                "SELECT seq, created_at FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            let last_checkpoint = match last_checkpoint {
                Some((s, at)) => Some((seq(s)?, time(at)?)),
                None => None,
            };
            let rows: Vec<(i64, i64, String)> = sqlx::query_as(
                "SELECT id, recorded_at, body FROM audit_pending ORDER BY id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            let pending = rows
                .into_iter()
                .map(|(id, at, body)| {
                    Ok(PendingEntry {
                        id,
                        recorded_at: time(at)?,
                        body,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let decided = plan(SealInput {
                head,
                last_checkpoint,
                pending,
            })
            .map_err(|e| StoreError::Internal(e.into()))?;
            if !decided.sealed.is_empty() {
                AuditBulk::insert_sealed(&mut *tx, &decided.sealed)
                    .await
                    .map_err(from_sqlx)?;
                AuditBulk::delete_pending(&mut *tx, &decided.pending_ids)
                    .await
                    .map_err(from_sqlx)?;
            }
            for checkpoint in &decided.checkpoints {
                insert_checkpoint!(&mut *tx, checkpoint)?;
            }
            Some(decided)
        });
        Ok(planned)
    }

    async fn audit_entries(&self, after: u64, limit: u32) -> Result<Vec<SealedEntry>, StoreError> {
        let after = signed(after)?;
        let rows: Vec<EntryRow> = read!(self, |pool| {
            sqlx::query_as(
            "SELECT seq, hash, recorded_at, body FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?
        });
        rows.into_iter().map(sealed).collect()
    }

    async fn audit_entries_between(
        &self,
        after: u64,
        through: u64,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        let (after, through) = (signed(after)?, signed(through)?);
        let rows: Vec<EntryRow> = read!(self, |pool| sqlx::query_as(
            "SELECT seq, hash, recorded_at, body FROM audit_log
             WHERE seq > $1 AND seq <= $2 ORDER BY seq"
        )
        .bind(after)
        .bind(through)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(sealed).collect()
    }

    async fn audit_last_seq(&self) -> Result<Option<u64>, StoreError> {
        let last: Option<i64> = read!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(seq) FROM audit_log"
        )
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?);
        last.map(seq).transpose()
    }

    async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows: Vec<CheckpointRow> = read!(self, |pool| sqlx::query_as(
            "SELECT seq, kind, head, created_at, key_id, signature FROM audit_checkpoints
             ORDER BY seq, kind"
        )
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(checkpoint).collect()
    }

    async fn audit_pending_count(&self) -> Result<u64, StoreError> {
        let count: i64 = read!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_pending"
        )
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?);
        seq(count)
    }

    async fn audit_keys(&self) -> Result<Vec<AuditKeyRecord>, StoreError> {
        let rows: Vec<(String, Vec<u8>, Vec<u8>, i64)> = read!(self, |pool| sqlx::query_as(
            "SELECT key_id, public_key, private_key_ciphertext, created_at FROM audit_keys
             ORDER BY created_at, key_id"
        )
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter()
            .map(|(key_id, public_key, private_key_ciphertext, created_at)| {
                Ok(AuditKeyRecord {
                    key_id,
                    public_key,
                    private_key_ciphertext,
                    created_at: time(created_at)?,
                })
            })
            .collect()
    }

    async fn insert_audit_key(
        &self,
        key: &AuditKeyRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let inserted = write_tx!(self, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO audit_keys (key_id, public_key, private_key_ciphertext, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(key.key_id.as_str())
            .bind(&key.public_key)
            .bind(&key.private_key_ciphertext)
            .bind(millis(key.created_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            if inserted {
                insert_audit!(&mut *tx, audit)?;
            }
            inserted
        });
        Ok(inserted)
    }

    async fn audit_prunable_through(&self, cutoff: Timestamp) -> Result<Option<u64>, StoreError> {
        let (first_kept, first, last): (Option<i64>, Option<i64>, Option<i64>) =
            read!(self, |pool| sqlx::query_as(
                "SELECT (SELECT MIN(seq) FROM audit_log WHERE recorded_at >= $1),
                        (SELECT MIN(seq) FROM audit_log),
                        (SELECT MAX(seq) FROM audit_log)"
            )
            .bind(millis(cutoff))
            .fetch_one(pool)
            .await
            .map_err(from_sqlx)?);
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(None);
        };
        let through = match first_kept {
            Some(kept) => kept - 1,
            None => last,
        };
        if through < first {
            return Ok(None);
        }
        Ok(Some(seq(through)?))
    }

    async fn prune_audit(
        &self,
        horizon: &Checkpoint,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError> {
        let through = signed(horizon.seq)?;
        let removed = write_tx!(self, |tx| {
            insert_checkpoint!(&mut *tx, horizon)?;
            let removed = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
                .bind(through)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
            insert_audit!(&mut *tx, audit)?;
            removed
        });
        Ok(removed)
    }
}

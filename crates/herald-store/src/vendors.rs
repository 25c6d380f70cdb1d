//! The provider register.

use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::store::StoreError;
use herald_domain::vendors::{VendorHistoryRow, VendorRow, VendorStore};

use crate::audit::insert_audit;
use crate::convert::{millis, time};
use crate::{Database, from_sqlx, read, write_tx};

macro_rules! insert_history {
    ($tx:expr, $h:expr) => {
        sqlx::query(
            "INSERT INTO vendor_history (vendor_id, version, status, facts, reason, actor, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&$h.vendor_id)
        .bind($h.version)
        .bind(&$h.status)
        .bind(&$h.facts)
        .bind(&$h.reason)
        .bind(&$h.actor)
        .bind(millis($h.at))
        .execute($tx)
        .await
        .map_err(from_sqlx)?
    };
}

#[async_trait]
impl VendorStore for Database {
    async fn insert_vendor(
        &self,
        row: &VendorRow,
        history: &VendorHistoryRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let inserted = write_tx!(self, |tx| {
            let done = sqlx::query(
                "INSERT INTO vendors (id, status, facts, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&row.id)
            .bind(&row.status)
            .bind(&row.facts)
            .bind(row.version)
            .bind(millis(row.created_at))
            .bind(millis(row.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            insert_history!(&mut *tx, history);
            insert_audit!(&mut *tx, audit)?;
            Ok::<_, StoreError>(true)
        })?;
        Ok(inserted)
    }

    async fn update_vendor(
        &self,
        row: &VendorRow,
        expected_version: i64,
        history: &VendorHistoryRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let changed = write_tx!(self, |tx| {
            let done = sqlx::query(
                "UPDATE vendors SET status = $1, facts = $2, version = $3, updated_at = $4
                 WHERE id = $5 AND version = $6",
            )
            .bind(&row.status)
            .bind(&row.facts)
            .bind(row.version)
            .bind(millis(row.updated_at))
            .bind(&row.id)
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            insert_history!(&mut *tx, history);
            insert_audit!(&mut *tx, audit)?;
            Ok::<_, StoreError>(true)
        })?;
        Ok(changed)
    }

    async fn vendors(&self) -> Result<Vec<VendorRow>, StoreError> {
        let rows: Vec<(String, String, String, i64, i64, i64)> = read!(self, |pool| {
            sqlx::query_as(
                "SELECT id, status, facts, version, created_at, updated_at FROM vendors ORDER BY id",
            )
            .fetch_all(pool)
            .await
            .map_err(from_sqlx)?
        });
        rows.into_iter()
            .map(|(id, status, facts, version, created, updated)| {
                Ok(VendorRow {
                    id,
                    status,
                    facts,
                    version,
                    created_at: time(created)?,
                    updated_at: time(updated)?,
                })
            })
            .collect()
    }

    async fn vendor_history(&self, id: &str) -> Result<Vec<VendorHistoryRow>, StoreError> {
        let rows: Vec<(String, i64, String, String, String, String, i64)> = read!(self, |pool| {
            sqlx::query_as(
                "SELECT vendor_id, version, status, facts, reason, actor, at FROM vendor_history
                 WHERE vendor_id = $1 ORDER BY version",
            )
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(from_sqlx)?
        });
        rows.into_iter()
            .map(|(vendor_id, version, status, facts, reason, actor, at)| {
                Ok(VendorHistoryRow {
                    vendor_id,
                    version,
                    status,
                    facts,
                    reason,
                    actor,
                    at: time(at)?,
                })
            })
            .collect()
    }
}

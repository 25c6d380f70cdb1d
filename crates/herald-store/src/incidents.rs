//! The incident register.

use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::ids::IncidentId;
use herald_domain::store::{IncidentRow, IncidentStore, PageRequest, StoreError};

use crate::audit::insert_audit;
use crate::convert::{id, limit, millis, time};
use crate::{Database, from_sqlx, read, write_tx};

type Row = (String, String, String, Vec<u8>, i64, i64, i64);

const COLUMNS: &str = "id, status, facts, text_ciphertext, created_at, updated_at, version";

fn incident(row: Row) -> Result<IncidentRow, StoreError> {
    let (incident_id, status, facts, text_ciphertext, created_at, updated_at, version) = row;
    Ok(IncidentRow {
        id: id(&incident_id, IncidentId::parse)?,
        status,
        facts,
        text_ciphertext,
        created_at: time(created_at)?,
        updated_at: time(updated_at)?,
        version,
    })
}

#[async_trait]
impl IncidentStore for Database {
    async fn insert_incident(
        &self,
        row: &IncidentRow,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO incidents (id, status, facts, text_ciphertext, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(row.id.as_str())
            .bind(&row.status)
            .bind(&row.facts)
            .bind(&row.text_ciphertext)
            .bind(millis(row.created_at))
            .bind(millis(row.updated_at))
            .bind(row.version)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            insert_audit!(&mut *tx, audit)?;
        });
        Ok(())
    }

    async fn incident(&self, incident_id: &IncidentId) -> Result<Option<IncidentRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM incidents WHERE id = $1");
        let row: Option<Row> = read!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
            sql.clone()
        ))
        .bind(incident_id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(incident).transpose()
    }

    async fn incidents(&self, page: &PageRequest) -> Result<Vec<IncidentRow>, StoreError> {
        // Ids are random, so the order is by opening time with the id as the tie-breaker; the
        // cursor is the last id, looked up.
        let sql = format!(
            "SELECT {COLUMNS} FROM incidents
             WHERE ($1 = '' OR (created_at, id) > (SELECT created_at, id FROM incidents WHERE id = $1))
             ORDER BY created_at, id LIMIT $2"
        );
        let rows: Vec<Row> = read!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
            sql.clone()
        ))
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(limit(page.limit))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(incident).collect()
    }

    async fn update_incident(
        &self,
        row: &IncidentRow,
        expected_version: i64,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let changed = write_tx!(self, |tx| {
            let done = sqlx::query(
                "UPDATE incidents SET status = $1, facts = $2, text_ciphertext = $3,
                        updated_at = $4, version = $5
                 WHERE id = $6 AND version = $7",
            )
            .bind(&row.status)
            .bind(&row.facts)
            .bind(&row.text_ciphertext)
            .bind(millis(row.updated_at))
            .bind(row.version)
            .bind(row.id.as_str())
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            if done.rows_affected() == 0 {
                // Dropping the transaction writes nothing, the audit entry included.
                return Ok(false);
            }
            insert_audit!(&mut *tx, audit)?;
            Ok::<_, StoreError>(true)
        })?;
        Ok(changed)
    }
}

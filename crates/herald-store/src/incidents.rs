//! The incident register.

use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::clock::Timestamp;
use herald_domain::ids::{IncidentId, IntegrationId, MessageId, SubjectId};
use herald_domain::store::{AffectedRow, IncidentRow, IncidentStore, PageRequest, StoreError};
use herald_domain::webhooks::OperatorEvent;

use crate::audit::insert_audit;
use crate::convert::{id, limit, millis, opt_millis, opt_time, time};
use crate::{Database, from_sqlx, read, write_tx};

/// Replaces an incident row if it is still at `expected_version`: `true` when it was.
macro_rules! replace_incident {
    ($tx:expr, $row:expr, $expected:expr) => {
        sqlx::query(
            "UPDATE incidents SET status = $1, facts = $2, text_ciphertext = $3,
                    updated_at = $4, version = $5
             WHERE id = $6 AND version = $7",
        )
        .bind(&$row.status)
        .bind(&$row.facts)
        .bind(&$row.text_ciphertext)
        .bind(millis($row.updated_at))
        .bind($row.version)
        .bind($row.id.as_str())
        .bind($expected)
        .execute($tx)
        .await
        .map_err(from_sqlx)?
        .rows_affected()
            > 0
    };
}

/// Queues an event about no one person (sealed under the system key) for every enabled
/// endpoint subscribed to its type that `$filter` keeps (`$1`–`$5` are taken; the filter's own
/// parameters, `$extra`, are `$6` on).
macro_rules! queue_operator_event {
    ($tx:expr, $event:expr, $filter:literal $(, $extra:expr)*) => {{
        sqlx::query(concat!(
            "INSERT INTO webhook_deliveries (event_id, endpoint_id, event_type, subject_id,
               payload_ciphertext, status, attempts, due_at, created_at, updated_at)
             SELECT $1, e.id, $2, NULL, $3, 'pending', 0, $4, $4, $4
             FROM webhook_endpoints AS e
             WHERE e.enabled = true AND e.events LIKE $5",
            $filter
        ))
        .bind($event.id.as_str())
        .bind($event.event_type.as_str())
        .bind(&$event.payload_ciphertext)
        .bind(millis($event.created_at))
        .bind(format!("%,{},%", $event.event_type.as_str()))
        $(.bind($extra))*
        .execute($tx)
        .await
        .map_err(from_sqlx)?
    }};
}

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

type Affected = (String, String, i64, i64, Option<String>, Option<i64>);

fn affected(row: Affected) -> Result<AffectedRow, StoreError> {
    let (subject_id, kinds, first_at, last_at, notice_message_id, notice_at) = row;
    Ok(AffectedRow {
        subject_id: id(&subject_id, SubjectId::parse)?,
        kinds,
        first_at: time(first_at)?,
        last_at: time(last_at)?,
        notice_message_id: notice_message_id
            .map(|m| id(&m, MessageId::parse))
            .transpose()?,
        notice_at: opt_time(notice_at)?,
    })
}

/// Rows per multi-row insert: 6 parameters each, far below both backends' limits.
const AFFECTED_PER_STATEMENT: usize = 500;

#[async_trait]
impl IncidentStore for Database {
    async fn incident_affected(
        &self,
        incident_id: &IncidentId,
        after: Option<&SubjectId>,
        page: u32,
    ) -> Result<Vec<AffectedRow>, StoreError> {
        let rows: Vec<Affected> = read!(self, |pool| sqlx::query_as(
            "SELECT subject_id, kinds, first_at, last_at, notice_message_id, notice_at
             FROM incident_affected WHERE incident_id = $1 AND subject_id > $2
             ORDER BY subject_id LIMIT $3"
        )
        .bind(incident_id.as_str())
        .bind(after.map_or("", SubjectId::as_str))
        .bind(limit(page))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(affected).collect()
    }

    async fn merge_incident_affected(
        &self,
        row: &IncidentRow,
        expected_version: i64,
        rows: &[AffectedRow],
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let changed = write_tx!(self, |tx| {
            if !replace_incident!(&mut *tx, row, expected_version) {
                return Ok(false);
            }
            for chunk in rows.chunks(AFFECTED_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO incident_affected (incident_id, subject_id, kinds, first_at, last_at, notice_at) ",
                );
                insert.push_values(chunk, |mut values, r| {
                    values
                        .push_bind(row.id.as_str())
                        .push_bind(r.subject_id.as_str())
                        .push_bind(&r.kinds)
                        .push_bind(millis(r.first_at))
                        .push_bind(millis(r.last_at))
                        .push_bind(opt_millis(r.notice_at));
                });
                insert.push(
                    " ON CONFLICT (incident_id, subject_id) DO UPDATE SET kinds = excluded.kinds,
                      first_at = excluded.first_at, last_at = excluded.last_at",
                );
                insert
                    .build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            }
            insert_audit!(&mut *tx, audit)?;
            Ok::<_, StoreError>(true)
        })?;
        Ok(changed)
    }

    async fn record_incident_alert(
        &self,
        row: &IncidentRow,
        expected_version: i64,
        audit: &AuditRecord,
        event: &OperatorEvent,
    ) -> Result<bool, StoreError> {
        let changed = write_tx!(self, |tx| {
            if !replace_incident!(&mut *tx, row, expected_version) {
                return Ok(false);
            }
            // The scope is checked when the event is queued: an integration that lost its
            // last credential allowed to read the register no longer hears of incidents.
            queue_operator_event!(
                &mut *tx,
                event,
                " AND (EXISTS (SELECT 1 FROM api_keys AS k
                        WHERE k.integration_id = e.integration_id AND k.revoked_at IS NULL
                          AND (k.expires_at IS NULL OR k.expires_at > $4)
                          AND (' ' || k.scopes || ' ' LIKE '% incidents:read %'
                               OR ' ' || k.scopes || ' ' LIKE '% admin %'))
                      OR EXISTS (SELECT 1 FROM oauth_clients AS c
                        WHERE c.integration_id = e.integration_id AND c.revoked_at IS NULL
                          AND ' ' || c.scopes || ' ' LIKE '% incidents:read %'))"
            );
            insert_audit!(&mut *tx, audit)?;
            Ok::<_, StoreError>(true)
        })?;
        Ok(changed)
    }

    async fn incident_links(
        &self,
        incident_id: &IncidentId,
    ) -> Result<Vec<(IntegrationId, SubjectId)>, StoreError> {
        let rows: Vec<(String, String)> = read!(self, |pool| sqlx::query_as(
            "SELECT l.integration_id, a.subject_id
             FROM incident_affected AS a
             JOIN subject_links AS l ON l.subject_id = a.subject_id
             WHERE a.incident_id = $1
             ORDER BY l.integration_id, a.subject_id"
        )
        .bind(incident_id.as_str())
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter()
            .map(|(integration, subject)| {
                Ok((
                    id(&integration, IntegrationId::parse)?,
                    id(&subject, SubjectId::parse)?,
                ))
            })
            .collect()
    }

    async fn record_controller_notices(
        &self,
        row: &IncidentRow,
        expected_version: i64,
        audit: &AuditRecord,
        events: &[(IntegrationId, OperatorEvent)],
    ) -> Result<Option<Vec<u64>>, StoreError> {
        let queued = write_tx!(self, |tx| {
            if !replace_incident!(&mut *tx, row, expected_version) {
                return Ok(None);
            }
            let mut queued = Vec::with_capacity(events.len());
            for (integration, event) in events {
                let done = queue_operator_event!(
                    &mut *tx,
                    event,
                    " AND e.integration_id = $6",
                    integration.as_str()
                );
                queued.push(done.rows_affected());
            }
            insert_audit!(&mut *tx, audit)?;
            Ok::<_, StoreError>(Some(queued))
        })?;
        Ok(queued)
    }

    async fn record_incident_notice(
        &self,
        incident_id: &IncidentId,
        subject: &SubjectId,
        message: &MessageId,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE incident_affected SET notice_message_id = $1, notice_at = $2
                 WHERE incident_id = $3 AND subject_id = $4",
            )
            .bind(message.as_str())
            .bind(millis(at))
            .bind(incident_id.as_str())
            .bind(subject.as_str())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        });
        Ok(())
    }

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
            if !replace_incident!(&mut *tx, row, expected_version) {
                // Dropping the transaction writes nothing, the audit entry included.
                return Ok(false);
            }
            insert_audit!(&mut *tx, audit)?;
            Ok::<_, StoreError>(true)
        })?;
        Ok(changed)
    }
}

//! The register of rights requests.

use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::clock::Timestamp;
use herald_domain::ids::{IntegrationId, RightsRequestId, SubjectId};
use herald_domain::rights::{RequestKind, RequestStatus, RightsRequest};
use herald_domain::store::{PageRequest, RightsStore, StoreError};

use crate::audit::{insert_audit, update_audited};
use crate::convert::{id, limit, millis, opt_millis, opt_time, time};
use crate::{Database, from_sqlx, read, write_tx};

pub(crate) type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    i64,
);

macro_rules! columns {
    () => {
        "id, kind, subject_id, channel, integration_id, received_at, due_at, extended_months,
         extension_reason_ciphertext, extended_at, completed_at, created_at"
    };
}
pub(crate) use columns;

pub(crate) fn request(row: Row) -> Result<RightsRequest, StoreError> {
    let (
        request_id,
        kind,
        subject_id,
        channel,
        integration_id,
        received_at,
        due_at,
        extended_months,
        reason,
        extended_at,
        completed_at,
        created_at,
    ) = row;
    Ok(RightsRequest {
        id: id(&request_id, RightsRequestId::parse)?,
        kind: RequestKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt("a stored request kind is unknown".into()))?,
        subject_id: subject_id
            .as_deref()
            .map(|s| id(s, SubjectId::parse))
            .transpose()?,
        channel,
        integration_id: id(&integration_id, IntegrationId::parse)?,
        received_at: time(received_at)?,
        due_at: time(due_at)?,
        extended_months: u32::try_from(extended_months).unwrap_or(0),
        extension_reason_ciphertext: reason,
        extended_at: opt_time(extended_at)?,
        completed_at: opt_time(completed_at)?,
        created_at: time(created_at)?,
    })
}

#[async_trait]
impl RightsStore for Database {
    async fn insert_rights_request(
        &self,
        r: &RightsRequest,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(concat!(
                "INSERT INTO rights_requests (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(r.id.as_str())
            .bind(r.kind.as_str())
            .bind(r.subject_id.as_ref().map(|s| s.as_str()))
            .bind(r.channel.as_deref())
            .bind(r.integration_id.as_str())
            .bind(millis(r.received_at))
            .bind(millis(r.due_at))
            .bind(i64::from(r.extended_months))
            .bind(r.extension_reason_ciphertext.as_deref())
            .bind(opt_millis(r.extended_at))
            .bind(opt_millis(r.completed_at))
            .bind(millis(r.created_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            insert_audit!(&mut *tx, audit)?;
        });
        Ok(())
    }

    async fn rights_request(
        &self,
        request_id: &RightsRequestId,
    ) -> Result<Option<RightsRequest>, StoreError> {
        let row: Option<Row> = read!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM rights_requests WHERE id = $1"
        ))
        .bind(request_id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(request).transpose()
    }

    async fn rights_requests(
        &self,
        status: Option<RequestStatus>,
        now: Timestamp,
        page: &PageRequest,
        owner: Option<&IntegrationId>,
    ) -> Result<Vec<RightsRequest>, StoreError> {
        // Ordered by id (time-ordered: the order requests were logged in) so the cursor is
        // simple; the status filter is the caller's choice.
        let (open, done, overdue) = match status {
            None => (true, true, true),
            Some(RequestStatus::Open) => (true, false, true),
            Some(RequestStatus::Overdue) => (false, false, true),
            Some(RequestStatus::Done) => (false, true, false),
        };
        let rows: Vec<Row> = read!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM rights_requests
              WHERE id > $1
                AND ((completed_at IS NOT NULL AND $2)
                  OR (completed_at IS NULL AND due_at >= $5 AND $3)
                  OR (completed_at IS NULL AND due_at < $5 AND $4))
                AND ($7 IS NULL OR integration_id = $7)
              ORDER BY id LIMIT $6"
        ))
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(done)
        .bind(open)
        .bind(overdue)
        .bind(millis(now))
        .bind(limit(page.limit))
        .bind(owner.map(|o| o.as_str()))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(request).collect()
    }

    async fn extend_rights_request(
        &self,
        r: &RightsRequest,
        previous_due: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let changed = update_audited!(
            self,
            sqlx::query(
                "UPDATE rights_requests SET due_at = $2, extended_months = $3,
                   extension_reason_ciphertext = $4, extended_at = $5
                 WHERE id = $1 AND completed_at IS NULL AND due_at = $6",
            )
            .bind(r.id.as_str())
            .bind(millis(r.due_at))
            .bind(i64::from(r.extended_months))
            .bind(r.extension_reason_ciphertext.as_deref())
            .bind(opt_millis(r.extended_at))
            .bind(millis(previous_due)),
            audit
        );
        Ok(changed)
    }

    async fn complete_rights_request(
        &self,
        request_id: &RightsRequestId,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let changed = update_audited!(
            self,
            sqlx::query(
                "UPDATE rights_requests SET completed_at = $2
                 WHERE id = $1 AND completed_at IS NULL",
            )
            .bind(request_id.as_str())
            .bind(millis(at)),
            audit
        );
        Ok(changed)
    }
}

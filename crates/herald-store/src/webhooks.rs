//! Integrators' webhook endpoints and the events queued for them.

use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::clock::Timestamp;
use herald_domain::ids::{EventId, IntegrationId, SubjectId, WebhookEndpointId};
use herald_domain::store::{StoreError, WebhookStore};
use herald_domain::webhooks::{ClaimedEvent, EndpointRecord, EventOutcome, EventType, NewEndpoint};

use crate::bulk::AuditBulk;
use crate::convert::{id, millis, opt_time, time};
use crate::{Database, claim_leased, from_sqlx, read, write_tx};

type EndpointRow = (String, String, String, String, bool, i64, Option<i64>, i64);
type ClaimRow = (String, String, String, i64, i64);
type DetailRow = (
    String,
    String,
    Option<String>,
    Vec<u8>,
    String,
    Option<Vec<u8>>,
    bool,
);

fn events_column(events: &[EventType]) -> String {
    let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    format!(",{},", names.join(","))
}

fn endpoint(row: EndpointRow) -> Result<EndpointRecord, StoreError> {
    let (endpoint_id, integration_id, url, events, enabled, failures, disabled_at, created_at) =
        row;
    Ok(EndpointRecord {
        id: id(&endpoint_id, WebhookEndpointId::parse)?,
        integration_id: id(&integration_id, IntegrationId::parse)?,
        url,
        events: events
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| {
                EventType::parse(e)
                    .ok_or_else(|| StoreError::Corrupt("a stored event type is unknown".into()))
            })
            .collect::<Result<_, _>>()?,
        enabled,
        consecutive_failures: u32::try_from(failures).unwrap_or(u32::MAX),
        disabled_at: opt_time(disabled_at)?,
        created_at: time(created_at)?,
    })
}

/// Events about a restricted subject are held (GDPR Art. 18: no disclosure while restricted)
/// and go out once the restriction is lifted.
macro_rules! claim_events_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_owner = $1, due_at = $2,
               updated_at = $3
             WHERE (event_id, endpoint_id) IN (
               SELECT d.event_id, d.endpoint_id FROM webhook_deliveries AS d
               JOIN webhook_endpoints AS e ON e.id = d.endpoint_id AND e.enabled = true
               LEFT JOIN subjects AS s ON s.id = d.subject_id
               WHERE d.status = 'pending' AND d.due_at <= $3
                 AND (d.subject_id IS NULL OR s.restricted = false)
               ORDER BY d.due_at LIMIT $4",
            $lock,
            ")
             RETURNING event_id, endpoint_id, event_type, attempts, created_at"
        )
    };
}

/// Whether an integration holds a live key allowed to read messages.
macro_rules! may_read {
    () => {
        "EXISTS (SELECT 1 FROM api_keys AS k
      WHERE k.integration_id = e.integration_id AND k.revoked_at IS NULL
        AND (k.expires_at IS NULL OR k.expires_at > $2)
        AND (' ' || k.scopes || ' ' LIKE '% messages:read %'
             OR ' ' || k.scopes || ' ' LIKE '% admin %'))"
    };
}

#[async_trait]
impl WebhookStore for Database {
    async fn insert_webhook_endpoint(
        &self,
        new: &NewEndpoint,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let r = &new.record;
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, integration_id, url, events, secret_ciphertext,
                   enabled, consecutive_failures, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
            )
            .bind(r.id.as_str())
            .bind(r.integration_id.as_str())
            .bind(&r.url)
            .bind(events_column(&r.events))
            .bind(&new.secret_ciphertext)
            .bind(r.enabled)
            .bind(millis(r.created_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            AuditBulk::insert_pending(&mut *tx, std::slice::from_ref(audit))
                .await
                .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
        });
        Ok(())
    }

    async fn webhook_endpoints(
        &self,
        integration: &IntegrationId,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let rows: Vec<EndpointRow> = read!(self, |pool| {
            sqlx::query_as(
            "SELECT id, integration_id, url, events, enabled, consecutive_failures, disabled_at,
                    created_at
             FROM webhook_endpoints WHERE integration_id = $1 ORDER BY id"
        )
        .bind(integration.as_str())
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?
        });
        rows.into_iter().map(endpoint).collect()
    }

    async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let claimed = claim_leased!(
            self,
            ClaimRow,
            claim_events_sql,
            " FOR UPDATE OF d SKIP LOCKED",
            owner,
            lease_until,
            now,
            limit
        )?;
        let mut out = Vec::with_capacity(claimed.len());
        for (event_id, endpoint_id, event_type, attempts, created_at) in claimed {
            let detail: Option<DetailRow> = read!(self, |pool| sqlx::query_as(concat!(
                "SELECT e.integration_id, e.url, d.subject_id, e.secret_ciphertext, d.event_type,
                        d.payload_ciphertext, ",
                may_read!(),
                " FROM webhook_deliveries AS d JOIN webhook_endpoints AS e ON e.id = d.endpoint_id
                 WHERE d.event_id = $1 AND d.endpoint_id = $3"
            ))
            .bind(&event_id)
            .bind(millis(now))
            .bind(&endpoint_id)
            .fetch_optional(pool)
            .await
            .map_err(from_sqlx)?);
            let Some((integration_id, url, subject_id, secret, _, payload, may_read)) = detail
            else {
                continue;
            };
            out.push(ClaimedEvent {
                event_id: id(&event_id, EventId::parse)?,
                endpoint_id: id(&endpoint_id, WebhookEndpointId::parse)?,
                integration_id: id(&integration_id, IntegrationId::parse)?,
                event_type: EventType::parse(&event_type)
                    .ok_or_else(|| StoreError::Corrupt("a stored event type is unknown".into()))?,
                url,
                secret_ciphertext: secret,
                subject_id: subject_id.map(|s| id(&s, SubjectId::parse)).transpose()?,
                payload_ciphertext: payload,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                created_at: time(created_at)?,
                may_read_content: may_read,
            });
        }
        Ok(out)
    }

    async fn record_webhook_outcome(
        &self,
        owner: &str,
        outcome: &EventOutcome,
        disable_after: u32,
    ) -> Result<bool, StoreError> {
        let (event_id, endpoint_id, at, status, due_at, http_status, audit, disable, gone) =
            match outcome {
                EventOutcome::Delivered {
                    event_id,
                    endpoint_id,
                    at,
                    http_status,
                    audit,
                } => (
                    event_id,
                    endpoint_id,
                    at,
                    "delivered",
                    None,
                    Some(*http_status),
                    audit,
                    None,
                    false,
                ),
                EventOutcome::Retry {
                    event_id,
                    endpoint_id,
                    at,
                    due_at,
                    http_status,
                    audit,
                    disable_audit,
                } => (
                    event_id,
                    endpoint_id,
                    at,
                    "pending",
                    Some(*due_at),
                    *http_status,
                    audit,
                    Some(disable_audit),
                    false,
                ),
                EventOutcome::Failed {
                    event_id,
                    endpoint_id,
                    at,
                    http_status,
                    gone,
                    audit,
                    disable_audit,
                } => (
                    event_id,
                    endpoint_id,
                    at,
                    "failed",
                    None,
                    *http_status,
                    audit,
                    Some(disable_audit),
                    *gone,
                ),
            };
        let held = write_tx!(self, |tx| {
            // Delivered or given up: the payload is no longer needed.
            let held = sqlx::query(
                "UPDATE webhook_deliveries SET status = $3, due_at = COALESCE($4, due_at),
                   last_http_status = $5, lease_owner = NULL, updated_at = $6,
                   payload_ciphertext = CASE WHEN $3 = 'pending' THEN payload_ciphertext
                                             ELSE NULL END
                 WHERE event_id = $1 AND endpoint_id = $2 AND lease_owner = $7
                   AND status = 'pending'",
            )
            .bind(event_id.as_str())
            .bind(endpoint_id.as_str())
            .bind(status)
            .bind(due_at.map(millis))
            .bind(http_status.map(i64::from))
            .bind(millis(*at))
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            let mut audit = vec![audit.clone()];
            if let Some(disable_audit) = disable {
                let (failures, enabled): (i64, bool) = sqlx::query_as(
                    "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1
                     WHERE id = $1 RETURNING consecutive_failures, enabled",
                )
                .bind(endpoint_id.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                if enabled && (gone || failures >= i64::from(disable_after)) {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET enabled = false, disabled_at = $2 WHERE id = $1",
                    )
                    .bind(endpoint_id.as_str())
                    .bind(millis(*at))
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                    audit.push(disable_audit.clone());
                }
            } else {
                sqlx::query("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1")
                    .bind(endpoint_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            }
            AuditBulk::insert_pending(&mut *tx, &audit)
                .await
                .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
            held
        });
        Ok(held)
    }
}

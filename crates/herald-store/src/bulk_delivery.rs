//! Bulk statements of the delivery worker and of events (see `bulk.rs` for the approach): each
//! kind of outcome in a batch is one statement, whatever the batch size. Every update is
//! conditioned on the worker's lease and returns the ids it changed. On SQLite each row is
//! converted to JSONB once (a materialised CTE) before its fields are read: `->>` on the JSON
//! text `json_each` yields would parse the whole row again for every field.

use data_encoding::HEXLOWER;
use herald_domain::messages::AttemptRecord;
use herald_domain::webhooks::NewEvent;
use sqlx::{PgConnection, SqliteConnection};

use crate::bulk::json;
use crate::convert::millis;

/// A message the provider took: `(id, provider ref index, provider ref ciphertext,
/// delivered at, keep content until, at)`.
pub(crate) type SentRow<'a> = (&'a str, &'a [u8], &'a [u8], Option<i64>, Option<i64>, i64);
/// Back to the queue: `(id, due at, at)`.
pub(crate) type RequeueRow<'a> = (&'a str, i64, i64);
/// Given up: `(id, code, provider code, at)`.
pub(crate) type FailedRow<'a> = (&'a str, &'a str, Option<i64>, i64);

pub(crate) trait DeliveryBulk {
    async fn mark_sent(
        &mut self,
        owner: &str,
        rows: &[SentRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error>;
    async fn requeue(
        &mut self,
        owner: &str,
        rows: &[RequeueRow<'_>],
        deferred: bool,
    ) -> Result<Vec<String>, sqlx::Error>;
    async fn mark_failed(
        &mut self,
        owner: &str,
        rows: &[FailedRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error>;
    async fn insert_attempts(&mut self, rows: &[(&str, &AttemptRecord)])
    -> Result<(), sqlx::Error>;
    /// One delivery row per event and subscribed, enabled endpoint.
    async fn insert_events(&mut self, events: &[&NewEvent]) -> Result<(), sqlx::Error>;
}

fn latency(attempt: &AttemptRecord) -> i64 {
    (attempt.finished_at - attempt.started_at)
        .num_milliseconds()
        .max(0)
}

impl DeliveryBulk for SqliteConnection {
    async fn mark_sent(
        &mut self,
        owner: &str,
        rows: &[SentRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<_> = rows
            .iter()
            .map(|(id, index, ct, delivered, keep, at)| {
                (
                    id,
                    HEXLOWER.encode(index),
                    HEXLOWER.encode(ct),
                    delivered,
                    keep,
                    at,
                )
            })
            .collect();
        sqlx::query_scalar(
            "WITH batch AS MATERIALIZED (SELECT jsonb(j.value) AS r FROM json_each($2) AS j)
             UPDATE messages SET
               status = CASE WHEN messages.status IN ('queued', 'sending')
                             THEN (CASE WHEN u.delivered_at IS NULL THEN 'sent' ELSE 'delivered' END)
                             ELSE messages.status END,
               provider_ref_index = u.ref_index,
               provider_ref_ciphertext = u.ref_ciphertext,
               content_ciphertext = CASE WHEN u.keep_until IS NULL THEN NULL
                                         ELSE messages.content_ciphertext END,
               content_purge_at = u.keep_until,
               lease_owner = NULL, leased_until = NULL, updated_at = u.at
             FROM (SELECT r ->> 0 AS id, unhex(r ->> 1) AS ref_index,
                          unhex(r ->> 2) AS ref_ciphertext, r ->> 3 AS delivered_at,
                          r ->> 4 AS keep_until, r ->> 5 AS at
                   FROM batch) AS u
             WHERE messages.id = u.id AND messages.lease_owner = $1
             RETURNING messages.id",
        )
        .bind(owner)
        .bind(json(&rows)?)
        .fetch_all(&mut *self)
        .await
    }

    async fn requeue(
        &mut self,
        owner: &str,
        rows: &[RequeueRow<'_>],
        deferred: bool,
    ) -> Result<Vec<String>, sqlx::Error> {
        // A deferral (pacing) was no attempt: it gives back the attempt its claim counted.
        sqlx::query_scalar(
            "WITH batch AS MATERIALIZED (SELECT jsonb(j.value) AS r FROM json_each($2) AS j)
             UPDATE messages SET status = 'queued', due_at = u.due_at,
               attempts = messages.attempts - $3, lease_owner = NULL, leased_until = NULL,
               updated_at = u.at
             FROM (SELECT r ->> 0 AS id, r ->> 1 AS due_at, r ->> 2 AS at
                   FROM batch) AS u
             WHERE messages.id = u.id AND messages.lease_owner = $1 AND messages.status = 'sending'
             RETURNING messages.id",
        )
        .bind(owner)
        .bind(json(&rows)?)
        .bind(i64::from(deferred))
        .fetch_all(&mut *self)
        .await
    }

    async fn mark_failed(
        &mut self,
        owner: &str,
        rows: &[FailedRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "WITH batch AS MATERIALIZED (SELECT jsonb(j.value) AS r FROM json_each($2) AS j)
             UPDATE messages SET status = 'failed', error_code = u.code,
               provider_code = u.provider_code, content_ciphertext = NULL,
               content_purge_at = NULL, lease_owner = NULL, leased_until = NULL, updated_at = u.at
             FROM (SELECT r ->> 0 AS id, r ->> 1 AS code,
                          r ->> 2 AS provider_code, r ->> 3 AS at
                   FROM batch) AS u
             WHERE messages.id = u.id AND messages.lease_owner = $1
               AND messages.status IN ('queued', 'sending')
             RETURNING messages.id",
        )
        .bind(owner)
        .bind(json(&rows)?)
        .fetch_all(&mut *self)
        .await
    }

    async fn insert_attempts(
        &mut self,
        rows: &[(&str, &AttemptRecord)],
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<_> = rows
            .iter()
            .map(|(id, a)| {
                (
                    id,
                    a.attempt,
                    millis(a.started_at),
                    millis(a.finished_at),
                    a.outcome,
                    a.http_status,
                    a.provider_code,
                    latency(a),
                )
            })
            .collect();
        sqlx::query(
            "WITH batch AS MATERIALIZED (SELECT jsonb(j.value) AS r FROM json_each($1) AS j)
             INSERT INTO message_attempts (message_id, attempt, started_at, finished_at, outcome,
               http_status, provider_code, latency_ms)
             SELECT r ->> 0, r ->> 1, r ->> 2, r ->> 3, r ->> 4,
                    r ->> 5, r ->> 6, r ->> 7
             FROM batch WHERE true
             ON CONFLICT (message_id, attempt) DO NOTHING",
        )
        .bind(json(&rows)?)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn insert_events(&mut self, events: &[&NewEvent]) -> Result<(), sqlx::Error> {
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.id.as_str(),
                    e.event_type.as_str(),
                    e.subject_id.as_str(),
                    HEXLOWER.encode(&e.payload_ciphertext),
                    millis(e.created_at),
                    e.integration.as_ref().map(|i| i.as_str()),
                )
            })
            .collect();
        sqlx::query(
            "WITH batch AS MATERIALIZED (SELECT jsonb(j.value) AS r FROM json_each($1) AS j)
             INSERT INTO webhook_deliveries (event_id, endpoint_id, event_type, subject_id,
               payload_ciphertext, status, attempts, due_at, created_at, updated_at)
             SELECT u.id, e.id, u.type, u.subject, unhex(u.payload), 'pending', 0, u.at, u.at, u.at
             FROM (SELECT r ->> 0 AS id, r ->> 1 AS type, r ->> 2 AS subject,
                          r ->> 3 AS payload, r ->> 4 AS at,
                          r ->> 5 AS integration
                   FROM batch) AS u
             JOIN webhook_endpoints AS e
               ON e.enabled = 1 AND instr(e.events, ',' || u.type || ',') > 0
              AND (u.integration IS NULL OR e.integration_id = u.integration)",
        )
        .bind(json(&rows)?)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

impl DeliveryBulk for PgConnection {
    async fn mark_sent(
        &mut self,
        owner: &str,
        rows: &[SentRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let indexes: Vec<&[u8]> = rows.iter().map(|r| r.1).collect();
        let ciphertexts: Vec<&[u8]> = rows.iter().map(|r| r.2).collect();
        let delivered: Vec<Option<i64>> = rows.iter().map(|r| r.3).collect();
        let keep: Vec<Option<i64>> = rows.iter().map(|r| r.4).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.5).collect();
        sqlx::query_scalar(
            "UPDATE messages AS m SET
               status = CASE WHEN m.status IN ('queued', 'sending')
                             THEN (CASE WHEN u.delivered_at IS NULL THEN 'sent' ELSE 'delivered' END)
                             ELSE m.status END,
               provider_ref_index = u.ref_index,
               provider_ref_ciphertext = u.ref_ciphertext,
               content_ciphertext = CASE WHEN u.keep_until IS NULL THEN NULL
                                         ELSE m.content_ciphertext END,
               content_purge_at = u.keep_until,
               lease_owner = NULL, leased_until = NULL, updated_at = u.at
             FROM UNNEST($2::text[], $3::bytea[], $4::bytea[], $5::bigint[], $6::bigint[],
                         $7::bigint[])
                  AS u(id, ref_index, ref_ciphertext, delivered_at, keep_until, at)
             WHERE m.id = u.id AND m.lease_owner = $1
             RETURNING m.id",
        )
        .bind(owner)
        .bind(ids)
        .bind(indexes)
        .bind(ciphertexts)
        .bind(delivered)
        .bind(keep)
        .bind(at)
        .fetch_all(&mut *self)
        .await
    }

    async fn requeue(
        &mut self,
        owner: &str,
        rows: &[RequeueRow<'_>],
        deferred: bool,
    ) -> Result<Vec<String>, sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let due: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.2).collect();
        sqlx::query_scalar(
            "UPDATE messages AS m SET status = 'queued', due_at = u.due_at,
               attempts = m.attempts - $5, lease_owner = NULL, leased_until = NULL,
               updated_at = u.at
             FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS u(id, due_at, at)
             WHERE m.id = u.id AND m.lease_owner = $1 AND m.status = 'sending'
             RETURNING m.id",
        )
        .bind(owner)
        .bind(ids)
        .bind(due)
        .bind(at)
        .bind(i64::from(deferred))
        .fetch_all(&mut *self)
        .await
    }

    async fn mark_failed(
        &mut self,
        owner: &str,
        rows: &[FailedRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let codes: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let provider_codes: Vec<Option<i64>> = rows.iter().map(|r| r.2).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.3).collect();
        sqlx::query_scalar(
            "UPDATE messages AS m SET status = 'failed', error_code = u.code,
               provider_code = u.provider_code, content_ciphertext = NULL,
               content_purge_at = NULL, lease_owner = NULL, leased_until = NULL, updated_at = u.at
             FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::bigint[])
                  AS u(id, code, provider_code, at)
             WHERE m.id = u.id AND m.lease_owner = $1 AND m.status IN ('queued', 'sending')
             RETURNING m.id",
        )
        .bind(owner)
        .bind(ids)
        .bind(codes)
        .bind(provider_codes)
        .bind(at)
        .fetch_all(&mut *self)
        .await
    }

    async fn insert_attempts(
        &mut self,
        rows: &[(&str, &AttemptRecord)],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let attempts: Vec<i64> = rows.iter().map(|r| i64::from(r.1.attempt)).collect();
        let started: Vec<i64> = rows.iter().map(|r| millis(r.1.started_at)).collect();
        let finished: Vec<i64> = rows.iter().map(|r| millis(r.1.finished_at)).collect();
        let outcomes: Vec<&str> = rows.iter().map(|r| r.1.outcome).collect();
        let statuses: Vec<Option<i64>> = rows
            .iter()
            .map(|r| r.1.http_status.map(i64::from))
            .collect();
        let codes: Vec<Option<i64>> = rows.iter().map(|r| r.1.provider_code).collect();
        let latencies: Vec<i64> = rows.iter().map(|r| latency(r.1)).collect();
        sqlx::query(
            "INSERT INTO message_attempts (message_id, attempt, started_at, finished_at, outcome,
               http_status, provider_code, latency_ms)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],
                                  $5::text[], $6::bigint[], $7::bigint[], $8::bigint[])
             ON CONFLICT (message_id, attempt) DO NOTHING",
        )
        .bind(ids)
        .bind(attempts)
        .bind(started)
        .bind(finished)
        .bind(outcomes)
        .bind(statuses)
        .bind(codes)
        .bind(latencies)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn insert_events(&mut self, events: &[&NewEvent]) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let subjects: Vec<&str> = events.iter().map(|e| e.subject_id.as_str()).collect();
        let payloads: Vec<&[u8]> = events
            .iter()
            .map(|e| e.payload_ciphertext.as_slice())
            .collect();
        let at: Vec<i64> = events.iter().map(|e| millis(e.created_at)).collect();
        let integrations: Vec<Option<&str>> = events
            .iter()
            .map(|e| e.integration.as_ref().map(|i| i.as_str()))
            .collect();
        sqlx::query(
            "INSERT INTO webhook_deliveries (event_id, endpoint_id, event_type, subject_id,
               payload_ciphertext, status, attempts, due_at, created_at, updated_at)
             SELECT u.id, e.id, u.type, u.subject, u.payload, 'pending', 0, u.at, u.at, u.at
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], $6::text[])
                  AS u(id, type, subject, payload, at, integration)
             JOIN webhook_endpoints AS e
               ON e.enabled AND strpos(e.events, ',' || u.type || ',') > 0
              AND (u.integration IS NULL OR e.integration_id = u.integration)",
        )
        .bind(ids)
        .bind(types)
        .bind(subjects)
        .bind(payloads)
        .bind(at)
        .bind(integrations)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

//! Bulk statements of the delivery worker and of events (see `bulk.rs` for the approach): each
//! kind of outcome in a batch is one statement, whatever the batch size. Every update is
//! conditioned on the worker's lease and returns the ids it changed.

use herald_domain::messages::AttemptRecord;
use herald_domain::webhooks::NewEvent;
use sqlx::{Arguments, PgConnection, SqliteConnection};

use crate::bulk::PaddedRows;
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
    /// One delivery row per event and subscribed, enabled endpoint: of the event's integration,
    /// or (an event about the subject) of every integration linked to the subject.
    async fn insert_events(&mut self, events: &[&NewEvent]) -> Result<(), sqlx::Error>;
}

fn latency(attempt: &AttemptRecord) -> i64 {
    (attempt.finished_at - attempt.started_at)
        .num_milliseconds()
        .max(0)
}

// The outcome updates, one text for both backends: `$rows` is where the batch's rows come
// from as `u` (SQLite: the `VALUES` list's `column1` …, padding rows with a null id, which
// matches no message; PostgreSQL: `UNNEST` of column arrays), `$owner` the lease owner's
// parameter.
macro_rules! mark_sent_sql {
    ($rows:literal, $owner:literal) => {
        concat!(
            "UPDATE messages SET
               status = CASE WHEN messages.status IN ('queued', 'sending')
                             THEN (CASE WHEN u.delivered_at IS NULL THEN 'sent' ELSE 'delivered' END)
                             ELSE messages.status END,
               provider_ref_index = u.ref_index,
               provider_ref_ciphertext = u.ref_ciphertext,
               content_ciphertext = CASE WHEN u.keep_until IS NULL THEN NULL
                                         ELSE messages.content_ciphertext END,
               content_purge_at = u.keep_until,
               lease_owner = NULL, leased_until = NULL, updated_at = u.at
             FROM ",
            $rows,
            " WHERE messages.id = u.id AND messages.lease_owner = ",
            $owner,
            " RETURNING messages.id"
        )
    };
}

/// Back to the queue; a deferral (pacing) was no attempt: it gives back (`$given_back`) the
/// attempt its claim counted.
macro_rules! requeue_sql {
    ($rows:expr, $owner:literal, $given_back:literal) => {
        concat!(
            "UPDATE messages SET status = 'queued', due_at = u.due_at,
               attempts = messages.attempts - ",
            $given_back,
            ", lease_owner = NULL, leased_until = NULL, updated_at = u.at
             FROM ",
            $rows,
            " WHERE messages.id = u.id AND messages.lease_owner = ",
            $owner,
            " AND messages.status = 'sending' RETURNING messages.id"
        )
    };
}

macro_rules! mark_failed_sql {
    ($rows:literal, $owner:literal) => {
        concat!(
            "UPDATE messages SET status = 'failed', error_code = u.code,
               provider_code = u.provider_code, content_ciphertext = NULL,
               content_purge_at = NULL, lease_owner = NULL, leased_until = NULL, updated_at = u.at
             FROM ",
            $rows,
            " WHERE messages.id = u.id AND messages.lease_owner = ",
            $owner,
            " AND messages.status IN ('queued', 'sending') RETURNING messages.id"
        )
    };
}

static MARK_SENT: PaddedRows = PaddedRows::new(
    mark_sent_sql!(
        "(SELECT column1 AS id, column2 AS ref_index, column3 AS ref_ciphertext,
                 column4 AS delivered_at, column5 AS keep_until, column6 AS at
          FROM (VALUES {rows})) AS u",
        "?TRAILING"
    ),
    6,
);

macro_rules! sqlite_requeue_rows {
    () => {
        "(SELECT column1 AS id, column2 AS due_at, column3 AS at FROM (VALUES {rows})) AS u"
    };
}
static REQUEUE_RETRY: PaddedRows =
    PaddedRows::new(requeue_sql!(sqlite_requeue_rows!(), "?TRAILING", "0"), 3);
static REQUEUE_DEFERRED: PaddedRows =
    PaddedRows::new(requeue_sql!(sqlite_requeue_rows!(), "?TRAILING", "1"), 3);

static MARK_FAILED: PaddedRows = PaddedRows::new(
    mark_failed_sql!(
        "(SELECT column1 AS id, column2 AS code, column3 AS provider_code, column4 AS at
          FROM (VALUES {rows})) AS u",
        "?TRAILING"
    ),
    4,
);

static INSERT_ATTEMPTS: PaddedRows = PaddedRows::new(
    "INSERT INTO message_attempts (message_id, attempt, started_at, finished_at, outcome,
       http_status, provider_code, latency_ms)
     SELECT column1, column2, column3, column4, column5, column6, column7, column8
     FROM (VALUES {rows}) WHERE column1 IS NOT NULL
     ON CONFLICT (message_id, attempt) DO NOTHING",
    8,
);

static INSERT_EVENTS: PaddedRows = PaddedRows::new(
    "INSERT INTO webhook_deliveries (event_id, endpoint_id, event_type, subject_id,
       payload_ciphertext, status, attempts, due_at, created_at, updated_at)
     SELECT u.id, e.id, u.type, u.subject, u.payload, 'pending', 0, u.at, u.at, u.at
     FROM (SELECT column1 AS id, column2 AS type, column3 AS subject, column4 AS payload,
                  column5 AS at, column6 AS integration
           FROM (VALUES {rows}) WHERE column1 IS NOT NULL) AS u
     JOIN webhook_endpoints AS e
       ON e.enabled = 1 AND instr(e.events, ',' || u.type || ',') > 0
      AND (e.integration_id = u.integration
           OR (u.integration IS NULL
               AND EXISTS (SELECT 1 FROM subject_links AS l
                           WHERE l.subject_id = u.subject AND l.integration_id = e.integration_id)))",
    6,
);

impl DeliveryBulk for SqliteConnection {
    async fn mark_sent(
        &mut self,
        owner: &str,
        rows: &[SentRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        MARK_SENT
            .run(
                self,
                Some(owner),
                rows,
                |arguments, (id, index, ciphertext, delivered, keep, at)| {
                    arguments.add(*id)?;
                    arguments.add(*index)?;
                    arguments.add(*ciphertext)?;
                    arguments.add(*delivered)?;
                    arguments.add(*keep)?;
                    arguments.add(*at)
                },
            )
            .await
    }

    async fn requeue(
        &mut self,
        owner: &str,
        rows: &[RequeueRow<'_>],
        deferred: bool,
    ) -> Result<Vec<String>, sqlx::Error> {
        let statement = if deferred {
            &REQUEUE_DEFERRED
        } else {
            &REQUEUE_RETRY
        };
        statement
            .run(self, Some(owner), rows, |arguments, (id, due_at, at)| {
                arguments.add(*id)?;
                arguments.add(*due_at)?;
                arguments.add(*at)
            })
            .await
    }

    async fn mark_failed(
        &mut self,
        owner: &str,
        rows: &[FailedRow<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        MARK_FAILED
            .run(
                self,
                Some(owner),
                rows,
                |arguments, (id, code, provider_code, at)| {
                    arguments.add(*id)?;
                    arguments.add(*code)?;
                    arguments.add(*provider_code)?;
                    arguments.add(*at)
                },
            )
            .await
    }

    async fn insert_attempts(
        &mut self,
        rows: &[(&str, &AttemptRecord)],
    ) -> Result<(), sqlx::Error> {
        INSERT_ATTEMPTS
            .run(self, None, rows, |arguments, (id, a)| {
                arguments.add(*id)?;
                arguments.add(a.attempt)?;
                arguments.add(millis(a.started_at))?;
                arguments.add(millis(a.finished_at))?;
                arguments.add(a.outcome)?;
                arguments.add(a.http_status)?;
                arguments.add(a.provider_code)?;
                arguments.add(latency(a))
            })
            .await?;
        Ok(())
    }

    async fn insert_events(&mut self, events: &[&NewEvent]) -> Result<(), sqlx::Error> {
        INSERT_EVENTS
            .run(self, None, events, |arguments, e| {
                arguments.add(e.id.as_str())?;
                arguments.add(e.event_type.as_str())?;
                arguments.add(e.subject_id.as_str())?;
                arguments.add(e.payload_ciphertext.as_slice())?;
                arguments.add(millis(e.created_at))?;
                arguments.add(e.integration.as_ref().map(|i| i.as_str()))
            })
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
        sqlx::query_scalar(mark_sent_sql!(
            "UNNEST($2::text[], $3::bytea[], $4::bytea[], $5::bigint[], $6::bigint[],
                    $7::bigint[])
             AS u(id, ref_index, ref_ciphertext, delivered_at, keep_until, at)",
            "$1"
        ))
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
        sqlx::query_scalar(requeue_sql!(
            "UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS u(id, due_at, at)",
            "$1",
            "$5"
        ))
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
        sqlx::query_scalar(mark_failed_sql!(
            "UNNEST($2::text[], $3::text[], $4::bigint[], $5::bigint[])
             AS u(id, code, provider_code, at)",
            "$1"
        ))
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
              AND (e.integration_id = u.integration
                   OR (u.integration IS NULL
                       AND EXISTS (SELECT 1 FROM subject_links AS l
                                   WHERE l.subject_id = u.subject
                                     AND l.integration_id = e.integration_id)))",
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

//! The send path's group commit as one round trip to the database, whatever the batch size:
//! Idempotency-Key claims, messages, their `queued` history and their audit entries.
//!
//! SQLite: one multi-statement call on the writer connection (`BEGIN IMMEDIATE … COMMIT`), so
//! the connection's thread is woken once per batch instead of once per statement — under load
//! each wake-up waits for a core; the rows travel as bound parameters. PostgreSQL: one
//! statement of data-modifying CTEs, atomic on its own, so one network round trip.
//!
//! Which messages were written is decided in SQL: a message with an Idempotency-Key is written
//! only if its claim took (a live claim of another message makes it a replay).

use std::collections::HashSet;

use herald_domain::messages::NewMessage;
use sqlx::{PgPool, SqlitePool};

use crate::bulk::anonymous_rows;
use crate::convert::millis;

/// The scalar fields of one message, for PostgreSQL's column arrays (byte fields are bound
/// from the message directly).
struct Row<'a>(
    &'a str,         // 0 id
    &'a str,         // 1 integration
    &'a str,         // 2 subject
    &'a str,         // 3 channel
    &'a str,         // 4 purpose
    &'a str,         // 5 kind
    Option<&'a str>, // 6 template name
    Option<&'a str>, // 7 template language
    bool,            // 8 phi
    i64,             // 9 created
    Option<i64>,     // 10 claim expiry
    i64,             // 11 audit recorded at
    &'a str,         // 12 audit body
    Option<&'a str>, // 13 the consent event the send relied on
    bool,            // 14 business-initiated
);

// SQLite: the batch goes into a temporary table (in memory, per connection) by one multi-row
// `INSERT` with every value bound as a parameter — no JSON to write, parse and pick apart (the
// earlier `json_each` form spent about a sixth of the send path's instructions there). The
// statement text depends only on the batch size rounded up to a power of two: the padding
// repeats the last row, which `INSERT OR IGNORE` drops on its `position` key, so a connection
// prepares at most ten shapes and reuses them. The row values are anonymous parameters
// (`bulk::anonymous_rows`; as `?NNN` their binding was 7 % of Herald's CPU samples under load).
// Each row takes `ROW_PARAMS` parameters; the claim-expiry cut-off, the one named parameter,
// comes after the last row.
const ROW_PARAMS: usize = 19;
/// The largest batch written in one call (the send path commits at most 512 at once).
pub(crate) const MAX_BATCH: usize = 512;

const SQLITE_ACCEPT_HEAD: &str = "
BEGIN IMMEDIATE;
CREATE TEMP TABLE IF NOT EXISTS accepting (
  position INTEGER PRIMARY KEY, id TEXT NOT NULL, integration_id TEXT NOT NULL,
  subject_id TEXT NOT NULL, channel TEXT NOT NULL, purpose TEXT NOT NULL, kind TEXT NOT NULL,
  template_name TEXT, template_language TEXT, content_ciphertext BLOB NOT NULL,
  phi INTEGER NOT NULL, created INTEGER NOT NULL, key_hash BLOB, fingerprint BLOB,
  expires INTEGER, audit_at INTEGER NOT NULL, audit_body TEXT NOT NULL, consent_event_id TEXT,
  business_initiated INTEGER NOT NULL);
DELETE FROM temp.accepting;
INSERT OR IGNORE INTO temp.accepting (position, id, integration_id, subject_id, channel, purpose,
  kind, template_name, template_language, content_ciphertext, phi, created, key_hash,
  fingerprint, expires, audit_at, audit_body, consent_event_id, business_initiated) VALUES ";

const SQLITE_ACCEPT_TAIL: &str = ";
INSERT INTO idempotency_keys (integration_id, key_hash, fingerprint, message_id, expires_at)
  SELECT integration_id, key_hash, fingerprint, id, expires FROM temp.accepting
  WHERE key_hash IS NOT NULL
  ON CONFLICT (integration_id, key_hash) DO UPDATE
    SET fingerprint = excluded.fingerprint, message_id = excluded.message_id,
        expires_at = excluded.expires_at
    WHERE idempotency_keys.expires_at <= ?CUT_OFF;
DELETE FROM temp.accepting
  WHERE key_hash IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM idempotency_keys AS k
                    WHERE k.integration_id = accepting.integration_id
                      AND k.key_hash = accepting.key_hash AND k.message_id = accepting.id)
  RETURNING id;
INSERT INTO messages (id, integration_id, subject_id, channel, purpose, kind, template_name,
                      template_language, content_ciphertext, phi, status, attempts, due_at,
                      created_at, updated_at, consent_event_id, business_initiated)
  SELECT id, integration_id, subject_id, channel, purpose, kind, template_name,
         template_language, content_ciphertext, phi, 'queued', 0, created, created, created,
         consent_event_id, business_initiated
  FROM temp.accepting;
INSERT INTO message_history (message_id, status, at)
  SELECT id, 'queued', created FROM temp.accepting;
INSERT INTO audit_pending (recorded_at, body)
  SELECT audit_at, audit_body FROM temp.accepting ORDER BY position;
COMMIT;
";

/// The script for `rows` rows (a power of two up to [`MAX_BATCH`]), built once per size.
fn sqlite_script(rows: usize) -> &'static str {
    static SCRIPTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let scripts = SCRIPTS.get_or_init(|| {
        (0..=MAX_BATCH.trailing_zeros())
            .map(|power| {
                let rows = 1usize << power;
                let cut_off = format!("?{}", rows * ROW_PARAMS + 1);
                format!(
                    "{SQLITE_ACCEPT_HEAD}{}{}",
                    anonymous_rows(rows, ROW_PARAMS),
                    SQLITE_ACCEPT_TAIL.replace("?CUT_OFF", &cut_off)
                )
            })
            .collect()
    });
    &scripts[rows.trailing_zeros() as usize]
}

/// SQLite: the whole batch in one call. On any failure the transaction is rolled back before
/// the connection goes back to the pool.
pub(crate) async fn sqlite(
    writer: &SqlitePool,
    batch: &[&NewMessage],
) -> Result<HashSet<String>, sqlx::Error> {
    let Some(last) = batch.len().checked_sub(1) else {
        return Ok(HashSet::new());
    };
    if batch.len() > MAX_BATCH {
        // Never the case (the batcher's limit); split rather than fail if it ever were.
        let (head, tail) = batch.split_at(MAX_BATCH);
        let mut written = Box::pin(sqlite(writer, head)).await?;
        written.extend(Box::pin(sqlite(writer, tail)).await?);
        return Ok(written);
    }
    let since = batch
        .iter()
        .map(|m| millis(m.created_at))
        .min()
        .unwrap_or(0);
    let padded = batch.len().next_power_of_two();
    let mut query = sqlx::query_as::<_, (String,)>(sqlite_script(padded));
    for i in 0..padded {
        // Padding repeats the last row, position included: `INSERT OR IGNORE` drops it.
        let position = i.min(last);
        let m = batch[position];
        query = query
            .bind(position as i64)
            .bind(m.id.as_str())
            .bind(m.integration_id.as_str())
            .bind(m.subject_id.as_str())
            .bind(m.channel.as_str())
            .bind(m.purpose.as_str())
            .bind(m.kind)
            .bind(m.template.as_ref().map(|(name, _)| name.as_str()))
            .bind(m.template.as_ref().map(|(_, language)| language.as_str()))
            .bind(m.content_ciphertext.as_slice())
            .bind(m.phi)
            .bind(millis(m.created_at))
            .bind(m.idempotency.as_ref().map(|c| &c.key_hash[..]))
            .bind(m.idempotency.as_ref().map(|c| &c.fingerprint[..]))
            .bind(m.idempotency.as_ref().map(|c| millis(c.expires_at)))
            .bind(millis(m.audit.recorded_at))
            .bind(m.audit.body.as_str())
            .bind(m.consent_event_id.as_ref().map(|e| e.as_str()))
            .bind(m.business_initiated);
    }
    let query = query.bind(since);
    let mut conn = writer.acquire().await?;
    let result = query.fetch_all(&mut *conn).await;
    match result {
        // The script returns the messages it did not write (their Idempotency-Key was taken),
        // almost always none: a row per written message would be a hand-off per row between
        // the connection's thread and the caller.
        Ok(replays) => {
            let replays: HashSet<String> = replays.into_iter().map(|(id,)| id).collect();
            Ok(batch
                .iter()
                .map(|m| m.id.as_str())
                .filter(|id| !replays.contains(*id))
                .map(str::to_owned)
                .collect())
        }
        Err(e) => {
            // Still inside BEGIN if a statement after it failed; harmless if not.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

fn row<'a>(m: &'a NewMessage) -> Row<'a> {
    Row(
        m.id.as_str(),
        m.integration_id.as_str(),
        m.subject_id.as_str(),
        m.channel.as_str(),
        m.purpose.as_str(),
        m.kind,
        m.template.as_ref().map(|(name, _)| name.as_str()),
        m.template.as_ref().map(|(_, language)| language.as_str()),
        m.phi,
        millis(m.created_at),
        m.idempotency.as_ref().map(|c| millis(c.expires_at)),
        millis(m.audit.recorded_at),
        m.audit.body.as_str(),
        m.consent_event_id.as_ref().map(|e| e.as_str()),
        m.business_initiated,
    )
}

const POSTGRES_ACCEPT: &str = "
WITH input AS (
  SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::bytea[], $10::bool[], $11::bigint[],
                       $12::bytea[], $13::bytea[], $14::bigint[], $15::bigint[], $16::text[],
                       $18::text[], $19::bool[])
    WITH ORDINALITY
    AS u(id, integration_id, subject_id, channel, purpose, kind, template_name,
         template_language, content_ciphertext, phi, created, key_hash, fingerprint, expires,
         audit_at, audit_body, consent_event_id, business_initiated, position)
),
claims AS (
  INSERT INTO idempotency_keys (integration_id, key_hash, fingerprint, message_id, expires_at)
  SELECT integration_id, key_hash, fingerprint, id, expires FROM input WHERE key_hash IS NOT NULL
  ON CONFLICT (integration_id, key_hash) DO UPDATE
    SET fingerprint = excluded.fingerprint, message_id = excluded.message_id,
        expires_at = excluded.expires_at
    WHERE idempotency_keys.expires_at <= $17
  RETURNING message_id
),
accepted AS (
  SELECT * FROM input WHERE key_hash IS NULL OR id IN (SELECT message_id FROM claims)
),
written AS (
  INSERT INTO messages (id, integration_id, subject_id, channel, purpose, kind, template_name,
                        template_language, content_ciphertext, phi, status, attempts, due_at,
                        created_at, updated_at, consent_event_id, business_initiated)
  SELECT id, integration_id, subject_id, channel, purpose, kind, template_name,
         template_language, content_ciphertext, phi, 'queued', 0, created, created, created,
         consent_event_id, business_initiated
  FROM accepted
  RETURNING id
),
history AS (
  INSERT INTO message_history (message_id, status, at)
  SELECT id, 'queued', created FROM accepted
),
audit AS (
  INSERT INTO audit_pending (recorded_at, body)
  SELECT audit_at, audit_body FROM accepted ORDER BY position
)
SELECT id FROM written
";

/// PostgreSQL: the whole batch in one statement (atomic on its own).
pub(crate) async fn postgres(
    pool: &PgPool,
    batch: &[&NewMessage],
) -> Result<HashSet<String>, sqlx::Error> {
    let rows: Vec<Row<'_>> = batch.iter().map(|m| row(m)).collect();
    let since = batch
        .iter()
        .map(|m| millis(m.created_at))
        .min()
        .unwrap_or(0);
    let column = |f: fn(&NewMessage) -> Option<Vec<u8>>| -> Vec<Option<Vec<u8>>> {
        batch.iter().map(|m| f(m)).collect()
    };
    let ids: Vec<(String,)> = sqlx::query_as(POSTGRES_ACCEPT)
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.5).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.6).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.7).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|m| m.content_ciphertext.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.8).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.9).collect::<Vec<_>>())
        .bind(column(|m| {
            m.idempotency.as_ref().map(|c| c.key_hash.to_vec())
        }))
        .bind(column(|m| {
            m.idempotency.as_ref().map(|c| c.fingerprint.to_vec())
        }))
        .bind(rows.iter().map(|r| r.10).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.11).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.12).collect::<Vec<_>>())
        .bind(since)
        .bind(rows.iter().map(|r| r.13).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.14).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

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
    Option<i64>,     // 15 frequency cap: at most this many…
    Option<i64>,     // 16 …accepted after this time
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
const ROW_PARAMS: usize = 21;
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
  business_initiated INTEGER NOT NULL, cap_max INTEGER, cap_since INTEGER);
DELETE FROM temp.accepting;
INSERT OR IGNORE INTO temp.accepting (position, id, integration_id, subject_id, channel, purpose,
  kind, template_name, template_language, content_ciphertext, phi, created, key_hash,
  fingerprint, expires, audit_at, audit_body, consent_event_id, business_initiated, cap_max,
  cap_since) VALUES ";

// Only in the scripts for batches holding a capped message: most batches have none, and the
// statement (with its RETURNING) is not free.
const SQLITE_ACCEPT_CAPS: &str = "
DELETE FROM temp.accepting
  WHERE cap_max IS NOT NULL
    AND (SELECT COUNT(*) FROM messages AS m
         WHERE m.subject_id = accepting.subject_id AND m.purpose = accepting.purpose
           AND m.created_at > accepting.cap_since AND m.status <> 'failed')
      + (SELECT COUNT(*) FROM temp.accepting AS earlier
         WHERE earlier.subject_id = accepting.subject_id AND earlier.purpose = accepting.purpose
           AND earlier.cap_max IS NOT NULL AND earlier.position < accepting.position)
      >= cap_max
  RETURNING 'capped', id;";

const SQLITE_ACCEPT_TAIL: &str = "
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
  RETURNING 'replayed', id;
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

/// The script for `rows` rows (a power of two up to [`MAX_BATCH`]), with or without the
/// frequency-cap statement, built once per size.
fn sqlite_script(rows: usize, caps: bool) -> &'static str {
    static SCRIPTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let sizes = MAX_BATCH.trailing_zeros() as usize + 1;
    let scripts = SCRIPTS.get_or_init(|| {
        [false, true]
            .into_iter()
            .flat_map(|caps| {
                (0..sizes).map(move |power| {
                    let rows = 1usize << power;
                    let cut_off = format!("?{}", rows * ROW_PARAMS + 1);
                    format!(
                        "{SQLITE_ACCEPT_HEAD}{};{}{}",
                        anonymous_rows(rows, ROW_PARAMS),
                        if caps { SQLITE_ACCEPT_CAPS } else { "" },
                        SQLITE_ACCEPT_TAIL.replace("?CUT_OFF", &cut_off)
                    )
                })
            })
            .collect()
    });
    &scripts[usize::from(caps) * sizes + rows.trailing_zeros() as usize]
}

/// What a batch's commit wrote: the messages written, and those refused because their
/// purpose's frequency cap for the subject was reached (counted in the same transaction as
/// the writes, so concurrent sends cannot exceed it). The rest replayed an Idempotency-Key.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub written: HashSet<String>,
    pub capped: HashSet<String>,
}

impl Written {
    /// From the ids a script reports as not written, each with why.
    fn from_skipped(batch: &[&NewMessage], skipped: Vec<(String, String)>) -> Self {
        let mut capped = HashSet::new();
        let mut not_written = HashSet::new();
        for (why, id) in skipped {
            if why == "capped" {
                capped.insert(id.clone());
            }
            not_written.insert(id);
        }
        Self {
            written: batch
                .iter()
                .map(|m| m.id.as_str())
                .filter(|id| !not_written.contains(*id))
                .map(str::to_owned)
                .collect(),
            capped,
        }
    }

    fn extend(&mut self, other: Written) {
        self.written.extend(other.written);
        self.capped.extend(other.capped);
    }
}

fn cap_of(m: &NewMessage) -> (Option<i64>, Option<i64>) {
    match &m.cap {
        Some(cap) => (Some(i64::from(cap.max)), Some(millis(cap.since))),
        None => (None, None),
    }
}

/// SQLite: the whole batch in one call. On any failure the transaction is rolled back before
/// the connection goes back to the pool.
pub(crate) async fn sqlite(
    writer: &SqlitePool,
    batch: &[&NewMessage],
) -> Result<Written, sqlx::Error> {
    let Some(last) = batch.len().checked_sub(1) else {
        return Ok(Written::default());
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
    let caps = batch.iter().any(|m| m.cap.is_some());
    let mut query = sqlx::query_as::<_, (String, String)>(sqlite_script(padded, caps));
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
            .bind(m.business_initiated)
            .bind(cap_of(m).0)
            .bind(cap_of(m).1);
    }
    let query = query.bind(since);
    let mut conn = writer.acquire().await?;
    let result = query.fetch_all(&mut *conn).await;
    match result {
        // The script returns the messages it did not write (a frequency cap was reached, or
        // their Idempotency-Key was taken), almost always none: a row per written message
        // would be a hand-off per row between the connection's thread and the caller.
        Ok(skipped) => Ok(Written::from_skipped(batch, skipped)),
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
        cap_of(m).0,
        cap_of(m).1,
    )
}

const POSTGRES_ACCEPT: &str = "
WITH input AS (
  SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::bytea[], $10::bool[], $11::bigint[],
                       $12::bytea[], $13::bytea[], $14::bigint[], $15::bigint[], $16::text[],
                       $18::text[], $19::bool[], $20::bigint[], $21::bigint[])
    WITH ORDINALITY
    AS u(id, integration_id, subject_id, channel, purpose, kind, template_name,
         template_language, content_ciphertext, phi, created, key_hash, fingerprint, expires,
         audit_at, audit_body, consent_event_id, business_initiated, cap_max, cap_since,
         position)
),
capped AS (
  SELECT i.id FROM input AS i
  WHERE i.cap_max IS NOT NULL
    AND (SELECT COUNT(*) FROM messages AS m
         WHERE m.subject_id = i.subject_id AND m.purpose = i.purpose
           AND m.created_at > i.cap_since AND m.status <> 'failed')
      + (SELECT COUNT(*) FROM input AS earlier
         WHERE earlier.subject_id = i.subject_id AND earlier.purpose = i.purpose
           AND earlier.cap_max IS NOT NULL AND earlier.position < i.position)
      >= i.cap_max
),
claims AS (
  INSERT INTO idempotency_keys (integration_id, key_hash, fingerprint, message_id, expires_at)
  SELECT integration_id, key_hash, fingerprint, id, expires FROM input
  WHERE key_hash IS NOT NULL AND id NOT IN (SELECT id FROM capped)
  ON CONFLICT (integration_id, key_hash) DO UPDATE
    SET fingerprint = excluded.fingerprint, message_id = excluded.message_id,
        expires_at = excluded.expires_at
    WHERE idempotency_keys.expires_at <= $17
  RETURNING message_id
),
accepted AS (
  SELECT * FROM input
  WHERE (key_hash IS NULL OR id IN (SELECT message_id FROM claims))
    AND id NOT IN (SELECT id FROM capped)
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
SELECT 'written', id FROM written
UNION ALL SELECT 'capped', id FROM capped
";

/// Advisory-lock keys for the subjects × purposes of a batch's capped messages, in order (so
/// that concurrent batches take them in the same order and cannot deadlock).
fn cap_locks(batch: &[&NewMessage]) -> Vec<i64> {
    let mut keys: Vec<i64> = batch
        .iter()
        .filter(|m| m.cap.is_some())
        .map(|m| {
            // FNV-1a: stable across nodes and builds (a collision only serialises two caps).
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in m
                .subject_id
                .as_str()
                .bytes()
                .chain([0])
                .chain(m.purpose.bytes())
            {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            i64::from_be_bytes(hash.to_be_bytes())
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// PostgreSQL: the whole batch in one statement (atomic on its own). A batch with capped
/// messages first takes a transaction-level advisory lock per subject × purpose, so that the
/// count its statement makes sees every other node's commit for them: the cap holds across
/// nodes.
pub(crate) async fn postgres(pool: &PgPool, batch: &[&NewMessage]) -> Result<Written, sqlx::Error> {
    let rows: Vec<Row<'_>> = batch.iter().map(|m| row(m)).collect();
    let since = batch
        .iter()
        .map(|m| millis(m.created_at))
        .min()
        .unwrap_or(0);
    let column = |f: fn(&NewMessage) -> Option<Vec<u8>>| -> Vec<Option<Vec<u8>>> {
        batch.iter().map(|m| f(m)).collect()
    };
    let locks = cap_locks(batch);
    let statement = sqlx::query_as::<_, (String, String)>(POSTGRES_ACCEPT)
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
        .bind(rows.iter().map(|r| r.15).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.16).collect::<Vec<_>>());
    let rows: Vec<(String, String)> = if locks.is_empty() {
        statement.fetch_all(pool).await?
    } else {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::bigint[]) AS k ORDER BY k")
            .bind(&locks)
            .execute(&mut *tx)
            .await?;
        let rows = statement.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows
    };
    let mut written = Written::default();
    for (what, id) in rows {
        if what == "capped" {
            written.capped.insert(id);
        } else {
            written.written.insert(id);
        }
    }
    Ok(written)
}

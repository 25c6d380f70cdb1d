//! Bulk writes, the one place the backends' SQL differs for speed. Each batch is one statement
//! of a fixed shape (so it is prepared once and cached), however many rows: PostgreSQL takes
//! whole columns as arrays (`UNNEST`), SQLite a JSON array of rows (`json_each`) — except the
//! sealer's insert, the busiest, whose rows are bound as parameters of padded `VALUES` lists.

use herald_domain::audit::{AuditRecord, SealedEntry};
use sqlx::{PgConnection, SqliteConnection};

use crate::convert::millis;

/// A batch as one JSON array parameter (SQLite's `json_each`).
pub(crate) fn json<T: serde::Serialize>(rows: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

pub(crate) trait AuditBulk {
    async fn insert_pending(&mut self, records: &[AuditRecord]) -> Result<(), sqlx::Error>;
    async fn insert_sealed(&mut self, entries: &[SealedEntry]) -> Result<(), sqlx::Error>;
    async fn delete_pending(&mut self, ids: &[i64]) -> Result<(), sqlx::Error>;
}

fn seq(entry: &SealedEntry) -> i64 {
    // Sequence numbers start at 1 and grow by one per entry: far below i64::MAX.
    i64::try_from(entry.seq).unwrap_or(i64::MAX)
}

/// `rows` rows of `columns` anonymous parameters, `(?, ?), (?, ?)`, for a multi-row `VALUES`.
/// Anonymous because sqlx looks up every parameter's name before binding it, and SQLite finds
/// the name of parameter *i* by walking the statement's named ones: quadratic in a batch.
pub(crate) fn anonymous_rows(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// Sealed entries per SQLite statement. A batch is cut into statements of this many rows; the
/// last is padded to a power of two with rows of nulls that the statement skips, so a
/// connection prepares at most nine shapes.
const SEALED_ROWS: usize = 256;

fn sealed_insert_sql(rows: usize) -> &'static str {
    static STATEMENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| {
        (0..=SEALED_ROWS.trailing_zeros())
            .map(|power| {
                format!(
                    "INSERT INTO audit_log (seq, hash, recorded_at, body)
                     SELECT column1, column2, column3, column4 FROM (VALUES {})
                     WHERE column1 IS NOT NULL",
                    anonymous_rows(1 << power, 4)
                )
            })
            .collect()
    });
    &statements[rows.trailing_zeros() as usize]
}

impl AuditBulk for SqliteConnection {
    async fn insert_pending(&mut self, records: &[AuditRecord]) -> Result<(), sqlx::Error> {
        let rows: Vec<(i64, &str)> = records
            .iter()
            .map(|r| (millis(r.recorded_at), r.body.as_str()))
            .collect();
        sqlx::query(
            "INSERT INTO audit_pending (recorded_at, body)
             SELECT j.value ->> 0, j.value ->> 1 FROM json_each($1) AS j ORDER BY j.key",
        )
        .bind(json(&rows)?)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn insert_sealed(&mut self, entries: &[SealedEntry]) -> Result<(), sqlx::Error> {
        // Every accepted message's entry passes through here: its values are bound, not
        // written into a JSON array for SQLite to parse back apart (SQLite's JSON functions,
        // this insert's among them, were ~12 % of the writer thread's time end to end).
        for chunk in entries.chunks(SEALED_ROWS) {
            let padded = chunk.len().next_power_of_two();
            let mut query = sqlx::query(sealed_insert_sql(padded));
            for entry in chunk {
                query = query
                    .bind(seq(entry))
                    .bind(&entry.hash[..])
                    .bind(millis(entry.recorded_at))
                    .bind(entry.body.as_str());
            }
            for _ in chunk.len()..padded {
                query = query
                    .bind(None::<i64>)
                    .bind(None::<&[u8]>)
                    .bind(None::<i64>)
                    .bind(None::<&str>);
            }
            query.execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn delete_pending(&mut self, ids: &[i64]) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM audit_pending WHERE id IN (SELECT value FROM json_each($1))")
            .bind(json(&ids)?)
            .execute(&mut *self)
            .await?;
        Ok(())
    }
}

impl AuditBulk for PgConnection {
    async fn insert_pending(&mut self, records: &[AuditRecord]) -> Result<(), sqlx::Error> {
        let times: Vec<i64> = records.iter().map(|r| millis(r.recorded_at)).collect();
        let bodies: Vec<&str> = records.iter().map(|r| r.body.as_str()).collect();
        sqlx::query(
            "INSERT INTO audit_pending (recorded_at, body)
             SELECT * FROM UNNEST($1::bigint[], $2::text[])",
        )
        .bind(times)
        .bind(bodies)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn insert_sealed(&mut self, entries: &[SealedEntry]) -> Result<(), sqlx::Error> {
        let seqs: Vec<i64> = entries.iter().map(seq).collect();
        let hashes: Vec<&[u8]> = entries.iter().map(|e| &e.hash[..]).collect();
        let times: Vec<i64> = entries.iter().map(|e| millis(e.recorded_at)).collect();
        let bodies: Vec<&str> = entries.iter().map(|e| e.body.as_str()).collect();
        sqlx::query(
            "INSERT INTO audit_log (seq, hash, recorded_at, body)
             SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bigint[], $4::text[])",
        )
        .bind(seqs)
        .bind(hashes)
        .bind(times)
        .bind(bodies)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn delete_pending(&mut self, ids: &[i64]) -> Result<(), sqlx::Error> {
        let (Some(low), Some(high)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(());
        };
        // The range lets the planner walk the primary key instead of scanning a large backlog;
        // the list keeps the delete exact (rows in the range committed after the sealer read
        // the pending ones are not sealed yet and must stay).
        sqlx::query(
            "DELETE FROM audit_pending WHERE id BETWEEN $1 AND $2 AND id = ANY($3::bigint[])",
        )
        .bind(low)
        .bind(high)
        .bind(ids)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

/// Bulk writes of message history.
pub(crate) trait MessageBulk {
    /// History rows `(message id, status, at)`; a status already recorded is kept as it was.
    async fn insert_history(&mut self, rows: &[(&str, &str, i64)]) -> Result<(), sqlx::Error>;
}

impl MessageBulk for SqliteConnection {
    async fn insert_history(&mut self, rows: &[(&str, &str, i64)]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO message_history (message_id, status, at)
             SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2 FROM json_each($1) AS j
             WHERE true
             ON CONFLICT (message_id, status) DO NOTHING",
        )
        .bind(json(&rows)?)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

impl MessageBulk for PgConnection {
    async fn insert_history(&mut self, rows: &[(&str, &str, i64)]) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let statuses: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.2).collect();
        sqlx::query(
            "INSERT INTO message_history (message_id, status, at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (message_id, status) DO NOTHING",
        )
        .bind(ids)
        .bind(statuses)
        .bind(at)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

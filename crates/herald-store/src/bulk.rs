//! Bulk audit writes, the one place the backends' SQL differs for speed: PostgreSQL takes whole
//! columns as arrays (`UNNEST`), one statement however many rows, while SQLite — in-process,
//! where statements are cheap — takes multi-row `VALUES`.

use herald_domain::audit::{AuditRecord, SealedEntry};
use sqlx::{PgConnection, SqliteConnection};

use crate::convert::millis;

/// Rows per multi-row statement on SQLite (far below its bind-parameter limit).
const SQLITE_CHUNK: usize = 500;

pub(crate) trait AuditBulk {
    async fn insert_pending(&mut self, records: &[AuditRecord]) -> Result<(), sqlx::Error>;
    async fn insert_sealed(&mut self, entries: &[SealedEntry]) -> Result<(), sqlx::Error>;
    async fn delete_pending(&mut self, ids: &[i64]) -> Result<(), sqlx::Error>;
}

fn seq(entry: &SealedEntry) -> i64 {
    // Sequence numbers start at 1 and grow by one per entry: far below i64::MAX.
    i64::try_from(entry.seq).unwrap_or(i64::MAX)
}

impl AuditBulk for SqliteConnection {
    async fn insert_pending(&mut self, records: &[AuditRecord]) -> Result<(), sqlx::Error> {
        for chunk in records.chunks(SQLITE_CHUNK) {
            let mut insert =
                sqlx::QueryBuilder::new("INSERT INTO audit_pending (recorded_at, body) ");
            insert.push_values(chunk, |mut row, record| {
                row.push_bind(millis(record.recorded_at))
                    .push_bind(record.body.as_str());
            });
            insert.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn insert_sealed(&mut self, entries: &[SealedEntry]) -> Result<(), sqlx::Error> {
        for chunk in entries.chunks(SQLITE_CHUNK) {
            let mut insert =
                sqlx::QueryBuilder::new("INSERT INTO audit_log (seq, hash, recorded_at, body) ");
            insert.push_values(chunk, |mut row, entry| {
                row.push_bind(seq(entry))
                    .push_bind(&entry.hash[..])
                    .push_bind(millis(entry.recorded_at))
                    .push_bind(entry.body.as_str());
            });
            insert.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn delete_pending(&mut self, ids: &[i64]) -> Result<(), sqlx::Error> {
        for chunk in ids.chunks(SQLITE_CHUNK) {
            let mut delete = sqlx::QueryBuilder::new("DELETE FROM audit_pending WHERE id IN (");
            let mut list = delete.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            delete.push(")");
            delete.build().execute(&mut *self).await?;
        }
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

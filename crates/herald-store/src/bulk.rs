//! Bulk writes, the one place the backends' SQL differs for speed. Each batch is one statement
//! of a fixed shape (so it is prepared once and cached), however many rows: PostgreSQL takes
//! whole columns as arrays (`UNNEST`), SQLite rows of bound parameters in padded `VALUES`
//! lists ([`PaddedRows`]).

use std::sync::OnceLock;

use herald_domain::audit::{AuditRecord, SealedEntry};
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, PgConnection, SqliteConnection};

use crate::convert::millis;

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

/// Rows per SQLite bulk statement. A batch is cut into statements of this many rows; the last
/// is padded to a power of two with rows of nulls, so a statement has at most nine shapes,
/// each prepared once per connection.
const ROWS_PER_STATEMENT: usize = 256;

/// A SQLite bulk statement whose rows are bound parameters: `template` names the rows
/// `(VALUES {rows})`, read as `column1`, `column2`, …. Values travel bound, typed, not written
/// into a JSON array for SQLite to parse back apart (its JSON functions were ~12 % of the
/// writer thread's time end to end). Padding rows are all null: each statement skips rows
/// whose `column1` is null, by a `WHERE` or by a join on it. A parameter every statement
/// takes once is written `?TRAILING` and bound after the rows: numbered after them, it leaves
/// the rows' parameters anonymous. It must also come after `{rows}` in the text — SQLite
/// numbers an anonymous `?` one above the largest number seen before it, so rows written after
/// `?TRAILING` would take the numbers after it — and a template that breaks this is refused.
pub(crate) struct PaddedRows {
    template: &'static str,
    columns: usize,
    /// The statement for 1, 2, 4, … rows; `None` for a template that breaks the rule above.
    shapes: OnceLock<Option<Vec<String>>>,
}

impl PaddedRows {
    pub(crate) const fn new(template: &'static str, columns: usize) -> Self {
        Self {
            template,
            columns,
            shapes: OnceLock::new(),
        }
    }

    fn sql(&'static self, rows: usize) -> Result<&'static str, sqlx::Error> {
        let shapes = self.shapes.get_or_init(|| {
            let rows_at = self.template.find("{rows}")?;
            if self
                .template
                .find("?TRAILING")
                .is_some_and(|at| at < rows_at)
            {
                return None;
            }
            Some(
                (0..=ROWS_PER_STATEMENT.trailing_zeros())
                    .map(|power| {
                        let rows = 1 << power;
                        self.template
                            .replace("{rows}", &anonymous_rows(rows, self.columns))
                            .replace("?TRAILING", &format!("?{}", rows * self.columns + 1))
                    })
                    .collect(),
            )
        });
        shapes
            .as_ref()
            .map(|shapes| shapes[rows.trailing_zeros() as usize].as_str())
            .ok_or_else(|| {
                sqlx::Error::Protocol("a bulk statement's parameters are out of order".into())
            })
    }

    /// Runs the statement over `rows`, `bind` adding one row's `columns` values, and
    /// `trailing` as `?TRAILING`. Returns the rows the statements return (one text column).
    pub(crate) async fn run<R>(
        &'static self,
        conn: &mut SqliteConnection,
        trailing: Option<&str>,
        rows: &[R],
        bind: impl Fn(&mut SqliteArguments, &R) -> Result<(), sqlx::error::BoxDynError>,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut returned = Vec::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let padded = chunk.len().next_power_of_two();
            let mut arguments = SqliteArguments::default();
            arguments.reserve(padded * self.columns + 1, 0);
            for row in chunk {
                bind(&mut arguments, row).map_err(sqlx::Error::Encode)?;
            }
            // A row bound with too few or too many values would shift every later one into
            // the wrong column: refuse the statement rather than write misplaced values.
            if arguments.len() != chunk.len() * self.columns {
                return Err(sqlx::Error::Protocol(
                    "a bulk row was bound with the wrong number of values".into(),
                ));
            }
            for _ in chunk.len() * self.columns..padded * self.columns {
                arguments.add(None::<i64>).map_err(sqlx::Error::Encode)?;
            }
            if let Some(value) = trailing {
                arguments.add(value).map_err(sqlx::Error::Encode)?;
            }
            returned.extend(
                sqlx::query_scalar_with::<_, String, _>(self.sql(padded)?, arguments)
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(returned)
    }
}

static INSERT_PENDING: PaddedRows = PaddedRows::new(
    // Ordered by position: the pending order is the order the chain will seal them in.
    "INSERT INTO audit_pending (recorded_at, body)
     SELECT column2, column3 FROM (VALUES {rows}) WHERE column1 IS NOT NULL ORDER BY column1",
    3,
);

static INSERT_SEALED: PaddedRows = PaddedRows::new(
    "INSERT INTO audit_log (seq, hash, recorded_at, body)
     SELECT column1, column2, column3, column4 FROM (VALUES {rows}) WHERE column1 IS NOT NULL",
    4,
);

/// Moves the audit tables' "sealed through" mark forward (never back) inside the sealing
/// transaction, which lets its delete of the pending entries it sealed through the guard.
macro_rules! seal_mark_forward {
    ($also:literal) => {
        concat!(
            "UPDATE audit_seal_mark
             SET sealed_through = CASE WHEN sealed_through > $1 THEN sealed_through ELSE $1 END",
            $also,
            " WHERE id = 1"
        )
    };
}

const SEAL_MARK_FORWARD: &str = seal_mark_forward!("");

/// SQLite: the same, opening the gate its guard checks (SQLite reuses the ids of an emptied
/// table, so the mark alone cannot tell sealed from unsealed there; migration 0008).
const SQLITE_SEAL_GATE_OPEN: &str = seal_mark_forward!(", open = 1");

/// …and closing it again before the sealing transaction commits.
const SQLITE_SEAL_GATE_CLOSE: &str = "UPDATE audit_seal_mark SET open = 0 WHERE id = 1";

static DELETE_PENDING: PaddedRows = PaddedRows::new(
    "DELETE FROM audit_pending WHERE id IN (SELECT column1 FROM (VALUES {rows}))",
    1,
);

static INSERT_HISTORY: PaddedRows = PaddedRows::new(
    "INSERT INTO message_history (message_id, status, at)
     SELECT column1, column2, column3 FROM (VALUES {rows}) WHERE column1 IS NOT NULL
     ON CONFLICT (message_id, status) DO NOTHING",
    3,
);

impl AuditBulk for SqliteConnection {
    async fn insert_pending(&mut self, records: &[AuditRecord]) -> Result<(), sqlx::Error> {
        let rows: Vec<(i64, &AuditRecord)> = (0..).zip(records).collect();
        INSERT_PENDING
            .run(self, None, &rows, |arguments, (position, record)| {
                arguments.add(*position)?;
                arguments.add(millis(record.recorded_at))?;
                arguments.add(record.body.as_str())
            })
            .await?;
        Ok(())
    }

    async fn insert_sealed(&mut self, entries: &[SealedEntry]) -> Result<(), sqlx::Error> {
        // Every accepted message's entry passes through here.
        INSERT_SEALED
            .run(self, None, entries, |arguments, entry| {
                arguments.add(seq(entry))?;
                arguments.add(&entry.hash[..])?;
                arguments.add(millis(entry.recorded_at))?;
                arguments.add(entry.body.as_str())
            })
            .await?;
        Ok(())
    }

    async fn delete_pending(&mut self, ids: &[i64]) -> Result<(), sqlx::Error> {
        let Some(high) = ids.iter().max() else {
            return Ok(());
        };
        // The audit tables refuse to delete an unsealed entry: this transaction sealed these.
        sqlx::query(SQLITE_SEAL_GATE_OPEN)
            .bind(*high)
            .execute(&mut *self)
            .await?;
        DELETE_PENDING
            .run(self, None, ids, |arguments, id| arguments.add(*id))
            .await?;
        sqlx::query(SQLITE_SEAL_GATE_CLOSE)
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
        // The audit tables refuse to delete an unsealed entry: this transaction sealed these.
        sqlx::query(SEAL_MARK_FORWARD)
            .bind(*high)
            .execute(&mut *self)
            .await?;
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
        INSERT_HISTORY
            .run(self, None, rows, |arguments, (id, status, at)| {
                arguments.add(*id)?;
                arguments.add(*status)?;
                arguments.add(*at)
            })
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

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    static PAIRS: PaddedRows = PaddedRows::new(
        "SELECT column1 || ':' || column2 || suffix
         FROM (VALUES {rows}) JOIN (SELECT ?TRAILING AS suffix)
         WHERE column1 IS NOT NULL",
        2,
    );

    /// `?TRAILING` before the rows: the rows' anonymous parameters would be numbered after it.
    static OUT_OF_ORDER: PaddedRows = PaddedRows::new(
        "SELECT ?TRAILING || column1 FROM (VALUES {rows}) WHERE column1 IS NOT NULL",
        1,
    );

    async fn connection() -> SqliteConnection {
        SqliteConnection::connect("sqlite::memory:").await.unwrap()
    }

    #[tokio::test]
    async fn rows_arrive_whole_across_statements_and_padding() {
        let mut conn = connection().await;
        // 256 rows fill one statement; the other 45 go into one padded to 64.
        let rows: Vec<(String, i64)> = (0..301).map(|i| (format!("r{i}"), i)).collect();
        let mut returned = PAIRS
            .run(&mut conn, Some("!"), &rows, |arguments, (name, n)| {
                arguments.add(name.as_str())?;
                arguments.add(*n)
            })
            .await
            .unwrap();
        returned.sort();
        let mut expected: Vec<String> = rows.iter().map(|(s, n)| format!("{s}:{n}!")).collect();
        expected.sort();
        assert_eq!(returned, expected);
    }

    #[tokio::test]
    async fn a_row_bound_with_the_wrong_number_of_values_is_refused() {
        let mut conn = connection().await;
        let rows = ["only one value"];
        let result = PAIRS
            .run(&mut conn, Some("!"), &rows, |arguments, value| {
                arguments.add(*value)
            })
            .await;
        assert!(
            matches!(result, Err(sqlx::Error::Protocol(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_trailing_parameter_before_the_rows_is_refused() {
        let mut conn = connection().await;
        let result = OUT_OF_ORDER
            .run(&mut conn, Some("!"), &["a"], |arguments, value| {
                arguments.add(*value)
            })
            .await;
        assert!(
            matches!(result, Err(sqlx::Error::Protocol(_))),
            "{result:?}"
        );
    }
}

//! sqlx errors mapped to the domain's coarse [`StoreError`], by kind (never by constraint name:
//! SQLite does not report names).

use herald_domain::store::StoreError;
use sqlx::error::ErrorKind;

/// SQLite result codes that mean "someone else holds the lock and the busy timeout ran out".
const SQLITE_BUSY: &str = "5";
const SQLITE_LOCKED: &str = "6";
/// PostgreSQL SQLSTATE classes that mean "try again": connection exceptions, serialization
/// failures and deadlocks, insufficient resources, operator intervention (e.g. shutdown).
const PG_RETRYABLE_CLASSES: [&str; 4] = ["08", "40", "53", "57"];

pub(crate) fn from_sqlx(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StoreError::Unavailable(Box::new(error)),
        sqlx::Error::Database(db) => {
            if matches!(db.kind(), ErrorKind::UniqueViolation) {
                return StoreError::Conflict;
            }
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let retryable = code == SQLITE_BUSY
                || code == SQLITE_LOCKED
                || PG_RETRYABLE_CLASSES
                    .iter()
                    .any(|class| code.len() == 5 && code.starts_with(class));
            if retryable {
                StoreError::Unavailable(Box::new(sqlx::Error::Database(db)))
            } else {
                StoreError::Internal(Box::new(sqlx::Error::Database(db)))
            }
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(format!("a stored value could not be decoded: {error}"))
        }
        other => StoreError::Internal(Box::new(other)),
    }
}

//! Conversions between domain values and the column types both backends share
//! (TEXT, BIGINT/INTEGER, BYTEA/BLOB, BOOLEAN/INTEGER).

use chrono::DateTime;
use herald_domain::clock::Timestamp;
use herald_domain::store::StoreError;

pub(crate) fn millis(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn opt_millis(t: Option<Timestamp>) -> Option<i64> {
    t.map(millis)
}

pub(crate) fn time(ms: i64) -> Result<Timestamp, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt("a stored time is out of range".into()))
}

pub(crate) fn opt_time(ms: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    ms.map(time).transpose()
}

pub(crate) fn id<T, E>(
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(value).map_err(|_| StoreError::Corrupt("a stored id is malformed".into()))
}

pub(crate) fn version(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value)
        .map_err(|_| StoreError::Corrupt("a stored key version is out of range".into()))
}

/// Clamps a page size to what one query may return (the API validates before this).
pub(crate) fn limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 1000))
}

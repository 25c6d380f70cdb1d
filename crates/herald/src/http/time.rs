//! Timestamps on the wire: RFC 3339, UTC, always with milliseconds (`2026-11-29T08:16:14.123Z`).

use chrono::SecondsFormat;
use herald_domain::clock::Timestamp;
use serde::Serializer;

pub fn rfc3339<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub fn rfc3339_opt<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

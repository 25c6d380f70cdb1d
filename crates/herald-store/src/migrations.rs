//! Embedded, forward-only migrations: one folder per backend with the same version numbers
//! (`migrations/{sqlite,postgres}/NNNN_name.sql`). Never edit an applied migration; add one.
//!
//! Recipe for a schema change: write `NNNN_what.sql` in both folders, add one line per backend
//! below, and run the tests (one checks the folders and these lists agree).

use std::borrow::Cow;

use herald_domain::store::Backend;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

/// (version, description, SQL) per backend, in order.
pub const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../migrations/sqlite/0001_foundation.sql"),
    ),
    (
        2,
        "audit",
        include_str!("../migrations/sqlite/0002_audit.sql"),
    ),
    (
        3,
        "messages",
        include_str!("../migrations/sqlite/0003_messages.sql"),
    ),
    (
        4,
        "callbacks_webhooks",
        include_str!("../migrations/sqlite/0004_callbacks_webhooks.sql"),
    ),
    (
        5,
        "consent",
        include_str!("../migrations/sqlite/0005_consent.sql"),
    ),
    (
        6,
        "rights_requests",
        include_str!("../migrations/sqlite/0006_rights_requests.sql"),
    ),
    (
        7,
        "subject_rights",
        include_str!("../migrations/sqlite/0007_subject_rights.sql"),
    ),
    (
        8,
        "trust_boundaries",
        include_str!("../migrations/sqlite/0008_trust_boundaries.sql"),
    ),
    (
        9,
        "oauth",
        include_str!("../migrations/sqlite/0009_oauth.sql"),
    ),
    (
        10,
        "rate_limits",
        include_str!("../migrations/sqlite/0010_rate_limits.sql"),
    ),
    (
        11,
        "recovery",
        include_str!("../migrations/sqlite/0011_recovery.sql"),
    ),
    (
        12,
        "incidents",
        include_str!("../migrations/sqlite/0012_incidents.sql"),
    ),
    (
        13,
        "incident_scope",
        include_str!("../migrations/sqlite/0013_incident_scope.sql"),
    ),
    (
        14,
        "operator_events",
        include_str!("../migrations/sqlite/0014_operator_events.sql"),
    ),
    (
        15,
        "vendors",
        include_str!("../migrations/sqlite/0015_vendors.sql"),
    ),
];

pub const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../migrations/postgres/0001_foundation.sql"),
    ),
    (
        2,
        "audit",
        include_str!("../migrations/postgres/0002_audit.sql"),
    ),
    (
        3,
        "messages",
        include_str!("../migrations/postgres/0003_messages.sql"),
    ),
    (
        4,
        "callbacks_webhooks",
        include_str!("../migrations/postgres/0004_callbacks_webhooks.sql"),
    ),
    (
        5,
        "consent",
        include_str!("../migrations/postgres/0005_consent.sql"),
    ),
    (
        6,
        "rights_requests",
        include_str!("../migrations/postgres/0006_rights_requests.sql"),
    ),
    (
        7,
        "subject_rights",
        include_str!("../migrations/postgres/0007_subject_rights.sql"),
    ),
    (
        8,
        "trust_boundaries",
        include_str!("../migrations/postgres/0008_trust_boundaries.sql"),
    ),
    (
        9,
        "oauth",
        include_str!("../migrations/postgres/0009_oauth.sql"),
    ),
    (
        10,
        "rate_limits",
        include_str!("../migrations/postgres/0010_rate_limits.sql"),
    ),
    (
        11,
        "recovery",
        include_str!("../migrations/postgres/0011_recovery.sql"),
    ),
    (
        12,
        "incidents",
        include_str!("../migrations/postgres/0012_incidents.sql"),
    ),
    (
        13,
        "incident_scope",
        include_str!("../migrations/postgres/0013_incident_scope.sql"),
    ),
    (
        14,
        "operator_events",
        include_str!("../migrations/postgres/0014_operator_events.sql"),
    ),
    (
        15,
        "vendors",
        include_str!("../migrations/postgres/0015_vendors.sql"),
    ),
];

pub fn embedded(backend: Backend) -> &'static [(i64, &'static str, &'static str)] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

pub(crate) fn migrator(backend: Backend) -> Migrator {
    migrator_through(backend, i64::MAX)
}

/// The migrations up to and including `version`.
pub(crate) fn migrator_through(backend: Backend, version: i64) -> Migrator {
    let migrations = embedded(backend)
        .iter()
        .filter(|(v, _, _)| *v <= version)
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                AssertSqlSafe(*sql).into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

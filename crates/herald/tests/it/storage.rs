//! Storage: the two backends' migrations stay in step, and migrations are forward-only.

use std::collections::BTreeMap;
use std::path::Path;

use herald_domain::store::Backend;
use herald_store::migrations;

use crate::helpers::{SqlValue, TestApp};

/// `NNNN_name.sql` files of one migrations folder, by version.
fn folder(backend: &str) -> BTreeMap<i64, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../herald-store/migrations")
        .join(backend);
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| {
            let (version, rest) = name.split_once('_').expect("NNNN_name.sql");
            (
                version.parse().expect("numeric version"),
                rest.trim_end_matches(".sql").to_owned(),
            )
        })
        .collect()
}

#[test]
fn both_backends_have_the_same_migration_versions() {
    let sqlite = folder("sqlite");
    let postgres = folder("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "migrations/sqlite and migrations/postgres differ"
    );
}

#[test]
fn every_migration_file_is_embedded_in_order() {
    for (backend, name) in [(Backend::Sqlite, "sqlite"), (Backend::Postgres, "postgres")] {
        let files = folder(name);
        let embedded: BTreeMap<i64, String> = migrations::embedded(backend)
            .iter()
            .map(|(version, description, _)| (*version, (*description).to_owned()))
            .collect();
        assert_eq!(
            files, embedded,
            "{name}: the folder and the embedded list differ"
        );
        let versions: Vec<i64> = migrations::embedded(backend).iter().map(|m| m.0).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            versions, sorted,
            "{name}: versions must be unique and ascending"
        );
    }
}

#[tokio::test]
async fn a_database_written_by_a_newer_herald_is_refused() {
    let mut app = TestApp::spawn().await;
    app.stop().await;
    app.execute_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, $1, TRUE, $2, 0)",
        &[
            SqlValue::Text("from the future".into()),
            SqlValue::Bytes(vec![0; 48]),
        ],
    )
    .await;
    let reopened = herald::Herald::open(
        app.config.clone(),
        std::sync::Arc::clone(&app.clock) as std::sync::Arc<dyn herald_domain::clock::Clock>,
    )
    .await;
    let error = reopened.unwrap_err().to_string();
    assert!(error.contains("migration"), "{error}");
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused() {
    let mut app = TestApp::spawn().await;
    app.stop().await;
    app.execute_sql(
        "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1",
        &[SqlValue::Bytes(vec![1; 48])],
    )
    .await;
    let reopened = herald::Herald::open(
        app.config.clone(),
        std::sync::Arc::clone(&app.clock) as std::sync::Arc<dyn herald_domain::clock::Clock>,
    )
    .await;
    assert!(reopened.unwrap_err().to_string().contains("migration"));
}

//! Backups, restores and drills through the real store (compliance HIPAA-308a7A/B/C,
//! RESTORE-ERASURE, HHS-KEYSEP): backup → change → erase → restore → start, across backends,
//! tampering, the ledger guard, the `age` command line as an independent decrypter, and the
//! schedule under the injected clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use herald::backup::{
    BackupError, BackupSchedule, Decryption, LedgerOutcome, NoProgress, RestoreReport,
    RestoreTarget, Trigger, create_backup, drill_backup, list_backups, restore_backup,
    verify_backup,
};
use herald::startup::{LedgerPolicy, OpenOptions, StartupError};
use herald_domain::clock::Clock;
use herald_domain::ids::SubjectId;
use serde_json::json;

use crate::delivery::audited;
use crate::helpers::{TestApp, TestDb, json, test_config};

/// An age identity written to a file, and its recipient.
struct Identity {
    _dir: tempfile::TempDir,
    file: PathBuf,
    recipient: String,
}

fn identity() -> Identity {
    let dir = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let file = dir.path().join("identity.txt");
    std::fs::write(
        &file,
        format!(
            "# test identity\n{}\n",
            identity.to_string().expose_secret()
        ),
    )
    .unwrap();
    Identity {
        recipient: identity.to_public().to_string(),
        file,
        _dir: dir,
    }
}

async fn backup_app(id: &Identity, customize: impl FnOnce(&mut herald::Config)) -> TestApp {
    let recipient = id.recipient.clone();
    TestApp::spawn_with(move |c| {
        c.backup.recipients = vec![recipient];
        customize(c);
    })
    .await
}

const PHONES: [&str; 3] = ["+4915112345678", "+4915112345679", "+4915112345670"];

/// Registers `phone` with its opt-in for the sandbox's demo purpose (so it can be sent to).
async fn register(app: &TestApp, phone: &str) -> String {
    app.opt_in(phone, "demo").await
}

async fn send(app: &TestApp, phone: &str) {
    let response = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": phone, "purpose": "demo",
                    "template": {"name": "demo_update", "language": "en", "parameters": ["x"]}}),
        )
        .await;
    let status = response.status();
    assert_eq!(status, 202, "{}", response.text().await.unwrap());
}

async fn take_backup(app: &TestApp) -> herald::backup::CreatedBackup {
    create_backup(
        &app.herald,
        &app.config.backup_dir(),
        Trigger::Cli,
        Arc::new(NoProgress),
    )
    .await
    .unwrap()
}

/// A restore target: a fresh directory (and database), the source's root key, and the
/// erasure ledger where `ledger` says (the source's, as shared storage keeps it, or none).
struct Target {
    dir: Arc<tempfile::TempDir>,
    db: Arc<TestDb>,
    config: herald::Config,
}

fn target(app: &TestApp, db: TestDb, ledger: Option<PathBuf>) -> Target {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), &db);
    config.keys.file = Some(app.config.root_key_file());
    config.rights.erasure_ledger_file = ledger;
    config.backup = app.config.backup.clone();
    Target {
        dir: Arc::new(dir),
        db: Arc::new(db),
        config,
    }
}

async fn restore(file: &Path, id: &Identity, target: &Target, app: &TestApp) -> RestoreReport {
    restore_backup(
        file,
        Decryption::identity_file(&id.file).unwrap(),
        &RestoreTarget {
            config: target.config.clone(),
        },
        app.clock.now(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap()
}

async fn start(target: &Target, app: &TestApp, options: OpenOptions) -> TestApp {
    let mut restored = TestApp::start_on(
        target.config.clone(),
        Arc::clone(&target.dir),
        Arc::clone(&target.db),
        Arc::clone(&app.clock),
        options,
    )
    .await;
    // The admin key is in the restored database: the source's works.
    restored.admin_key = app.admin_key.clone();
    restored
}

async fn status_of(app: &TestApp, subject: &str) -> u16 {
    app.get(&format!("/v1/subjects/{subject}"), &app.admin_key)
        .await
        .status()
        .as_u16()
}

/// Backup, then a new subject and an erasure; the restored copy holds the data as of the
/// backup, with the erasure re-applied from the ledger, the restore recorded, and the audit
/// chain verifying.
async fn round_trip(target_db: TestDb) {
    let id = identity();
    let app = backup_app(&id, |_| {}).await;
    let kept = register(&app, PHONES[0]).await;
    let erased = register(&app, PHONES[1]).await;
    send(&app, PHONES[0]).await;
    send(&app, PHONES[1]).await;
    let backup = take_backup(&app).await;
    assert_eq!(backup.manifest.statement.counts["subjects"], 2);
    assert_eq!(backup.manifest.statement.counts["messages"], 2);
    assert_eq!(backup.manifest.statement.root_key_versions, vec![1]);

    // After the backup: a new subject (lost with the machine) and an erasure (must survive).
    let later = register(&app, PHONES[2]).await;
    let response = app
        .delete(&format!("/v1/subjects/{erased}"), &app.admin_key)
        .await;
    assert_eq!(response.status(), 200);
    let mut app = app;
    app.stop().await;

    let target = target(&app, target_db, Some(app.config.erasure_ledger_file()));
    let report = restore(&backup.payload, &id, &target, &app).await;
    assert!(
        matches!(
            report.erasure_ledger,
            LedgerOutcome::KeptExisting { entries: 1, .. }
        ),
        "{:?}",
        report.erasure_ledger
    );
    let restored = start(&target, &app, OpenOptions::default()).await;
    assert_eq!(status_of(&restored, &kept).await, 200);
    assert_eq!(
        status_of(&restored, &later).await,
        404,
        "data is as of the backup"
    );
    assert_eq!(
        status_of(&restored, &erased).await,
        410,
        "the erasure is re-applied"
    );
    let erased_id: SubjectId = erased.parse().unwrap();
    restored.herald.keyring().forget_subject_key(&erased_id);
    assert!(
        restored
            .herald
            .keyring()
            .subject_key(&erased_id)
            .await
            .is_err(),
        "nothing of the erased subject decrypts"
    );
    let kept_id: SubjectId = kept.parse().unwrap();
    assert!(
        restored
            .herald
            .subjects()
            .phone(&kept_id)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(audited(&restored, "backup.restored").await, 1);
    let with_count = restored
        .count(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%backup.restored%' \
             AND body LIKE '%\"erasures_reapplied\":1%'",
        )
        .await;
    assert_eq!(
        with_count, 1,
        "the restore entry counts the re-applied erasure"
    );
    let verified = restored
        .herald
        .audit()
        .verify(&herald_domain::audit::Initiator::admin())
        .await
        .unwrap();
    assert!(verified.ok, "{:?}", verified.first_bad);
    // A second start is an ordinary one: nothing re-applied, the restore not recorded again.
    let restored = restored.restart().await;
    assert_eq!(audited(&restored, "backup.restored").await, 1);
    assert_eq!(status_of(&restored, &erased).await, 410);
}

#[tokio::test]
async fn backup_change_erase_restore_start_keeps_the_erasure() {
    let target = if TestDb::new().await.is_postgres() {
        TestDb::postgres().await
    } else {
        TestDb::sqlite()
    };
    Box::pin(round_trip(target)).await;
}

#[tokio::test]
async fn a_backup_restores_into_the_other_backend() {
    // SQLite → PostgreSQL when the suite runs on SQLite, PostgreSQL → SQLite when it runs on
    // PostgreSQL: the two runs of CI cover both directions.
    let target = if TestDb::new().await.is_postgres() {
        TestDb::sqlite()
    } else {
        TestDb::postgres().await
    };
    Box::pin(round_trip(target)).await;
}

#[tokio::test]
async fn a_restore_without_the_ledger_refuses_to_start_until_one_is_imported() {
    let id = identity();
    let app = backup_app(&id, |_| {}).await;
    let erased = register(&app, PHONES[0]).await;
    let backup = take_backup(&app).await;
    app.delete(&format!("/v1/subjects/{erased}"), &app.admin_key)
        .await;
    let mut app = app;
    app.stop().await;

    // A new machine: the ledger is not where the configuration puts it.
    let db = if app.db.is_postgres() {
        TestDb::postgres().await
    } else {
        TestDb::sqlite()
    };
    let target = target(&app, db, None);
    let report = restore(&backup.payload, &id, &target, &app).await;
    let LedgerOutcome::Missing { backup_copy, .. } = &report.erasure_ledger else {
        panic!("{:?}", report.erasure_ledger);
    };
    let refused = herald::Herald::open(target.config.clone(), app.clock.clone())
        .await
        .expect_err("a restored database without its ledger must not start");
    let StartupError::ErasureLedger(message) = &refused else {
        panic!("{refused:?}");
    };
    assert!(message.contains(&backup.id), "{message}");
    assert!(message.contains("herald erasures import"), "{message}");
    // The backup's own copy predates the erasure; the newest ledger (the old machine's) is
    // what brings it back.
    assert!(Path::new(backup_copy).exists());
    let restored = start(
        &target,
        &app,
        OpenOptions {
            ledger: LedgerPolicy::Import(app.config.erasure_ledger_file()),
        },
    )
    .await;
    assert_eq!(status_of(&restored, &erased).await, 410);
    assert_eq!(audited(&restored, "erasure_ledger.imported").await, 1);
    assert_eq!(audited(&restored, "backup.restored").await, 1);
}

#[tokio::test]
async fn tampered_backups_and_wrong_identities_are_refused_with_the_reason() {
    let id = identity();
    let app = backup_app(&id, |_| {}).await;
    register(&app, PHONES[0]).await;
    let backup = take_backup(&app).await;
    let verify = |file: PathBuf, identity: PathBuf| async move {
        verify_backup(
            &file,
            Decryption::identity_file(&identity).unwrap(),
            Arc::new(NoProgress),
        )
        .await
    };
    let report = verify(backup.manifest_file.clone(), id.file.clone())
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.subjects, 1);
    assert!(report.audit_entries_verified > 0);
    assert_eq!(
        report.audit_head_seq,
        backup.manifest.statement.audit.head_seq
    );

    let copy = |name: &str| {
        let dir = tempfile::tempdir().unwrap().keep();
        let payload = dir.join(backup.payload.file_name().unwrap());
        let manifest = dir.join(backup.manifest_file.file_name().unwrap());
        std::fs::copy(&backup.payload, &payload).unwrap();
        std::fs::copy(&backup.manifest_file, &manifest).unwrap();
        let _ = name;
        (payload, manifest)
    };
    // One byte of the payload.
    let (payload, _) = copy("payload");
    let mut bytes = std::fs::read(&payload).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&payload, bytes).unwrap();
    let error = verify(payload, id.file.clone()).await.unwrap_err();
    assert!(matches!(error, BackupError::PayloadHash), "{error}");
    assert_eq!(error.code(), "payload_hash_mismatch");

    // The manifest's statement (its signature no longer covers it).
    let (_, manifest) = copy("manifest");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let created = &backup.manifest.statement.created_at;
    std::fs::write(&manifest, text.replace(created, "2031-01-01T00:00:00.000Z")).unwrap();
    let error = verify(manifest, id.file.clone()).await.unwrap_err();
    assert_eq!(error.code(), "manifest_signature_invalid", "{error}");

    // A payload re-encrypted by someone holding only the recipient, hash updated to match:
    // the signature (made with the audit key) still refuses it.
    let (payload, manifest) = copy("forged");
    let plain = std::process::Command::new("age")
        .args(["-d", "-i"])
        .arg(&id.file)
        .arg(&backup.payload)
        .output()
        .unwrap();
    assert!(plain.status.success());
    let forged = String::from_utf8(plain.stdout)
        .unwrap()
        .replace(PHONES[0], PHONES[1]);
    let encrypted = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -r {} -o {} <<'EOF'\n{}EOF",
            id.recipient,
            payload.display(),
            forged
        ))
        .status()
        .unwrap();
    assert!(encrypted.success());
    let digest = data_encoding::HEXLOWER
        .encode(&herald_crypto::hash::sha256(&[
            &std::fs::read(&payload).unwrap()
        ]));
    let size = std::fs::metadata(&payload).unwrap().len();
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    value["statement"]["payload"]["sha256"] = json!(digest);
    value["statement"]["payload"]["bytes"] = json!(size);
    std::fs::write(&manifest, value.to_string()).unwrap();
    let error = verify(payload.clone(), id.file.clone()).await.unwrap_err();
    assert_eq!(error.code(), "manifest_signature_invalid", "{error}");
    // Restored, the forgery is loaded to the end and then rolled back: nothing of it stays,
    // and the target can take the genuine backup.
    let forged_db = if app.db.is_postgres() {
        TestDb::postgres().await
    } else {
        TestDb::sqlite()
    };
    let forged_target = target(&app, forged_db, None);
    let error = restore_backup(
        &payload,
        Decryption::identity_file(&id.file).unwrap(),
        &RestoreTarget {
            config: forged_target.config.clone(),
        },
        app.clock.now(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "manifest_signature_invalid", "{error}");
    if forged_target.db.is_postgres() {
        // The load ran to the end in one transaction and was rolled back: the schema is there
        // (a retry may use it), no row is.
        let leftover = herald_store::Database::connect(
            forged_target.config.database_url().expose(),
            &herald_store::StoreOptions::default(),
        )
        .await
        .unwrap();
        assert!(
            matches!(
                leftover.target_state().await.unwrap(),
                herald_store::snapshot::TargetState::EmptySchema(_)
            ),
            "no row of the forged payload was committed"
        );
        herald_domain::store::Store::close(&leftover).await;
    } else {
        // SQLite: the data directory the restore began empty is empty again.
        assert!(
            std::fs::read_dir(&forged_target.config.data_dir)
                .map_or(true, |mut d| d.next().is_none()),
            "no file of the forged restore stays"
        );
    }
    let report = restore(&backup.payload, &id, &forged_target, &app).await;
    assert_eq!(report.backup_id, backup.id);

    // The wrong identity.
    let stranger = identity();
    let error = verify(backup.payload.clone(), stranger.file.clone())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "decryption_failed");
    assert!(error.to_string().contains("no identity"), "{error}");

    // A damaged backup leaves nothing in a restore target.
    let (payload, _) = copy("restore");
    let mut bytes = std::fs::read(&payload).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x01;
    std::fs::write(&payload, bytes).unwrap();
    let mut app = app;
    app.stop().await;
    let target = target(&app, TestDb::sqlite(), None);
    let error = restore_backup(
        &payload,
        Decryption::identity_file(&id.file).unwrap(),
        &RestoreTarget {
            config: target.config.clone(),
        },
        app.clock.now(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "payload_hash_mismatch");
    assert!(!target.config.data_dir.join("herald.db").exists());
}

#[tokio::test]
async fn a_restore_into_a_non_empty_target_is_refused() {
    let id = identity();
    let app = backup_app(&id, |_| {}).await;
    let backup = take_backup(&app).await;
    // The running app's own directory and database hold data.
    let error = restore_backup(
        &backup.payload,
        Decryption::identity_file(&id.file).unwrap(),
        &RestoreTarget {
            config: app.config.clone(),
        },
        app.clock.now(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "target_not_empty", "{error}");
    if app.db.is_postgres() {
        // PostgreSQL: an empty data directory, but the database holds data.
        let dir = tempfile::tempdir().unwrap();
        let mut config = app.config.clone();
        config.data_dir = dir.path().join("data");
        let error = restore_backup(
            &backup.payload,
            Decryption::identity_file(&id.file).unwrap(),
            &RestoreTarget { config },
            app.clock.now(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
        assert_eq!(error.code(), "target_not_empty", "{error}");
    }
}

#[tokio::test]
async fn the_age_command_line_decrypts_a_backup() {
    let id = identity();
    let app = backup_app(&id, |_| {}).await;
    let subject = register(&app, PHONES[0]).await;
    let backup = take_backup(&app).await;
    let output = std::process::Command::new("age")
        .args(["--decrypt", "--identity"])
        .arg(&id.file)
        .arg(&backup.payload)
        .output()
        .expect("the age command line (Debian package `age`) is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["herald_backup"], 1);
    assert_eq!(header["backup_id"], backup.id.as_str());
    assert!(
        text.contains(&subject),
        "the subjects table is in the payload"
    );
    // Personal data is in it only as the database holds it: encrypted.
    assert!(!text.contains(PHONES[0]));
    assert!(text.lines().last().unwrap().starts_with("{\"end\""));
    // The plaintext is what the manifest's plaintext hash names.
    let digest = data_encoding::HEXLOWER.encode(&herald_crypto::hash::sha256(&[text.as_bytes()]));
    assert_eq!(digest, backup.manifest.statement.payload.plaintext_sha256);
    // The root key is not in it, in any form the key file uses.
    let key_file = std::fs::read_to_string(app.config.root_key_file()).unwrap();
    let material = key_file
        .lines()
        .find(|l| l.starts_with("1:"))
        .unwrap()
        .trim_start_matches("1:");
    assert!(!text.contains(material));
}

#[tokio::test]
async fn scheduled_backups_prune_and_drill_under_the_injected_clock() {
    let id = identity();
    let drill_identity = id.file.clone();
    let app = backup_app(&id, move |c| {
        c.backup.every = std::time::Duration::from_secs(24 * 3600);
        c.backup.keep = 2;
        c.backup.drill_every = std::time::Duration::from_secs(7 * 24 * 3600);
        c.backup.drill_identity_file = Some(drill_identity);
    })
    .await;
    let erased = register(&app, PHONES[0]).await;
    register(&app, PHONES[1]).await;
    let schedule = BackupSchedule::new(app.herald.clone());
    // Nothing yet: a backup is due, then the drill of it.
    let step = schedule.step().await;
    let first = step.backup.expect("a backup is due").unwrap();
    let drill = step.drill.expect("a drill is due");
    assert!(drill.ok, "{drill:?}");
    assert_eq!(drill.backup_id, first);
    // Within the day: nothing.
    app.clock.advance(chrono::TimeDelta::hours(23));
    let step = schedule.step().await;
    assert!(step.backup.is_none() && step.drill.is_none());
    // An erasure, then the next day's backup; a third day prunes the oldest (keep = 2).
    app.delete(&format!("/v1/subjects/{erased}"), &app.admin_key)
        .await;
    app.clock.advance(chrono::TimeDelta::hours(1));
    let second = schedule.step().await.backup.unwrap().unwrap();
    app.clock.advance(chrono::TimeDelta::hours(24));
    let step = schedule.step().await;
    let third = step.backup.unwrap().unwrap();
    assert_eq!(step.pruned, 1);
    let listed = list_backups(&app.herald, 10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, vec![third.as_str(), second.as_str(), first.as_str()]);
    assert!(listed[0].present && listed[1].present);
    assert!(!listed[2].present && listed[2].pruned_at.is_some());
    assert!(listed[2].drilled_at.is_some());
    let dir = app.config.backup_dir();
    assert!(!dir.join(format!("{first}.jsonl.age")).exists());
    assert_eq!(audited(&app, "backup.created").await, 3);
    assert_eq!(audited(&app, "backup.pruned").await, 1);
    assert_eq!(audited(&app, "backup.drilled").await, 1);

    // A drill of the first backup now (the erasure came after it): re-applied, and nothing of
    // the erased subject decrypts in the restored copy.
    let older = dir.join(format!("{second}.manifest.json"));
    let report = drill_backup(
        &app.herald,
        Some(&older),
        Decryption::identity_file(&id.file).unwrap(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.erased_subjects_checked, 1);
    assert_eq!(report.erased_subjects_decryptable, 0);
    assert_eq!(report.rpo_seconds, 24 * 3600);
    assert!(report.audit_chain_ok);

    // A backup that fails (the directory cannot be written) is counted and audited.
    let blocker = app.config.backup_dir().join("blocked");
    std::fs::write(&blocker, "not a directory").unwrap();
    let error = create_backup(
        &app.herald,
        &blocker,
        Trigger::Schedule,
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "io_error");
    assert_eq!(audited(&app, "backup.failed").await, 1);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("herald_backup_failures_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_backup_last_success_timestamp_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn backups_are_listed_over_the_api() {
    let id = identity();
    let app = backup_app(&id, |_| {}).await;
    register(&app, PHONES[0]).await;
    let backup = take_backup(&app).await;
    let response = app.get("/v1/backups", &app.admin_key).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["data"][0]["id"], backup.id.as_str());
    assert_eq!(body["data"][0]["subjects"], 1);
    assert_eq!(body["data"][0]["present"], true);
    let (_, key) = app.integration_with_key("shop", &["messages:send"]).await;
    let response = app.get("/v1/backups", &key).await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn every_table_is_in_the_snapshot_or_listed_as_left_out() {
    let app = TestApp::spawn().await;
    let live = app.herald.store().table_names().await.unwrap();
    let mut known: Vec<&str> = herald_store::snapshot::TABLES
        .iter()
        .map(|(t, _)| *t)
        .chain(herald_store::snapshot::NOT_COPIED.iter().map(|(t, _)| *t))
        .collect();
    known.sort_unstable();
    let mut live: Vec<&str> = live.iter().map(String::as_str).collect();
    live.sort_unstable();
    // A table added to the schema must be decided on here (herald-store/src/snapshot.rs).
    assert_eq!(live, known);
}

#[tokio::test]
async fn a_passphrase_backup_round_trips_and_a_wrong_passphrase_is_refused() {
    let app = TestApp::spawn_with(|c| {
        c.backup.passphrase = Some(herald::config::Secret::new("correct horse battery staple"));
    })
    .await;
    register(&app, PHONES[0]).await;
    let backup = take_backup(&app).await;
    assert!(backup.manifest.statement.encryption.passphrase);
    assert!(backup.manifest.statement.encryption.recipients.is_empty());
    let passphrase =
        |p: &str| Decryption::Passphrase(age::secrecy::SecretString::from(p.to_owned()));
    let report = verify_backup(
        &backup.payload,
        passphrase("correct horse battery staple"),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(report.ok);
    let error = verify_backup(
        &backup.payload,
        passphrase("wrong horse"),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "decryption_failed", "{error}");
}

#[tokio::test]
async fn one_node_backs_up_at_a_time() {
    let app = TestApp::spawn().await;
    let first = app.herald.database().backup_lock().await.unwrap();
    assert!(first.is_some());
    let second = app.herald.database().backup_lock().await.unwrap();
    if app.db.is_postgres() {
        // Another node (here: another connection) does not get it while it is held…
        assert!(second.is_none());
        first.unwrap().release().await.unwrap();
        // …and does as soon as it is released.
        let granted = app.herald.database().backup_lock().await.unwrap();
        assert!(granted.is_some());
    } else {
        // SQLite is one node: two backups at once are merely two files.
        assert!(second.is_some());
    }
}

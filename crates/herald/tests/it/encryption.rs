//! Encryption at rest, end to end: no plaintext on disk, tampering and misplacement detected,
//! root-key rotation and restart, wrong or missing root keys refused (compliance.md
//! GDPR-32-ENC, HHS-KEYSEP, NIST-57).

use std::sync::Arc;

use herald::startup::{Herald, StartupError};
use herald_crypto::{FileKeyProvider, RootKeyProvider, RootKeyRing};
use herald_domain::audit::Initiator;
use herald_domain::clock::Clock;
use herald_domain::ids::SubjectId;
use herald_domain::keys::{self, KeyError};
use serde_json::json;

use crate::helpers::{SqlValue, TestApp, epoch, json};

const PHONES: [&str; 3] = ["+4915112345678", "+33612345678", "+12015550123"];

async fn register(app: &TestApp, phone: &str) -> SubjectId {
    let response = app
        .post("/v1/subjects", &app.admin_key, &json!({"phone": phone}))
        .await;
    assert!(response.status().is_success());
    json(response).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_database_on_disk_holds_no_plaintext_phone_numbers() {
    let app = TestApp::spawn().await;
    for phone in PHONES {
        register(&app, phone).await;
    }
    let raw = app.raw_database_bytes().await;
    for phone in PHONES {
        assert!(!contains(&raw, phone), "{phone} is stored in clear");
        assert!(
            !contains(&raw, &phone[1..]),
            "{phone} digits are stored in clear"
        );
        assert!(
            !contains(&raw, &phone[3..]),
            "{phone} national digits are stored in clear"
        );
    }
    // The check can fail: the integration name (not personal data) is plainly there.
    assert!(contains(&raw, "admin"));
}

#[tokio::test]
async fn a_flipped_ciphertext_bit_fails_to_decrypt() {
    let app = TestApp::spawn().await;
    let id = register(&app, PHONES[0]).await;
    let mut ciphertext = app
        .fetch_bytes(
            "SELECT phone_ciphertext FROM subjects WHERE id = $1",
            id.as_str(),
        )
        .await;
    assert!(app.herald.subjects().phone(&id).await.is_ok());
    let middle = ciphertext.len() / 2;
    ciphertext[middle] ^= 0x01;
    app.execute_sql(
        "UPDATE subjects SET phone_ciphertext = $1 WHERE id = $2",
        &[SqlValue::Bytes(ciphertext), SqlValue::Text(id.to_string())],
    )
    .await;
    let error = app.herald.subjects().phone(&id).await.unwrap_err();
    assert!(
        error.to_string().contains("does not authenticate"),
        "{error}"
    );
}

#[tokio::test]
async fn a_ciphertext_copied_into_another_row_fails_to_decrypt() {
    let app = TestApp::spawn().await;
    let alice = register(&app, PHONES[0]).await;
    let bob = register(&app, PHONES[1]).await;
    let alice_phone = app
        .fetch_bytes(
            "SELECT phone_ciphertext FROM subjects WHERE id = $1",
            alice.as_str(),
        )
        .await;
    app.execute_sql(
        "UPDATE subjects SET phone_ciphertext = $1 WHERE id = $2",
        &[
            SqlValue::Bytes(alice_phone),
            SqlValue::Text(bob.to_string()),
        ],
    )
    .await;
    assert!(
        app.herald.subjects().phone(&bob).await.is_err(),
        "alice's number decrypted as bob's"
    );
    assert_eq!(
        app.herald
            .subjects()
            .phone(&alice)
            .await
            .unwrap()
            .unwrap()
            .e164(),
        PHONES[0]
    );

    // Copying alice's wrapped data key into bob's row does not help either: the wrapped key is
    // bound to its subject too.
    let carol = register(&app, PHONES[2]).await;
    let alice_key = app
        .fetch_bytes(
            "SELECT wrapped_key FROM subject_keys WHERE subject_id = $1",
            alice.as_str(),
        )
        .await;
    app.execute_sql(
        "UPDATE subject_keys SET wrapped_key = $1 WHERE subject_id = $2",
        &[
            SqlValue::Bytes(alice_key),
            SqlValue::Text(carol.to_string()),
        ],
    )
    .await;
    app.herald.keyring().forget_subject_key(&carol);
    assert!(app.herald.subjects().phone(&carol).await.is_err());
}

#[tokio::test]
async fn after_root_rotation_and_restart_everything_reads_back() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for phone in PHONES {
        ids.push(register(&app, phone).await);
    }
    let provider = FileKeyProvider::new(app.config.root_key_file());
    let report = keys::rotate_root(
        app.herald.store().as_ref(),
        &provider,
        epoch(),
        &Initiator::admin(),
    )
    .await
    .unwrap();
    assert_eq!(report.active_version, 2);
    assert!(report.system_key_rewrapped);
    assert_eq!(report.subject_keys_rewrapped, 3);
    // Running again finds nothing left to do.
    let again = keys::rotate_root(
        app.herald.store().as_ref(),
        &provider,
        epoch(),
        &Initiator::admin(),
    )
    .await
    .unwrap();
    assert_eq!(again.active_version, 3);
    assert_eq!(
        again.subject_keys_rewrapped, 3,
        "a second rotation re-wraps under version 3"
    );

    let app = app.restart().await;
    assert_eq!(app.herald.keyring().active_root_version(), 3);
    for (phone, id) in PHONES.iter().zip(&ids) {
        let found = app
            .post(
                "/v1/subjects/lookup",
                &app.admin_key,
                &json!({"phone": phone}),
            )
            .await;
        assert_eq!(json(found).await["id"], id.as_str());
        assert_eq!(
            app.herald
                .subjects()
                .phone(id)
                .await
                .unwrap()
                .unwrap()
                .e164(),
            *phone
        );
    }
    // New subjects after the restart are wrapped under the new version.
    let dana = register(&app, "+4917612345678").await;
    let wrapped = app
        .fetch_bytes(
            "SELECT wrapped_key FROM subject_keys WHERE subject_id = $1",
            dana.as_str(),
        )
        .await;
    assert_eq!(herald_crypto::aead::key_version(&wrapped).unwrap(), 3);
    // The old versions are still in the key file (old backups need them).
    let ring = provider.load().unwrap().unwrap();
    assert_eq!(ring.versions().collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[tokio::test]
async fn a_running_server_follows_a_rotation_done_elsewhere() {
    let app = TestApp::spawn().await;
    let alice = register(&app, PHONES[0]).await;
    // Another process (the CLI) rotates: the server's ring only has version 1.
    let provider = FileKeyProvider::new(app.config.root_key_file());
    keys::rotate_root(
        app.herald.store().as_ref(),
        &provider,
        epoch(),
        &Initiator::admin(),
    )
    .await
    .unwrap();
    app.herald.keyring().forget_subject_key(&alice);
    // Unwrapping a key under the unknown version 2 makes the server reload its ring.
    assert_eq!(
        app.herald
            .subjects()
            .phone(&alice)
            .await
            .unwrap()
            .unwrap()
            .e164(),
        PHONES[0]
    );
    assert_eq!(app.herald.keyring().active_root_version(), 2);
}

async fn reopen(app: &TestApp) -> Result<Herald, StartupError> {
    Herald::open(app.config.clone(), Arc::clone(&app.clock) as Arc<dyn Clock>).await
}

#[tokio::test]
async fn a_wrong_root_key_stops_start_up() {
    let mut app = TestApp::spawn().await;
    register(&app, PHONES[0]).await;
    app.stop().await;
    let key_file = app.config.root_key_file();
    let original = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    FileKeyProvider::new(&key_file).create().unwrap();
    match reopen(&app).await {
        Err(StartupError::Keys(KeyError::RootKeyMismatch { .. })) => {}
        other => panic!("expected a root key mismatch, got {other:?}"),
    }
    // Putting the right key back makes it start again, with the data intact.
    std::fs::remove_file(&key_file).unwrap();
    std::fs::write(&key_file, original).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let herald = reopen(&app).await.unwrap();
    let found = herald
        .subjects()
        .lookup(
            PHONES[0],
            &Initiator::admin(),
            herald_domain::subjects::Access::operator(),
        )
        .await
        .unwrap();
    assert!(found.is_some());
}

#[tokio::test]
async fn a_missing_root_key_stops_start_up_and_is_not_recreated() {
    let mut app = TestApp::spawn().await;
    app.stop().await;
    let key_file = app.config.root_key_file();
    std::fs::remove_file(&key_file).unwrap();
    match reopen(&app).await {
        Err(StartupError::Keys(KeyError::RootKeyMissing { provider })) => {
            assert!(provider.contains("root.key"), "{provider}");
        }
        other => panic!("expected a missing root key, got {other:?}"),
    }
    assert!(
        !key_file.exists(),
        "no fresh key may be created for an existing database"
    );
}

#[tokio::test]
async fn the_env_provider_works_and_never_invents_a_key() {
    let ring = RootKeyRing::generate().unwrap();
    let text = ring.encode().to_string();
    let app = TestApp::spawn_with(|c| {
        c.keys.provider = herald::config::KeyProviderKind::Env;
        c.keys.root_key = Some(herald::config::Secret::new(text.clone()));
    })
    .await;
    let id = register(&app, PHONES[0]).await;
    assert!(
        !app.config.root_key_file().exists(),
        "the env provider writes no key file"
    );
    let mut config = app.config.clone();
    config.keys.root_key = None;
    let refused = Herald::open(config, Arc::clone(&app.clock) as Arc<dyn Clock>).await;
    assert!(matches!(
        refused,
        Err(StartupError::Keys(KeyError::RootKeyMissing { .. }))
    ));
    let app = app.restart().await;
    assert_eq!(
        app.herald
            .subjects()
            .phone(&id)
            .await
            .unwrap()
            .unwrap()
            .e164(),
        PHONES[0]
    );
}

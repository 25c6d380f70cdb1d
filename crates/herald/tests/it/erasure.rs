//! Erasure by crypto-shredding (issue 6, GDPR Art. 17): complete, irreversible, proven by a
//! signed receipt, tried through every path afterwards and after restoring a backup taken before
//! it; legal holds; the command line.

use herald_domain::ids::SubjectId;
use herald_domain::keys::KeyError;
use serde_json::{Value, json};

use crate::delivery::{audited, eventually, send, wait_status};
use crate::fakes::{Behaviour, FakeWhatsapp, Receiver};
use crate::helpers::{TestApp, assert_problem, json};
use crate::messages::template_send;
use crate::rights::{
    NEW_PHONE, PHONE, PHONE_DIGITS, assert_valid, endpoint, lookup, patch, reply, rights_app,
    schema,
};

/// How many rows of `table` name the subject.
async fn rows_of(app: &TestApp, table: &str, subject: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM {table} WHERE subject_id = '{subject}'"
    ))
    .await
}

/// Canonical JSON written independently of Herald's: keys sorted, no whitespace.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

async fn verify_receipt(app: &TestApp, receipt: &Value) {
    let keys = json(app.get("/v1/audit/public-key", &app.admin_key).await).await;
    let key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == receipt["key_id"])
        .expect("the receipt names a published key");
    let public = data_encoding::BASE64
        .decode(key["public_key"].as_str().unwrap().as_bytes())
        .unwrap();
    let signature = data_encoding::BASE64
        .decode(receipt["signature"].as_str().unwrap().as_bytes())
        .unwrap();
    let mut message = b"herald-erasure-receipt/v1\n".to_vec();
    message.extend_from_slice(canonical(&receipt["statement"]).as_bytes());
    let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public);
    verifier
        .verify(&message, &signature)
        .expect("the receipt's signature verifies");
    let mut forged = receipt["statement"].clone();
    forged["erased"]["messages_cancelled"] = json!(999);
    let mut message = b"herald-erasure-receipt/v1\n".to_vec();
    message.extend_from_slice(canonical(&forged).as_bytes());
    assert!(verifier.verify(&message, &signature).is_err());
}

/// Every ciphertext of the subject's, as stored (table, column, row id, bytes).
async fn ciphertexts(
    app: &TestApp,
    subject: &str,
) -> Vec<(&'static str, &'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let rows: Vec<(&str, &str, String)> = vec![
        (
            "subjects",
            "phone_ciphertext",
            format!(
                "SELECT id, phone_ciphertext FROM subjects WHERE id = '{subject}' AND phone_ciphertext IS NOT NULL"
            ),
        ),
        (
            "messages",
            "content_ciphertext",
            format!(
                "SELECT id, content_ciphertext FROM messages WHERE subject_id = '{subject}' AND content_ciphertext IS NOT NULL"
            ),
        ),
        (
            "messages",
            "provider_ref_ciphertext",
            format!(
                "SELECT id, provider_ref_ciphertext FROM messages WHERE subject_id = '{subject}' AND provider_ref_ciphertext IS NOT NULL"
            ),
        ),
        (
            "inbound_messages",
            "content_ciphertext",
            format!(
                "SELECT id, content_ciphertext FROM inbound_messages WHERE subject_id = '{subject}' AND content_ciphertext IS NOT NULL"
            ),
        ),
        (
            "consent_events",
            "evidence_ciphertext",
            format!(
                "SELECT id, evidence_ciphertext FROM consent_events WHERE subject_id = '{subject}'"
            ),
        ),
        (
            "webhook_deliveries",
            "payload_ciphertext",
            format!(
                "SELECT event_id, payload_ciphertext FROM webhook_deliveries WHERE subject_id = '{subject}' AND payload_ciphertext IS NOT NULL AND event_type <> 'subject.erased'"
            ),
        ),
    ];
    for (table, column, sql) in rows {
        for (id, bytes) in app.rows_with_bytes(&sql).await {
            out.push((table, column, id, bytes));
        }
    }
    out
}

/// Tries to open each ciphertext with whatever key Herald can find for the subject now.
async fn readable(
    app: &TestApp,
    subject: &SubjectId,
    found: &[(&'static str, &'static str, String, Vec<u8>)],
) -> usize {
    let key = match app.herald.keyring().subject_key(subject).await {
        Ok(key) => key,
        Err(KeyError::NoSubjectKey(_)) => return 0,
        Err(e) => panic!("{e}"),
    };
    found
        .iter()
        .filter(|(table, column, id, bytes)| {
            herald_domain::keys::Keyring::open_for_subject(
                &key,
                &herald_crypto::aead::Binding::new(table, column, id),
                bytes,
            )
            .is_ok()
        })
        .count()
}

#[tokio::test]
async fn test_gdpr_17_erasure_is_complete_irreversible_and_survives_a_restore() {
    let fake = FakeWhatsapp::start().await;
    let app = rights_app(&fake).await;
    let receiver = Receiver::start().await;
    let (shop, key) = app
        .integration_with_key(
            "shop",
            &[
                "messages:send",
                "subjects:write",
                "messages:read",
                "subjects:read",
            ],
        )
        .await;
    endpoint(
        &app,
        &shop,
        &receiver.url(),
        &["subject.erased", "message.status"],
    )
    .await;
    let sent = send(&app, &key, &template_send(PHONE)).await;
    let subject = wait_status(&app, &key, &sent, "sent").await["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let subject_id = SubjectId::parse(&subject).unwrap();
    reply(&app, PHONE_DIGITS, "Meine Adresse ist Hauptstraße 5").await;
    // A second message stays queued: the provider fails it and it waits for its retry.
    fake.script([Behaviour::ServerError]);
    let queued = send(&app, &key, &template_send(PHONE)).await;
    eventually("the failed first attempt", || async {
        (app.count(&format!(
            "SELECT COUNT(*) FROM message_attempts WHERE message_id = '{queued}'"
        ))
        .await
            == 1)
            .then_some(())
    })
    .await;

    // What a backup taken now holds: its ciphertexts, and the whole database.
    let before = ciphertexts(&app, &subject).await;
    assert!(before.len() >= 5, "{} ciphertexts", before.len());
    assert_eq!(readable(&app, &subject_id, &before).await, before.len());
    let backup = app.snapshot().await;

    let (_, eraser_without_scope) = app.integration_with_key("crm", &["subjects:write"]).await;
    assert_problem(
        app.delete(&format!("/v1/subjects/{subject}"), &eraser_without_scope)
            .await,
        403,
        "forbidden",
    )
    .await;
    let erased = app
        .delete(&format!("/v1/subjects/{subject}"), &app.admin_key)
        .await;
    assert_eq!(erased.status(), 200);
    let erased = json(erased).await;
    assert_eq!(erased["id"], subject.as_str());
    let receipt = &erased["receipt"];
    let statement = &receipt["statement"];
    assert_eq!(statement["subject_id"], subject.as_str());
    assert_eq!(statement["erased_at"], erased["erased_at"]);
    assert_eq!(statement["erased"]["messages_cancelled"], 1);
    assert_eq!(statement["erased"]["message_contents_deleted"], 2);
    assert_eq!(statement["erased"]["inbound_messages_deleted"], 1);
    assert!(
        statement["erased"]["consent_evidence_shredded"]
            .as_u64()
            .unwrap()
            >= 1
    );
    verify_receipt(&app, receipt).await;

    // Every path to the data is closed.
    assert_problem(lookup(&app, PHONE).await, 404, "not_found").await;
    assert_erased(
        app.get(&format!("/v1/subjects/{subject}"), &app.admin_key)
            .await,
    )
    .await;
    assert_erased(
        app.get(&format!("/v1/subjects/{subject}/export"), &app.admin_key)
            .await,
    )
    .await;
    assert_erased(
        app.delete(&format!("/v1/subjects/{subject}"), &app.admin_key)
            .await,
    )
    .await;
    assert_erased(
        patch(
            &app,
            &format!("/v1/subjects/{subject}"),
            &app.admin_key,
            &json!({"phone": NEW_PHONE}),
        )
        .await,
    )
    .await;
    assert_erased(
        app.post(
            "/v1/messages",
            &key,
            &json!({"subject_id": subject, "purpose": "order_updates",
            "template": {"name": "order_shipped", "language": "de", "parameters": ["A", "B"]}}),
        )
        .await,
    )
    .await;
    // The queued message was cancelled and never reaches the provider.
    let cancelled = wait_status(&app, &key, &queued, "failed").await;
    assert_eq!(cancelled["error"]["code"], "subject_erased");
    app.clock.advance(chrono::TimeDelta::minutes(10));
    crate::delivery::nothing_due(&app).await;
    assert_eq!(
        fake.accepted().len(),
        1,
        "only the first message was ever sent"
    );
    // Nothing personal is left in the rows, and what is left cannot be decrypted.
    assert_eq!(rows_of(&app, "subject_keys", &subject).await, 0);
    assert_eq!(rows_of(&app, "inbound_messages", &subject).await, 0);
    assert_eq!(app.count(&format!(
        "SELECT COUNT(*) FROM subjects WHERE id = '{subject}' AND phone_index IS NULL AND phone_ciphertext IS NULL AND erased_at IS NOT NULL")).await, 1);
    let left = ciphertexts(&app, &subject).await;
    assert!(
        left.iter().all(|(table, ..)| *table == "consent_events"),
        "{:?}",
        left.iter().map(|l| l.0).collect::<Vec<_>>()
    );
    assert_eq!(readable(&app, &subject_id, &left).await, 0);
    // …nor can the copies a backup taken before the erasure holds.
    assert_eq!(readable(&app, &subject_id, &before).await, 0);
    // Pseudonymous metadata stays: the message, its statuses, the audit trail.
    assert_eq!(
        wait_status(&app, &key, &sent, "sent").await["subject_id"],
        subject.as_str()
    );
    let verify = json(app.get("/v1/audit/verify", &app.admin_key).await).await;
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(audited(&app, "subject.erased").await, 1);
    assert_eq!(rows_of(&app, "erasure_ledger", &subject).await, 1);
    assert!(
        app.try_execute_sql("DELETE FROM erasure_ledger")
            .await
            .is_err(),
        "the ledger is append-only"
    );
    // Integrators are told (Art. 17(2), 19).
    let notice = eventually("subject.erased", || async {
        receiver
            .deliveries()
            .into_iter()
            .find(|d| d.json()["type"] == "subject.erased")
    })
    .await;
    assert_eq!(notice.json()["data"]["subject_id"], subject.as_str());
    let ledger = std::fs::read_to_string(app.data_dir().join("erasure-ledger.jsonl")).unwrap();
    assert!(ledger.contains(&subject));

    // The database restored from the backup taken before the erasure holds the wrapped key,
    // the number and its index again. Herald re-applies the ledger before it serves anything.
    let mut app = app;
    app.stop().await;
    app.restore(&backup).await;
    assert_eq!(
        rows_of(&app, "subject_keys", &subject).await,
        1,
        "the backup holds the key"
    );
    let app = app.restart().await;
    assert_eq!(rows_of(&app, "subject_keys", &subject).await, 0);
    assert_problem(lookup(&app, PHONE).await, 404, "not_found").await;
    assert_erased(
        app.get(&format!("/v1/subjects/{subject}"), &app.admin_key)
            .await,
    )
    .await;
    let restored = ciphertexts(&app, &subject).await;
    assert!(
        restored
            .iter()
            .all(|(table, ..)| *table == "consent_events")
    );
    assert_eq!(readable(&app, &subject_id, &before).await, 0);
    app.herald.audit().seal().await.unwrap();
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_log WHERE body LIKE '%\"action\":\"subject.erased\"%' AND body LIKE '%\"reapplied\":true%'").await,
        1,
        "the re-application is recorded"
    );
}

#[tokio::test]
async fn a_legal_hold_blocks_erasure_with_a_clear_code_until_released() {
    let fake = FakeWhatsapp::start().await;
    let app = rights_app(&fake).await;
    let subject = app.opt_in(PHONE, "order_updates").await;
    let hold = format!("/v1/subjects/{subject}/legal-hold");
    let (_, writer) = app.integration_with_key("crm", &["subjects:write"]).await;
    assert_problem(
        app.put(&hold, &writer, &json!({"reason": "x"})).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.put(&hold, &app.admin_key, &json!({})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.put(&hold, &app.admin_key, &json!({"reason": "  "}))
            .await,
        400,
        "invalid_request",
    )
    .await;
    let held = app
        .put(
            &hold,
            &app.admin_key,
            &json!({"reason": "tax records, 10 years (AO §147)"}),
        )
        .await;
    assert_eq!(held.status(), 200);
    assert_eq!(json(held).await["legal_hold"], true);
    assert!(!String::from_utf8_lossy(&app.raw_database_bytes().await).contains("AO §147"));

    let refused = app
        .delete(&format!("/v1/subjects/{subject}"), &app.admin_key)
        .await;
    let problem = assert_problem(refused, 409, "legal_hold").await;
    assert!(problem["detail"].as_str().unwrap().contains("legal hold"));
    // Nothing changed, and the refusal is on record.
    assert_eq!(rows_of(&app, "subject_keys", &subject).await, 1);
    assert_eq!(lookup(&app, PHONE).await.status(), 200);
    app.herald.audit().seal().await.unwrap();
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_log WHERE body LIKE '%\"action\":\"subject.erased\"%' AND body LIKE '%legal_hold%'").await,
        1
    );

    let released = app.delete(&hold, &app.admin_key).await;
    assert_eq!(released.status(), 200);
    assert_eq!(json(released).await["legal_hold"], false);
    let erased = app
        .delete(&format!("/v1/subjects/{subject}"), &app.admin_key)
        .await;
    assert_eq!(erased.status(), 200);
    assert_erased(
        app.put(&hold, &app.admin_key, &json!({"reason": "late"}))
            .await,
    )
    .await;
    assert_eq!(audited(&app, "subject.legal_hold_placed").await, 1);
    assert_eq!(audited(&app, "subject.legal_hold_released").await, 1);

    // A lost ledger file is never silently rebuilt from the database (which may be older
    // than the newest erasure, RESTORE-ERASURE): start-up refuses, naming the way out.
    let ledger = app.data_dir().join("erasure-ledger.jsonl");
    assert!(std::fs::read_to_string(&ledger).unwrap().contains(&subject));
    std::fs::remove_file(&ledger).unwrap();
    let mut app = app;
    app.stop().await;
    let refused = herald::Herald::open(app.config.clone(), app.clock.clone())
        .await
        .expect_err("a missing ledger stops start-up");
    let message = refused.to_string();
    assert!(message.contains("erasure ledger"), "{message}");
    assert!(message.contains("--accept-missing-ledger"), "{message}");
    assert!(!ledger.exists(), "a refused start writes no ledger");
    // The operator accepts explicitly: the ledger is begun again from the database, audited.
    let app = app
        .restart_with(herald::startup::OpenOptions {
            ledger: herald::startup::LedgerPolicy::AcceptMissing,
        })
        .await;
    assert!(std::fs::read_to_string(&ledger).unwrap().contains(&subject));
    assert_eq!(audited(&app, "erasure_ledger.missing_accepted").await, 1);
    assert_erased(
        app.get(&format!("/v1/subjects/{subject}"), &app.admin_key)
            .await,
    )
    .await;
}

#[tokio::test]
async fn the_command_line_exports_and_erases_a_subject() {
    use crate::process::{Server, admin_key, base_env, run};
    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::TestDb::new().await;
    let env = base_env(&db);
    let server = Server::start(dir.path(), &env).await;
    let admin = admin_key(&server.stdout.lock().unwrap().join("\n"));
    let client = reqwest::Client::new();
    let registered = client
        .post(server.url("/v1/subjects"))
        .bearer_auth(&admin)
        .json(&json!({"phone": PHONE}))
        .send()
        .await
        .unwrap();
    let subject = registered.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, stdout, stderr) = run(dir.path(), &env, &["subjects", "export", &subject]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let document: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_valid(&schema(), &document);
    assert_eq!(document["subject"]["contact"]["phone"], PHONE);
    assert!(!stderr.contains(PHONE_DIGITS), "no personal data in logs");

    let (code, _, stderr) = run(dir.path(), &env, &["subjects", "erase", &subject]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--yes"), "{stderr}");
    let (code, stdout, stderr) =
        run(dir.path(), &env, &["subjects", "erase", &subject, "--yes"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let receipt: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(receipt["id"], subject.as_str());
    assert_eq!(
        receipt["receipt"]["statement"]["subject_id"],
        subject.as_str()
    );
    // The running server sees it at once.
    let gone = client
        .get(server.url(&format!("/v1/subjects/{subject}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_erased(gone).await;
    let (code, _, stderr) = run(dir.path(), &env, &["subjects", "export", &subject]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("erased"), "{stderr}");
    let (code, _, _) = run(dir.path(), &env, &["subjects", "erase", "nope", "--yes"]).await;
    assert_eq!(code, Some(1));
    server.terminate().await;
}

/// The answer every path gives for an erased subject.
async fn assert_erased(response: reqwest::Response) {
    assert_problem(response, 410, "subject_erased").await;
}

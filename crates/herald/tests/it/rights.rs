//! Data-subject rights (issue 6): the export (GDPR Art. 15/20) against its published JSON Schema
//! and the live schema's tables, rectification (Art. 16), restriction (Art. 18), legal holds and
//! erasure by crypto-shredding (Art. 17) — tried through every path afterwards, and after a
//! restore of the state before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald_domain::clock::Clock;
use herald_domain::ids::SubjectId;
use herald_domain::keys::KeyError;
use herald_domain::rights::{Coverage, SUBJECT_DATA_TABLES};
use serde_json::{Value, json};

use crate::callbacks::inbound_callback;
use crate::delivery::{audited, callback, eventually, send, wait_status};
use crate::fakes::{Behaviour, FakeWhatsapp, Receiver};
use crate::helpers::{TestApp, assert_problem, json};
use crate::messages::{configure_messaging, template_send};

const PHONE: &str = "+4915112345678";
const PHONE_DIGITS: &str = "4915112345678";
const NEW_PHONE: &str = "+4915187654321";

static WAMID: AtomicU64 = AtomicU64::new(1);

async fn rights_app(fake: &FakeWhatsapp) -> TestApp {
    TestApp::spawn_with(|c| {
        configure_messaging(c);
        fake.configure(c);
        // Contents stay for a month, so the export and the erasure have them to show and shred.
        c.retention.message_bodies = Duration::from_secs(30 * 24 * 3600);
        c.webhooks.allow_insecure_targets = true;
    })
    .await
}

async fn processed(app: &TestApp) {
    eventually("stored callbacks to be processed", || async {
        (app.count("SELECT COUNT(*) FROM provider_inbox").await == 0).then_some(())
    })
    .await;
}

/// The customer writes `text` from `digits` (a signed WhatsApp callback), processed.
async fn reply(app: &TestApp, digits: &str, text: &str) {
    let n = WAMID.fetch_add(1, Ordering::Relaxed);
    let body = inbound_callback(
        digits,
        &format!("wamid.rights{n}"),
        text,
        app.clock.now().timestamp(),
    );
    assert_eq!(callback(app, &body).await, 200);
    processed(app).await;
}

async fn endpoint(app: &TestApp, integration: &str, url: &str, events: &[&str]) {
    let response = app
        .post(
            &format!("/v1/integrations/{integration}/webhooks"),
            &app.admin_key,
            &json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

async fn lookup(app: &TestApp, phone: &str) -> reqwest::Response {
    app.post(
        "/v1/subjects/lookup",
        &app.admin_key,
        &json!({"phone": phone}),
    )
    .await
}

async fn patch(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.request(reqwest::Method::PATCH, path, key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn delete_with(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.request(reqwest::Method::DELETE, path, key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn schema() -> jsonschema::Validator {
    let text = include_str!("../../../../docs/schemas/subject-export.schema.json");
    jsonschema::validator_for(&serde_json::from_str(text).unwrap()).expect("the schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, document: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "export does not match its schema: {errors:#?}"
    );
}

async fn export(app: &TestApp, key: &str, subject: &str) -> Value {
    let response = app
        .get(&format!("/v1/subjects/{subject}/export"), key)
        .await;
    assert_eq!(response.status(), 200);
    json(response).await
}

/// A subject with a consent, a message that went out (content kept), a reply, a rights request
/// and an event to an integrator; returns (subject, message id, the integration's key).
async fn a_subject_with_history(app: &TestApp, receiver: &Receiver) -> (String, String, String) {
    let (shop, key) = app
        .integration_with_key(
            "shop",
            &[
                "messages:send",
                "messages:read",
                "subjects:read",
                "subjects:write",
            ],
        )
        .await;
    endpoint(app, &shop, &receiver.url(), &["message.status"]).await;
    let id = send(app, &key, &template_send(PHONE)).await;
    let sent = wait_status(app, &key, &id, "sent").await;
    let subject = sent["subject_id"].as_str().unwrap().to_owned();
    reply(app, PHONE_DIGITS, "Danke, bis morgen!").await;
    let request = app
        .post(
            "/v1/requests",
            &key,
            &json!({"kind": "access", "subject_id": subject,
                    "received_at": app.clock.now().to_rfc3339()}),
        )
        .await;
    assert_eq!(request.status(), 201);
    eventually("the status event to be delivered", || async {
        (!receiver.deliveries().is_empty()).then_some(())
    })
    .await;
    (subject, id, key)
}

#[tokio::test]
async fn test_gdpr_15_20_the_export_holds_everything_and_matches_its_published_schema() {
    let fake = FakeWhatsapp::start().await;
    let app = rights_app(&fake).await;
    let receiver = Receiver::start().await;
    let (subject, message_id, key) = a_subject_with_history(&app, &receiver).await;
    let document = export(&app, &key, &subject).await;
    let validator = schema();
    assert_valid(&validator, &document);

    assert_eq!(document["format"], "herald.subject_export");
    assert_eq!(document["subject"]["id"], subject.as_str());
    assert_eq!(document["subject"]["contact"]["phone"], PHONE);
    assert!(document["subject"]["whatsapp"]["last_inbound_at"].is_string());
    // The consent with its evidence, decrypted.
    let history = document["consents"]["history"].as_array().unwrap();
    assert!(!history.is_empty());
    assert_eq!(history[0]["evidence"]["source"], "test harness");
    assert_eq!(document["consents"]["current"][0]["state"], "granted");
    // The message with its content (kept by retention), statuses and attempts.
    let messages = document["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["id"], message_id.as_str());
    assert!(message["content"].to_string().contains("Anna"), "{message}");
    assert!(
        message["provider_message_id"]
            .as_str()
            .unwrap()
            .starts_with("wamid.")
    );
    let statuses: Vec<&str> = message["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"queued") && statuses.contains(&"sent"),
        "{statuses:?}"
    );
    assert_eq!(message["delivery_attempts"][0]["outcome"], "sent");
    // What the subject wrote, flagged as provided by the subject.
    let inbound = document["inbound_messages"].as_array().unwrap();
    assert_eq!(inbound.len(), 1);
    assert!(
        inbound[0]["content"]
            .to_string()
            .contains("Danke, bis morgen!")
    );
    assert_eq!(inbound[0]["source"], "data_subject");
    assert_eq!(document["rights_requests"][0]["kind"], "access");
    assert_eq!(document["events"][0]["type"], "message.status");
    let actions: Vec<&str> = document["audit_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["action"].as_str().unwrap())
        .collect();
    // Entries naming the subject, and those about the subject's messages.
    for action in [
        "subject.registered",
        "consent.changed",
        "message.accepted",
        "message.sent",
        "message.inbound",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    // Art. 15(1): the recipients include the provider actually used.
    assert!(
        document["processing"]["recipients"]
            .to_string()
            .contains("WhatsApp")
    );
    assert!(
        document["processing"]["purposes"]
            .to_string()
            .contains("order_updates")
    );

    // The schema is not vacuous: a document missing a section, or with a field it does not
    // describe, is refused.
    let mut broken = document.clone();
    broken.as_object_mut().unwrap().remove("inbound_messages");
    assert!(!validator.is_valid(&broken));
    let mut extra = document.clone();
    extra["subject"]["nickname"] = json!("x");
    assert!(!validator.is_valid(&extra));

    // Audited; readable only with subjects:read; unknown subjects are 404.
    assert_eq!(audited(&app, "subject.exported").await, 1);
    let (_, sender_only) = app.integration_with_key("crm", &["messages:send"]).await;
    let refused = app
        .get(&format!("/v1/subjects/{subject}/export"), &sender_only)
        .await;
    assert_problem(refused, 403, "forbidden").await;
    let unknown = app
        .get(
            &format!("/v1/subjects/{}/export", SubjectId::generate().unwrap()),
            &key,
        )
        .await;
    assert_problem(unknown, 404, "not_found").await;
    // No personal data in what the audit trail recorded about the export.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%{PHONE_DIGITS}%' OR body LIKE '%Danke%'"
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn every_table_that_can_hold_subject_data_is_covered_by_the_export() {
    let fake = FakeWhatsapp::start().await;
    let app = rights_app(&fake).await;
    let receiver = Receiver::start().await;
    let (subject, _, key) = a_subject_with_history(&app, &receiver).await;
    let document = export(&app, &key, &subject).await;
    let live = app.herald.store().table_names().await.unwrap();
    assert!(live.contains(&"messages".to_owned()), "{live:?}");
    // A table added to the schema without deciding how the export covers it fails here.
    for table in &live {
        assert!(
            SUBJECT_DATA_TABLES.iter().any(|(name, _)| name == table),
            "table {table} is neither exported nor listed as holding no subject data \
             (herald-domain/src/rights/data.rs, SUBJECT_DATA_TABLES)"
        );
    }
    for (table, coverage) in SUBJECT_DATA_TABLES {
        assert!(
            live.contains(&(*table).to_owned()),
            "{table} is listed but does not exist"
        );
        if let Coverage::Exported(section) = coverage {
            assert!(
                document.get(*section).is_some(),
                "{table} is covered by section {section}, which the export lacks"
            );
        }
    }
    // Every table with a subject_id column that holds a row for this subject is one the export
    // covers, and the covering section is not empty for this subject.
    for (table, coverage) in SUBJECT_DATA_TABLES {
        let has_column = match app
            .try_execute_sql(&format!("SELECT subject_id FROM {table} WHERE 1 = 0"))
            .await
        {
            Ok(()) => true,
            Err(_) => false,
        };
        if !has_column {
            continue;
        }
        let rows = app
            .count(&format!(
                "SELECT COUNT(*) FROM {table} WHERE subject_id = '{subject}'"
            ))
            .await;
        if rows == 0 {
            continue;
        }
        let Coverage::Exported(section) = coverage else {
            // Only key material may name the subject without being exported: the wrapped
            // data key is not information about the person.
            assert_eq!(
                *table, "subject_keys",
                "{table} holds rows about the subject but is not exported"
            );
            continue;
        };
        let content = &document[*section];
        let empty = content.as_array().is_some_and(Vec::is_empty)
            || content
                .as_object()
                .is_some_and(|o| o.values().all(|v| v.as_array().is_some_and(Vec::is_empty)));
        assert!(
            !empty,
            "{table} holds {rows} rows but section {section} is empty"
        );
    }
}

#[tokio::test]
async fn test_gdpr_16_rectification_moves_the_blind_index_and_needs_a_fresh_opt_in() {
    let fake = FakeWhatsapp::start().await;
    let app = rights_app(&fake).await;
    let receiver = Receiver::start().await;
    let (shop, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "subjects:read"],
        )
        .await;
    endpoint(&app, &shop, &receiver.url(), &["subject.rectified"]).await;
    let subject = app.opt_in(PHONE, "order_updates").await;
    reply(&app, PHONE_DIGITS, "Hallo").await;
    let other = app.opt_in("+4915100000001", "order_updates").await;
    let before = app
        .fetch_bytes(
            "SELECT phone_ciphertext FROM subjects WHERE id = $1",
            &subject,
        )
        .await;

    let path = format!("/v1/subjects/{subject}");
    let response = patch(&app, &path, &key, &json!({"phone": "+49 151 8765 4321"})).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["id"], subject.as_str());
    assert!(body["rectified_at"].is_string());
    // The window belonged to the old number.
    assert!(body["whatsapp"]["last_inbound_at"].is_null());

    // The old number finds nothing; the new one finds the same subject.
    assert_problem(lookup(&app, PHONE).await, 404, "not_found").await;
    let found = lookup(&app, NEW_PHONE).await;
    assert_eq!(found.status(), 200);
    assert_eq!(json(found).await["id"], subject.as_str());
    let after = app
        .fetch_bytes(
            "SELECT phone_ciphertext FROM subjects WHERE id = $1",
            &subject,
        )
        .await;
    assert_ne!(before, after);
    // The new number's holder never opted in: the opt-in lapsed, a template is refused.
    let overview = json(
        app.get(&format!("/v1/subjects/{subject}/consents"), &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(overview["consents"][0]["state"], "expired", "{overview}");
    let refused = app
        .post(
            "/v1/messages",
            &key,
            &json!({"subject_id": subject, "purpose": "order_updates",
                    "template": {"name": "order_shipped", "language": "de", "parameters": ["A", "B"]}}),
        )
        .await;
    assert_problem(refused, 409, "consent_missing").await;
    // The export shows the new number.
    assert_eq!(
        export(&app, &app.admin_key, &subject).await["subject"]["contact"]["phone"],
        NEW_PHONE
    );
    // Integrators are told, without the number.
    let delivery = eventually("subject.rectified", || async {
        receiver.deliveries().into_iter().next()
    })
    .await;
    let event = delivery.json();
    assert_eq!(event["type"], "subject.rectified");
    assert_eq!(event["data"]["subject_id"], subject.as_str());
    assert!(!String::from_utf8_lossy(&delivery.body).contains("87654321"));

    // The same number again changes nothing; another subject's number is refused; bad input too.
    let same = patch(&app, &path, &key, &json!({"phone": NEW_PHONE})).await;
    assert_eq!(same.status(), 200);
    let taken = patch(&app, &path, &key, &json!({"phone": "+4915100000001"})).await;
    assert_problem(taken, 409, "phone_in_use").await;
    let invalid = patch(&app, &path, &key, &json!({"phone": "12"})).await;
    assert_problem(invalid, 422, "invalid_phone_number").await;
    let unknown_field = patch(&app, &path, &key, &json!({"phone": NEW_PHONE, "name": "x"})).await;
    assert_problem(unknown_field, 400, "invalid_request").await;
    let (_, reader) = app.integration_with_key("crm", &["subjects:read"]).await;
    let forbidden = patch(&app, &path, &reader, &json!({"phone": "+4915199999999"})).await;
    assert_problem(forbidden, 403, "forbidden").await;
    assert_eq!(
        json(lookup(&app, "+4915100000001").await).await["id"],
        other.as_str()
    );
    assert_eq!(audited(&app, "subject.rectified").await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%87654321%' OR body LIKE '%{PHONE_DIGITS}%'"
        ))
        .await,
        0,
        "no number in the audit trail"
    );
}

#[tokio::test]
async fn test_gdpr_18_restriction_stops_sends_and_holds_events_until_lifted() {
    let fake = FakeWhatsapp::start().await;
    let app = rights_app(&fake).await;
    let receiver = Receiver::start().await;
    let (shop, key) = app
        .integration_with_key(
            "shop",
            &[
                "messages:send",
                "messages:read",
                "subjects:write",
                "subjects:read",
            ],
        )
        .await;
    endpoint(&app, &shop, &receiver.url(), &["message.inbound"]).await;
    let subject = app.opt_in(PHONE, "order_updates").await;
    let path = format!("/v1/subjects/{subject}/restriction");

    let restricted = app
        .post(
            &path,
            &key,
            &json!({"reason": "accuracy contested by the customer"}),
        )
        .await;
    assert_eq!(restricted.status(), 200);
    let body = json(restricted).await;
    assert_eq!(body["restricted"], true);
    assert!(body["restricted_at"].is_string());
    // Kept, encrypted: the reason is not in the database in clear, but in the export.
    assert!(
        !String::from_utf8_lossy(&app.raw_database_bytes().await).contains("accuracy contested")
    );
    assert_eq!(
        export(&app, &app.admin_key, &subject).await["subject"]["restriction"]["reason"],
        "accuracy contested by the customer"
    );

    // No sends…
    let refused = app.post("/v1/messages", &key, &template_send(PHONE)).await;
    assert_problem(refused, 409, "subject_restricted").await;
    // …and no events about the subject while restricted: the customer's message is stored, its
    // event held.
    reply(&app, PHONE_DIGITS, "Bitte nicht mehr schreiben").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        receiver.deliveries().is_empty(),
        "an event left while restricted"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE subject_id = '{subject}' AND status = 'pending'"
        ))
        .await,
        1
    );

    // Lifting needs the time the subject was told (Art. 18(3)).
    assert_problem(
        delete_with(&app, &path, &key, &json!({})).await,
        400,
        "invalid_request",
    )
    .await;
    let future = (app.clock.now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    assert_problem(
        delete_with(&app, &path, &key, &json!({"subject_notified_at": future})).await,
        400,
        "invalid_request",
    )
    .await;
    let lifted = delete_with(
        &app,
        &path,
        &key,
        &json!({"subject_notified_at": app.clock.now().to_rfc3339()}),
    )
    .await;
    assert_eq!(lifted.status(), 200);
    assert_eq!(json(lifted).await["restricted"], false);
    // The held event goes out now.
    let delivery = eventually("the held event", || async {
        receiver.deliveries().into_iter().next()
    })
    .await;
    assert_eq!(delivery.json()["type"], "message.inbound");
    let accepted = app.post("/v1/messages", &key, &template_send(PHONE)).await;
    assert_eq!(accepted.status(), 202);

    assert_eq!(audited(&app, "subject.restricted").await, 1);
    assert_eq!(audited(&app, "subject.restriction_lifted").await, 1);
    let (_, reader) = app.integration_with_key("crm", &["subjects:read"]).await;
    assert_problem(app.post(&path, &reader, &json!({})).await, 403, "forbidden").await;
    let too_long = "x".repeat(2001);
    assert_problem(
        app.post(&path, &key, &json!({"reason": too_long})).await,
        400,
        "invalid_request",
    )
    .await;
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
        .integration_with_key("shop", &["messages:send", "messages:read", "subjects:read"])
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
    assert_problem(
        app.get(&format!("/v1/subjects/{subject}"), &app.admin_key)
            .await,
        410,
        "subject_erased",
    )
    .await;
    assert_problem(
        app.get(&format!("/v1/subjects/{subject}/export"), &app.admin_key)
            .await,
        410,
        "subject_erased",
    )
    .await;
    assert_problem(
        app.delete(&format!("/v1/subjects/{subject}"), &app.admin_key)
            .await,
        410,
        "subject_erased",
    )
    .await;
    assert_problem(
        patch(
            &app,
            &format!("/v1/subjects/{subject}"),
            &app.admin_key,
            &json!({"phone": NEW_PHONE}),
        )
        .await,
        410,
        "subject_erased",
    )
    .await;
    assert_problem(
        app.post(
            "/v1/messages",
            &key,
            &json!({"subject_id": subject, "purpose": "order_updates",
            "template": {"name": "order_shipped", "language": "de", "parameters": ["A", "B"]}}),
        )
        .await,
        410,
        "subject_erased",
    )
    .await;
    // The queued message was cancelled and never reaches the provider.
    let cancelled = wait_status(&app, &key, &queued, "failed").await;
    assert_eq!(cancelled["error"]["code"], "subject_erased");
    app.clock.advance(chrono::TimeDelta::minutes(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.accepted().len(),
        1,
        "only the first message was ever sent"
    );
    // Nothing personal is left in the rows, and what is left cannot be decrypted.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM subject_keys WHERE subject_id = '{subject}'"
        ))
        .await,
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM inbound_messages WHERE subject_id = '{subject}'"
        ))
        .await,
        0
    );
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
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM erasure_ledger WHERE subject_id = '{subject}'"
        ))
        .await,
        1
    );
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
        app.count(&format!(
            "SELECT COUNT(*) FROM subject_keys WHERE subject_id = '{subject}'"
        ))
        .await,
        1,
        "the backup holds the key"
    );
    let app = app.restart().await;
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM subject_keys WHERE subject_id = '{subject}'"
        ))
        .await,
        0
    );
    assert_problem(lookup(&app, PHONE).await, 404, "not_found").await;
    assert_problem(
        app.get(&format!("/v1/subjects/{subject}"), &app.admin_key)
            .await,
        410,
        "subject_erased",
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
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM subject_keys WHERE subject_id = '{subject}'"
        ))
        .await,
        1
    );
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
    assert_problem(
        app.put(&hold, &app.admin_key, &json!({"reason": "late"}))
            .await,
        410,
        "subject_erased",
    )
    .await;
    assert_eq!(audited(&app, "subject.legal_hold_placed").await, 1);
    assert_eq!(audited(&app, "subject.legal_hold_released").await, 1);

    // A lost ledger file is rebuilt from the database's ledger at the next start.
    let ledger = app.data_dir().join("erasure-ledger.jsonl");
    assert!(std::fs::read_to_string(&ledger).unwrap().contains(&subject));
    std::fs::remove_file(&ledger).unwrap();
    let app = app.restart().await;
    assert!(std::fs::read_to_string(&ledger).unwrap().contains(&subject));
    assert_problem(
        app.get(&format!("/v1/subjects/{subject}"), &app.admin_key)
            .await,
        410,
        "subject_erased",
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
    assert_problem(gone, 410, "subject_erased").await;
    let (code, _, stderr) = run(dir.path(), &env, &["subjects", "export", &subject]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("erased"), "{stderr}");
    let (code, _, _) = run(dir.path(), &env, &["subjects", "erase", "nope", "--yes"]).await;
    assert_eq!(code, Some(1));
    server.terminate().await;
}

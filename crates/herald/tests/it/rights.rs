//! Data-subject rights (issue 6): the export (GDPR Art. 15/20) against its published JSON Schema
//! and the live schema's tables, rectification (Art. 16), restriction (Art. 18). Erasure and
//! legal holds: `erasure.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald_domain::clock::Clock;
use herald_domain::ids::SubjectId;
use herald_domain::rights::{Coverage, SUBJECT_DATA_TABLES};
use serde_json::{Value, json};

use crate::callbacks::inbound_callback;
use crate::delivery::{audited, callback, eventually, send, wait_status};
use crate::fakes::{FakeWhatsapp, Receiver};
use crate::helpers::{TestApp, assert_problem, json};
use crate::messages::{configure_messaging, template_send};

pub(crate) const PHONE: &str = "+4915112345678";
pub(crate) const PHONE_DIGITS: &str = "4915112345678";
pub(crate) const NEW_PHONE: &str = "+4915187654321";

static WAMID: AtomicU64 = AtomicU64::new(1);

pub(crate) async fn rights_app(fake: &FakeWhatsapp) -> TestApp {
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
pub(crate) async fn reply(app: &TestApp, digits: &str, text: &str) {
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

pub(crate) async fn endpoint(app: &TestApp, integration: &str, url: &str, events: &[&str]) {
    let response = app
        .post(
            &format!("/v1/integrations/{integration}/webhooks"),
            &app.admin_key,
            &json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

pub(crate) async fn lookup(app: &TestApp, phone: &str) -> reqwest::Response {
    app.post(
        "/v1/subjects/lookup",
        &app.admin_key,
        &json!({"phone": phone}),
    )
    .await
}

pub(crate) async fn patch(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
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

pub(crate) fn schema() -> jsonschema::Validator {
    let text = include_str!("../../../../docs/schemas/subject-export.schema.json");
    jsonschema::validator_for(&serde_json::from_str(text).unwrap()).expect("the schema compiles")
}

pub(crate) fn assert_valid(validator: &jsonschema::Validator, document: &Value) {
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
                "subjects:export",
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

    // Audited; readable only with subjects:export; unknown subjects are 404.
    assert_eq!(audited(&app, "subject.exported").await, 1);
    let (_, sender_only) = app
        .integration_with_key("crm", &["messages:send", "subjects:write"])
        .await;
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
    app.link(&key, PHONE).await;
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
    // The shop writes to the customer: the customer's answers are the shop's conversation.
    send(&app, &key, &template_send(PHONE)).await;
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
    // A dispatcher pass, driven here, claims nothing: the event stays pending, unattempted.
    let dispatcher = app.herald.dispatcher().unwrap();
    assert_eq!(
        herald_domain::worker::run_once(&dispatcher, 32)
            .await
            .unwrap(),
        0
    );
    assert!(
        receiver.deliveries().is_empty(),
        "an event left while restricted"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE subject_id = '{subject}' AND status = 'pending' AND attempts = 0"
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

//! `/webhooks/whatsapp` (issue 4 item 6): the set-up handshake, signatures over the raw bytes,
//! the reference fixtures, inbound messages opening the 24-hour window, redeliveries.

use herald_domain::clock::Clock;
use serde_json::json;

use crate::delivery::{audited, callback, eventually};
use crate::fakes::{FakeWhatsapp, VERIFY_TOKEN, meta_signature};
use crate::helpers::{TestApp, assert_problem, epoch, json};
use crate::messages::configure_messaging;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/whatsapp")
            .join(name),
    )
    .unwrap()
}

async fn whatsapp_app() -> (TestApp, FakeWhatsapp) {
    let fake = FakeWhatsapp::start().await;
    let app = TestApp::spawn_with(|c| {
        configure_messaging(c);
        fake.configure(c);
    })
    .await;
    (app, fake)
}

pub fn inbound_callback(from: &str, wamid: &str, text: &str, at: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1093456789012345", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550009876", "phone_number_id": crate::fakes::PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Klara"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": at.to_string(), "type": "text", "text": {"body": text}}]
        }}]}]
    }))
    .unwrap()
}

async fn processed(app: &TestApp) {
    eventually("stored callbacks to be processed", || async {
        (app.count("SELECT COUNT(*) FROM provider_inbox").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_verification_handshake_echoes_the_challenge_only_for_the_right_token() {
    let (app, _fake) = whatsapp_app().await;
    let url = |token: &str, mode: &str| {
        app.url(&format!(
            "/webhooks/whatsapp?hub.mode={mode}&hub.challenge=1158201444&hub.verify_token={token}"
        ))
    };
    let ok = app
        .client
        .get(url(VERIFY_TOKEN, "subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for (token, mode) in [
        ("wrong", "subscribe"),
        (VERIFY_TOKEN, "unsubscribe"),
        ("", "subscribe"),
    ] {
        let refused = app.client.get(url(token, mode)).send().await.unwrap();
        assert_problem(refused, 403, "forbidden").await;
    }
}

#[tokio::test]
async fn without_the_whatsapp_channel_the_callback_route_does_not_exist() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/webhooks/whatsapp"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not_found").await;
}

#[tokio::test]
async fn unsigned_or_badly_signed_callbacks_are_refused_recorded_and_not_processed() {
    let (app, _fake) = whatsapp_app().await;
    let body = fixture("inbound_text.json");
    let post = |signature: Option<String>, body: Vec<u8>| {
        let mut request = app
            .client
            .post(app.url("/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            request = request.header("x-hub-signature-256", s);
        }
        request.send()
    };
    let cases = [
        (None, body.clone()),
        (Some("sha256=00".to_owned()), body.clone()),
        (Some(format!("sha256={}", "0".repeat(64))), body.clone()),
        // Signed for other bytes: a re-serialised body does not verify.
        (Some(meta_signature(&body)), {
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            serde_json::to_vec(&value).unwrap()
        }),
    ];
    for (signature, body) in cases {
        let response = post(signature, body).await.unwrap();
        assert_problem(response, 401, "unauthorized").await;
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_inbox").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0);
    // Recorded per source and reason: the first of each reason now (missing, malformed,
    // mismatch), the second mismatch with the count once the minute is over.
    assert_eq!(audited(&app, "provider_webhook.rejected").await, 3);
    app.clock.advance(chrono::TimeDelta::seconds(61));
    assert_eq!(app.herald.audit().flush_failures(false).await.unwrap(), 1);
    assert_eq!(audited(&app, "provider_webhook.rejected").await, 4);
    let total: i64 = app
        .count(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%provider_webhook.rejected%'
               AND body LIKE '%\"reason\":\"signature_mismatch\"%' AND body LIKE '%\"count\":1%'",
        )
        .await;
    assert_eq!(total, 2, "two mismatch entries, one request each");
}

#[tokio::test]
async fn the_reference_fixtures_are_accepted_with_their_documented_signatures() {
    let (app, _fake) = whatsapp_app().await;
    // The sender is a new subject that no integration knows yet: only admin sees it.
    let reader = app.admin_key.clone();
    for (file, signature) in [
        (
            "inbound_text.json",
            "sha256=f567a400337090793951801e3d8c1fd70e872160b399901bf41998bb8208f240",
        ),
        (
            "status_delivered.json",
            "sha256=2f1a19d59d464a5b3c7d472a864ebfebdc7f19ddbac3439776235567ca7c482e",
        ),
        (
            "status_failed.json",
            "sha256=8fbef4df66e7ceafa244c500404cef0b8468446de0bc43ebeb923604dda06fb1",
        ),
    ] {
        let response = app
            .client
            .post(app.url("/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(fixture(file))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
    }
    processed(&app).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 1);
    // The sender became a subject; the message is stored encrypted only.
    let found = app
        .post(
            "/v1/subjects/lookup",
            &reader,
            &json!({"phone": "+4915112340001"}),
        )
        .await;
    assert_eq!(found.status(), 200);
    let subject = json(found).await["id"].as_str().unwrap().to_owned();
    let record = json(app.get(&format!("/v1/subjects/{subject}"), &reader).await).await;
    assert_eq!(
        record["whatsapp"]["last_inbound_at"],
        "2026-07-25T06:30:00.000Z"
    );
    let raw = app.raw_database_bytes().await;
    for clear in ["Bestellung", "4915112340001", "wamid.HBgN"] {
        assert!(
            !raw.windows(clear.len()).any(|w| w == clear.as_bytes()),
            "{clear} is stored in clear"
        );
    }
    // Statuses for messages Herald never sent are counted, not errors.
    assert_eq!(audited(&app, "provider_webhook.processed").await, 3);
    assert_eq!(audited(&app, "message.inbound").await, 1);
}

#[tokio::test]
async fn an_inbound_message_opens_the_24_hour_window_and_redeliveries_count_once() {
    let (app, _fake) = whatsapp_app().await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let text =
        json!({"to": "+4915112345678", "purpose": "order_updates", "text": "Ihr Paket ist da"});
    let refused = app.post("/v1/messages", &key, &text).await;
    assert_problem(refused, 422, "template_required_outside_window").await;

    let body = inbound_callback(
        "4915112345678",
        "wamid.IN1",
        "Wo ist mein Paket?",
        epoch().timestamp() - 60,
    );
    for _ in 0..3 {
        assert_eq!(
            callback(&app, &body).await,
            200,
            "redeliveries are acknowledged"
        );
    }
    processed(&app).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 1);
    assert_eq!(audited(&app, "message.inbound").await, 1);
    let accepted = app.post("/v1/messages", &key, &text).await;
    assert_eq!(accepted.status(), 202, "the customer wrote a minute ago");
}

/// The `metadata` of a change for the configured business number.
fn ours() -> serde_json::Value {
    json!({"display_phone_number": "15550009876", "phone_number_id": crate::fakes::PHONE_NUMBER_ID})
}

#[tokio::test]
async fn a_batched_callback_is_processed_whole() {
    let (app, _fake) = whatsapp_app().await;
    let at = epoch().timestamp() - 10;
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "1", "changes": [
                {"field": "messages", "value": {"metadata": ours(), "messages": [
                    {"from": "4915100000001", "id": "wamid.B1", "timestamp": at.to_string(), "type": "text", "text": {"body": "eins"}},
                    {"from": "4915100000002", "id": "wamid.B2", "timestamp": at.to_string(), "type": "image", "image": {"id": "media-1", "mime_type": "image/jpeg"}}
                ]}},
                {"field": "messages", "value": {"metadata": ours(), "messages": [
                    {"from": "4915100000003", "id": "wamid.B3", "timestamp": at.to_string(), "type": "hologram"}
                ]}}
            ]},
            {"id": "2", "changes": [
                {"field": "user_preferences", "value": {"metadata": ours(), "user_preferences": [{"wa_id": "4915100000001", "value": "stop", "category": "marketing_messages", "timestamp": at}]}},
                {"field": "messages", "value": {"metadata": ours(), "statuses": [{"id": "wamid.NOTOURS", "status": "delivered", "timestamp": at.to_string()}]}}
            ]}
        ]
    }))
    .unwrap();
    assert_eq!(callback(&app, &body).await, 200);
    processed(&app).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 3);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM inbound_messages WHERE kind = 'unsupported'")
            .await,
        1,
        "an unknown type is kept as unsupported"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 3);
}

#[tokio::test]
async fn a_callback_that_is_not_json_is_acknowledged_and_recorded_as_unparseable() {
    let (app, _fake) = whatsapp_app().await;
    assert_eq!(callback(&app, b"definitely not json").await, 200);
    processed(&app).await;
    app.herald.audit().seal().await.unwrap();
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%\"action\":\"provider_webhook.processed\"%' \
             AND body LIKE '%\"unparseable\":true%'"
        )
        .await,
        1
    );
}

/// A batched callback with one change for `phone_number_id` carrying `messages`.
fn batch_for(phone_number_id: &str, messages: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550009876", "phone_number_id": phone_number_id},
            "messages": messages
        }}]}]
    }))
    .unwrap()
}

async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("herald_{name}_total ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[tokio::test]
async fn an_unusable_number_between_two_good_messages_is_skipped_and_the_rest_applied() {
    let (app, _fake) = whatsapp_app().await;
    let at = (epoch().timestamp() - 5).to_string();
    let body = batch_for(
        crate::fakes::PHONE_NUMBER_ID,
        json!([
            {"from": "4915100000011", "id": "wamid.P1", "timestamp": at, "type": "text", "text": {"body": "eins"}},
            // Digits, but no phone number: before, this failed the whole callback for ever.
            {"from": "0000000", "id": "wamid.P2", "timestamp": at, "type": "text", "text": {"body": "STOP"}},
            {"from": "4915100000012", "id": "wamid.P3", "timestamp": at, "type": "text", "text": {"body": "STOP"}}
        ]),
    );
    assert_eq!(callback(&app, &body).await, 200);
    processed(&app).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 2);
    // The good STOP took effect.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM consents WHERE state = 'withdrawn' AND by_subject = TRUE")
            .await,
        1
    );
    app.herald.audit().seal().await.unwrap();
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%provider_webhook.processed%'
               AND body LIKE '%\"unusable_numbers\":1%' AND body LIKE '%\"inbound\":3%'"
        )
        .await,
        1
    );
    assert_eq!(metric(&app, "callback_reports_unusable_number").await, 1);
}

#[tokio::test]
async fn callbacks_for_another_business_number_are_ignored_and_counted() {
    let (app, _fake) = whatsapp_app().await;
    let at = (epoch().timestamp() - 5).to_string();
    let body = batch_for(
        "1099999999999999",
        json!([
            {"from": "4915100000021", "id": "wamid.F1", "timestamp": at, "type": "text", "text": {"body": "STOP"}},
            {"from": "4915100000022", "id": "wamid.F2", "timestamp": at, "type": "text", "text": {"body": "Hallo"}}
        ]),
    );
    assert_eq!(callback(&app, &body).await, 200);
    processed(&app).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM consent_events").await, 0);
    app.herald.audit().seal().await.unwrap();
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%provider_webhook.processed%'
               AND body LIKE '%\"foreign_numbers\":2%'"
        )
        .await,
        1
    );
    assert_eq!(metric(&app, "callback_reports_foreign_number").await, 2);
}

#[tokio::test]
async fn a_callback_that_keeps_failing_is_dead_lettered_then_purged() {
    let fake = FakeWhatsapp::start().await;
    let app = TestApp::spawn_with(|c| {
        configure_messaging(c);
        fake.configure(c);
        c.roles.worker = false;
        c.callbacks.max_attempts = 3;
    })
    .await;
    // A stored callback whose body cannot be opened (as after a bad restore): every attempt
    // fails the same way.
    let now = app.clock.now().timestamp_millis();
    let id = herald_domain::ids::CallbackId::generate().unwrap();
    app.execute_sql(
        &format!(
            "INSERT INTO provider_inbox (id, provider, body_ciphertext, received_at, attempts, due_at, purge_at)
             VALUES ('{id}', 'whatsapp', $1, {now}, 0, {now}, {})",
            now + 30 * 86_400_000
        ),
        &[crate::helpers::SqlValue::Bytes(vec![1, 2, 3])],
    )
    .await;
    let reports = app.herald.reports();
    for attempt in 1..=3 {
        assert_eq!(
            herald_domain::worker::run_once(reports, 10).await.unwrap(),
            1,
            "attempt {attempt}"
        );
        app.clock.advance(chrono::TimeDelta::hours(1));
    }
    // Set aside with its reason: claimed no more.
    assert_eq!(
        herald_domain::worker::run_once(reports, 10).await.unwrap(),
        0
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM provider_inbox WHERE dead_at IS NOT NULL AND dead_reason = 'keys'"
        )
        .await,
        1
    );
    assert_eq!(audited(&app, "provider_webhook.dead_lettered").await, 1);
    assert_eq!(metric(&app, "callbacks_dead_lettered").await, 1);
    // Purged once the inbox retention ends.
    assert_eq!(reports.purge_inbox().await.unwrap(), 0);
    app.clock.advance(chrono::TimeDelta::days(30));
    assert_eq!(reports.purge_inbox().await.unwrap(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_inbox").await, 0);
    assert_eq!(audited(&app, "provider_inbox.purged").await, 1);
}

#[tokio::test]
async fn erasure_removes_the_subject_from_callbacks_not_yet_processed() {
    let fake = FakeWhatsapp::start().await;
    let app = TestApp::spawn_with(|c| {
        configure_messaging(c);
        fake.configure(c);
        c.roles.worker = false;
    })
    .await;
    let erased = "+4915100000031";
    let kept = "+4915100000032";
    let subject = json(
        app.post("/v1/subjects", &app.admin_key, &json!({"phone": erased}))
            .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = (epoch().timestamp() - 5).to_string();
    let body = batch_for(
        crate::fakes::PHONE_NUMBER_ID,
        json!([
            {"from": "4915100000031", "id": "wamid.E1", "timestamp": at, "type": "text", "text": {"body": "Bitte löschen Sie mich"}},
            {"from": "4915100000032", "id": "wamid.E2", "timestamp": at, "type": "text", "text": {"body": "Hallo"}}
        ]),
    );
    assert_eq!(callback(&app, &body).await, 200);
    let response = app
        .delete(&format!("/v1/subjects/{subject}"), &app.admin_key)
        .await;
    assert_eq!(response.status(), 200);
    // Processed after the erasure: only the other customer's message is left in it.
    herald_domain::worker::run_once(app.herald.reports(), 10)
        .await
        .unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_inbox").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 1);
    let found = app
        .post(
            "/v1/subjects/lookup",
            &app.admin_key,
            &json!({"phone": erased}),
        )
        .await;
    assert_problem(found, 404, "not_found").await;
    let other = app
        .post(
            "/v1/subjects/lookup",
            &app.admin_key,
            &json!({"phone": kept}),
        )
        .await;
    assert_eq!(other.status(), 200);
}

//! What the consent tests share: a configuration with purposes of every basis, a fake
//! WhatsApp, and helpers that play the customer (keywords, buttons, preferences) and read the
//! ledger back through the API.

use std::sync::atomic::{AtomicU64, Ordering};

use herald::config::{
    FrequencyCapConfig, NoticeConfig, OptInTemplateConfig, PurposeConfig, TemplateConfig,
};
use herald_domain::clock::Clock;
use herald_domain::messages::{LawfulBasis, TemplateCategory};
use serde_json::{Value, json};

use crate::delivery::{callback, eventually};
use crate::fakes::FakeWhatsapp;
use crate::helpers::{TestApp, json};
use crate::messages::configure_messaging;

pub(crate) const NOTICE: &str = "Acme may send you offers on WhatsApp. Reply STOP to stop.";
pub(crate) const OPT_OUT_REPLY: &str =
    "You will get no more offers from Acme. Reply START to subscribe again.";
pub(crate) const OPT_IN_REPLY: &str = "Thank you, you are subscribed.";

/// Purposes of every basis, marketing ones among them, a capped one, and double opt-in.
pub(crate) fn configure_consent(c: &mut herald::Config) {
    configure_messaging(c);
    let notices = vec![NoticeConfig {
        version: "v1".into(),
        text: Some(NOTICE.into()),
        sha256: None,
    }];
    c.purposes.insert(
        "newsletter".into(),
        PurposeConfig {
            marketing: true,
            notices: notices.clone(),
            reopt_in_by_keyword: true,
            ..PurposeConfig::basis(LawfulBasis::Consent)
        },
    );
    c.purposes.insert(
        "offers".into(),
        PurposeConfig {
            marketing: true,
            notices,
            ..PurposeConfig::basis(LawfulBasis::LegitimateInterests)
        },
    );
    c.purposes.insert(
        "alerts".into(),
        PurposeConfig::basis(LawfulBasis::LegalObligation),
    );
    c.purposes.insert(
        "safety".into(),
        PurposeConfig::basis(LawfulBasis::VitalInterests),
    );
    c.purposes.insert(
        "reminders".into(),
        PurposeConfig {
            frequency_cap: Some(FrequencyCapConfig {
                max: 2,
                per: std::time::Duration::from_secs(24 * 3600),
            }),
            ..PurposeConfig::basis(LawfulBasis::Contract)
        },
    );
    c.templates.push(TemplateConfig {
        name: "newsletter_confirm".into(),
        language: "de".into(),
        parameters: 1,
        category: TemplateCategory::Utility,
    });
    c.consent.opt_in_template = Some(OptInTemplateConfig {
        name: "newsletter_confirm".into(),
        language: "de".into(),
        parameters: vec!["Acme".into()],
    });
    c.consent.opt_out_reply = Some(OPT_OUT_REPLY.into());
    c.consent.opt_in_reply = Some(OPT_IN_REPLY.into());
    c.webhooks.allow_insecure_targets = true;
}

pub(crate) async fn consent_app(fake: &FakeWhatsapp) -> TestApp {
    TestApp::spawn_with(|c| {
        configure_consent(c);
        fake.configure(c);
    })
    .await
}

/// A number of its own for each scenario.
pub(crate) fn phone(n: u64) -> String {
    format!("+49151{:08}", 20_000_000 + n)
}

pub(crate) fn template(purpose: &str, to: &str) -> Value {
    json!({"to": to, "purpose": purpose,
           "template": {"name": "order_shipped", "language": "de", "parameters": ["Anna", "#1"]}})
}

pub(crate) fn text(purpose: &str, to: &str) -> Value {
    json!({"to": to, "purpose": purpose, "text": "Ihr Paket ist da"})
}

pub(crate) static WAMID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn change(from: &str, message: Value) -> Vec<u8> {
    let digits = from.trim_start_matches('+');
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1093456789012345", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550009876", "phone_number_id": crate::fakes::PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Klara"}, "wa_id": digits}],
            "messages": [message]
        }}]}]
    }))
    .unwrap()
}

/// Feeds a customer's message through the signed webhook and waits until it is processed.
pub(crate) async fn inbound(app: &TestApp, from: &str, body: Value) {
    let n = WAMID.fetch_add(1, Ordering::Relaxed);
    let mut message = json!({"from": from.trim_start_matches('+'), "id": format!("wamid.consent{n}"),
        "timestamp": app.clock.now().timestamp().to_string()});
    for (k, v) in body.as_object().unwrap() {
        message[k] = v.clone();
    }
    assert_eq!(callback(app, &change(from, message)).await, 200);
    processed(app).await;
}

pub(crate) async fn says(app: &TestApp, from: &str, words: &str) {
    inbound(app, from, json!({"type": "text", "text": {"body": words}})).await;
}

/// A customer's message as the provider timestamps it (Unix seconds): callbacks arrive out of
/// order, and the provider's time is what counts.
pub(crate) async fn says_at(app: &TestApp, from: &str, words: &str, unix_seconds: i64) {
    inbound(
        app,
        from,
        json!({"type": "text", "text": {"body": words}, "timestamp": unix_seconds.to_string()}),
    )
    .await;
}

/// A customer's reply to one of Herald's messages (WhatsApp's `context.id`: its wamid).
pub(crate) async fn replies_to(app: &TestApp, from: &str, words: &str, wamid: &str) {
    inbound(
        app,
        from,
        json!({"type": "text", "text": {"body": words}, "context": {"from": "15550009876", "id": wamid}}),
    )
    .await;
}

pub(crate) async fn presses(app: &TestApp, from: &str, payload: &str) {
    inbound(
        app,
        from,
        json!({"type": "button", "button": {"payload": payload, "text": "Ja"}}),
    )
    .await;
}

pub(crate) async fn preference(app: &TestApp, from: &str, value: &str) {
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1093456789012345", "changes": [{"field": "user_preferences", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550009876", "phone_number_id": crate::fakes::PHONE_NUMBER_ID},
            "contacts": [{"wa_id": from.trim_start_matches('+'), "profile": {"name": "Klara"}}],
            "user_preferences": [{"wa_id": from.trim_start_matches('+'), "detail": "User requested to stop marketing messages",
                "category": "marketing_messages", "value": value, "timestamp": app.clock.now().timestamp()}]
        }}]}]
    }))
    .unwrap();
    assert_eq!(callback(app, &body).await, 200);
    processed(app).await;
}

pub(crate) async fn processed(app: &TestApp) {
    eventually("stored callbacks to be processed", || async {
        (app.count("SELECT COUNT(*) FROM provider_inbox").await == 0).then_some(())
    })
    .await;
}

pub(crate) async fn subject_of(app: &TestApp, phone: &str) -> String {
    let found = app
        .post("/v1/subjects", &app.admin_key, &json!({"phone": phone}))
        .await;
    json(found).await["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn consents(app: &TestApp, subject: &str) -> Value {
    let response = app
        .get(&format!("/v1/subjects/{subject}/consents"), &app.admin_key)
        .await;
    assert_eq!(response.status(), 200);
    json(response).await
}

/// The state of `purpose` on WhatsApp, or "none".
pub(crate) async fn state(app: &TestApp, phone: &str, purpose: &str) -> String {
    let subject = subject_of(app, phone).await;
    consents(app, &subject).await["consents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["purpose"] == purpose && c["channel"] == "whatsapp")
        .map_or("none".into(), |c| c["state"].as_str().unwrap().to_owned())
}

pub(crate) async fn grant(app: &TestApp, phone: &str, purpose: &str) -> String {
    let subject = subject_of(app, phone).await;
    let mut evidence = json!({"method": "web_form", "captured_at": app.clock.now().to_rfc3339(),
        "source": "https://shop.example/newsletter", "locale": "de"});
    if !app.herald.config().purposes[purpose].notices.is_empty() {
        evidence["notice_version"] = json!("v1");
    }
    let response = app
        .put(
            &format!("/v1/subjects/{subject}/consents/{purpose}"),
            &app.admin_key,
            &json!({"evidence": evidence}),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    subject
}

pub(crate) async fn withdraw(app: &TestApp, phone: &str, purpose: &str) {
    let subject = subject_of(app, phone).await;
    let response = app
        .delete(
            &format!("/v1/subjects/{subject}/consents/{purpose}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["state"], "withdrawn");
}

pub(crate) async fn start_opt_in(app: &TestApp, phone: &str, purpose: &str) -> Value {
    let response = app
        .post(
            "/v1/opt-ins",
            &app.admin_key,
            &json!({"to": phone, "purpose": purpose, "notice_version": "v1"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    json(response).await
}

pub(crate) async fn send_status(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app.post("/v1/messages", &app.admin_key, body).await;
    let status = response.status().as_u16();
    (status, json(response).await)
}

pub(crate) async fn refused(app: &TestApp, body: &Value, code: &str) {
    let (status, problem) = send_status(app, body).await;
    assert_eq!(
        (status, problem["code"].as_str().unwrap_or("")),
        (409, code),
        "{body}"
    );
}

pub(crate) async fn accepted(app: &TestApp, body: &Value) -> String {
    let (status, answer) = send_status(app, body).await;
    assert_eq!(status, 202, "{body}: {answer}");
    answer["id"].as_str().unwrap().to_owned()
}

/// Messages the fake provider received for `phone`.
pub(crate) fn sent_to(fake: &FakeWhatsapp, phone: &str) -> Vec<Value> {
    fake.received()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| {
            b["to"].as_str().unwrap_or("").trim_start_matches('+') == phone.trim_start_matches('+')
        })
        .collect()
}

pub(crate) const BASES: [(&str, bool); 5] = [
    ("newsletter", true),
    ("order_updates", false),
    ("alerts", false),
    ("safety", false),
    ("offers", false),
];

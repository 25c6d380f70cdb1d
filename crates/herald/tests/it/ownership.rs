//! Conversation ownership (issue 14; ADR 0012): a customer's message goes to the integration
//! whose message it answers, else to the last integration that wrote to the customer within
//! the service window, else to the business number's default handler — never to everyone.
//! Asserted on the event rows, which are written with the message (nothing can come later).

use serde_json::json;

use crate::consent_kit::*;
use crate::delivery::{eventually, wait_status};
use crate::fakes::{FakeWhatsapp, Receiver};
use crate::helpers::TestApp;

const SCOPES: [&str; 4] = [
    "messages:send",
    "messages:read",
    "subjects:write",
    "subjects:read",
];

/// `message.inbound` rows queued for an integration's endpoints.
async fn inbound_rows(app: &TestApp, integration: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM webhook_deliveries AS d JOIN webhook_endpoints AS e
         ON e.id = d.endpoint_id
         WHERE e.integration_id = '{integration}' AND d.event_type = 'message.inbound'"
    ))
    .await
}

async fn with_endpoint(app: &TestApp, receiver: &Receiver, name: &str) -> (String, String) {
    let (id, key) = app.integration_with_key(name, &SCOPES).await;
    let created = app
        .post(
            &format!("/v1/integrations/{id}/webhooks"),
            &app.admin_key,
            &json!({"url": receiver.url(), "events": ["message.inbound"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    (id, key)
}

/// Sends a template as `key` and waits until the provider took it; returns its wamid.
async fn sent_by(app: &TestApp, fake: &FakeWhatsapp, key: &str, to: &str) -> String {
    let response = app
        .post("/v1/messages", key, &template("order_updates", to))
        .await;
    assert_eq!(response.status(), 202);
    let id = crate::helpers::json(response).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delivered = wait_status(app, key, &id, "sent").await;
    let wamid = delivered["provider_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        fake.accepted()
            .iter()
            .any(|r| r.wamid.as_deref() == Some(&wamid))
    );
    wamid
}

#[tokio::test]
async fn inbound_messages_go_to_the_conversation_s_owner_only() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let receiver = Receiver::start().await;
    let (shop, shop_key) = with_endpoint(&app, &receiver, "shop").await;
    let (crm, crm_key) = with_endpoint(&app, &receiver, "crm").await;
    let who = phone(3000);
    grant(&app, &who, "newsletter").await;

    // The shop writes; the customer answers: the shop's conversation, not the CRM's.
    let shop_message = sent_by(&app, &fake, &shop_key, &who).await;
    app.clock.advance(chrono::TimeDelta::minutes(1));
    says(&app, &who, "Wo ist mein Paket?").await;
    assert_eq!(inbound_rows(&app, &shop).await, 1);
    assert_eq!(inbound_rows(&app, &crm).await, 0);

    // The CRM writes later: a plain reply now belongs to the CRM…
    app.clock.advance(chrono::TimeDelta::minutes(1));
    sent_by(&app, &fake, &crm_key, &who).await;
    app.clock.advance(chrono::TimeDelta::minutes(1));
    says(&app, &who, "Danke").await;
    assert_eq!(inbound_rows(&app, &crm).await, 1);
    assert_eq!(inbound_rows(&app, &shop).await, 1);
    // …but one that quotes the shop's message is the shop's.
    replies_to(&app, &who, "Und die Rechnung?", &shop_message).await;
    assert_eq!(inbound_rows(&app, &shop).await, 2);
    assert_eq!(inbound_rows(&app, &crm).await, 1);
    // The answering integration is linked to the subject; the event names what it answers.
    let delivery = eventually("the shop's second event", || async {
        let got = receiver.deliveries();
        got.iter()
            .find(|d| d.json()["data"]["in_reply_to"].is_string())
            .cloned()
    })
    .await;
    assert!(
        delivery.json()["data"]["in_reply_to"]
            .as_str()
            .unwrap()
            .starts_with("msg_")
    );

    // A customer no integration wrote to: stored, nobody told.
    let stranger = phone(3001);
    says(&app, &stranger, "Hallo?").await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_deliveries WHERE event_type = 'message.inbound'")
            .await,
        3
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 4);
}

#[tokio::test]
async fn the_number_s_default_handler_receives_messages_outside_any_conversation() {
    let fake = FakeWhatsapp::start().await;
    let app = TestApp::spawn_with(|c| {
        configure_consent(c);
        fake.configure(c);
        c.inbound.default_integration = Some("helpdesk".into());
    })
    .await;
    let receiver = Receiver::start().await;
    let (shop, _) = with_endpoint(&app, &receiver, "shop").await;
    // Configured before it existed: messages before that reach nobody…
    let early = phone(3010);
    says(&app, &early, "Hallo?").await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_deliveries").await,
        0
    );
    let (helpdesk, helpdesk_key) = with_endpoint(&app, &receiver, "helpdesk").await;
    // …and once it exists, it gets them, and is linked to the subject.
    let later = phone(3011);
    says(&app, &later, "Hallo, jemand da?").await;
    assert_eq!(inbound_rows(&app, &helpdesk).await, 1);
    assert_eq!(inbound_rows(&app, &shop).await, 0);
    let found = app
        .post(
            "/v1/subjects/lookup",
            &helpdesk_key,
            &json!({"phone": later}),
        )
        .await;
    assert_eq!(found.status(), 200);
}

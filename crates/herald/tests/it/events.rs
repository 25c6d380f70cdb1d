//! Events to integrators (issue 4 item 7): endpoints, Standard Webhooks signatures checked by an
//! independent verifier, inbound text only for `messages:read`, retries, disabling.

use std::collections::BTreeSet;

use chrono::TimeDelta;
use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::callbacks::inbound_callback;
use crate::delivery::{audited, callback, eventually, send, wait_status};
use crate::fakes::{Delivery, FakeWhatsapp, Receiver, verify_standard_webhook};
use crate::helpers::{TestApp, assert_problem, epoch, json};
use crate::messages::{configure_messaging, template_send};

async fn app_with(customize: impl FnOnce(&mut herald::Config)) -> TestApp {
    TestApp::spawn_with(|c| {
        configure_messaging(c);
        c.webhooks.allow_insecure_targets = true;
        c.delivery.poll_interval = std::time::Duration::from_millis(20);
        customize(c);
    })
    .await
}

/// Registers an endpoint; returns (endpoint id, secret).
async fn endpoint(
    app: &TestApp,
    integration: &str,
    url: &str,
    events: &[&str],
) -> (String, String) {
    let response = app
        .post(
            &format!("/v1/integrations/{integration}/webhooks"),
            &app.admin_key,
            &json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body = json(response).await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

/// Event delivery rows queued for an integration's endpoints.
async fn deliveries_for(app: &TestApp, integration: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM webhook_deliveries AS d
         JOIN webhook_endpoints AS e ON e.id = d.endpoint_id
         WHERE e.integration_id = '{integration}'"
    ))
    .await
}

async fn wait_deliveries(receiver: &Receiver, count: usize) -> Vec<Delivery> {
    eventually(&format!("{count} event deliveries"), || async {
        let got = receiver.deliveries();
        (got.len() >= count).then_some(got)
    })
    .await
}

fn verified(app: &TestApp, secret: &str, delivery: &Delivery) -> Value {
    verify_standard_webhook(
        secret,
        &delivery.id,
        delivery.timestamp,
        &delivery.signature,
        &delivery.body,
        app.clock.now().timestamp(),
    )
    .unwrap_or_else(|e| panic!("event {} does not verify: {e}", delivery.id));
    delivery.json()
}

#[tokio::test]
async fn status_events_reach_the_sending_integration_signed_per_standard_webhooks() {
    let app = app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    let other_receiver = Receiver::start().await;
    let (shop, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let (crm, _) = app.integration_with_key("crm", &["messages:read"]).await;
    let (_, secret) = endpoint(&app, &shop, &receiver.url(), &["message.status"]).await;
    endpoint(&app, &crm, &other_receiver.url(), &["message.status"]).await;
    assert!(secret.starts_with("whsec_"));
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    wait_status(&app, &key, &id, "delivered").await;
    let deliveries = wait_deliveries(&receiver, 2).await;
    let mut seen = BTreeSet::new();
    for delivery in &deliveries {
        let body = verified(&app, &secret, delivery);
        assert!(delivery.id.starts_with("evt_"));
        assert_eq!(body["type"], "message.status");
        assert_eq!(body["data"]["message_id"], id.as_str());
        assert!(
            body["data"]["subject_id"]
                .as_str()
                .unwrap()
                .starts_with("sub_")
        );
        assert!(body["timestamp"].as_str().is_some());
        seen.insert(body["data"]["status"].as_str().unwrap().to_owned());
        // A tampered body or another secret does not verify.
        let mut tampered = delivery.body.clone();
        tampered.push(b' ');
        assert!(
            verify_standard_webhook(
                &secret,
                &delivery.id,
                delivery.timestamp,
                &delivery.signature,
                &tampered,
                delivery.timestamp
            )
            .is_err()
        );
    }
    assert_eq!(
        seen,
        BTreeSet::from(["delivered".to_owned(), "sent".to_owned()])
    );
    // Event rows are written with the status they report, so none can come later: the CRM's
    // endpoint has none, the shop's both.
    assert_eq!(
        deliveries_for(&app, &crm).await,
        0,
        "another integration's message"
    );
    assert_eq!(deliveries_for(&app, &shop).await, 2);
    assert!(other_receiver.deliveries().is_empty());
    assert_eq!(audited(&app, "webhook.delivered").await, 2);
}

#[tokio::test]
async fn inbound_events_carry_the_text_only_to_integrations_that_may_read_messages() {
    let fake = FakeWhatsapp::start().await;
    let app = app_with(|c| fake.configure(c)).await;
    let reader_hook = Receiver::start().await;
    let blind_hook = Receiver::start().await;
    let (reader, reader_key) = app
        .integration_with_key("crm", &["messages:read", "messages:send", "subjects:write"])
        .await;
    let (blind, blind_key) = app
        .integration_with_key("analytics", &["messages:send", "subjects:write"])
        .await;
    let (_, reader_secret) =
        endpoint(&app, &reader, &reader_hook.url(), &["message.inbound"]).await;
    let (_, blind_secret) = endpoint(&app, &blind, &blind_hook.url(), &["message.inbound"]).await;
    // Each writes to its own customer; each customer answers.
    send(&app, &reader_key, &template_send("+4915112345678")).await;
    send(&app, &blind_key, &template_send("+4915112349999")).await;
    for (from, id, text) in [
        ("4915112345678", "wamid.IN7", "Bitte rufen Sie mich an"),
        ("4915112349999", "wamid.IN8", "Bitte rufen Sie mich zurück"),
    ] {
        let body = inbound_callback(from, id, text, epoch().timestamp() - 5);
        assert_eq!(callback(&app, &body).await, 200);
    }
    let got = verified(
        &app,
        &reader_secret,
        &wait_deliveries(&reader_hook, 1).await[0],
    );
    assert_eq!(got["type"], "message.inbound");
    assert_eq!(got["data"]["content"]["text"], "Bitte rufen Sie mich an");
    assert_eq!(got["data"]["kind"], "text");
    assert!(
        got["data"]["subject_id"]
            .as_str()
            .unwrap()
            .starts_with("sub_")
    );
    let delivery = &wait_deliveries(&blind_hook, 1).await[0];
    let stripped = verified(&app, &blind_secret, delivery);
    assert_eq!(stripped["type"], "message.inbound");
    assert!(stripped["data"].get("content").is_none());
    assert!(!String::from_utf8_lossy(&delivery.body).contains("rufen"));
    assert_ne!(stripped["data"]["subject_id"], got["data"]["subject_id"]);
    // Each conversation's message went to its owner only (the rows are written with the
    // message, so nothing can arrive later).
    for integration in [&reader, &blind] {
        assert_eq!(
            app.count(&format!(
                "SELECT COUNT(*) FROM webhook_deliveries AS d JOIN webhook_endpoints AS e
                 ON e.id = d.endpoint_id
                 WHERE e.integration_id = '{integration}' AND d.event_type = 'message.inbound'"
            ))
            .await,
            1
        );
    }
}

#[tokio::test]
async fn failed_deliveries_are_retried_and_a_run_of_failures_disables_the_endpoint() {
    let app = app_with(|c| c.webhooks.disable_after_failures = 3).await;
    let receiver = Receiver::start().await;
    receiver.answer([500]);
    let (shop, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let (endpoint_id, secret) = endpoint(&app, &shop, &receiver.url(), &["message.status"]).await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    wait_status(&app, &key, &id, "delivered").await;
    // Two events (sent, delivered); the first attempt of one fails, the other arrives.
    wait_deliveries(&receiver, 2).await;
    app.clock.advance(TimeDelta::seconds(20));
    let deliveries = wait_deliveries(&receiver, 3).await;
    let ids: BTreeSet<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "a retry carries the same webhook-id");
    for d in &deliveries {
        verified(&app, &secret, d);
    }
    assert_eq!(audited(&app, "webhook.attempt_failed").await, 1);

    // Now the endpoint keeps failing: three in a row disable it.
    receiver.answer([503, 503, 503, 503]);
    for n in 0..2 {
        let id = send(&app, &key, &template_send(&format!("+491511234500{n}"))).await;
        wait_status(&app, &key, &id, "delivered").await;
    }
    eventually("the endpoint to be disabled", || async {
        let list = json(
            app.get(&format!("/v1/integrations/{shop}/webhooks"), &app.admin_key)
                .await,
        )
        .await;
        (list[0]["enabled"] == false).then_some(())
    })
    .await;
    let list = json(
        app.get(&format!("/v1/integrations/{shop}/webhooks"), &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(list[0]["id"], endpoint_id.as_str());
    assert!(list[0]["disabled_at"].is_string());
    assert!(
        list[0].get("secret").is_none(),
        "the secret is never shown again"
    );
    assert_eq!(audited(&app, "webhook_endpoint.disabled").await, 1);
    // Disabled: nothing more is attempted, though its retries are long due. Driven step by
    // step: a dispatcher pass claims nothing and the rows keep their attempt counts.
    let attempts = "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM webhook_deliveries WHERE status = 'pending'";
    assert!(
        app.count("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
            .await
            > 0
    );
    let before = (receiver.deliveries().len(), app.count(attempts).await);
    app.clock.advance(TimeDelta::hours(1));
    let dispatcher = app.herald.dispatcher().unwrap();
    assert_eq!(
        herald_domain::worker::run_once(&dispatcher, 32)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        (receiver.deliveries().len(), app.count(attempts).await),
        before
    );
}

#[tokio::test]
async fn a_410_gone_disables_the_endpoint_at_once() {
    let app = app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.answer([410, 410]);
    let (shop, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    endpoint(&app, &shop, &receiver.url(), &["message.status"]).await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    wait_status(&app, &key, &id, "delivered").await;
    eventually("the endpoint to be disabled", || async {
        let list = json(
            app.get(&format!("/v1/integrations/{shop}/webhooks"), &app.admin_key)
                .await,
        )
        .await;
        (list[0]["enabled"] == false).then_some(())
    })
    .await;
    assert!(audited(&app, "webhook.failed").await >= 1);
}

#[tokio::test]
async fn endpoints_are_validated_and_internal_targets_refused_by_default() {
    let app = TestApp::spawn().await;
    let (shop, _) = app
        .integration_with_key("shop", &["messages:send", "subjects:write"])
        .await;
    let path = format!("/v1/integrations/{shop}/webhooks");
    for (body, field) in [
        (
            json!({"url": "http://shop.example.com/hook", "events": ["message.status"]}),
            "url",
        ),
        (
            json!({"url": "https://127.0.0.1/hook", "events": ["message.status"]}),
            "url",
        ),
        (
            json!({"url": "https://169.254.169.254/latest", "events": ["message.status"]}),
            "url",
        ),
        (
            json!({"url": "https://shop.example.com/hook", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://shop.example.com/hook", "events": ["message.nope"]}),
            "events",
        ),
    ] {
        let problem = assert_problem(
            app.post(&path, &app.admin_key, &body).await,
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let unknown = app
        .post(
            "/v1/integrations/int_aaaaaaaaaaaaaaaaaaaaaaaaaa/webhooks",
            &app.admin_key,
            &json!({"url": "https://shop.example.com/hook", "events": ["message.status"]}),
        )
        .await;
    assert_problem(unknown, 404, "not_found").await;
    let (_, key) = app.integration_with_key("crm", &["messages:read"]).await;
    let forbidden = app
        .post(
            &path,
            &key,
            &json!({"url": "https://shop.example.com/hook", "events": ["message.status"]}),
        )
        .await;
    assert_problem(forbidden, 403, "forbidden").await;
    let created = app
        .post(&path, &app.admin_key, &json!({"url": "https://shop.example.com/hook", "events": ["message.status", "message.status"]}))
        .await;
    assert_eq!(created.status(), 201);
    let created = json(created).await;
    assert_eq!(created["events"], json!(["message.status"]));
    // The secret is stored encrypted, never in clear.
    let secret = created["secret"].as_str().unwrap();
    let raw = app.raw_database_bytes().await;
    let encoded = &secret["whsec_".len()..];
    assert!(!raw.windows(encoded.len()).any(|w| w == encoded.as_bytes()));
    assert_eq!(audited(&app, "webhook_endpoint.created").await, 1);
}

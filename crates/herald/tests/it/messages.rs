//! The send API: acceptance, policy refusals, idempotency, visibility (issue 4 items 1–2;
//! compliance.md GDPR-6.1, WA-24H, HIPAA-BAA).

use chrono::TimeDelta;
use herald::config::{PurposeConfig, TemplateConfig};
use herald_domain::messages::{LawfulBasis, TemplateCategory};
use serde_json::{Value, json};

use crate::helpers::{SqlValue, TestApp, assert_problem, epoch, json};

/// An app with one contract purpose and one template (`order_shipped`, de, 2 parameters).
pub async fn messaging_app() -> TestApp {
    TestApp::spawn_with(configure_messaging).await
}

pub fn configure_messaging(config: &mut herald::Config) {
    config.purposes.insert(
        "order_updates".into(),
        PurposeConfig::basis(LawfulBasis::Contract),
    );
    config.templates.push(TemplateConfig {
        name: "order_shipped".into(),
        language: "de".into(),
        parameters: 2,
        category: TemplateCategory::Utility,
    });
}

pub fn template_send(to: &str) -> Value {
    json!({
        "to": to,
        "purpose": "order_updates",
        "template": {"name": "order_shipped", "language": "de", "parameters": ["Anna", "#20417"]}
    })
}

async fn count(app: &TestApp, table: &str) -> i64 {
    app.count(&format!("SELECT COUNT(*) FROM {table}")).await
}

#[tokio::test]
async fn a_template_message_is_accepted_durably_and_readable_by_its_sender_only() {
    let app = messaging_app().await;
    let (_, sender) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let (_, other) = app.integration_with_key("crm", &["messages:read"]).await;
    app.opt_in("+4915112345678", "order_updates").await;
    let response = app
        .post("/v1/messages", &sender, &template_send("+49 151 1234 5678"))
        .await;
    assert_eq!(response.status(), 202);
    let accepted = json(response).await;
    let id = accepted["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"));
    assert!(accepted["subject_id"].as_str().unwrap().starts_with("sub_"));
    assert_eq!(accepted["status"], "queued");
    assert_eq!(
        accepted["created_at"],
        epoch().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );

    let message = json(app.get(&format!("/v1/messages/{id}"), &sender).await).await;
    assert_eq!(message["id"], id);
    assert_eq!(message["subject_id"], accepted["subject_id"]);
    assert_eq!(message["channel"], "whatsapp");
    assert_eq!(message["purpose"], "order_updates");
    assert_eq!(message["attempts"], 0);
    assert!(message["error"].is_null());
    assert_eq!(message["history"][0]["status"], "queued");
    // Another integration cannot see it, not even that it exists.
    assert_problem(
        app.get(&format!("/v1/messages/{id}"), &other).await,
        404,
        "not_found",
    )
    .await;
    // The same number is the same subject.
    let again = json(
        app.post("/v1/messages", &sender, &template_send("+4915112345678"))
            .await,
    )
    .await;
    assert_eq!(again["subject_id"], accepted["subject_id"]);
    assert_ne!(again["id"], accepted["id"]);
    // The content is only stored encrypted.
    let raw = app.raw_database_bytes().await;
    for plain in ["Anna", "#20417"] {
        assert!(
            !raw.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "{plain}"
        );
    }
}

#[tokio::test]
async fn policy_refusals_queue_nothing_and_are_recorded() {
    let app = messaging_app().await;
    let (_, key) = app
        .integration_with_key("shop", &["messages:send", "subjects:write"])
        .await;
    let cases = [
        (
            json!({"to": "+4915112345678", "purpose": "newsletter", "template": {"name": "order_shipped", "language": "de", "parameters": ["a", "b"]}}),
            422,
            "unknown_purpose",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "template": {"name": "order_shipped", "language": "fr", "parameters": ["a", "b"]}}),
            422,
            "unknown_template",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "template": {"name": "order_shipped", "language": "de", "parameters": ["a"]}}),
            422,
            "template_parameters_mismatch",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "text": "Hallo"}),
            422,
            "template_required_outside_window",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "phi": true, "template": {"name": "order_shipped", "language": "de", "parameters": ["a", "b"]}}),
            422,
            "phi_requires_baa",
        ),
        (
            json!({"to": "+49 000", "purpose": "order_updates", "text": "Hallo"}),
            422,
            "invalid_phone_number",
        ),
    ];
    for (body, status, code) in &cases {
        let response = app.post("/v1/messages", &key, body).await;
        let problem = assert_problem(response, *status, code).await;
        assert!(!problem.to_string().contains("Hallo"));
    }
    assert_eq!(count(&app, "messages").await, 0);
    app.herald.audit().seal().await.unwrap();
    let refused = app
        .count("SELECT COUNT(*) FROM audit_log WHERE body LIKE '%\"action\":\"message.refused\"%'")
        .await;
    assert_eq!(
        refused, 5,
        "every policy refusal is recorded (the bad number is a 422 of its own)"
    );
}

#[tokio::test]
async fn free_text_is_allowed_only_within_24_hours_of_the_last_inbound_message() {
    let app = messaging_app().await;
    let (_, key) = app
        .integration_with_key("shop", &["messages:send", "subjects:write"])
        .await;
    let subject = json(
        app.post("/v1/subjects", &key, &json!({"phone": "+4915112345678"}))
            .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The subject wrote at the epoch (the inbound path sets this; here it is set directly).
    app.execute_sql(
        &format!(
            "UPDATE subjects SET last_inbound_at = {} WHERE id = $1",
            epoch().timestamp_millis()
        ),
        &[SqlValue::Text(subject.clone())],
    )
    .await;
    let text = json!({"subject_id": subject, "purpose": "order_updates", "text": "Ihre Bestellung ist unterwegs"});
    app.clock
        .advance(TimeDelta::hours(23) + TimeDelta::minutes(59));
    assert_eq!(app.post("/v1/messages", &key, &text).await.status(), 202);
    app.clock.advance(TimeDelta::minutes(2));
    let late = app.post("/v1/messages", &key, &text).await;
    assert_problem(late, 422, "template_required_outside_window").await;
    // Outside the window a template is business-initiated: it needs the WhatsApp opt-in
    // (compliance.md WA-OPTIN), whatever the purpose's basis.
    let template = json!({"subject_id": subject, "purpose": "order_updates", "template": {"name": "order_shipped", "language": "de", "parameters": ["a", "b"]}});
    assert_problem(
        app.post("/v1/messages", &key, &template).await,
        409,
        "consent_missing",
    )
    .await;
    app.opt_in("+4915112345678", "order_updates").await;
    assert_eq!(
        app.post("/v1/messages", &key, &template).await.status(),
        202
    );
}

#[tokio::test]
async fn erased_restricted_and_unknown_subjects_are_refused() {
    let app = messaging_app().await;
    let (_, key) = app
        .integration_with_key("shop", &["messages:send", "subjects:write"])
        .await;
    let mut subjects = Vec::new();
    for phone in ["+4915112345678", "+4915112345679"] {
        subjects.push(
            json(
                app.post("/v1/subjects", &key, &json!({"phone": phone}))
                    .await,
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    app.execute_sql(
        "UPDATE subjects SET erased_at = 1, phone_index = NULL WHERE id = $1",
        &[SqlValue::Text(subjects[0].clone())],
    )
    .await;
    app.execute_sql(
        "UPDATE subjects SET restricted = TRUE WHERE id = $1",
        &[SqlValue::Text(subjects[1].clone())],
    )
    .await;
    let send = |subject: &str| json!({"subject_id": subject, "purpose": "order_updates", "template": {"name": "order_shipped", "language": "de", "parameters": ["a", "b"]}});
    assert_problem(
        app.post("/v1/messages", &key, &send(&subjects[0])).await,
        410,
        "subject_erased",
    )
    .await;
    assert_problem(
        app.post("/v1/messages", &key, &send(&subjects[1])).await,
        409,
        "subject_restricted",
    )
    .await;
    assert_problem(
        app.post(
            "/v1/messages",
            &key,
            &send("sub_00000000000000000000000000"),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(count(&app, "messages").await, 0);
}

#[tokio::test]
async fn malformed_sends_are_400() {
    let app = messaging_app().await;
    let (_, key) = app
        .integration_with_key("shop", &["messages:send", "subjects:write"])
        .await;
    let cases = [
        (json!({"purpose": "order_updates", "text": "x"}), "to"),
        (
            json!({"to": "+4915112345678", "subject_id": "sub_00000000000000000000000000", "purpose": "order_updates", "text": "x"}),
            "to",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates"}),
            "template",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "text": "x", "template": {"name": "a", "language": "de"}}),
            "template",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "text": "x", "channel": "sms"}),
            "channel",
        ),
        (
            json!({"subject_id": "+4915112345678", "purpose": "order_updates", "text": "x"}),
            "subject_id",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "text": ""}),
            "text",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "text": "x".repeat(4097)}),
            "text",
        ),
        (
            json!({"to": "+4915112345678", "purpose": "order_updates", "text": "x", "priority": 1}),
            "priority",
        ),
    ];
    for (body, field) in cases {
        let problem = assert_problem(
            app.post("/v1/messages", &key, &body).await,
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
        assert!(!problem.to_string().contains("4915112345678"));
    }
    // Scopes: sending needs messages:send, reading messages:read.
    let (_, reader) = app.integration_with_key("crm", &["messages:read"]).await;
    assert_problem(
        app.post("/v1/messages", &reader, &template_send("+4915112345678"))
            .await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_for_24_hours() {
    let app = messaging_app().await;
    let (_, key) = app
        .integration_with_key("shop", &["messages:send", "subjects:write"])
        .await;
    let (_, other) = app
        .integration_with_key("crm", &["messages:send", "subjects:write"])
        .await;
    let send = |key: &str, idempotency: &str, body: &Value| {
        app.request(reqwest::Method::POST, "/v1/messages", key)
            .header("idempotency-key", idempotency)
            .json(body)
    };
    let body = template_send("+4915112345678");
    app.opt_in("+4915112345678", "order_updates").await;
    let first = send(&key, "order-20417", &body).send().await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = json(first).await;
    let replay = send(&key, "order-20417", &body).send().await.unwrap();
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(json(replay).await, first);
    // The same key with another body is refused.
    let changed = template_send("+4915112345679");
    let reused = send(&key, "order-20417", &changed).send().await.unwrap();
    assert_problem(reused, 422, "idempotency_key_reused").await;
    // Keys belong to one integration.
    let theirs = json(send(&other, "order-20417", &body).send().await.unwrap()).await;
    assert_ne!(theirs["id"], first["id"]);
    // Concurrent retries with one key make one message.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let request = send(&key, "burst", &body);
            tokio::spawn(async move { json(request.send().await.unwrap()).await["id"].clone() })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(count(&app, "messages").await, 3);
    // After 24 hours the key is free again.
    app.clock.advance(TimeDelta::hours(24));
    let later = json(send(&key, "order-20417", &body).send().await.unwrap()).await;
    assert_ne!(later["id"], first["id"]);
    // Malformed keys are refused.
    let bad = send(&key, "has space", &body).send().await.unwrap();
    assert_problem(bad, 400, "invalid_request").await;
    // The caller's key itself is never stored.
    let raw = app.raw_database_bytes().await;
    assert!(!raw.windows(11).any(|w| w == b"order-20417"));
}

#[tokio::test]
async fn acceptance_is_recorded_with_the_message() {
    let app = messaging_app().await;
    let (_, key) = app
        .integration_with_key("shop", &["messages:send", "subjects:write"])
        .await;
    app.opt_in("+4915112345678", "order_updates").await;
    let response = app
        .post("/v1/messages", &key, &template_send("+4915112345678"))
        .await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let id = json(response).await["id"].as_str().unwrap().to_owned();
    app.herald.audit().seal().await.unwrap();
    let entries = app.herald.audit().entries(0, 10_000).await.unwrap();
    let accepted: Vec<Value> = entries
        .iter()
        .map(|e| e.export_json())
        .filter(|e| e["action"] == "message.accepted")
        .collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["target"], json!({"type": "message", "id": id}));
    assert_eq!(accepted[0]["request_id"], request_id.as_str());
    assert_eq!(accepted[0]["details"]["purpose"], "order_updates");
    assert_eq!(accepted[0]["details"]["template"], "order_shipped");
    // The request's action — accepting the message (the number was registered when its
    // opt-in was recorded) — and no second, generic access entry.
    let mut for_request: Vec<String> = entries
        .iter()
        .map(|e| e.export_json())
        .filter(|e| e["request_id"] == request_id.as_str())
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for_request.sort();
    assert_eq!(for_request, vec!["message.accepted"]);
}

#[tokio::test]
async fn the_sandbox_offers_a_demo_purpose_out_of_the_box() {
    let app = TestApp::spawn().await;
    let demo = json!({"to": "+4915112345678", "purpose": "demo", "template": {"name": "demo_update", "language": "en", "parameters": ["hello"]}});
    app.opt_in("+4915112345678", "demo").await;
    assert_eq!(
        app.post("/v1/messages", &app.admin_key, &demo)
            .await
            .status(),
        202
    );
    // Configuring a purpose removes the demo.
    let configured = messaging_app().await;
    assert_problem(
        configured
            .post("/v1/messages", &configured.admin_key, &demo)
            .await,
        422,
        "unknown_purpose",
    )
    .await;
}

/// Concurrent sends share group commits of any size (padded to a power of two inside the
/// store): every accepted message is written exactly once with its history and audit entry,
/// and concurrent retries with one Idempotency-Key make one message.
#[tokio::test]
async fn concurrent_sends_in_shared_commits_are_each_written_once() {
    let app = messaging_app().await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    app.opt_in("+4915112345678", "order_updates").await;
    // The node's sandbox worker may deliver some of them meanwhile (adding `sent` and
    // `delivered` rows): each message has exactly one `queued` row.
    let queued_history = "SELECT COUNT(*) FROM message_history WHERE status = 'queued'";
    let before_history = app.count(queued_history).await;
    let sends = (0..45).map(|i| {
        let request = app
            .request(reqwest::Method::POST, "/v1/messages", &key)
            .json(&template_send("+4915112345678"));
        // Five of them are retries of one request.
        let request = if i % 9 == 0 {
            request.header("idempotency-key", "order-20417-shipped")
        } else {
            request
        };
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 202);
            json(response).await["id"].as_str().unwrap().to_owned()
        })
    });
    let mut ids = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        ids.push(send.await.unwrap());
    }
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        41,
        "40 plain sends and one idempotent message"
    );
    assert_eq!(count(&app, "messages").await, 41);
    assert_eq!(app.count(queued_history).await - before_history, 41);
    app.herald.audit().seal().await.unwrap();
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%\"action\":\"message.accepted\"%'"
        )
        .await,
        41
    );
}

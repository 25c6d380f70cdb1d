//! The delivery worker (issue 4 items 3–5): sandbox and WhatsApp channels, retries classified
//! by the reference's error table, attempts recorded, statuses forward only, body retention.

use std::future::Future;
use std::time::Duration;

use chrono::TimeDelta;
use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::fakes::{Behaviour, FakeWhatsapp, meta_signature};
use crate::helpers::{TestApp, json};
use crate::messages::{configure_messaging, template_send};

/// Polls until `check` gives a value (about 10 s at most).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..500 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn message(app: &TestApp, key: &str, id: &str) -> Value {
    let response = app.get(&format!("/v1/messages/{id}"), key).await;
    assert_eq!(response.status(), 200);
    json(response).await
}

pub async fn wait_status(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    eventually(&format!("message {id} to be {status}"), || async {
        let m = message(app, key, id).await;
        (m["status"] == status).then_some(m)
    })
    .await
}

/// Sends `body`; a recipient given by number is opted in first (a template to someone who never
/// wrote is business-initiated and needs the subject's opt-in).
pub async fn send(app: &TestApp, key: &str, body: &Value) -> String {
    if let (Some(to), Some(purpose)) = (body["to"].as_str(), body["purpose"].as_str()) {
        app.opt_in(to, purpose).await;
    }
    let response = app.post("/v1/messages", key, body).await;
    assert_eq!(response.status(), 202);
    json(response).await["id"].as_str().unwrap().to_owned()
}

/// Entries of `action` in the audit trail (sealed first).
pub async fn audited(app: &TestApp, action: &str) -> i64 {
    app.herald.audit().seal().await.unwrap();
    app.count(&format!(
        "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%\"action\":\"{action}\"%'"
    ))
    .await
}

/// Outcomes of a message's recorded attempts, grouped: retries, then failures, then sends.
async fn attempt_outcomes(app: &TestApp, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for outcome in ["retry", "failed", "sent"] {
        let n = app
            .count(&format!(
                "SELECT COUNT(*) FROM message_attempts WHERE message_id = '{id}' AND outcome = '{outcome}'"
            ))
            .await;
        for _ in 0..n {
            out.push(outcome.to_owned());
        }
    }
    out
}

async fn content_stored(app: &TestApp, id: &str) -> bool {
    app.count(&format!(
        "SELECT COUNT(*) FROM messages WHERE id = '{id}' AND content_ciphertext IS NOT NULL"
    ))
    .await
        == 1
}

fn statuses(m: &Value) -> Vec<&str> {
    m["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect()
}

/// How far in the future (by the test clock) a message is next due; negative when due.
async fn due_in_millis(app: &TestApp, id: &str) -> i64 {
    let now = app.clock.now().timestamp_millis();
    app.count(&format!(
        "SELECT due_at - {now} FROM messages WHERE id = '{id}'"
    ))
    .await
}

/// One delivery pass, driven by the test: nothing is due, so nothing is claimed.
pub async fn nothing_due(app: &TestApp) {
    let delivery = app.herald.delivery().unwrap();
    assert_eq!(
        herald_domain::worker::run_once(&delivery, 10)
            .await
            .unwrap(),
        0,
        "a message was due"
    );
}

#[tokio::test]
async fn the_sandbox_delivers_and_the_body_is_deleted_once_accepted() {
    let app = TestApp::spawn_with(configure_messaging).await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    let m = wait_status(&app, &key, &id, "delivered").await;
    assert_eq!(m["attempts"], 1);
    assert_eq!(statuses(&m), ["queued", "sent", "delivered"]);
    assert!(
        m["provider_message_id"]
            .as_str()
            .unwrap()
            .starts_with("sandbox.")
    );
    // compliance.md: bodies are kept only as long as needed — gone once the provider has it.
    assert!(!content_stored(&app, &id).await, "the body is deleted");
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM messages WHERE id = '{id}'"))
            .await,
        1,
        "metadata stays"
    );
    assert_eq!(attempt_outcomes(&app, &id).await, ["sent"]);
    assert_eq!(audited(&app, "message.sent").await, 1);
    assert_eq!(audited(&app, "message.status").await, 1);
    // The provider's id is stored encrypted, never in clear.
    let raw = app.raw_database_bytes().await;
    let provider_id = m["provider_message_id"].as_str().unwrap();
    assert!(
        !raw.windows(provider_id.len())
            .any(|w| w == provider_id.as_bytes())
    );
}

#[tokio::test]
async fn bodies_kept_by_retention_are_purged_when_it_ends() {
    let app = TestApp::spawn_with(|c| {
        configure_messaging(c);
        c.retention.message_bodies = Duration::from_secs(3600);
    })
    .await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    wait_status(&app, &key, &id, "delivered").await;
    assert!(
        content_stored(&app, &id).await,
        "kept for the configured hour"
    );
    let (store, clock) = (app.herald.store(), app.herald.clock());
    assert_eq!(
        herald::workers::purge_once(store, clock).await.unwrap(),
        (0, 0)
    );
    app.clock.advance(TimeDelta::minutes(61));
    assert_eq!(
        herald::workers::purge_once(store, clock).await.unwrap(),
        (1, 0)
    );
    assert!(!content_stored(&app, &id).await);
    assert_eq!(audited(&app, "messages.content_purged").await, 1);
}

async fn whatsapp_app(fake: &FakeWhatsapp, customize: impl FnOnce(&mut herald::Config)) -> TestApp {
    TestApp::spawn_with(|c| {
        configure_messaging(c);
        fake.configure(c);
        c.webhooks.allow_insecure_targets = true;
        customize(c);
    })
    .await
}

/// Posts a signed callback to Herald; returns the status.
pub async fn callback(app: &TestApp, body: &[u8]) -> u16 {
    app.client
        .post(app.url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", meta_signature(body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub fn status_callback(wamid: &str, status: &str, at: i64, correlation: Option<&str>) -> Vec<u8> {
    let mut report = json!({"id": wamid, "status": status, "timestamp": at.to_string(), "recipient_id": "4915112345678"});
    if let Some(c) = correlation {
        report["biz_opaque_callback_data"] = json!(c);
    }
    if status == "failed" {
        report["errors"] = json!([{"code": 131026, "title": "Message undeliverable"}]);
    }
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1093456789012345", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550009876", "phone_number_id": crate::fakes::PHONE_NUMBER_ID},
            "statuses": [report]
        }}]}]
    }))
    .unwrap()
}

#[tokio::test]
async fn whatsapp_gets_the_documented_request_and_statuses_only_move_forward() {
    let fake = FakeWhatsapp::start().await;
    let app = whatsapp_app(&fake, |_| {}).await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+49 151 1234 5678")).await;
    let m = wait_status(&app, &key, &id, "sent").await;
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(fake.violations(), Vec::<String>::new());
    assert_eq!(
        accepted[0].body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "4915112345678",
            "biz_opaque_callback_data": id,
            "type": "template",
            "template": {"name": "order_shipped", "language": {"code": "de"}, "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "Anna"}, {"type": "text", "text": "#20417"}]}
            ]}
        })
    );
    let wamid = accepted[0].wamid.clone().unwrap();
    assert_eq!(m["provider_message_id"], wamid.as_str());
    assert!(!content_stored(&app, &id).await);

    let t = crate::helpers::epoch().timestamp();
    assert_eq!(
        callback(&app, &status_callback(&wamid, "delivered", t + 5, None)).await,
        200
    );
    wait_status(&app, &key, &id, "delivered").await;
    assert_eq!(
        callback(&app, &status_callback(&wamid, "read", t + 9, None)).await,
        200
    );
    wait_status(&app, &key, &id, "read").await;
    // A late `sent`, a redelivered `delivered`, and a `failed` after delivery change nothing.
    for (status, at) in [("sent", t + 1), ("delivered", t + 5), ("failed", t + 12)] {
        assert_eq!(
            callback(&app, &status_callback(&wamid, status, at, None)).await,
            200
        );
    }
    eventually("callbacks to be processed", || async {
        (app.count("SELECT COUNT(*) FROM provider_inbox").await == 0).then_some(())
    })
    .await;
    let m = message(&app, &key, &id).await;
    assert_eq!(m["status"], "read");
    assert_eq!(statuses(&m), ["queued", "sent", "delivered", "read"]);
    assert!(m["error"].is_null());
    assert_eq!(
        audited(&app, "message.status").await,
        2,
        "delivered and read"
    );
    assert_eq!(audited(&app, "provider_webhook.received").await, 5);
}

#[tokio::test]
async fn a_status_arriving_before_the_send_is_recorded_finds_its_message_by_correlation() {
    let fake = FakeWhatsapp::start().await;
    // No worker: the message stays queued, as if the send were still in flight.
    let app = whatsapp_app(&fake, |c| c.roles.worker = false).await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    let t = crate::helpers::epoch().timestamp();
    let body = status_callback("wamid.UNKNOWNYET", "delivered", t, Some(&id));
    assert_eq!(callback(&app, &body).await, 200);
    // The worker is off, so process the stored callback here.
    herald_domain::worker::run_once(app.herald.reports(), 10)
        .await
        .unwrap();
    let m = message(&app, &key, &id).await;
    assert_eq!(m["status"], "delivered");
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_every_attempt_is_recorded() {
    let fake = FakeWhatsapp::start().await;
    fake.script([Behaviour::ServerError]);
    let app = whatsapp_app(&fake, |_| {}).await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    eventually("the first attempt", || async {
        (attempt_outcomes(&app, &id).await == ["retry"]).then_some(())
    })
    .await;
    let m = message(&app, &key, &id).await;
    assert_eq!(
        m["status"], "queued",
        "back in the queue until its retry is due"
    );
    assert_eq!(m["attempts"], 1);
    // The clock stands still: nothing happens until the backoff (1–2 s for attempt 1) passes.
    assert!(due_in_millis(&app, &id).await >= 1000);
    nothing_due(&app).await;
    assert_eq!(fake.received().len(), 1);
    app.clock.advance(TimeDelta::seconds(3));
    let m = wait_status(&app, &key, &id, "sent").await;
    assert_eq!(m["attempts"], 2);
    assert_eq!(attempt_outcomes(&app, &id).await, ["retry", "sent"]);
    assert_eq!(audited(&app, "message.attempt_failed").await, 1);
    assert_eq!(fake.accepted().len(), 1);
}

#[tokio::test]
async fn a_send_held_back_by_recipient_pacing_waits_without_spending_an_attempt() {
    let fake = FakeWhatsapp::start().await;
    let app = whatsapp_app(&fake, |c| {
        c.delivery.recipient_burst = 1;
        c.delivery.recipient_refill = Duration::from_secs(60);
    })
    .await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let first = send(&app, &key, &template_send("+4915112345678")).await;
    let m = wait_status(&app, &key, &first, "sent").await;
    assert_eq!(m["attempts"], 1);
    let second = send(&app, &key, &template_send("+4915112345678")).await;
    // The worker claims it, finds the recipient's bucket empty and puts it back until the
    // bucket refills: no provider call, and the claim's attempt is given back. The row shows
    // the deferral: queued again, and due later though the clock stands still (a claim alone
    // also moves the due time, to its lease's end, but leaves the row `sending`).
    // Status and due time in one read: two reads could pair the accepted row's `queued` with
    // the claim's later due time (a race seen under CI load).
    eventually("the deferral", || async {
        let now = app.clock.now().timestamp_millis();
        let deferred_by = app
            .count(&format!(
                "SELECT CASE WHEN status = 'queued' THEN due_at - {now} ELSE 0 END
                 FROM messages WHERE id = '{second}'"
            ))
            .await;
        (deferred_by > 0).then_some(())
    })
    .await;
    assert_eq!(fake.received().len(), 1);
    let m = message(&app, &key, &second).await;
    assert_eq!(m["status"], "queued");
    assert_eq!(m["attempts"], 0, "a deferral is not an attempt");
    assert!(attempt_outcomes(&app, &second).await.is_empty());
    app.clock.advance(TimeDelta::seconds(61));
    let m = wait_status(&app, &key, &second, "sent").await;
    assert_eq!(m["attempts"], 1);
    assert_eq!(attempt_outcomes(&app, &second).await, ["sent"]);
    assert_eq!(fake.accepted().len(), 2);
}

#[tokio::test]
async fn a_rate_limit_is_retried_no_earlier_than_its_retry_after() {
    let fake = FakeWhatsapp::start().await;
    fake.script([Behaviour::RateLimited { retry_after: 30 }]);
    let app = whatsapp_app(&fake, |_| {}).await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    eventually("the throttled attempt", || async {
        (attempt_outcomes(&app, &id).await == ["retry"]).then_some(())
    })
    .await;
    app.clock.advance(TimeDelta::seconds(20));
    assert!(due_in_millis(&app, &id).await >= 10_000);
    nothing_due(&app).await;
    assert_eq!(fake.received().len(), 1);
    assert_eq!(
        message(&app, &key, &id).await["status"],
        "queued",
        "Retry-After is 30 s"
    );
    app.clock.advance(TimeDelta::seconds(11));
    let m = wait_status(&app, &key, &id, "sent").await;
    assert_eq!(m["attempts"], 2);
}

#[tokio::test]
async fn permanent_errors_fail_at_once_with_the_provider_code() {
    let fake = FakeWhatsapp::start().await;
    fake.script([Behaviour::Error {
        status: 400,
        code: 131026,
    }]);
    let app = whatsapp_app(&fake, |_| {}).await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    let m = wait_status(&app, &key, &id, "failed").await;
    assert_eq!(m["error"]["code"], "undeliverable");
    assert_eq!(m["error"]["provider_code"], 131026);
    assert_eq!(m["attempts"], 1);
    assert_eq!(attempt_outcomes(&app, &id).await, ["failed"]);
    assert!(
        !content_stored(&app, &id).await,
        "a failed message keeps no body"
    );
    assert_eq!(audited(&app, "message.failed").await, 1);
}

#[tokio::test]
async fn a_hanging_provider_times_out_and_attempts_run_out() {
    let fake = FakeWhatsapp::start().await;
    fake.script([
        Behaviour::Hang(Duration::from_secs(4)),
        Behaviour::ServerError,
    ]);
    let app = whatsapp_app(&fake, |c| c.delivery.max_attempts = 2).await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    eventually("the timed-out attempt", || async {
        (attempt_outcomes(&app, &id).await == ["retry"]).then_some(())
    })
    .await;
    app.clock.advance(TimeDelta::seconds(3));
    let m = wait_status(&app, &key, &id, "failed").await;
    assert_eq!(m["error"]["code"], "retries_exhausted");
    assert_eq!(m["attempts"], 2);
    assert_eq!(attempt_outcomes(&app, &id).await, ["retry", "failed"]);
    assert!(fake.accepted().is_empty());
}

#[tokio::test]
async fn an_expired_lease_puts_the_message_back_in_the_queue() {
    let fake = FakeWhatsapp::start().await;
    let app = whatsapp_app(&fake, |c| c.roles.worker = false).await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["messages:send", "subjects:write", "messages:read"],
        )
        .await;
    let id = send(&app, &key, &template_send("+4915112345678")).await;
    // A node claims the message and dies before recording anything.
    let now = app.clock.now();
    let claimed = app
        .herald
        .store()
        .claim_messages("node-dead", now, now + TimeDelta::seconds(5), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(message(&app, &key, &id).await["status"], "sending");
    let again = app
        .herald
        .store()
        .claim_messages("node-live", now, now + TimeDelta::seconds(5), 10)
        .await
        .unwrap();
    assert!(again.is_empty(), "leased to the first node");
    app.clock.advance(TimeDelta::seconds(6));
    let again = app
        .herald
        .store()
        .claim_messages(
            "node-live",
            app.clock.now(),
            app.clock.now() + TimeDelta::seconds(5),
            10,
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "the lease expired");
    assert_eq!(again[0].attempts, 2);
}

//! The provider register through the API (compliance VENDOR-DD, HIPAA-BAA, GDPR-28.3): the
//! shipped starting entries, the lifecycle with its audit and history, the standing rule, reviews
//! recorded in configuration, validation and scopes.

use serde_json::{Value, json};

use crate::delivery::audited;
use crate::helpers::{TestApp, assert_problem, json};

fn facts() -> Value {
    json!({
        "legal_name": "Example SMS GmbH", "service": "SMS gateway",
        "role": {"kind": "processor"},
        "dpa": {"signed_at": "2026-01-10", "version": "2026-01",
                "sha256": "ab".repeat(32), "location": "contracts/sms-dpa.pdf"},
        "certifications": [{"name": "ISO/IEC 27001", "issuer": "TÜV", "expires_at": "2099-06-30"}],
        "processing_regions": ["eu"], "storage_regions": ["de"],
        "transfer_mechanism": "not_applicable",
        "storage_mode": {"kind": "none"},
        "deletion": {"support": "api", "covers": "messages and logs"},
        "last_review_at": "2026-11-01", "next_review_due": "2099-11-01"
    })
}

async fn patch(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.request(
        reqwest::Method::PATCH,
        &format!("/v1/vendors/{id}"),
        &app.admin_key,
    )
    .json(&body)
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn the_register_ships_meta_unreviewed_and_the_sandbox_approved() {
    let app = TestApp::spawn().await;
    let list = json(app.get("/v1/vendors", &app.admin_key).await).await;
    let by_id = |id: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("no {id}: {list}"))
            .clone()
    };
    let meta = by_id("meta_whatsapp_cloud");
    assert_eq!(meta["status"], "unreviewed");
    assert_eq!(meta["standing"]["approved"], false);
    assert_eq!(meta["standing"]["reason"], "unreviewed");
    assert!(
        meta["facts"]["baa"].is_null(),
        "Meta signs no BAA for WhatsApp"
    );
    assert_eq!(meta["facts"]["deletion"]["support"], "none");
    let sandbox = by_id("herald_sandbox");
    assert_eq!(sandbox["standing"]["approved"], true);
    // Shipped once: a restart neither duplicates nor overwrites them.
    let app = app.restart().await;
    assert_eq!(
        json(app.get("/v1/vendors", &app.admin_key).await).await["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(audited(&app, "vendor.added").await, 2);
}

#[tokio::test]
async fn a_vendor_is_added_reviewed_approved_and_suspended_with_who_and_why() {
    let app = TestApp::spawn().await;
    let (_, reader) = app
        .integration_with_key("compliance", &["vendors:read"])
        .await;
    let added = app
        .post(
            "/v1/vendors",
            &app.admin_key,
            &json!({"id": "example_sms", "facts": facts(), "reason": "onboarding SMS, ticket SEC-1"}),
        )
        .await;
    assert_eq!(added.status(), 201);
    let added = json(added).await;
    assert_eq!(added["status"], "unreviewed");
    assert_eq!(added["standing"]["reason"], "unreviewed");
    assert_eq!(added["version"], 1);
    // Approved: it stands.
    let approved = json(
        patch(
            &app,
            "example_sms",
            json!({"status": "approved", "reason": "review 2026 passed"}),
        )
        .await,
    )
    .await;
    assert_eq!(approved["standing"]["approved"], true, "{approved}");
    // The test clock is in 2030: a certification that ran out in 2029 is not relied on.
    let mut expired = facts();
    expired["certifications"][0]["expires_at"] = json!("2029-12-31");
    let lapsed = json(
        patch(
            &app,
            "example_sms",
            json!({"facts": expired, "reason": "certificate not renewed"}),
        )
        .await,
    )
    .await;
    assert_eq!(lapsed["standing"]["reason"], "certification_expired");
    // A review that drops the DPA: approved, but it does not stand.
    let mut without_dpa = facts();
    without_dpa.as_object_mut().unwrap().remove("dpa");
    let reviewed = json(
        patch(
            &app,
            "example_sms",
            json!({"facts": without_dpa, "reason": "the DPA lapsed"}),
        )
        .await,
    )
    .await;
    assert_eq!(reviewed["status"], "approved");
    assert_eq!(reviewed["standing"]["reason"], "dpa_missing");
    let suspended = json(
        patch(
            &app,
            "example_sms",
            json!({"status": "suspended", "reason": "breach at the vendor"}),
        )
        .await,
    )
    .await;
    assert_eq!(suspended["standing"]["reason"], "suspended");
    assert_eq!(suspended["version"], 5);
    // The history keeps every version with who and why; readable with vendors:read.
    let one = json(app.get("/v1/vendors/example_sms", &reader).await).await;
    let history = one["history"].as_array().unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(history[0]["reason"], "onboarding SMS, ticket SEC-1");
    assert_eq!(history[4]["status"], "suspended");
    assert_eq!(history[4]["reason"], "breach at the vendor");
    assert!(history[4]["actor"].as_str().unwrap().starts_with("int_"));
    assert_eq!(audited(&app, "vendor.changed").await, 4);
    // The reason is in the history, not in the audit trail.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_log WHERE body LIKE '%breach at the vendor%'")
            .await,
        0
    );
    // Nothing changes without a reason, nor with a bad entry; a reader may not write.
    assert_problem(
        patch(
            &app,
            "example_sms",
            json!({"status": "approved", "reason": " "}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    let mut bad = facts();
    bad["dpa"]["sha256"] = json!("not-a-hash");
    assert_problem(
        app.post(
            "/v1/vendors",
            &app.admin_key,
            &json!({"id": "bad_hash", "facts": bad, "reason": "x"}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.post(
            "/v1/vendors",
            &app.admin_key,
            &json!({"id": "example_sms", "facts": facts(), "reason": "again"}),
        )
        .await,
        409,
        "already_exists",
    )
    .await;
    assert_problem(
        app.post(
            "/v1/vendors",
            &reader,
            &json!({"id": "other", "facts": facts(), "reason": "x"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.get("/v1/vendors/nobody_here", &reader).await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM vendor_history WHERE vendor_id = 'example_sms'")
            .await,
        5
    );
}

#[tokio::test]
async fn a_review_recorded_in_configuration_approves_the_shipped_meta_entry() {
    let app = TestApp::spawn_with(|c| {
        c.vendors.insert(
            "meta_whatsapp_cloud".into(),
            serde_json::from_value(json!({
                "status": "approved",
                "reason": "reviewed 2026-11, DPA on file",
                "dpa": {"signed_at": "2026-11-20", "version": "WhatsApp Business Data Processing Terms 2026"},
                "next_review_due": "2099-11-20",
                "storage_mode": {"kind": "local_storage", "retention": "at rest only in the EU"},
                "storage_regions": ["eu"]
            }))
            .unwrap(),
        );
    })
    .await;
    let meta = json(
        app.get("/v1/vendors/meta_whatsapp_cloud", &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(meta["standing"]["approved"], true, "{meta}");
    assert_eq!(meta["facts"]["storage_mode"]["kind"], "local_storage");
    // The shipped facts the configuration did not name stay.
    assert_eq!(
        meta["facts"]["legal_name"],
        "Meta Platforms Ireland Limited"
    );
    let history = meta["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["actor"], "system");
    assert!(
        history[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("configuration ([vendors.meta_whatsapp_cloud])")
    );
    // Applied once: a restart with the same configuration changes nothing.
    let app = app.restart().await;
    let again = json(
        app.get("/v1/vendors/meta_whatsapp_cloud", &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(again["history"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn nothing_goes_through_a_vendor_that_does_not_stand() {
    use crate::consent_kit::{configure_consent, grant, phone};
    let fake = crate::fakes::FakeWhatsapp::start().await;
    let app = TestApp::spawn_with(|c| {
        configure_consent(c);
        fake.configure(c);
        // The operator has not reviewed Meta yet: the shipped entry, unreviewed.
        c.vendors.clear();
    })
    .await;
    grant(&app, &phone(990), "newsletter").await;
    let send = json!({"to": phone(990), "purpose": "order_updates",
        "template": {"name": "order_shipped", "language": "de", "parameters": ["A", "#1"]}});
    let refused = assert_problem(
        app.post("/v1/messages", &app.admin_key, &send).await,
        422,
        "vendor_not_approved",
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("meta_whatsapp_cloud may not carry messages: unreviewed"),
        "{refused}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0);
    app.herald.audit().seal().await.unwrap();
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%\"code\":\"vendor_not_approved\"%'
             AND body LIKE '%\"vendor\":\"meta_whatsapp_cloud\"%' AND body LIKE '%\"reason\":\"unreviewed\"%'"
        )
        .await,
        1
    );

    // Approved without a DPA on file: still refused, for that reason.
    let meta = json(
        app.get("/v1/vendors/meta_whatsapp_cloud", &app.admin_key)
            .await,
    )
    .await;
    let approved = json(
        patch(
            &app,
            "meta_whatsapp_cloud",
            json!({"status": "approved", "reason": "looked at it"}),
        )
        .await,
    )
    .await;
    assert_eq!(approved["standing"]["reason"], "dpa_missing");
    let refused = assert_problem(
        app.post("/v1/messages", &app.admin_key, &send).await,
        422,
        "vendor_not_approved",
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().ends_with("dpa_missing"));
    // With the DPA and a review date ahead: sent.
    let mut facts = meta["facts"].clone();
    facts["dpa"] = json!({"signed_at": "2026-11-20", "version": "2026-05"});
    facts["next_review_due"] = json!("2099-01-01");
    let reviewed = json(
        patch(
            &app,
            "meta_whatsapp_cloud",
            json!({"facts": facts, "reason": "DPA on file, review 2026"}),
        )
        .await,
    )
    .await;
    assert_eq!(reviewed["standing"]["approved"], true, "{reviewed}");
    let sent = app.post("/v1/messages", &app.admin_key, &send).await;
    assert_eq!(sent.status(), 202);
    crate::delivery::eventually("the provider called once", || async {
        (fake.accepted().len() == 1).then_some(())
    })
    .await;
    // Suspended: refused again at once, nothing more reaches the provider.
    patch(
        &app,
        "meta_whatsapp_cloud",
        json!({"status": "suspended", "reason": "incident at the vendor"}),
    )
    .await;
    let refused = assert_problem(
        app.post("/v1/messages", &app.admin_key, &send).await,
        422,
        "vendor_not_approved",
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().ends_with("suspended"));
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(fake.received().len(), 1);
    // A review that has fallen due: overdue (the test clock is in 2030).
    facts["next_review_due"] = json!("2029-12-31");
    patch(
        &app,
        "meta_whatsapp_cloud",
        json!({"facts": facts, "status": "approved", "reason": "re-approved, review date stale"}),
    )
    .await;
    let refused = assert_problem(
        app.post("/v1/messages", &app.admin_key, &send).await,
        422,
        "vendor_not_approved",
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .ends_with("review_overdue")
    );
}

#[tokio::test]
async fn a_review_falling_due_within_30_days_is_counted_before_the_vendor_stops() {
    // The test clock starts on 2030-01-01: Meta's review is due in ten days.
    let due = (crate::helpers::epoch() + chrono::TimeDelta::days(10))
        .date_naive()
        .to_string();
    let app = TestApp::spawn_with(|c| {
        c.vendors.insert(
            "meta_whatsapp_cloud".into(),
            serde_json::from_value(json!({
                "status": "approved", "reason": "reviewed",
                "dpa": {"signed_at": "2026-11-20", "version": "2026-05"},
                "next_review_due": due,
            }))
            .unwrap(),
        );
    })
    .await;
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("herald_vendor_reviews_due 1"), "{metrics}");
    let meta = json(
        app.get("/v1/vendors/meta_whatsapp_cloud", &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(meta["standing"]["approved"], true);
    // Past the day, it no longer stands (and is no longer "due": it is overdue).
    app.clock.advance(chrono::TimeDelta::days(11));
    let meta = json(
        app.get("/v1/vendors/meta_whatsapp_cloud", &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(meta["standing"]["reason"], "review_overdue");
    assert!(app.herald.vendors().reviews_due_within(30).is_empty());
}

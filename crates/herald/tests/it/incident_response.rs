//! Responding to a breach through the API (compliance GDPR-33, GDPR-34, HIPAA-404,
//! PROC-NOTIFY): who a leaked key touched, from the audit trail — exactly, none missing, none
//! extra; the notification drafts with their missing facts; and the notices to the people
//! affected, which skip the erased and survive a marketing opt-out.

use std::collections::{BTreeMap, BTreeSet};

use chrono::TimeDelta;
use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::consent_kit::{consent_app, grant, phone, withdraw};
use crate::delivery::audited;
use crate::fakes::FakeWhatsapp;
use crate::helpers::{TestApp, assert_problem, json};

async fn open(app: &TestApp) -> String {
    let now = app.clock.now();
    let response = app
        .post(
            "/v1/incidents",
            &app.admin_key,
            &json!({
                "summary": "A key of the web shop was published in a public repository",
                "detected_at": (now - TimeDelta::minutes(30)).to_rfc3339(),
                "became_aware_at": (now - TimeDelta::minutes(20)).to_rfc3339(),
                "kinds": ["confidentiality"],
                "data_categories": ["contact_data"],
                "source": "report",
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    json(response).await["id"].as_str().unwrap().to_owned()
}

async fn scope(app: &TestApp, incident: &str, body: Value) -> Value {
    let response = app
        .post(
            &format!("/v1/incidents/{incident}/scope"),
            &app.admin_key,
            &body,
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    json(response).await
}

/// Every affected subject with its kinds, through the paged list (`limit` per page).
async fn affected(app: &TestApp, incident: &str, limit: u32) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let response = app
            .get(
                &format!("/v1/incidents/{incident}/affected?limit={limit}&after={after}"),
                &app.admin_key,
            )
            .await;
        assert_eq!(response.status(), 200);
        let page = json(response).await;
        pages += 1;
        for item in page["data"].as_array().unwrap() {
            let kinds = item["kinds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect();
            out.insert(item["subject_id"].as_str().unwrap().to_owned(), kinds);
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    out
}

async fn integration(app: &TestApp, name: &str) -> String {
    let response = app
        .post("/v1/integrations", &app.admin_key, &json!({"name": name}))
        .await;
    assert_eq!(response.status(), 201);
    json(response).await["id"].as_str().unwrap().to_owned()
}

/// A new key for `integration`: (key id, token).
async fn key(app: &TestApp, integration: &str, scopes: &[&str]) -> (String, String) {
    let response = app
        .post(
            &format!("/v1/integrations/{integration}/keys"),
            &app.admin_key,
            &json!({"scopes": scopes}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created = json(response).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

/// One clock of an incident as read.
fn clock(incident: &Value, name: &str) -> Value {
    incident["clocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clock"] == name)
        .unwrap_or_else(|| panic!("no clock {name}: {incident}"))
        .clone()
}

fn ids<'a>(subjects: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    subjects.into_iter().cloned().collect()
}

#[tokio::test]
async fn a_leaked_key_yields_exactly_the_subjects_it_touched() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let scopes = [
        "subjects:read",
        "subjects:write",
        "subjects:export",
        "messages:send",
        "messages:read",
    ];
    let shop = integration(&app, "shop").await;
    let (key_id, leaked) = key(&app, &shop, &scopes).await;
    // A second key of the same integration, and another integration.
    let (_, second) = key(&app, &shop, &scopes).await;
    let crm = integration(&app, "crm").await;
    let (_, other) = key(&app, &crm, &scopes).await;

    // Eight people, each opted in by the operator (not the leaked key's doing).
    let mut subject = Vec::new();
    for n in 0..8 {
        grant(&app, &phone(900 + n), "newsletter").await;
        subject.push(crate::consent_kit::subject_of(&app, &phone(900 + n)).await);
    }
    // Before the window: the leaked key reads subject 7.
    app.link(&leaked, &phone(907)).await;
    assert_eq!(
        app.get(&format!("/v1/subjects/{}", subject[7]), &leaked)
            .await
            .status(),
        200
    );
    app.clock.advance(TimeDelta::hours(1));
    let from = app.clock.now();
    app.clock.advance(TimeDelta::minutes(1));

    // In the window, the leaked key: sends to 0 and reads that message back…
    let sent = app
        .post(
            "/v1/messages",
            &leaked,
            &json!({"to": phone(900), "purpose": "order_updates",
                    "template": {"name": "order_shipped", "language": "de", "parameters": ["A", "#1"]}}),
        )
        .await;
    assert_eq!(sent.status(), 202, "{}", sent.text().await.unwrap());
    let message = json(sent).await["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get(&format!("/v1/messages/{message}"), &leaked)
            .await
            .status(),
        200
    );
    // …finds 1 by number and reads it, exports 2, looks 3 up.
    app.link(&leaked, &phone(901)).await;
    assert_eq!(
        app.get(&format!("/v1/subjects/{}", subject[1]), &leaked)
            .await
            .status(),
        200
    );
    app.link(&leaked, &phone(902)).await;
    let export = app
        .get(&format!("/v1/subjects/{}/export", subject[2]), &leaked)
        .await;
    assert_eq!(export.status(), 200);
    let looked_up = app
        .post(
            "/v1/subjects/lookup",
            &leaked,
            &json!({"phone": phone(903)}),
        )
        .await;
    assert_eq!(looked_up.status(), 200);
    // A subject it may not see: refused, so not touched.
    assert_eq!(
        app.get(&format!("/v1/subjects/{}", subject[6]), &leaked)
            .await
            .status(),
        404
    );
    // The shop's other key reads 4; another integration reads 5.
    app.link(&second, &phone(904)).await;
    app.link(&other, &phone(905)).await;
    app.clock.advance(TimeDelta::minutes(1));
    let to = app.clock.now();
    // After the window: the operator's own read is nobody's leak.
    app.clock.advance(TimeDelta::minutes(5));
    assert_eq!(
        app.get(&format!("/v1/subjects/{}", subject[6]), &app.admin_key)
            .await
            .status(),
        200
    );

    let incident = open(&app).await;
    let by_key = scope(
        &app,
        &incident,
        json!({"credential": key_id, "from": from.to_rfc3339(), "to": to.to_rfc3339()}),
    )
    .await;
    let touched = affected(&app, &incident, 2).await;
    assert_eq!(
        ids(touched.keys()),
        ids([&subject[0], &subject[1], &subject[2], &subject[3]]),
        "exactly the subjects the leaked key touched in the window"
    );
    assert!(touched[&subject[0]].contains(&"sent".to_owned()));
    assert!(
        touched[&subject[0]].contains(&"read".to_owned()),
        "the message read back"
    );
    assert!(touched[&subject[2]].contains(&"exported".to_owned()));
    assert_eq!(touched[&subject[3]], vec!["read"]);
    assert_eq!(by_key["scope"]["by"], "credential");
    assert_eq!(by_key["scope"]["subjects"], 4);
    assert_eq!(by_key["scope"]["by_kind"]["exported"], 1);
    assert_eq!(by_key["scope"]["by_kind"]["sent"], 1);
    assert_eq!(by_key["added"], 4);
    assert_eq!(by_key["scoped_subjects"], 4);
    assert_eq!(
        by_key["affected"], 4,
        "the count of people affected follows"
    );

    // The whole integration: the other key's subject joins; scopes add up, nobody twice.
    let by_integration = scope(
        &app,
        &incident,
        json!({"integration": shop, "from": from.to_rfc3339(), "to": to.to_rfc3339()}),
    )
    .await;
    assert_eq!(by_integration["added"], 1);
    assert_eq!(by_integration["scoped_subjects"], 5);
    assert_eq!(
        ids(affected(&app, &incident, 50).await.keys()),
        ids([
            &subject[0],
            &subject[1],
            &subject[2],
            &subject[3],
            &subject[4]
        ])
    );
    // A route: every caller's exports in the window — only subject 2's.
    let by_route = scope(
        &app,
        &incident,
        json!({"route": "/v1/subjects/{id}/export", "from": from.to_rfc3339(), "to": to.to_rfc3339()}),
    )
    .await;
    assert_eq!(by_route["scope"]["subjects"], 1);
    assert_eq!(by_route["added"], 0);
    let read = json(
        app.get(&format!("/v1/incidents/{incident}"), &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(read["scopes"].as_array().unwrap().len(), 3);
    assert_eq!(read["scoped_subjects"], 5);
    assert_eq!(audited(&app, "incident.scoped").await, 3);
    // Ids only: the scope entries name the key, never a subject.
    let entries = app
        .count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%incident.scoped%' AND body LIKE '%{}%'",
            subject[0]
        ))
        .await;
    assert_eq!(entries, 0);

    // Bad requests lose nothing.
    for (body, field) in [
        (json!({"from": from.to_rfc3339()}), "credential"),
        (
            json!({"credential": "sub_x", "from": from.to_rfc3339()}),
            "credential",
        ),
        (
            json!({"credential": key_id, "integration": shop, "from": from.to_rfc3339()}),
            "credential",
        ),
        (
            json!({"credential": key_id, "from": to.to_rfc3339(), "to": from.to_rfc3339()}),
            "from",
        ),
        (
            json!({"route": "v1 nope", "from": from.to_rfc3339()}),
            "route",
        ),
    ] {
        let response = app
            .post(
                &format!("/v1/incidents/{incident}/scope"),
                &app.admin_key,
                &body,
            )
            .await;
        let problem = assert_problem(response, 400, "invalid_request").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let missing = app
        .post(
            "/v1/incidents/inc_00000000000000000000000000/scope",
            &app.admin_key,
            &json!({"credential": key_id, "from": from.to_rfc3339()}),
        )
        .await;
    assert_problem(missing, 404, "not_found").await;
    assert_eq!(audited(&app, "incident.scoped").await, 3);
    // Reading the list needs incidents:read; the leaked key has none.
    let forbidden = app
        .get(&format!("/v1/incidents/{incident}/affected"), &leaked)
        .await;
    assert_problem(forbidden, 403, "forbidden").await;
}

#[tokio::test]
async fn drafts_fill_what_is_recorded_and_list_what_is_missing() {
    let app = TestApp::spawn_with(|c| {
        c.incidents.dpo_contact = Some("Data Protection Officer, dpo@shop.example".into());
        c.incidents.controller = Some("Shop GmbH, Hauptstrasse 1, Berlin".into());
    })
    .await;
    let incident = open(&app).await;
    let drafts = json(
        app.get(
            &format!("/v1/incidents/{incident}/notifications"),
            &app.admin_key,
        )
        .await,
    )
    .await;
    let draft = |drafts: &Value, kind: &str| {
        drafts["drafts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["kind"] == kind)
            .unwrap()
            .clone()
    };
    let authority = draft(&drafts, "gdpr_authority");
    assert_eq!(
        authority["missing"],
        json!(["affected", "records", "consequences", "measures"])
    );
    assert_eq!(authority["basis"], "GDPR Art. 33(1)");
    assert_eq!(authority["clock_status"], "pending");
    let dpo = authority["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "dpo_contact")
        .unwrap();
    assert_eq!(dpo["value"], "Data Protection Officer, dpo@shop.example");
    assert_eq!(
        draft(&drafts, "hipaa_individuals")["missing"],
        json!(["occurred_at", "advice", "measures", "individual_contact"]),
        "no contact for individuals is configured: listed, not invented"
    );

    // Record the facts: the authority's draft is complete.
    let response = app
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/incidents/{incident}"),
            &app.admin_key,
        )
        .json(&json!({
            "affected": 120, "records": 480,
            "consequences": "Customers may receive phishing messages.",
            "measures": "The key was revoked within the hour; keys are now scanned for.",
            "advice": "Do not answer messages asking for payment details.",
            "occurred_at": (app.clock.now() - TimeDelta::days(2)).to_rfc3339(),
            "breach_type": "unauthorized_access_disclosure",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let drafts = json(
        app.get(
            &format!("/v1/incidents/{incident}/notifications"),
            &app.admin_key,
        )
        .await,
    )
    .await;
    assert_eq!(draft(&drafts, "gdpr_authority")["missing"], json!([]));
    assert_eq!(draft(&drafts, "hipaa_hhs")["missing"], json!([]));
    assert_eq!(
        draft(&drafts, "hipaa_individuals")["missing"],
        json!(["individual_contact"])
    );
    let text = app
        .get(
            &format!("/v1/incidents/{incident}/notifications?format=text"),
            &app.admin_key,
        )
        .await;
    assert_eq!(text.status(), 200);
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = text.text().await.unwrap();
    assert!(text.contains("Notification of a personal data breach to the supervisory authority"));
    assert!(text.contains("Customers may receive phishing messages."));
    assert!(text.contains("[MISSING: individual_contact]"));
    assert!(text.contains("Approximate number of data subjects concerned:\n  120"));
    let bad = app
        .get(
            &format!("/v1/incidents/{incident}/notifications?format=pdf"),
            &app.admin_key,
        )
        .await;
    assert_problem(bad, 400, "invalid_request").await;
}

#[tokio::test]
async fn notices_reach_the_affected_skip_the_erased_and_survive_a_marketing_opt_out() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let shop = integration(&app, "shop").await;
    let (key_id, leaked) = key(&app, &shop, &["subjects:read", "subjects:write"]).await;
    // 0: opted in to the newsletter. 1: opted in to alerts and the newsletter, then withdrew
    // the newsletter (a marketing opt-out). 2: erased after the breach. 3: never opted in.
    grant(&app, &phone(950), "newsletter").await;
    grant(&app, &phone(951), "alerts").await;
    grant(&app, &phone(951), "newsletter").await;
    withdraw(&app, &phone(951), "newsletter").await;
    grant(&app, &phone(952), "newsletter").await;
    let from = app.clock.now();
    app.clock.advance(TimeDelta::minutes(1));
    let mut subject = Vec::new();
    for n in 950..954 {
        let id = app.link(&leaked, &phone(n)).await;
        subject.push(id);
    }
    app.clock.advance(TimeDelta::minutes(1));
    let incident = open(&app).await;
    let found = scope(
        &app,
        &incident,
        json!({"credential": key_id, "from": from.to_rfc3339()}),
    )
    .await;
    assert_eq!(found["scoped_subjects"], 4);
    let erased = app
        .delete(&format!("/v1/subjects/{}", subject[2]), &app.admin_key)
        .await;
    assert!(erased.status().is_success(), "{}", erased.status());

    let notify = |body: Value| {
        let app = &app;
        let incident = incident.clone();
        async move {
            let response = app
                .post(
                    &format!("/v1/incidents/{incident}/notify-subjects"),
                    &app.admin_key,
                    &body,
                )
                .await;
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
            json(response).await
        }
    };
    let notice = json!({"purpose": "alerts", "template": "order_shipped", "language": "de",
                        "parameters": ["Shop GmbH", "INC-1"], "limit": 2});
    // In pages of two: the first call stops with a cursor, the second goes on from it.
    let first = notify(notice.clone()).await;
    let next = first["next"].as_str().expect("more to notify").to_owned();
    let mut second_body = notice.clone();
    second_body["after"] = json!(next);
    let second = notify(second_body).await;
    assert!(second["next"].is_null(), "{second}");
    let total = |field: &str| {
        first["run"][field].as_u64().unwrap() + second["run"][field].as_u64().unwrap()
    };
    assert_eq!(total("sent"), 2, "{first} {second}");
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    for run in [&first, &second] {
        for (code, n) in run["run"]["skipped"].as_object().unwrap() {
            *skipped.entry(code.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(
        skipped,
        BTreeMap::from([
            ("consent_missing".to_owned(), 1),
            ("subject_erased".to_owned(), 1)
        ])
    );
    // Who was told: 0 and 1 (despite the withdrawn newsletter), each send naming the incident.
    let told: BTreeMap<String, Value> = json(
        app.get(
            &format!("/v1/incidents/{incident}/affected"),
            &app.admin_key,
        )
        .await,
    )
    .await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["subject_id"].as_str().unwrap().to_owned(),
                a["notice_message_id"].clone(),
            )
        })
        .collect();
    assert!(told[&subject[0]].is_string());
    assert!(told[&subject[1]].is_string());
    assert!(told[&subject[2]].is_null(), "never the erased subject");
    assert!(told[&subject[3]].is_null());
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM messages WHERE purpose = 'alerts' AND subject_id = '{}'",
            subject[2]
        ))
        .await,
        0
    );
    app.herald.audit().seal().await.unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%\"action\":\"message.accepted\"%' AND body LIKE '%\"incident_id\":\"{incident}\"%'"
        ))
        .await,
        2
    );
    assert_eq!(audited(&app, "incident.subjects_notified").await, 2);
    // The people affected learn of it in their own export too (Art. 15).
    let export = json(
        app.get(
            &format!("/v1/subjects/{}/export", subject[0]),
            &app.admin_key,
        )
        .await,
    )
    .await;
    assert_eq!(export["incidents"][0]["incident_id"], incident.as_str());
    assert_eq!(export["incidents"][0]["kinds"], json!(["read"]));
    assert!(export["incidents"][0]["notice_message_id"].is_string());
    // A repeat tells nobody twice.
    let again = notify(
        json!({"purpose": "alerts", "template": "order_shipped", "language": "de",
                              "parameters": ["Shop GmbH", "INC-1"]}),
    )
    .await;
    assert_eq!(again["run"]["sent"], 0);
    assert_eq!(again["run"]["already_notified"], 2);
    let read = json(
        app.get(&format!("/v1/incidents/{incident}"), &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(read["subject_notices"].as_array().unwrap().len(), 3);
    // Only a legal_obligation purpose may carry the notice.
    let wrong = app
        .post(
            &format!("/v1/incidents/{incident}/notify-subjects"),
            &app.admin_key,
            &json!({"purpose": "newsletter", "template": "order_shipped", "language": "de",
                    "parameters": ["a", "b"]}),
        )
        .await;
    assert_problem(wrong, 422, "purpose_not_legal_obligation").await;
    let params = app
        .post(
            &format!("/v1/incidents/{incident}/notify-subjects"),
            &app.admin_key,
            &json!({"purpose": "alerts", "template": "order_shipped", "language": "de"}),
        )
        .await;
    assert_problem(params, 400, "invalid_request").await;
}

#[tokio::test]
async fn deadlines_are_reported_once_when_near_and_once_when_missed() {
    let receiver = crate::fakes::Receiver::start().await;
    let app = TestApp::spawn_with(|c| {
        c.webhooks.allow_insecure_targets = true;
        c.delivery.poll_interval = std::time::Duration::from_millis(20);
        // Driven step by step below, under the manual clock.
        c.incidents.check_every = std::time::Duration::ZERO;
    })
    .await;
    // The operator's integration may read the register and hears of deadlines; a shop
    // subscribing to them without that scope is refused.
    let ops = integration(&app, "ops").await;
    key(&app, &ops, &["incidents:read"]).await;
    let (_, ops_manager) = key(&app, &ops, &["integrations:manage"]).await;
    let registered = app
        .post(
            &format!("/v1/integrations/{ops}/webhooks"),
            &app.admin_key,
            &json!({"url": receiver.url(), "events": ["incident.deadline"]}),
        )
        .await;
    assert_eq!(registered.status(), 201);
    let secret = json(registered).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = app
        .post(
            &format!("/v1/integrations/{ops}/webhooks"),
            &ops_manager,
            &json!({"url": receiver.url(), "events": ["incident.deadline"]}),
        )
        .await;
    assert_problem(refused, 403, "forbidden").await;

    let incident = open(&app).await;
    // Aware 20 minutes ago: the authority's 72 hours are far away.
    let quiet = app.herald.check_incident_deadlines().await.unwrap();
    assert!(quiet.alerts.is_empty(), "{quiet:?}");
    // 50 hours later: less than 24 hours left.
    app.clock.advance(TimeDelta::hours(50));
    let near = app.herald.check_incident_deadlines().await.unwrap();
    assert_eq!(near.alerts.len(), 1, "{near:?}");
    assert_eq!(near.alerts[0].clock.as_str(), "gdpr_authority");
    assert_eq!(near.alerts[0].state.as_str(), "approaching");
    assert_eq!(near.approaching, 1);
    // Said once, however often the watcher looks (and on whichever node).
    let again = app.herald.check_incident_deadlines().await.unwrap();
    assert!(again.alerts.is_empty());
    assert_eq!(again.approaching, 1);
    // Past the deadline: missed, once.
    app.clock.advance(TimeDelta::hours(23));
    let missed = app.herald.check_incident_deadlines().await.unwrap();
    assert_eq!(missed.alerts.len(), 1);
    assert_eq!(missed.alerts[0].state.as_str(), "missed");
    assert_eq!(missed.overdue, 1);
    assert!(
        app.herald
            .check_incident_deadlines()
            .await
            .unwrap()
            .alerts
            .is_empty()
    );

    assert_eq!(audited(&app, "incident.deadline").await, 2);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(
            r#"herald_incident_deadline_alerts_total{clock="gdpr_authority",state="approaching"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"herald_incident_deadline_alerts_total{clock="gdpr_authority",state="missed"} 1"#
    ));
    assert!(metrics.contains("herald_incident_clocks_overdue 1"));
    // Both reached the operator's endpoint, signed per Standard Webhooks, no personal data.
    let deliveries = crate::delivery::eventually("two deadline events", || async {
        let got = receiver.deliveries();
        (got.len() >= 2).then_some(got)
    })
    .await;
    let mut states = Vec::new();
    for delivery in &deliveries {
        crate::fakes::verify_standard_webhook(
            &secret,
            &delivery.id,
            delivery.timestamp,
            &delivery.signature,
            &delivery.body,
            app.clock.now().timestamp(),
        )
        .unwrap();
        let event = delivery.json();
        assert_eq!(event["type"], "incident.deadline");
        assert_eq!(event["data"]["incident_id"], incident.as_str());
        assert_eq!(event["data"]["clock"], "gdpr_authority");
        assert_eq!(event["data"]["basis"], "GDPR Art. 33(1)");
        assert!(!String::from_utf8_lossy(&delivery.body).contains("public repository"));
        states.push(event["data"]["state"].as_str().unwrap().to_owned());
    }
    states.sort();
    assert_eq!(states, vec!["approaching", "missed"]);
    // The register shows it overdue too.
    let incident_view = json(
        app.get(&format!("/v1/incidents/{incident}"), &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(incident_view["overdue"], true);
}

#[tokio::test]
async fn each_integration_is_told_of_its_own_affected_subjects_only() {
    let shop_hook = crate::fakes::Receiver::start().await;
    let crm_hook = crate::fakes::Receiver::start().await;
    let app = TestApp::spawn_with(|c| {
        c.webhooks.allow_insecure_targets = true;
        c.delivery.poll_interval = std::time::Duration::from_millis(20);
        c.incidents.check_every = std::time::Duration::ZERO;
        c.incidents.dpo_contact = Some("dpo@herald.example".into());
    })
    .await;
    let scopes = ["subjects:read", "subjects:write"];
    let shop = integration(&app, "shop").await;
    let (_, shop_key) = key(&app, &shop, &scopes).await;
    let crm = integration(&app, "crm").await;
    let (_, crm_key) = key(&app, &crm, &scopes).await;
    let quiet = integration(&app, "quiet").await;
    let (_, quiet_key) = key(&app, &quiet, &scopes).await;
    let mut secrets = BTreeMap::new();
    for (integration, receiver) in [(&shop, &shop_hook), (&crm, &crm_hook)] {
        let response = app
            .post(
                &format!("/v1/integrations/{integration}/webhooks"),
                &app.admin_key,
                &json!({"url": receiver.url(), "events": ["incident.notified"]}),
            )
            .await;
        assert_eq!(response.status(), 201);
        secrets.insert(
            integration.clone(),
            json(response).await["secret"].as_str().unwrap().to_owned(),
        );
    }
    let from = app.clock.now();
    app.clock.advance(TimeDelta::minutes(1));
    // The shop's key (the one that leaked) touches 0 and 1; the crm also knows 1 and 2; the
    // quiet integration knows 0 and has no endpoint.
    let s0 = app.link(&shop_key, &phone(970)).await;
    let s1 = app.link(&shop_key, &phone(971)).await;
    app.link(&crm_key, &phone(971)).await;
    app.link(&crm_key, &phone(972)).await;
    app.link(&quiet_key, &phone(970)).await;
    app.clock.advance(TimeDelta::minutes(1));
    let incident = open(&app).await;
    let scoped = scope(
        &app,
        &incident,
        json!({"integration": shop, "from": from.to_rfc3339(), "to": app.clock.now().to_rfc3339()}),
    )
    .await;
    assert_eq!(scoped["scoped_subjects"], 2);
    let before = json(
        app.get(&format!("/v1/incidents/{incident}"), &app.admin_key)
            .await,
    )
    .await;
    let controllers = clock(&before, "controllers");
    assert_eq!(controllers["status"], "pending");

    let told = app
        .post(
            &format!("/v1/incidents/{incident}/notify-integrations"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(told.status(), 200, "{}", told.text().await.unwrap());
    let told = json(told).await;
    assert_eq!(told["integrations"][&shop], 2);
    assert_eq!(told["integrations"][&crm], 1);
    assert_eq!(told["integrations"][&quiet], 1);
    assert_eq!(told["without_endpoint"], json!([quiet]));
    assert_eq!(told["deliveries"], 2);
    assert_eq!(audited(&app, "incident.controllers_notified").await, 1);

    let received = |receiver: &crate::fakes::Receiver, secret: &str| {
        let delivery = receiver.deliveries().pop().expect("one event");
        crate::fakes::verify_standard_webhook(
            secret,
            &delivery.id,
            delivery.timestamp,
            &delivery.signature,
            &delivery.body,
            app.clock.now().timestamp(),
        )
        .unwrap();
        delivery.json()
    };
    crate::delivery::eventually("both integrations told", || async {
        (!shop_hook.deliveries().is_empty() && !crm_hook.deliveries().is_empty()).then_some(())
    })
    .await;
    let to_shop = received(&shop_hook, &secrets[&shop]);
    assert_eq!(to_shop["type"], "incident.notified");
    assert_eq!(to_shop["data"]["incident_id"], incident.as_str());
    assert_eq!(to_shop["data"]["contact"], "dpo@herald.example");
    let mut shop_subjects: Vec<String> = to_shop["data"]["subject_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    shop_subjects.sort();
    let mut expected = vec![s0.clone(), s1.clone()];
    expected.sort();
    assert_eq!(shop_subjects, expected);
    // The crm hears only of the subject it knows, never the shop's other one.
    let to_crm = received(&crm_hook, &secrets[&crm]);
    assert_eq!(to_crm["data"]["subject_ids"], json!([s1]));
    assert!(!String::from_utf8_lossy(&crm_hook.deliveries()[0].body).contains(&s0));
    let after = json(
        app.get(&format!("/v1/incidents/{incident}"), &app.admin_key)
            .await,
    )
    .await;
    let controllers = clock(&after, "controllers");
    assert_eq!(controllers["status"], "met");
    assert!(after["controllers_notified_at"].is_string());
}

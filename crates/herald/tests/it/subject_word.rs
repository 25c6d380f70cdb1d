//! The subject's own word is the last word (issue 14; compliance.md GDPR-7.3, GDPR-21,
//! WA-OPTOUT; ADR 0013): the ledger follows the time the subject spoke, not the order callbacks
//! happen to arrive in; after an opt-out only the subject opts back in; STOP ends every
//! business-initiated message, queued ones included; the opt-out outlives erasure; double
//! opt-in cannot be used to spam.

use chrono::TimeDelta;
use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::consent_kit::*;
use crate::delivery::{audited, message};
use crate::fakes::FakeWhatsapp;
use crate::helpers::{TestApp, assert_problem, json};

async fn put_consent(
    app: &TestApp,
    subject: &str,
    purpose: &str,
    captured_at: &str,
) -> reqwest::Response {
    let mut evidence = json!({"method": "web_form", "captured_at": captured_at,
        "source": "https://shop.example/form"});
    if !app.herald.config().purposes[purpose].notices.is_empty() {
        evidence["notice_version"] = json!("v1");
    }
    app.put(
        &format!("/v1/subjects/{subject}/consents/{purpose}"),
        &app.admin_key,
        &json!({"evidence": evidence}),
    )
    .await
}

fn history_of(overview: &Value, purpose: &str) -> Vec<Value> {
    overview["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["purpose"] == purpose)
        .cloned()
        .collect()
}

#[tokio::test]
async fn after_stop_a_backdated_grant_is_stale_and_a_current_one_is_refused() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(2000);
    let subject = grant(&app, &who, "newsletter").await;
    app.clock.advance(TimeDelta::minutes(1));
    says(&app, &who, "STOP").await;
    assert_eq!(state(&app, &who, "newsletter").await, "withdrawn");

    // A consent "captured" in 2019, recorded after the STOP: kept as history, changes nothing.
    let stale = put_consent(&app, &subject, "newsletter", "2019-05-01T10:00:00Z").await;
    assert_problem(stale, 409, "consent_stale").await;
    let overview = consents(&app, &subject).await;
    let newsletter = history_of(&overview, "newsletter");
    let last = newsletter.last().unwrap();
    assert_eq!(last["state"], "granted");
    assert_eq!(last["effective"], false);
    assert_eq!(last["captured_at"], "2019-05-01T10:00:00.000Z");
    assert_eq!(state(&app, &who, "newsletter").await, "withdrawn");

    // A consent captured now: the subject opted out, and only the subject opts back in.
    let events_before = app.count("SELECT COUNT(*) FROM consent_events").await;
    let now = app.clock.now().to_rfc3339();
    for purpose in ["newsletter", "order_updates", "alerts"] {
        let refused = put_consent(&app, &subject, purpose, &now).await;
        assert_problem(refused, 409, "subject_opted_out").await;
    }
    let asked = app
        .post(
            "/v1/opt-ins",
            &app.admin_key,
            &json!({"to": who, "purpose": "newsletter", "notice_version": "v1"}),
        )
        .await;
    assert_problem(asked, 409, "subject_opted_out").await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM consent_events").await,
        events_before,
        "refusals write nothing to the ledger"
    );
    assert_eq!(audited(&app, "consent.refused").await, 4);
    assert_eq!(state(&app, &who, "newsletter").await, "withdrawn");

    // Withdrawing stays possible; it does not make the opt-out an integration's.
    let withdrawn = app
        .delete(
            &format!("/v1/subjects/{subject}/consents/newsletter"),
            &app.admin_key,
        )
        .await;
    assert_eq!(withdrawn.status(), 200);
    assert_problem(
        put_consent(&app, &subject, "newsletter", &app.clock.now().to_rfc3339()).await,
        409,
        "subject_opted_out",
    )
    .await;

    // The subject's own START reopens the channel and the purposes that allow it.
    app.clock.advance(TimeDelta::minutes(1));
    says(&app, &who, "START").await;
    assert_eq!(state(&app, &who, "herald.channel").await, "granted");
    assert_eq!(state(&app, &who, "newsletter").await, "granted");
    accepted(&app, &template("order_updates", &who)).await;
}

#[tokio::test]
async fn start_then_stop_delivered_in_reverse_order_leaves_the_subject_opted_out() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(2010);
    let subject = grant(&app, &who, "newsletter").await;
    let t = app.clock.now().timestamp();
    // The customer wrote START at t+10 and STOP at t+20; Meta delivers the STOP first.
    app.clock.advance(TimeDelta::seconds(30));
    says_at(&app, &who, "STOP", t + 20).await;
    says_at(&app, &who, "START", t + 10).await;
    assert_eq!(state(&app, &who, "herald.channel").await, "withdrawn");
    assert_eq!(state(&app, &who, "newsletter").await, "withdrawn");
    refused(&app, &template("newsletter", &who), "consent_withdrawn").await;
    // The late START is in the history, marked as having changed nothing.
    let overview = consents(&app, &subject).await;
    let channel = history_of(&overview, "herald.channel");
    let states: Vec<(&str, bool)> = channel
        .iter()
        .map(|h| {
            (
                h["state"].as_str().unwrap(),
                h["effective"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("withdrawn", true), ("granted", false)]);
    assert!(channel.iter().all(|h| h["origin"] == "subject"));

    // The same in the order they were said: START after STOP reopens.
    let other = phone(2011);
    grant(&app, &other, "newsletter").await;
    let t = app.clock.now().timestamp();
    app.clock.advance(TimeDelta::seconds(30));
    says_at(&app, &other, "STOP", t + 10).await;
    says_at(&app, &other, "START", t + 20).await;
    assert_eq!(state(&app, &other, "newsletter").await, "granted");
}

#[tokio::test]
async fn stop_stops_every_business_initiated_message_and_queued_ones_fail_at_delivery() {
    let fake = FakeWhatsapp::start().await;
    // No worker: messages stay queued until the test drives the delivery worker.
    let app = TestApp::spawn_with(|c| {
        configure_consent(c);
        fake.configure(c);
        c.roles.worker = false;
    })
    .await;
    let who = phone(2020);
    grant(&app, &who, "newsletter").await;
    // A contract-purpose template, queued before the customer says STOP.
    let queued = accepted(&app, &template("order_updates", &who)).await;
    let queued_marketing = accepted(&app, &template("newsletter", &who)).await;
    app.clock.advance(TimeDelta::minutes(1));
    let n = WAMID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stop = json!({"from": who.trim_start_matches('+'), "id": format!("wamid.stop{n}"),
        "timestamp": app.clock.now().timestamp().to_string(), "type": "text",
        "text": {"body": "STOP"}});
    assert_eq!(
        crate::delivery::callback(&app, &change(&who, stop)).await,
        200
    );
    herald_domain::worker::run_once(app.herald.reports(), 10)
        .await
        .unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_inbox").await, 0);
    // A new business-initiated message of any purpose is refused…
    for purpose in ["order_updates", "alerts", "safety", "newsletter", "offers"] {
        refused(&app, &template(purpose, &who), "consent_withdrawn").await;
    }
    // …and the queued ones fail at delivery, without a provider call.
    let delivery = app.herald.delivery().unwrap();
    let handled = herald_domain::worker::run_once(&delivery, 10)
        .await
        .unwrap();
    assert!(handled >= 2, "{handled}");
    for id in [&queued, &queued_marketing] {
        let m = message(&app, &app.admin_key, id).await;
        assert_eq!(m["status"], "failed", "{m}");
        assert_eq!(m["error"]["code"], "consent_withdrawn");
        assert_eq!(m["attempts"], 1);
    }
    assert!(
        sent_to(&fake, &who).iter().all(|b| b["type"] == "text"),
        "only the acknowledgement of the STOP reached the provider"
    );
}

#[tokio::test]
async fn a_purpose_configured_to_stop_as_marketing_keeps_its_messages() {
    let fake = FakeWhatsapp::start().await;
    let app = TestApp::spawn_with(|c| {
        configure_consent(c);
        fake.configure(c);
        c.purposes.get_mut("alerts").unwrap().stop_withdraws =
            herald::config::StopWithdraws::Marketing;
    })
    .await;
    let who = phone(2030);
    grant(&app, &who, "alerts").await;
    app.clock.advance(TimeDelta::minutes(1));
    says(&app, &who, "STOP").await;
    // A legal notice the subject cannot object to on this channel still goes; nothing else.
    accepted(&app, &template("alerts", &who)).await;
    refused(&app, &template("order_updates", &who), "consent_withdrawn").await;
    assert_eq!(state(&app, &who, "alerts").await, "granted");
}

#[tokio::test]
async fn the_opt_out_outlives_erasure() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(2040);
    let subject = grant(&app, &who, "newsletter").await;
    app.clock.advance(TimeDelta::minutes(1));
    says(&app, &who, "STOP").await;
    let erased = app
        .delete(&format!("/v1/subjects/{subject}"), &app.admin_key)
        .await;
    assert_eq!(erased.status(), 200);
    let receipt = json(erased).await["receipt"].clone();
    assert_eq!(receipt["statement"]["opt_outs_kept"], 1);
    // Only the blind index and the date are kept.
    assert_eq!(app.count("SELECT COUNT(*) FROM suppressions").await, 1);
    // The number comes back as a new subject: it starts opted out.
    let again = subject_of(&app, &who).await;
    assert_ne!(again, subject);
    assert_eq!(state(&app, &who, "herald.channel").await, "withdrawn");
    assert_problem(
        put_consent(&app, &again, "newsletter", &app.clock.now().to_rfc3339()).await,
        409,
        "subject_opted_out",
    )
    .await;
    refused(&app, &template("order_updates", &who), "consent_withdrawn").await;
    // The subject's own word reopens it.
    app.clock.advance(TimeDelta::minutes(1));
    says(&app, &who, "START").await;
    accepted(&app, &template("order_updates", &who)).await;

    // Someone who never opted out leaves nothing behind.
    let plain = phone(2041);
    let plain_subject = grant(&app, &plain, "newsletter").await;
    let erased = app
        .delete(&format!("/v1/subjects/{plain_subject}"), &app.admin_key)
        .await;
    assert_eq!(
        json(erased).await["receipt"]["statement"]["opt_outs_kept"],
        0
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM suppressions").await, 1);
}

#[tokio::test]
async fn double_opt_in_asks_at_most_three_times_in_thirty_days_and_a_yes_confirms_one_request() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(2050);
    // Each request runs out unconfirmed; a fourth within 30 days is refused.
    for _ in 0..3 {
        let started = start_opt_in(&app, &who, "newsletter").await;
        assert_eq!(started["status"], "pending");
        app.clock.advance(TimeDelta::hours(49));
    }
    let fourth = app
        .post(
            "/v1/opt-ins",
            &app.admin_key,
            &json!({"to": who, "purpose": "newsletter", "notice_version": "v1"}),
        )
        .await;
    assert!(fourth.headers().contains_key("retry-after"));
    assert_problem(fourth, 429, "rate_limited").await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE purpose = 'herald.opt_in_request'")
            .await,
        3
    );
    // Thirty days after the first, it may ask again.
    app.clock.advance(TimeDelta::days(30));
    start_opt_in(&app, &who, "newsletter").await;

    // Two pending requests on one number: a typed "YES" confirms the most recent only.
    let both = phone(2051);
    start_opt_in(&app, &both, "offers").await;
    app.clock.advance(TimeDelta::minutes(1));
    start_opt_in(&app, &both, "newsletter").await;
    app.clock.advance(TimeDelta::minutes(1));
    says(&app, &both, "JA").await;
    assert_eq!(state(&app, &both, "newsletter").await, "granted");
    assert_eq!(state(&app, &both, "offers").await, "pending");
}

#[tokio::test]
async fn a_confirmation_button_confirms_the_request_it_answers() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(2060);
    let offers_request = start_opt_in(&app, &who, "offers").await;
    app.clock.advance(TimeDelta::minutes(1));
    let newsletter_request = start_opt_in(&app, &who, "newsletter").await;
    // The worker may send the two confirmations in either order: each request's own message
    // says which provider message it became.
    let mut wamids = Vec::new();
    for request in [&offers_request, &newsletter_request] {
        let id = request["message_id"].as_str().unwrap();
        let wamid = crate::delivery::eventually("the confirmation to be sent", || async {
            let m = crate::delivery::message(&app, &app.admin_key, id).await;
            m["provider_message_id"].as_str().map(str::to_owned)
        })
        .await;
        wamids.push(wamid);
    }
    assert_eq!(
        fake.accepted()
            .iter()
            .filter(|r| r.wamid.as_ref().is_some_and(|w| wamids.contains(w)))
            .count(),
        2
    );
    // The customer answers the first request (offers) with its button, quoting it.
    let n = WAMID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let message = json!({"from": who.trim_start_matches('+'), "id": format!("wamid.button{n}"),
        "timestamp": app.clock.now().timestamp().to_string(), "type": "button",
        "button": {"payload": "CONFIRM", "text": "Ja"},
        "context": {"from": "15550009876", "id": wamids[0]}});
    assert_eq!(
        crate::delivery::callback(&app, &change(&who, message)).await,
        200
    );
    processed(&app).await;
    assert_eq!(state(&app, &who, "offers").await, "granted");
    assert_eq!(state(&app, &who, "newsletter").await, "pending");
    let subject = subject_of(&app, &who).await;
    let overview = consents(&app, &subject).await;
    let offers = history_of(&overview, "offers");
    assert_eq!(
        offers.last().unwrap()["evidence"]["confirms"],
        offers[0]["id"]
    );
}

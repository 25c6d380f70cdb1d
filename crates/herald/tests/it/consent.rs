//! The consent ledger (issue 5; compliance.md GDPR-6.1, GDPR-7.1, GDPR-7.2, GDPR-7.3, DOI-1,
//! WA-OPTIN, WA-OPTOUT): every state × every basis at send, opt-out keywords, buttons and
//! provider preferences, double opt-in (confirm, expire, another number), user-initiated codes,
//! withdrawal cancelling queued messages, frequency caps, evidence across a restart.

use chrono::TimeDelta;
use herald_crypto::hash::sha256;
use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::consent_kit::*;
use crate::delivery::{audited, eventually, message, wait_status};
use crate::fakes::{Behaviour, FakeWhatsapp};
use crate::helpers::{TestApp, assert_problem, json};
use crate::messages::configure_messaging;

#[tokio::test]
async fn test_gdpr_6_1_every_state_times_every_basis_at_send() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let mut n = 0;
    for (purpose, consent_basis) in BASES {
        // No record: a template outside a conversation is business-initiated and needs the
        // opt-in whatever the basis; inside the window only a consent basis needs more.
        n += 1;
        let nobody = phone(n);
        refused(&app, &template(purpose, &nobody), "consent_missing").await;
        says(&app, &nobody, "Hallo, wo ist mein Paket?").await;
        if consent_basis {
            refused(&app, &text(purpose, &nobody), "consent_missing").await;
            refused(&app, &template(purpose, &nobody), "consent_missing").await;
        } else {
            accepted(&app, &text(purpose, &nobody)).await;
            accepted(&app, &template(purpose, &nobody)).await;
        }

        // Granted.
        n += 1;
        let granted = phone(n);
        grant(&app, &granted, purpose).await;
        let id = accepted(&app, &template(purpose, &granted)).await;
        // (Sent before the withdrawal below, which would otherwise cancel it.)
        wait_status(&app, &app.admin_key, &id, "sent").await;

        // Withdrawn: refused even inside the window.
        withdraw(&app, &granted, purpose).await;
        refused(&app, &template(purpose, &granted), "consent_withdrawn").await;
        says(&app, &granted, "Warum?").await;
        refused(&app, &text(purpose, &granted), "consent_withdrawn").await;

        // Pending (a double opt-in waiting for the subject).
        n += 1;
        let pending = phone(n);
        start_opt_in(&app, &pending, purpose_for_opt_in(purpose)).await;
        refused(&app, &template(purpose, &pending), "consent_pending").await;
    }
    // Expired: the same requests 48 hours later read as never given.
    app.clock
        .advance(TimeDelta::hours(48) + TimeDelta::seconds(1));
    for (i, (purpose, _)) in BASES.iter().enumerate() {
        let pending = phone(3 * i as u64 + 3);
        assert_eq!(
            state(&app, &pending, purpose_for_opt_in(purpose)).await,
            "expired"
        );
        refused(&app, &template(purpose, &pending), "consent_missing").await;
    }
    // Refused sends queued nothing and never reached the provider; each was recorded.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE purpose NOT LIKE 'herald.%'")
            .await,
        5 + 2 * 4,
        "one granted template per basis, text and template in the window for the four non-consent bases"
    );
    eventually("the accepted messages to reach the provider", || async {
        (fake.received().len() == 5 + 2 * 4 + 5).then_some(())
    })
    .await;
    assert!(audited(&app, "message.refused").await >= 5 * 4);
}

/// The purpose a double opt-in is started for: one with notices.
fn purpose_for_opt_in(purpose: &str) -> &'static str {
    match purpose {
        "offers" => "offers",
        _ => "newsletter",
    }
}

#[tokio::test]
async fn test_gdpr_7_3_stop_keyword_blocks_next_send_in_every_listed_language() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let words = [
        "STOP",
        "stop",
        " Stop! ",
        "STOPP",
        "Abmelden",
        "ABMELDEN",
        "ARRÊT",
        "arret",
        "Arrêt",
        "BAJA",
        "baja",
        "ANNULLA",
        "Annulla",
        "AFMELDEN",
        "afmelden",
        "PARAR",
        "Parar",
        "UNSUBSCRIBE",
        "Cancel",
        "désabonner",
        "ＳＴＯＰ",
    ];
    for (i, word) in words.iter().enumerate() {
        let who = phone(100 + i as u64);
        grant(&app, &who, "newsletter").await;
        accepted(&app, &template("newsletter", &who)).await;
        says(&app, &who, word).await;
        assert_eq!(
            state(&app, &who, "newsletter").await,
            "withdrawn",
            "{word:?}"
        );
        // STOP withdraws the WhatsApp opt-in itself…
        assert_eq!(
            state(&app, &who, "herald.channel").await,
            "withdrawn",
            "{word:?}"
        );
        // …so the very next send is refused, and no business-initiated message of any
        // purpose goes out: marketing or not, recorded or not.
        refused(&app, &template("newsletter", &who), "consent_withdrawn").await;
        refused(&app, &template("offers", &who), "consent_withdrawn").await;
        refused(&app, &template("order_updates", &who), "consent_withdrawn").await;
        // Every marketing purpose is withdrawn (an objection), recorded before or not.
        assert_eq!(state(&app, &who, "offers").await, "withdrawn", "{word:?}");
        // The STOP itself starts no conversation…
        let (status, code) = send_status(&app, &text("order_updates", &who)).await;
        assert_eq!(
            (status, code["code"].as_str()),
            (422, Some("template_required_outside_window")),
            "{word:?}"
        );
        // …but when the subject writes again, the conversation may be answered (not with
        // marketing).
        app.clock.advance(TimeDelta::minutes(1));
        says(&app, &who, "Wo ist mein Paket?").await;
        accepted(&app, &text("order_updates", &who)).await;
        refused(&app, &text("offers", &who), "consent_withdrawn").await;
    }
    // One acknowledgement per opt-out, inside the window the message opened.
    let first = phone(100);
    eventually("the acknowledgement", || async {
        sent_to(&fake, &first)
            .iter()
            .any(|b| b["text"]["body"] == OPT_OUT_REPLY)
            .then_some(())
    })
    .await;
    // Saying it again changes nothing and sends nothing more: an acknowledgement would be a
    // message row written while the STOP is processed, and `says` waits for that.
    let subject = subject_of(&app, &first).await;
    let messages_to_first = format!("SELECT COUNT(*) FROM messages WHERE subject_id = '{subject}'");
    let before = app.count(&messages_to_first).await;
    says(&app, &first, "STOP").await;
    assert_eq!(app.count(&messages_to_first).await, before);
    let acknowledgements = sent_to(&fake, &first)
        .iter()
        .filter(|b| b["text"]["body"] == OPT_OUT_REPLY)
        .count();
    assert_eq!(acknowledgements, 1);
}

#[tokio::test]
async fn a_keyword_inside_a_sentence_does_not_opt_out() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    for (i, sentence) in [
        "Please stop",
        "stop sending me the tracking link twice",
        "Ich möchte mich abmelden",
        "Où est l'arrêt de bus?",
        "No quiero darme de baja",
        "STOP STOP",
    ]
    .iter()
    .enumerate()
    {
        let who = phone(200 + i as u64);
        grant(&app, &who, "newsletter").await;
        says(&app, &who, sentence).await;
        assert_eq!(
            state(&app, &who, "newsletter").await,
            "granted",
            "{sentence:?}"
        );
        accepted(&app, &template("newsletter", &who)).await;
    }
}

#[tokio::test]
async fn the_stop_button_and_whatsapps_own_marketing_control_withdraw_too() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let button = phone(300);
    grant(&app, &button, "newsletter").await;
    presses(&app, &button, "STOP").await;
    assert_eq!(state(&app, &button, "newsletter").await, "withdrawn");
    refused(&app, &template("newsletter", &button), "consent_withdrawn").await;

    let control = phone(301);
    let subject = grant(&app, &control, "newsletter").await;
    grant(&app, &control, "offers").await;
    preference(&app, &control, "stop").await;
    assert_eq!(state(&app, &control, "newsletter").await, "withdrawn");
    assert_eq!(state(&app, &control, "offers").await, "withdrawn");
    refused(&app, &template("newsletter", &control), "consent_withdrawn").await;
    let history = consents(&app, &subject).await["history"].clone();
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["method"], "provider_preference");
    assert_eq!(last["evidence"]["preference"], "stop");
    // WhatsApp's "resume" re-grants only the purpose that allows re-opt-in without a new
    // consent.
    preference(&app, &control, "resume").await;
    assert_eq!(state(&app, &control, "newsletter").await, "granted");
    assert_eq!(state(&app, &control, "offers").await, "withdrawn");
}

#[tokio::test]
async fn start_regrants_only_where_the_purpose_allows_it() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(400);
    grant(&app, &who, "newsletter").await;
    grant(&app, &who, "offers").await;
    says(&app, &who, "stop").await;
    says(&app, &who, "Start").await;
    assert_eq!(state(&app, &who, "newsletter").await, "granted");
    assert_eq!(state(&app, &who, "offers").await, "withdrawn");
    accepted(&app, &template("newsletter", &who)).await;
    refused(&app, &template("offers", &who), "consent_withdrawn").await;
    // START from someone who never opted out grants nothing.
    let stranger = phone(401);
    says(&app, &stranger, "START").await;
    assert_eq!(state(&app, &stranger, "newsletter").await, "none");
}

#[tokio::test]
async fn test_doi_1_double_opt_in_confirms_from_the_same_number_only() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let anna = phone(500);
    let other = phone(501);
    let started = start_opt_in(&app, &anna, "newsletter").await;
    assert_eq!(started["status"], "pending");
    assert_eq!(
        started["expires_at"],
        (app.clock.now() + TimeDelta::hours(48))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    // One confirmation template, nothing promotional, to that number.
    eventually("the confirmation template", || async {
        (sent_to(&fake, &anna).len() == 1).then_some(())
    })
    .await;
    let request = &sent_to(&fake, &anna)[0];
    assert_eq!(request["template"]["name"], "newsletter_confirm");
    refused(&app, &template("newsletter", &anna), "consent_pending").await;
    // A confirmation from another number confirms nothing.
    says(&app, &other, "JA").await;
    assert_eq!(state(&app, &anna, "newsletter").await, "pending");
    assert_eq!(state(&app, &other, "newsletter").await, "none");
    // Starting again while pending sends no second confirmation: 200 with the pending record.
    let again = app
        .post(
            "/v1/opt-ins",
            &app.admin_key,
            &json!({"to": anna, "purpose": "newsletter", "notice_version": "v1"}),
        )
        .await;
    assert_eq!(again.status(), 200);
    let again = json(again).await;
    assert_eq!(again["status"], "pending");
    assert_eq!(again["expires_at"], started["expires_at"]);
    assert!(again.get("message_id").is_none());
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM messages WHERE purpose = 'herald.opt_in_request' AND subject_id = '{}'",
            subject_of(&app, &anna).await
        ))
        .await,
        1
    );
    // The subject's own "Ja" confirms it.
    app.clock.advance(TimeDelta::hours(47));
    says(&app, &anna, "Ja").await;
    assert_eq!(state(&app, &anna, "newsletter").await, "granted");
    // A confirmation is the subject's own opt-in on the channel, too.
    assert_eq!(state(&app, &anna, "herald.channel").await, "granted");
    accepted(&app, &template("newsletter", &anna)).await;
    let subject = subject_of(&app, &anna).await;
    let history = consents(&app, &subject).await["history"].clone();
    let history: Vec<Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["purpose"] == "newsletter")
        .cloned()
        .collect();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["state"], "pending");
    assert_eq!(history[0]["method"], "double_opt_in");
    assert_eq!(history[1]["state"], "granted");
    assert_eq!(history[1]["method"], "double_opt_in");
    assert_eq!(history[1]["evidence"]["confirms"], history[0]["id"]);
    assert!(
        history[1]["evidence"]["inbound_message_id"]
            .as_str()
            .unwrap()
            .starts_with("msg_")
    );
    let notice_hash = data_encoding::HEXLOWER.encode(&sha256(&[NOTICE.as_bytes()]));
    assert_eq!(history[1]["notice_sha256"], notice_hash.as_str());
    assert_eq!(history[1]["notice_version"], "v1");
    // Already granted: a new opt-in sends nothing.
    let again = app
        .post(
            "/v1/opt-ins",
            &app.admin_key,
            &json!({"to": anna, "purpose": "newsletter", "notice_version": "v1"}),
        )
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await["status"], "granted");

    // The quick-reply button confirms as well.
    let button = phone(502);
    start_opt_in(&app, &button, "newsletter").await;
    presses(&app, &button, "CONFIRM").await;
    assert_eq!(state(&app, &button, "newsletter").await, "granted");
}

#[tokio::test]
async fn an_unconfirmed_opt_in_expires_after_48_hours() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let late = phone(600);
    start_opt_in(&app, &late, "newsletter").await;
    app.clock
        .advance(TimeDelta::hours(48) + TimeDelta::seconds(1));
    assert_eq!(state(&app, &late, "newsletter").await, "expired");
    refused(&app, &template("newsletter", &late), "consent_missing").await;
    // The sweep records the expiry in the ledger, once.
    assert_eq!(app.herald.consents().expire_lapsed().await.unwrap(), 1);
    assert_eq!(app.herald.consents().expire_lapsed().await.unwrap(), 0);
    // A confirmation after the expiry confirms nothing.
    says(&app, &late, "YES").await;
    assert_eq!(state(&app, &late, "newsletter").await, "expired");
    let subject = subject_of(&app, &late).await;
    let history = consents(&app, &subject).await["history"].clone();
    let states: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "expired"]);
}

#[tokio::test]
async fn a_user_initiated_code_confirms_the_number_and_opens_the_window() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let issued = app
        .post(
            "/v1/opt-ins",
            &app.admin_key,
            &json!({"purpose": "newsletter", "notice_version": "v1"}),
        )
        .await;
    assert_eq!(issued.status(), 201);
    let code = json(issued).await["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 8);
    let who = phone(700);
    says(
        &app,
        &who,
        &format!("Bitte anmelden: {}", code.to_lowercase()),
    )
    .await;
    assert_eq!(state(&app, &who, "newsletter").await, "granted");
    // The message opened the window: free text is allowed.
    accepted(&app, &text("newsletter", &who)).await;
    // A wrong code grants nothing.
    let other = phone(701);
    says(&app, &other, "Bitte anmelden: 23456789").await;
    assert_eq!(state(&app, &other, "newsletter").await, "none");
}

#[tokio::test]
async fn a_withdrawal_cancels_a_queued_message_before_its_next_attempt() {
    let fake = FakeWhatsapp::start().await;
    fake.script([Behaviour::ServerError]);
    let app = consent_app(&fake).await;
    let who = phone(800);
    grant(&app, &who, "newsletter").await;
    let id = accepted(&app, &template("newsletter", &who)).await;
    eventually("the first attempt to fail", || async {
        (fake.received().len() == 1).then_some(())
    })
    .await;
    withdraw(&app, &who, "newsletter").await;
    app.clock.advance(TimeDelta::seconds(5));
    let m = wait_status(&app, &app.admin_key, &id, "failed").await;
    assert_eq!(m["error"]["code"], "consent_withdrawn");
    // Failed is final: a delivery pass finds nothing to send.
    crate::delivery::nothing_due(&app).await;
    assert_eq!(fake.received().len(), 1, "never sent after the withdrawal");
    assert_eq!(message(&app, &app.admin_key, &id).await["status"], "failed");
}

#[tokio::test]
async fn test_gdpr_7_1_evidence_survives_a_restart_and_reads_back_encrypted_at_rest() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(900);
    let subject = grant(&app, &who, "newsletter").await;
    let app = app.restart().await;
    let overview = consents(&app, &subject).await;
    let event = &overview["history"][0];
    assert_eq!(event["state"], "granted");
    assert_eq!(event["method"], "web_form");
    assert_eq!(event["notice_version"], "v1");
    assert_eq!(
        event["notice_sha256"],
        data_encoding::HEXLOWER
            .encode(&sha256(&[NOTICE.as_bytes()]))
            .as_str()
    );
    assert_eq!(
        event["evidence"]["source"],
        "https://shop.example/newsletter"
    );
    assert_eq!(event["evidence"]["locale"], "de");
    assert_eq!(event["evidence"]["prechecked"], false);
    assert!(
        event["integration_id"]
            .as_str()
            .unwrap()
            .starts_with("int_")
    );
    assert_eq!(overview["consents"][0]["state"], "granted");
    // The evidence's personal parts are only stored encrypted.
    let raw = app.raw_database_bytes().await;
    let source = b"shop.example/newsletter";
    assert!(!raw.windows(source.len()).any(|w| w == source));
}

#[tokio::test]
async fn consent_events_are_append_only_audited_and_reach_integrators() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let receiver = crate::fakes::Receiver::start().await;
    let (integration, crm) = app
        .integration_with_key("crm", &["consents:read", "subjects:write"])
        .await;
    // A second integration that never came to know the subject.
    let (stranger, _) = app.integration_with_key("shop", &["consents:read"]).await;
    for id in [&integration, &stranger] {
        let endpoint = app
            .post(
                &format!("/v1/integrations/{id}/webhooks"),
                &app.admin_key,
                &json!({"url": receiver.url(), "events": ["consent.changed"]}),
            )
            .await;
        assert_eq!(endpoint.status(), 201);
    }
    let who = phone(1000);
    let registered = app.post("/v1/subjects", &crm, &json!({"phone": who})).await;
    assert_eq!(registered.status(), 201);
    let subject = grant(&app, &who, "newsletter").await;
    says(&app, &who, "STOP").await;
    let deliveries = eventually("two consent.changed events", || async {
        let got = receiver.deliveries();
        (got.len() >= 2).then_some(got)
    })
    .await;
    let states: Vec<Value> = deliveries
        .iter()
        .map(|d| d.json()["data"]["state"].clone())
        .collect();
    assert!(states.contains(&json!("granted")) && states.contains(&json!("withdrawn")));
    for d in &deliveries {
        let body = d.json();
        assert_eq!(body["type"], "consent.changed");
        assert_eq!(body["data"]["subject_id"], subject.as_str());
    }
    // Events about the subject go to the integrations linked to it only.
    let rows_for = |integration: String| {
        let app = &app;
        async move {
            app.count(&format!(
                "SELECT COUNT(*) FROM webhook_deliveries AS d JOIN webhook_endpoints AS e
                 ON e.id = d.endpoint_id WHERE e.integration_id = '{integration}'"
            ))
            .await
        }
    };
    assert_eq!(
        rows_for(integration.clone()).await,
        4,
        "granted; the channel opt-in, newsletter and offers withdrawn"
    );
    assert_eq!(rows_for(stranger.clone()).await, 0);
    assert_eq!(
        audited(&app, "consent.changed").await,
        4,
        "granted; the channel opt-in, newsletter and offers withdrawn"
    );
    // No UPDATE or DELETE on the ledger, whoever asks.
    for sql in [
        "UPDATE consent_events SET state = 'granted'",
        "DELETE FROM consent_events",
    ] {
        assert!(app.try_execute_sql(sql).await.is_err(), "{sql}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM consent_events").await, 4);
}

#[tokio::test]
async fn bad_consent_requests_are_refused_with_a_clear_code_and_change_nothing() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(1100);
    let subject = subject_of(&app, &who).await;
    let now = app.clock.now().to_rfc3339();
    let put = |purpose: &str, evidence: Value| {
        let path = format!("/v1/subjects/{subject}/consents/{purpose}");
        let app = &app;
        async move {
            app.put(&path, &app.admin_key, &json!({"evidence": evidence}))
                .await
        }
    };
    let cases = [
        (
            "newsletter",
            json!({"method": "web_form", "notice_version": "v1", "captured_at": now, "prechecked": true}),
            400,
            "invalid_request",
        ),
        (
            "newsletter",
            json!({"method": "web_form", "notice_version": "v9", "captured_at": now}),
            400,
            "invalid_request",
        ),
        (
            "newsletter",
            json!({"method": "web_form", "captured_at": now}),
            400,
            "invalid_request",
        ),
        (
            "newsletter",
            json!({"method": "double_opt_in", "notice_version": "v1", "captured_at": now}),
            400,
            "invalid_request",
        ),
        (
            "newsletter",
            json!({"method": "web_form", "notice_version": "v1", "captured_at": "yesterday"}),
            400,
            "invalid_request",
        ),
        (
            "newsletter",
            json!({"method": "web_form", "notice_version": "v1", "captured_at": (app.clock.now() + TimeDelta::hours(1)).to_rfc3339()}),
            400,
            "invalid_request",
        ),
        (
            "newsletter",
            json!({"method": "web_form", "notice_version": "v1", "captured_at": now, "extra": 1}),
            400,
            "invalid_request",
        ),
        (
            "nope",
            json!({"method": "api", "captured_at": now}),
            422,
            "unknown_purpose",
        ),
        (
            "herald.consent_notice",
            json!({"method": "api", "captured_at": now}),
            422,
            "unknown_purpose",
        ),
    ];
    for (purpose, evidence, status, code) in cases {
        assert_problem(put(purpose, evidence.clone()).await, status, code).await;
    }
    assert_problem(
        app.put(
            "/v1/subjects/sub_nope/consents/newsletter",
            &app.admin_key,
            &json!({"evidence": {"method": "api", "notice_version": "v1", "captured_at": now}}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM consent_events").await, 0);
    // Scopes: reading consents needs consents:read, changing them consents:write.
    let (_, reader) = app.integration_with_key("reader", &["consents:read"]).await;
    assert_problem(
        app.put(
            &format!("/v1/subjects/{subject}/consents/newsletter"),
            &reader,
            &json!({"evidence": {"method": "api", "notice_version": "v1", "captured_at": now}}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // Reading needs the subject to be the reader's own: not linked, it does not exist for it.
    assert_problem(
        app.get(&format!("/v1/subjects/{subject}/consents"), &reader)
            .await,
        404,
        "not_found",
    )
    .await;
    let (_, linked_reader) = app
        .integration_with_key("linked-reader", &["consents:read", "subjects:write"])
        .await;
    let registered = app
        .post("/v1/subjects", &linked_reader, &json!({"phone": who}))
        .await;
    assert_eq!(registered.status(), 200);
    assert_eq!(
        app.get(&format!("/v1/subjects/{subject}/consents"), &linked_reader)
            .await
            .status(),
        200
    );
    // Double opt-in without a configured template: a clear 422.
    let plain = TestApp::spawn_with(configure_messaging).await;
    assert_problem(
        plain
            .post(
                "/v1/opt-ins",
                &plain.admin_key,
                &json!({"to": phone(1101), "purpose": "order_updates", "notice_version": "v1"}),
            )
            .await,
        422,
        "opt_in_not_configured",
    )
    .await;
}

#[tokio::test]
async fn a_frequency_cap_answers_429_with_retry_after() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(1200);
    grant(&app, &who, "reminders").await;
    accepted(&app, &template("reminders", &who)).await;
    app.clock.advance(TimeDelta::hours(1));
    accepted(&app, &template("reminders", &who)).await;
    let capped = app
        .post("/v1/messages", &app.admin_key, &template("reminders", &who))
        .await;
    assert_eq!(capped.status(), 429);
    let retry_after: i64 = capped.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        retry_after,
        23 * 3600,
        "free again when the first leaves the 24-hour window"
    );
    assert_eq!(json(capped).await["code"], "rate_limited");
    // Another purpose is not capped by it; the cap lifts with time.
    accepted(&app, &template("order_updates", &who)).await;
    app.clock.advance(TimeDelta::hours(23));
    accepted(&app, &template("reminders", &who)).await;
}

#[tokio::test]
async fn a_frequency_cap_holds_under_50_concurrent_sends() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(1210);
    grant(&app, &who, "reminders").await;
    let sends: Vec<_> = (0..50)
        .map(|_| {
            let request = app
                .request(reqwest::Method::POST, "/v1/messages", &app.admin_key)
                .json(&template("reminders", &who));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for send in sends {
        statuses.push(send.await.unwrap());
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((accepted, limited), (2, 48), "{statuses:?}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE purpose = 'reminders'")
            .await,
        2
    );
    assert_eq!(audited(&app, "message.refused").await, 48);
}

#[tokio::test]
async fn every_sent_message_names_the_basis_and_consent_it_relied_on() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(1300);
    let subject = grant(&app, &who, "newsletter").await;
    let grant_id = consents(&app, &subject).await["history"][0]["id"].clone();
    // Consent basis: its own consent.
    let id = accepted(&app, &template("newsletter", &who)).await;
    let m = message(&app, &app.admin_key, &id).await;
    assert_eq!(
        m["basis"],
        json!({"lawful_basis": "consent", "consent_event_id": grant_id})
    );
    // A contract template outside any conversation: the WhatsApp opt-in it relied on.
    let id = accepted(&app, &template("order_updates", &who)).await;
    let m = message(&app, &app.admin_key, &id).await;
    assert_eq!(
        m["basis"],
        json!({"lawful_basis": "contract", "consent_event_id": grant_id})
    );
    // A reply in the window under a contract needs no consent, and names none.
    says(&app, &who, "Danke!").await;
    let id = accepted(&app, &text("order_updates", &who)).await;
    let m = message(&app, &app.admin_key, &id).await;
    assert_eq!(
        m["basis"],
        json!({"lawful_basis": "contract", "consent_event_id": null})
    );
    // The acceptance's audit entry names it too.
    app.herald.audit().seal().await.unwrap();
    let entries = app.herald.audit().entries(0, 10_000).await.unwrap();
    let relied: Vec<Value> = entries
        .iter()
        .map(|e| e.export_json())
        .filter(|e| e["action"] == "message.accepted")
        .map(|e| e["details"]["consent_event_id"].clone())
        .collect();
    assert_eq!(relied, [grant_id.clone(), grant_id, Value::Null]);
}

#[tokio::test]
async fn concurrent_changes_to_one_record_all_land_in_order() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let who = phone(1400);
    let subject = grant(&app, &who, "newsletter").await;
    // Grants and withdrawals of the same record at once: each is appended, none is lost, and
    // the kept state is the last one appended.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..16 {
        let client = app.client.clone();
        let url = app.url(&format!("/v1/subjects/{subject}/consents/newsletter"));
        let key = app.admin_key.clone();
        let captured_at = app.clock.now().to_rfc3339();
        tasks.spawn(async move {
            let request = if n % 2 == 0 {
                client.delete(&url)
            } else {
                client.put(&url).json(&json!({"evidence": {"method": "api",
                    "notice_version": "v1", "captured_at": captured_at}}))
            };
            request
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let overview = consents(&app, &subject).await;
    let history = overview["history"].as_array().unwrap();
    // Every grant is recorded (a repeated grant is new evidence); withdrawing what is already
    // withdrawn records nothing new.
    let granted = history.iter().filter(|h| h["state"] == "granted").count();
    assert_eq!(granted, 1 + 8);
    let withdrawn = history.iter().filter(|h| h["state"] == "withdrawn").count();
    assert!((1..=8).contains(&withdrawn), "{withdrawn}");
    let last = history.last().unwrap();
    assert_eq!(overview["consents"][0]["state"], last["state"]);
}

//! The incident register through the API (compliance GDPR-33, GDPR-34, HIPAA-404): clocks on
//! read under the injected clock, the state machine, the late-notification rule, encryption
//! of the free text, audit entries, validation and scopes.

use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::delivery::audited;
use crate::helpers::{TestApp, assert_problem, json};

const SUMMARY: &str = "An API key of the web shop was found in a public repository";

async fn patch(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.request(
        reqwest::Method::PATCH,
        &format!("/v1/incidents/{id}"),
        &app.admin_key,
    )
    .json(&body)
    .send()
    .await
    .unwrap()
}

fn clock<'a>(incident: &'a Value, name: &str) -> &'a Value {
    incident["clocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clock"] == name)
        .unwrap_or_else(|| panic!("no clock {name}: {incident}"))
}

/// A scope that finds nobody: the `controllers` clock needs one before it can be
/// not applicable.
async fn scope_nobody(app: &TestApp, id: &str) {
    let from = (app.clock.now() - chrono::TimeDelta::hours(3)).to_rfc3339();
    let response = app
        .post(
            &format!("/v1/incidents/{id}/scope"),
            &app.admin_key,
            &json!({"route": "/v1/none", "from": from}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["scope"]["subjects"], 0);
}

async fn open(app: &TestApp) -> Value {
    let now = app.clock.now();
    let response = app
        .post(
            "/v1/incidents",
            &app.admin_key,
            &json!({
                "summary": SUMMARY,
                "detected_at": (now - chrono::TimeDelta::hours(2)).to_rfc3339(),
                "became_aware_at": (now - chrono::TimeDelta::hours(1)).to_rfc3339(),
                "kinds": ["confidentiality"],
                "data_categories": ["contact_data", "message_content"],
                "source": "report",
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    json(response).await
}

#[tokio::test]
async fn an_incident_runs_its_clocks_through_assessment_notification_and_closing() {
    let app = TestApp::spawn().await;
    let opened = open(&app).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("inc_"));
    assert_eq!(opened["status"], "open");
    assert_eq!(opened["summary"], SUMMARY);
    let aware = app.clock.now() - chrono::TimeDelta::hours(1);
    let authority = clock(&opened, "gdpr_authority");
    assert_eq!(authority["status"], "pending");
    assert_eq!(
        authority["due_at"],
        (aware + chrono::TimeDelta::hours(72)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert_eq!(authority["basis"], "GDPR Art. 33(1)");
    assert_eq!(clock(&opened, "gdpr_subjects")["missing"], json!(["risk"]));
    assert_eq!(
        clock(&opened, "hipaa_individuals")["missing"],
        json!(["phi_involved"])
    );
    // The summary is stored encrypted: not in the database file, not in the audit trail.
    assert!(
        !app.raw_database_bytes()
            .await
            .windows(SUMMARY.len())
            .any(|w| w == SUMMARY.as_bytes()),
        "the summary is stored in clear"
    );
    assert_eq!(audited(&app, "incident.opened").await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE body LIKE '%{}%'",
            &SUMMARY[..20]
        ))
        .await,
        0
    );

    // Assessing needs a risk.
    assert_problem(
        patch(&app, &id, json!({"status": "assessed"})).await,
        409,
        "invalid_transition",
    )
    .await;
    let assessed = json(
        patch(
            &app,
            &id,
            json!({"status": "assessed", "risk": "high", "phi_involved": false,
                   "assessment": "Contact data of customers may have been read"}),
        )
        .await,
    )
    .await;
    assert_eq!(assessed["status"], "assessed");
    assert_eq!(clock(&assessed, "gdpr_subjects")["status"], "pending");
    assert_eq!(
        clock(&assessed, "hipaa_individuals")["status"],
        "not_applicable"
    );

    // 72 hours pass: the authority's clock is overdue, and the register says so.
    app.clock.advance(chrono::TimeDelta::hours(72));
    let overdue = json(
        app.get("/v1/incidents?status=overdue", &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(overdue["data"].as_array().unwrap().len(), 1);
    assert_eq!(overdue["data"][0]["overdue"], true);
    assert_eq!(
        clock(&overdue["data"][0], "gdpr_authority")["status"],
        "overdue"
    );

    // Told late: the reasons for the delay are required (Art. 33(1)).
    let told = app.clock.now().to_rfc3339();
    assert_problem(
        patch(&app, &id, json!({"authority_notified_at": told})).await,
        422,
        "delay_reason_required",
    )
    .await;
    let late = json(
        patch(
            &app,
            &id,
            json!({"authority_notified_at": told,
                   "delay_reason": "the key's scope had to be established first"}),
        )
        .await,
    )
    .await;
    assert_eq!(clock(&late, "gdpr_authority")["status"], "met_late");

    // Notified (the authority was), but not closed while the people affected are still to be
    // told.
    let notified = json(patch(&app, &id, json!({"status": "notified"})).await).await;
    assert_eq!(notified["status"], "notified");
    assert_problem(
        patch(&app, &id, json!({"status": "closed"})).await,
        409,
        "invalid_transition",
    )
    .await;
    // Whose data it was must be asked of the audit trail before the incident can close.
    assert_eq!(clock(&notified, "controllers")["missing"], json!(["scope"]));
    scope_nobody(&app, &id).await;
    let notified = json(
        patch(
            &app,
            &id,
            json!({"subjects_notified_at": app.clock.now().to_rfc3339(), "status": "closed"}),
        )
        .await,
    )
    .await;
    assert_eq!(notified["status"], "closed");
    assert_eq!(clock(&notified, "gdpr_subjects")["status"], "met");
    // Closed incidents leave the open list; a closed one moves nowhere.
    let open_list = json(app.get("/v1/incidents?status=open", &app.admin_key).await).await;
    assert!(open_list["data"].as_array().unwrap().is_empty());
    assert_problem(
        patch(&app, &id, json!({"status": "open"})).await,
        409,
        "invalid_transition",
    )
    .await;
    assert_eq!(audited(&app, "incident.updated").await, 4);
    let one = json(
        app.get(&format!("/v1/incidents/{id}"), &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(
        one["delay_reason"],
        "the key's scope had to be established first"
    );
}

#[tokio::test]
async fn an_unlikely_risk_needs_its_reason_and_stops_the_gdpr_clocks() {
    let app = TestApp::spawn().await;
    let id = open(&app).await["id"].as_str().unwrap().to_owned();
    let refused = assert_problem(
        patch(&app, &id, json!({"risk": "unlikely", "status": "assessed"})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(refused["errors"][0]["field"], "unlikely_reason");
    let assessed = json(
        patch(
            &app,
            &id,
            json!({"risk": "unlikely", "status": "assessed", "phi_involved": false,
                   "unlikely_reason": "the key was revoked before any use (audit trail)"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        clock(&assessed, "gdpr_authority")["status"],
        "not_applicable"
    );
    // Nothing is pending: it may be closed straight from assessed.
    scope_nobody(&app, &id).await;
    let closed = json(patch(&app, &id, json!({"status": "closed"})).await).await;
    assert_eq!(closed["status"], "closed");
}

#[tokio::test]
async fn bad_incidents_are_refused_with_the_field_and_scopes_hold() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    let base = json!({"summary": "x", "detected_at": now.to_rfc3339(),
                      "became_aware_at": now.to_rfc3339(), "kinds": ["integrity"],
                      "source": "alert"});
    for (change, field) in [
        (json!({"kinds": ["secrecy"]}), "kinds"),
        (json!({"kinds": []}), "kinds"),
        (json!({"source": "Not An Identifier"}), "source"),
        (json!({"summary": ""}), "summary"),
        (
            json!({"became_aware_at": (now - chrono::TimeDelta::hours(1)).to_rfc3339()}),
            "became_aware_at",
        ),
        (
            json!({"detected_at": (now + chrono::TimeDelta::hours(1)).to_rfc3339(),
                   "became_aware_at": (now + chrono::TimeDelta::hours(1)).to_rfc3339()}),
            "became_aware_at",
        ),
        (json!({"detected_at": "yesterday"}), "detected_at"),
    ] {
        let mut body = base.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let problem = assert_problem(
            app.post("/v1/incidents", &app.admin_key, &body).await,
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let mut unknown = base.clone();
    unknown["severity"] = json!("high");
    assert_problem(
        app.post("/v1/incidents", &app.admin_key, &unknown).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM incidents").await,
        0,
        "nothing was written"
    );
    assert_problem(
        app.get(
            "/v1/incidents/inc_06h2ftkqu3rt85cij90ad2r0kg",
            &app.admin_key,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let (_, reader) = app.integration_with_key("dpo", &["incidents:read"]).await;
    assert_problem(
        app.post("/v1/incidents", &reader, &base).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(app.get("/v1/incidents", &reader).await.status(), 200);
}

#[tokio::test]
async fn the_command_line_opens_lists_and_shows_incidents() {
    use crate::process::{base_env, run};
    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::TestDb::new().await;
    let env = base_env(&db);
    let now = chrono::Utc::now();
    let aware = (now - chrono::TimeDelta::hours(80)).to_rfc3339();
    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &[
            "incidents",
            "open",
            "--summary",
            SUMMARY,
            "--detected-at",
            &aware,
            "--became-aware-at",
            &aware,
            "--kind",
            "confidentiality",
            "--category",
            "contact_data",
            "--source",
            "report",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let opened: Value = serde_json::from_str(&stdout).unwrap();
    let id = opened["data"][0]["id"].as_str().unwrap().to_owned();
    // Aware 80 hours ago and nobody told: overdue.
    assert_eq!(opened["data"][0]["overdue"], true);
    let (code, stdout, _) = run(
        dir.path(),
        &env,
        &["incidents", "list", "--status", "overdue", "--json"],
    )
    .await;
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    let (code, stdout, _) = run(dir.path(), &env, &["incidents", "show", &id]).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("gdpr_authority") && stdout.contains("overdue"),
        "{stdout}"
    );
    let (code, _, stderr) = run(dir.path(), &env, &["incidents", "show", "inc_nope"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not an incident id"), "{stderr}");
    // The scope from the command line: nobody's requests in this database, so nobody found —
    // but the window was read and the scope recorded.
    let from = (now - chrono::TimeDelta::hours(100)).to_rfc3339();
    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &[
            "incidents",
            "scope",
            &id,
            "--route",
            "/v1/subjects/{id}",
            "--from",
            &from,
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let scoped: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(scoped["scope"]["by"], "route");
    assert_eq!(scoped["scope"]["subjects"], 0);
    assert!(
        scoped["scope"]["entries_scanned"].as_u64().unwrap() >= 1,
        "{scoped}"
    );
    let (code, _, stderr) = run(
        dir.path(),
        &env,
        &[
            "incidents",
            "scope",
            &id,
            "--credential",
            "sub_x",
            "--from",
            &from,
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("API key id"), "{stderr}");
    // The drafts, late: the authority's draft asks for the reasons for the delay.
    let (code, stdout, stderr) = run(dir.path(), &env, &["incidents", "drafts", &id]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("to the supervisory authority"), "{stdout}");
    assert!(stdout.contains("[MISSING: delay_reason]"), "{stdout}");
    assert!(stdout.contains("[MISSING: dpo_contact]"), "{stdout}");
}

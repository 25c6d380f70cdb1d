//! The register of rights requests (issue 6 item 5; GDPR Art. 12(3)): due dates with the
//! end-of-month rule, extensions before the due date and by two months at most, open, overdue
//! and done, audited; the command line lists it.

use chrono::{TimeDelta, TimeZone, Utc};
use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::delivery::audited;
use crate::helpers::{TestApp, assert_problem, json};

fn at(y: i32, m: u32, d: u32, h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 30, 0).unwrap()
}

fn text(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn log(app: &TestApp, kind: &str, received: chrono::DateTime<Utc>) -> Value {
    let response = app
        .post(
            "/v1/requests",
            &app.admin_key,
            &json!({"kind": kind, "received_at": received.to_rfc3339(), "channel": "email"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    json(response).await
}

async fn list(app: &TestApp, query: &str) -> Vec<Value> {
    let response = app
        .get(&format!("/v1/requests{query}"), &app.admin_key)
        .await;
    assert_eq!(response.status(), 200);
    json(response).await["data"].as_array().unwrap().clone()
}

fn ids(items: &[Value]) -> Vec<&str> {
    items.iter().map(|r| r["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn due_dates_extensions_and_the_overdue_list() {
    let app = TestApp::spawn().await;
    // The clock stands at 31 January 2030, 10:00 (the harness starts at 2030-01-01; keys live 90 days).
    app.clock
        .advance(at(2030, 1, 31, 10) - app.clock.now() - TimeDelta::minutes(30));
    let subject = json(
        app.post(
            "/v1/subjects",
            &app.admin_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let received = at(2030, 1, 31, 9);
    let access = app
        .post(
            "/v1/requests",
            &app.admin_key,
            &json!({"kind": "access", "subject_id": subject, "received_at": received.to_rfc3339()}),
        )
        .await;
    assert_eq!(access.status(), 201);
    let access = json(access).await;
    assert!(access["id"].as_str().unwrap().starts_with("dsr_"));
    assert_eq!(access["status"], "open");
    // 31 January → 28 February (2030 is not a leap year).
    assert_eq!(access["due_at"], text(at(2030, 2, 28, 9)));
    let erasure = log(&app, "erasure", at(2030, 1, 15, 9)).await;
    assert_eq!(erasure["due_at"], text(at(2030, 2, 15, 9)));

    // Extended by two months before the due date: counted from receipt, 30 April.
    let id = access["id"].as_str().unwrap();
    let extended = app
        .post(
            &format!("/v1/requests/{id}/extend"),
            &app.admin_key,
            &json!({"months": 2, "reason": "Many requests from one household at once"}),
        )
        .await;
    assert_eq!(extended.status(), 200);
    let extended = json(extended).await;
    assert_eq!(extended["due_at"], text(at(2030, 4, 30, 9)));
    assert_eq!(extended["extended_months"], 2);
    assert_eq!(
        extended["extension_reason"],
        "Many requests from one household at once"
    );
    // Never beyond two further months.
    assert_problem(
        app.post(
            &format!("/v1/requests/{id}/extend"),
            &app.admin_key,
            &json!({"months": 1, "reason": "still more"}),
        )
        .await,
        409,
        "extension_exceeds_limit",
    )
    .await;

    // The erasure request passes its due date unanswered: overdue, and too late to extend.
    app.clock.advance(TimeDelta::days(16));
    assert_eq!(
        ids(&list(&app, "?status=overdue").await),
        [erasure["id"].as_str().unwrap()]
    );
    let open = list(&app, "?status=open").await;
    assert_eq!(open.len(), 2, "open includes overdue");
    let late = erasure["id"].as_str().unwrap();
    assert_problem(
        app.post(
            &format!("/v1/requests/{late}/extend"),
            &app.admin_key,
            &json!({"months": 1, "reason": "too late"}),
        )
        .await,
        409,
        "extension_too_late",
    )
    .await;
    // Done.
    let done = app
        .post(
            &format!("/v1/requests/{late}/complete"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(done.status(), 200);
    assert_eq!(json(done).await["status"], "done");
    assert_eq!(ids(&list(&app, "?status=done").await), [late]);
    assert!(list(&app, "?status=overdue").await.is_empty());
    assert_eq!(list(&app, "").await.len(), 2);
    assert_problem(
        app.post(
            &format!("/v1/requests/{late}/extend"),
            &app.admin_key,
            &json!({"months": 1, "reason": "after the fact"}),
        )
        .await,
        409,
        "request_closed",
    )
    .await;

    // Every change is audited, the reason only encrypted.
    assert_eq!(audited(&app, "rights_request.logged").await, 2);
    assert_eq!(audited(&app, "rights_request.extended").await, 1);
    assert_eq!(audited(&app, "rights_request.completed").await, 1);
    let raw = app.raw_database_bytes().await;
    let reason = b"household";
    assert!(!raw.windows(reason.len()).any(|w| w == reason));
}

#[tokio::test]
async fn bad_register_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    let bad = [
        (
            json!({"kind": "complaint", "received_at": now.to_rfc3339()}),
            400,
            "invalid_request",
        ),
        (
            json!({"kind": "access", "received_at": "last week"}),
            400,
            "invalid_request",
        ),
        (
            json!({"kind": "access", "received_at": (now + TimeDelta::days(1)).to_rfc3339()}),
            400,
            "invalid_request",
        ),
        (
            json!({"kind": "access", "received_at": now.to_rfc3339(), "subject_id": "nope"}),
            400,
            "invalid_request",
        ),
        (
            json!({"kind": "access", "received_at": now.to_rfc3339(), "channel": "e mail!"}),
            400,
            "invalid_request",
        ),
        (
            json!({"kind": "access", "received_at": now.to_rfc3339(), "extra": true}),
            400,
            "invalid_request",
        ),
        (
            json!({"kind": "access", "received_at": now.to_rfc3339(), "subject_id": "sub_00000000000000000000000000"}),
            404,
            "not_found",
        ),
    ];
    for (body, status, code) in bad {
        assert_problem(
            app.post("/v1/requests", &app.admin_key, &body).await,
            status,
            code,
        )
        .await;
    }
    assert_problem(
        app.get("/v1/requests?status=late", &app.admin_key).await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.get("/v1/requests?phone=1", &app.admin_key).await,
        400,
        "invalid_request",
    )
    .await;
    let logged = log(&app, "objection", now).await;
    let id = logged["id"].as_str().unwrap();
    for (body, code) in [
        (json!({"months": 3, "reason": "x"}), "invalid_request"),
        (json!({"months": 1, "reason": "  "}), "invalid_request"),
    ] {
        assert_problem(
            app.post(&format!("/v1/requests/{id}/extend"), &app.admin_key, &body)
                .await,
            400,
            code,
        )
        .await;
    }
    assert_problem(
        app.post(
            "/v1/requests/dsr_00000000000000000000000000/complete",
            &app.admin_key,
            &json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM rights_requests").await, 1);
    // Scopes: the register is read with subjects:read and changed with subjects:write.
    let (_, reader) = app.integration_with_key("dpo", &["subjects:read"]).await;
    assert_eq!(app.get("/v1/requests", &reader).await.status(), 200);
    assert_problem(
        app.post(
            "/v1/requests",
            &reader,
            &json!({"kind": "access", "received_at": now.to_rfc3339()}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn the_command_line_lists_the_register() {
    use crate::process::{Server, admin_key, base_env, run};
    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::TestDb::new().await;
    let env = base_env(&db);
    let server = Server::start(dir.path(), &env).await;
    let admin = admin_key(&server.stdout.lock().unwrap().join("\n"));
    let client = reqwest::Client::new();
    let received = Utc::now() - TimeDelta::days(40);
    for kind in ["access", "erasure"] {
        let response = client
            .post(server.url("/v1/requests"))
            .bearer_auth(&admin)
            .json(&json!({"kind": kind, "received_at": received.to_rfc3339()}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let (code, stdout, stderr) = run(dir.path(), &env, &["requests", "list", "--json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).expect("one JSON document");
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    // Received 40 days ago and unanswered: overdue.
    assert!(data.iter().all(|r| r["status"] == "overdue"), "{listed}");
    let (code, stdout, _) = run(dir.path(), &env, &["requests", "list", "--status", "done"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.trim().is_empty(), "{stdout}");
    let (code, stdout, _) = run(
        dir.path(),
        &env,
        &["requests", "list", "--status", "overdue"],
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.lines().filter(|l| l.contains("overdue")).count(),
        2,
        "{stdout}"
    );
    let (code, _, stderr) = run(dir.path(), &env, &["requests", "list", "--status", "late"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    server.terminate().await;
}

//! The audit trail cannot be flooded, rewritten or cut short unnoticed (issue 14 item 8;
//! compliance.md GDPR-5.2, HIPAA-312b): reads name what they read, anonymous failures are
//! aggregated per source, the tables refuse UPDATE and DELETE, and a graceful stop checkpoints
//! the head so truncating what came last is found.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::helpers::{TestApp, json};
use crate::process::{Server, admin_key, base_env, past_the_guards, run};

async fn entries(app: &TestApp, action: &str) -> Vec<Value> {
    crate::audit::entries(app)
        .await
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

#[tokio::test]
async fn every_read_of_personal_data_names_its_target() {
    let app = TestApp::spawn_with(crate::messages::configure_messaging).await;
    let subject = app.opt_in("+4915112345678", "order_updates").await;
    let sent = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &crate::messages::template_send("+4915112345678"),
        )
        .await;
    let message = json(sent).await["id"].as_str().unwrap().to_owned();
    for path in [
        format!("/v1/subjects/{subject}"),
        format!("/v1/subjects/{subject}/consents"),
        format!("/v1/messages/{message}"),
    ] {
        assert_eq!(app.get(&path, &app.admin_key).await.status(), 200, "{path}");
    }
    let reads = entries(&app, "api.request").await;
    let targets: Vec<(&str, &str)> = reads
        .iter()
        .filter(|e| e["details"]["method"] == "GET")
        .map(|e| {
            (
                e["details"]["route"].as_str().unwrap(),
                e["target"]["id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        targets.contains(&("/v1/subjects/{id}", subject.as_str())),
        "{targets:?}"
    );
    assert!(
        targets.contains(&("/v1/subjects/{id}/consents", subject.as_str())),
        "{targets:?}"
    );
    assert!(
        targets.contains(&("/v1/messages/{id}", message.as_str())),
        "{targets:?}"
    );
    // The export and the look-up are recorded by their capability, with the subject.
    assert_eq!(
        app.get(&format!("/v1/subjects/{subject}/export"), &app.admin_key)
            .await
            .status(),
        200
    );
    let exported = entries(&app, "subject.exported").await;
    assert_eq!(exported[0]["target"]["id"], subject.as_str());
    let looked_up = app
        .post(
            "/v1/subjects/lookup",
            &app.admin_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await;
    assert_eq!(looked_up.status(), 200);
    let lookups = entries(&app, "subject.looked_up").await;
    assert_eq!(lookups[0]["target"]["id"], subject.as_str());
}

#[tokio::test]
async fn a_thousand_bad_keys_from_one_address_leave_a_handful_of_entries_with_the_count() {
    // The aggregation of the audit trail, not the source limit (limits.rs tests that one),
    // which would answer most of these 429 after the first twenty.
    let app = TestApp::spawn_with(|config| {
        config.limits.source_failures = herald::config::RateConfig {
            per_minute: 100_000,
            burst: 100_000,
        };
    })
    .await;
    let before = entries(&app, "auth.failed").await.len();
    let requests: Vec<_> = (0..1000)
        .map(|i| {
            let request = app
                .client
                .get(app.url("/v1/integrations"))
                .bearer_auth(format!("hk_{}", "0".repeat(40 + i % 3)));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 401);
    }
    let now = entries(&app, "auth.failed").await;
    assert!(now.len() - before <= 3, "{} entries", now.len() - before);
    // The minute over, one more entry carries the rest of the count.
    app.clock.advance(TimeDelta::seconds(61));
    app.herald.audit().flush_failures(false).await.unwrap();
    let after = entries(&app, "auth.failed").await;
    assert!(
        after.len() - before <= 6,
        "{} entries",
        after.len() - before
    );
    let counted: u64 = after[before..]
        .iter()
        .map(|e| e["details"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 1000);
    for entry in &after[before..] {
        assert_eq!(entry["details"]["source"], "127.0.0.0/24");
        assert_eq!(entry["actor"]["type"], "anonymous");
    }
}

#[tokio::test]
async fn the_audit_tables_refuse_update_and_delete() {
    // The background sealer is held off so that what this test leaves pending stays pending.
    let app = TestApp::spawn_with(|config| {
        config.audit.seal_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    for _ in 0..3 {
        app.get("/v1/integrations", &app.admin_key).await;
    }
    app.herald.audit().seal().await.unwrap();
    // Something pending (not yet sealed) as well.
    app.get("/v1/integrations", &app.admin_key).await;
    assert!(app.count("SELECT COUNT(*) FROM audit_pending").await > 0);
    assert!(app.count("SELECT COUNT(*) FROM audit_log").await > 3);
    for sql in [
        "UPDATE audit_log SET body = body",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
        "UPDATE audit_checkpoints SET signature = signature",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_pending SET body = body",
        "DELETE FROM audit_pending",
        "UPDATE audit_seal_mark SET sealed_through = 0",
        "DELETE FROM audit_seal_mark",
    ] {
        assert!(app.try_execute_sql(sql).await.is_err(), "{sql} was allowed");
    }
    if app.db.is_postgres() {
        for table in ["audit_log", "audit_pending", "audit_checkpoints"] {
            let truncate = format!("TRUNCATE {table}");
            assert!(app.try_execute_sql(&truncate).await.is_err(), "{truncate}");
        }
    }
    // Retention still prunes, behind its signed horizon.
    let verified = json(app.get("/v1/audit/verify", &app.admin_key).await).await;
    assert_eq!(verified["ok"], true);
}

#[tokio::test]
async fn after_a_graceful_stop_cutting_off_the_last_entries_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::TestDb::new().await;
    let mut env = base_env(&db);
    // A long interval: only the stop's own checkpoint covers the last entries.
    env.insert("HERALD_AUDIT__CHECKPOINT_INTERVAL".into(), "1h".into());
    let server = Server::start(dir.path(), &env).await;
    let admin = admin_key(&server.stdout.lock().unwrap().join("\n"));
    let client = reqwest::Client::new();
    for _ in 0..5 {
        client
            .get(server.url("/v1/integrations"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
    }
    let (code, _, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    let (code, stdout, stderr) = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // Someone in control of the database removes the last entries (past the guards).
    let cut = "DELETE FROM audit_log WHERE seq > (SELECT MAX(seq) - 3 FROM audit_log)";
    past_the_guards(&db, dir.path(), "audit_log_delete_behind_horizon", cut).await;
    let (code, stdout, stderr) = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("does NOT verify"), "{stdout}");
}

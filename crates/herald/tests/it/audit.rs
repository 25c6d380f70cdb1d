//! The audit trail (issue 3; compliance.md HIPAA-312b, HIPAA-312c, AUDIT-NOPII,
//! AUDIT-FAILSAFE): what is recorded, with what, sealed and signed how, and that every kind of
//! tampering is found — by Herald and by the independent verifier in tools/.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use herald::startup::Herald;
use herald_domain::audit::{Initiator, Problem, Report, chain};
use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::helpers::{SqlValue, TestApp, assert_problem, json};

/// Every sealed entry, through the API.
pub(crate) async fn entries(app: &TestApp) -> Vec<Value> {
    app.herald.audit().seal().await.unwrap();
    let mut all = Vec::new();
    let mut after = 0u64;
    loop {
        let page = json(
            app.get(
                &format!("/v1/audit?limit=500&after={after}"),
                &app.admin_key,
            )
            .await,
        )
        .await;
        let data = page["data"].as_array().unwrap().clone();
        if data.is_empty() {
            break;
        }
        after = data.last().unwrap()["seq"].as_u64().unwrap();
        all.extend(data);
        if page["next"].is_null() {
            break;
        }
    }
    all
}

fn with_action<'a>(entries: &'a [Value], action: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["action"] == action).collect()
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_security_relevant_event_is_recorded_with_who_what_and_which_request() {
    let app = TestApp::spawn().await;
    let admin_integration =
        json(app.get("/v1/integrations", &app.admin_key).await).await["data"][0]["id"].clone();

    let created = app
        .post("/v1/integrations", &app.admin_key, &json!({"name": "shop"}))
        .await;
    let create_request = request_id(&created);
    let shop = json(created).await["id"].as_str().unwrap().to_owned();
    let key = json(
        app.post(
            &format!("/v1/integrations/{shop}/keys"),
            &app.admin_key,
            &json!({"scopes": ["subjects:write", "subjects:read"]}),
        )
        .await,
    )
    .await;
    let shop_key = key["key"].as_str().unwrap().to_owned();
    let shop_key_id = key["id"].as_str().unwrap().to_owned();

    let registered = app
        .post(
            "/v1/subjects",
            &shop_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await;
    let register_request = request_id(&registered);
    let subject = json(registered).await["id"].as_str().unwrap().to_owned();
    app.post(
        "/v1/subjects",
        &shop_key,
        &json!({"phone": "+49 151 12345678"}),
    )
    .await;
    app.post(
        "/v1/subjects/lookup",
        &shop_key,
        &json!({"phone": "+4915112345678"}),
    )
    .await;
    let missing = app
        .post(
            "/v1/subjects/lookup",
            &shop_key,
            &json!({"phone": "+4915199999999"}),
        )
        .await;
    assert_eq!(missing.status(), 404);
    let read = app.get(&format!("/v1/subjects/{subject}"), &shop_key).await;
    let read_request = request_id(&read);
    // Failures: no credential, an unknown one, a missing scope, a revoked key.
    app.client
        .get(app.url("/v1/integrations"))
        .send()
        .await
        .unwrap();
    app.get("/v1/integrations", &format!("hk_{}", "0".repeat(52)))
        .await;
    let forbidden = app.get("/v1/integrations", &shop_key).await;
    assert_eq!(forbidden.status(), 403);
    app.delete(&format!("/v1/keys/{shop_key_id}"), &app.admin_key)
        .await;
    let revoked = app.get(&format!("/v1/subjects/{subject}"), &shop_key).await;
    assert_eq!(revoked.status(), 401);
    // Root-key rotation at the command line, and a verification run.
    let provider = herald_crypto::FileKeyProvider::new(app.config.root_key_file());
    herald_domain::keys::rotate_root(
        app.herald.store().as_ref(),
        &provider,
        app.clock.now(),
        &Initiator::admin(),
    )
    .await
    .unwrap();
    let verified = json(app.get("/v1/audit/verify", &app.admin_key).await).await;
    assert_eq!(verified["ok"], true, "{verified}");
    let app = app.restart().await;

    let all = entries(&app).await;
    // Sequence numbers are contiguous from 1 and every entry carries its hash.
    for (i, entry) in all.iter().enumerate() {
        assert_eq!(entry["seq"], i as u64 + 1);
        assert_eq!(entry["hash"].as_str().unwrap().len(), 64);
    }
    let admin_actor = |e: &Value| e["actor"]["integration_id"] == admin_integration;

    for (action, count) in [
        ("keys.initialised", 1),
        ("audit.signing_key_created", 1),
        ("herald.started", 2),
        ("config.loaded", 2),
        ("herald.stopped", 1),
    ] {
        let found = with_action(&all, action);
        assert_eq!(found.len(), count, "{action}");
        assert!(
            found.iter().all(|e| e["actor"]["type"] == "system"),
            "{action}"
        );
    }
    let config = with_action(&all, "config.loaded")[0];
    assert_eq!(
        config["details"]["config_sha256"].as_str().unwrap().len(),
        64
    );
    // The bootstrap: the admin integration and its key, by the system.
    let bootstrap = with_action(&all, "integration.created");
    assert_eq!(bootstrap[0]["actor"]["type"], "system");
    assert_eq!(bootstrap[0]["target"]["id"], admin_integration);

    let created = bootstrap[1];
    assert!(admin_actor(created));
    assert_eq!(
        created["target"],
        json!({"type": "integration", "id": shop})
    );
    assert_eq!(created["request_id"], create_request.as_str());
    assert_eq!(created["outcome"], "success");

    let key_created = with_action(&all, "api_key.created");
    let shop_key_entry = key_created
        .iter()
        .find(|e| e["target"]["id"] == shop_key_id.as_str())
        .unwrap();
    assert_eq!(
        shop_key_entry["details"]["scopes"],
        json!(["subjects:read", "subjects:write"])
    );
    assert_eq!(shop_key_entry["details"]["integration_id"], shop);

    let registrations = with_action(&all, "subject.registered");
    assert_eq!(registrations.len(), 2);
    assert_eq!(registrations[0]["details"]["created"], true);
    assert_eq!(registrations[1]["details"]["created"], false);
    assert_eq!(registrations[0]["request_id"], register_request.as_str());
    assert_eq!(registrations[0]["actor"]["key_id"], shop_key_id.as_str());
    assert_eq!(
        registrations[0]["target"],
        json!({"type": "subject", "id": subject})
    );

    let lookups = with_action(&all, "subject.looked_up");
    assert_eq!(lookups.len(), 2);
    assert_eq!(lookups[0]["details"]["found"], true);
    assert_eq!(lookups[1]["details"]["found"], false);
    assert!(lookups[1]["target"].is_null());

    let reads: Vec<_> = with_action(&all, "api.request")
        .into_iter()
        .filter(|e| e["request_id"] == read_request.as_str())
        .collect();
    assert_eq!(reads.len(), 1, "one access entry for the read");
    assert_eq!(
        reads[0]["details"],
        json!({"method": "GET", "route": "/v1/subjects/{id}", "status": 200})
    );
    assert_eq!(reads[0]["outcome"], "success");
    // State-changing requests are recorded once, by their action, not twice.
    assert!(
        all.iter()
            .filter(|e| e["request_id"] == register_request.as_str())
            .count()
            == 1
    );

    let failures = with_action(&all, "auth.failed");
    let reasons: Vec<_> = failures
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, vec!["missing", "unknown", "revoked"]);
    assert!(
        failures
            .iter()
            .all(|e| e["actor"]["type"] == "anonymous" && e["outcome"] == "denied")
    );
    let forbidden = with_action(&all, "auth.forbidden");
    assert_eq!(forbidden.len(), 1);
    assert_eq!(
        forbidden[0]["details"]["required_scope"],
        "integrations:manage"
    );
    assert_eq!(forbidden[0]["actor"]["key_id"], shop_key_id.as_str());

    let revocations = with_action(&all, "api_key.revoked");
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0]["target"]["id"], shop_key_id.as_str());

    let rotated = with_action(&all, "root_key.rotated");
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0]["actor"], json!({"type": "admin", "via": "cli"}));
    assert_eq!(rotated[0]["details"]["root_version"], 2);
    assert_eq!(
        with_action(&all, "subject_keys.rewrapped")[0]["details"]["count"],
        1
    );

    let verifications = with_action(&all, "audit.verified");
    assert_eq!(verifications.len(), 1);
    assert_eq!(verifications[0]["outcome"], "success");
}

#[tokio::test]
async fn the_trail_holds_no_personal_data() {
    let app = TestApp::spawn().await;
    let (_, key) = app
        .integration_with_key("clinic", &["subjects:write", "subjects:read"])
        .await;
    let phone = "+49 151 1234 5678";
    let text = "Hello Anna, your HIV test result is ready";
    app.post("/v1/subjects", &key, &json!({"phone": phone}))
        .await;
    app.post(
        "/v1/subjects/lookup",
        &key,
        &json!({"phone": "+4915112345678"}),
    )
    .await;
    app.post("/v1/subjects", &key, &json!({"phone": phone, "note": text}))
        .await;
    app.post(
        "/v1/subjects",
        &key,
        &json!({"phone": "+49 151 1234 5678 0000"}),
    )
    .await;
    app.get("/v1/integrations?phone=%2B4915112345678", &key)
        .await;
    app.get(&format!("/v1/subjects/{phone}"), &key).await;
    let all = entries(&app).await;
    assert!(all.len() > 8);
    let mut haystack = serde_json::to_string(&all).unwrap();
    haystack.push_str(&std::fs::read_to_string(app.config.audit_witness_file()).unwrap());
    for needle in [
        "4915112345678",
        "151 1234 5678",
        "12345678",
        "Anna",
        "HIV",
        &key,
        &key[3..],
        &app.admin_key[3..],
    ] {
        assert!(
            !haystack.contains(needle),
            "the audit trail contains {needle:?}"
        );
    }
    // And nowhere in the database files (the audit tables, pending entries included).
    let raw = app.raw_database_bytes().await;
    for needle in ["4915112345678", "Anna", "HIV"] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()));
    }
}

/// Makes the audit table refuse writes, as a full or failed audit store would.
async fn break_audit_storage(app: &TestApp) {
    if app.db.is_postgres() {
        app.execute_sql(
            "CREATE FUNCTION audit_down() RETURNS trigger AS $$
             BEGIN RAISE EXCEPTION 'audit storage is down'; END $$ LANGUAGE plpgsql",
            &[],
        )
        .await;
        app.execute_sql(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_pending
             FOR EACH ROW EXECUTE FUNCTION audit_down()",
            &[],
        )
        .await;
    } else {
        app.execute_sql(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_pending
             BEGIN SELECT RAISE(ABORT, 'audit storage is down'); END",
            &[],
        )
        .await;
    }
}

#[tokio::test]
async fn without_its_audit_entry_an_action_is_not_performed() {
    let app = TestApp::spawn().await;
    break_audit_storage(&app).await;
    let registered = app
        .post(
            "/v1/subjects",
            &app.admin_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await;
    let problem = assert_problem(registered, 503, "audit_unavailable").await;
    assert!(
        !problem.to_string().contains("audit storage is down"),
        "internals leaked"
    );
    let created = app
        .post("/v1/integrations", &app.admin_key, &json!({"name": "shop"}))
        .await;
    assert_problem(created, 503, "audit_unavailable").await;
    // Reads are refused too: no access without its record.
    let listed = app.get("/v1/integrations", &app.admin_key).await;
    assert_eq!(listed.headers()["retry-after"], "1");
    assert_problem(listed, 503, "audit_unavailable").await;

    let drop = if app.db.is_postgres() {
        "DROP TRIGGER audit_down ON audit_pending"
    } else {
        "DROP TRIGGER audit_down"
    };
    app.execute_sql(drop, &[]).await;
    // Nothing happened while the trail was down.
    let lookup = app
        .post(
            "/v1/subjects/lookup",
            &app.admin_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await;
    assert_problem(lookup, 404, "not_found").await;
    let integrations = json(app.get("/v1/integrations", &app.admin_key).await).await;
    assert_eq!(integrations["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_background_sealer_seals_entries_within_seconds() {
    let app = TestApp::spawn().await;
    let response = app.get("/v1/integrations", &app.admin_key).await;
    let id = request_id(&response);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        // Reading through the API only; no explicit seal.
        let page = json(app.get("/v1/audit?limit=500", &app.admin_key).await).await;
        if page["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["request_id"] == id.as_str())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not sealed within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn checkpoints_are_signed_every_n_entries_and_witnessed() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 5).await;
    for _ in 0..23 {
        app.get("/v1/integrations", &app.admin_key).await;
    }
    app.herald.audit().seal().await.unwrap();
    let keys = json(app.get("/v1/audit/public-key", &app.admin_key).await).await;
    assert_eq!(keys["keys"][0]["algorithm"], "Ed25519");
    assert_eq!(keys["keys"][0]["key_id"], keys["active_key_id"]);
    let public_key = data_encoding::BASE64
        .decode(keys["keys"][0]["public_key"].as_str().unwrap().as_bytes())
        .unwrap();
    let checkpoints = app.herald.audit().checkpoints().await.unwrap();
    assert!(checkpoints.len() >= 4, "{checkpoints:?}");
    let mut previous = 0;
    for checkpoint in &checkpoints {
        assert!(checkpoint.verify(&public_key));
        assert!(checkpoint.seq > previous);
        previous = checkpoint.seq;
    }
    // The witness holds exactly the database's checkpoints.
    let witness = std::fs::read_to_string(app.config.audit_witness_file()).unwrap();
    let witnessed: Vec<Value> = witness
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stored: Vec<Value> = checkpoints.iter().map(chain::Checkpoint::to_json).collect();
    assert_eq!(witnessed, stored);
    // Each checkpoint's head is the chain's hash at that entry.
    let all = entries(&app).await;
    for checkpoint in &checkpoints {
        let entry = &all[checkpoint.seq as usize - 1];
        assert_eq!(
            entry["hash"],
            data_encoding::HEXLOWER.encode(&checkpoint.head)
        );
    }
    let page = json(
        app.get("/v1/audit/checkpoints?limit=2", &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["next"].is_string());
}

#[tokio::test]
async fn a_checkpoint_is_signed_after_the_interval_even_below_n_entries() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 1_000_000).await;
    let audit = app.herald.audit();
    audit.seal().await.unwrap();
    let before = audit.checkpoints().await.unwrap().len();
    app.get("/v1/integrations", &app.admin_key).await;
    audit.seal().await.unwrap();
    assert_eq!(
        audit.checkpoints().await.unwrap().len(),
        before,
        "not yet due"
    );
    app.clock.advance(TimeDelta::seconds(61));
    audit.seal().await.unwrap();
    assert_eq!(audit.checkpoints().await.unwrap().len(), before + 1);
}

#[tokio::test]
async fn two_sealers_on_one_database_build_one_chain() {
    let app = TestApp::spawn().await;
    let other = Herald::open(app.config.clone(), Arc::clone(&app.clock) as Arc<dyn Clock>)
        .await
        .unwrap();
    let first = app.herald.audit().clone();
    let second = other.audit().clone();
    let mut tasks = Vec::new();
    for round in 0..40 {
        let audit = if round % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let initiator = Initiator::system();
        tasks.push(tokio::spawn(async move {
            audit.verify(&initiator).await.unwrap();
            audit.seal().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    first.seal().await.unwrap();
    second.seal().await.unwrap();
    let report = first.verify(&Initiator::system()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.entries >= 40);
}

/// An explicit seal (export, verification, shutdown) seals what was pending when it was called,
/// even while another node holds the sealing lock: it waits instead of returning empty-handed.
#[tokio::test]
async fn an_explicit_seal_waits_for_another_nodes_sealing_pass() {
    let app = TestApp::spawn().await;
    if app.db.url.is_none() {
        // SQLite has one writer: the seal waits for the write lock by construction.
        return;
    }
    let url = app.db.url.clone().unwrap();
    let mut other_node = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other_node).await.unwrap();
    // Another node's sealing pass: it holds the sealing lock ("HERALD" + 1, herald-store).
    sqlx::query("SELECT pg_advisory_xact_lock(5207658984529723393)")
        .execute(&mut other_node)
        .await
        .unwrap();
    app.get("/v1/integrations", &app.admin_key).await;
    assert!(app.count("SELECT COUNT(*) FROM audit_pending").await > 0);
    let audit = app.herald.audit().clone();
    let sealing = tokio::spawn(async move { audit.seal().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !sealing.is_finished(),
        "the seal gave up while the lock was held"
    );
    sqlx::query("COMMIT")
        .execute(&mut other_node)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), sealing)
        .await
        .expect("the seal finishes once the lock is free")
        .unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_pending").await, 0);
}

// --- tampering ---------------------------------------------------------------------------

/// A trail of about 40 entries with a checkpoint at least every 8, stopped (so nothing seals
/// behind the test's back). Returns the stopped app and the stored checkpoint sequence numbers.
async fn stopped_trail() -> (TestApp, Vec<u64>) {
    let mut app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 8).await;
    for _ in 0..36 {
        app.get("/v1/integrations", &app.admin_key).await;
    }
    app.herald.audit().seal().await.unwrap();
    app.stop().await;
    let checkpoints = reopen(&app)
        .await
        .audit()
        .checkpoints()
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    (app, checkpoints)
}

async fn reopen(app: &TestApp) -> Herald {
    Herald::open(app.config.clone(), Arc::clone(&app.clock) as Arc<dyn Clock>)
        .await
        .unwrap()
}

/// Herald's verdict and the independent verifier's on the trail as it now is.
async fn verdicts(app: &TestApp) -> (Report, String) {
    let herald = reopen(app).await;
    let report = herald.audit().verify(&Initiator::admin()).await.unwrap();
    let python = independent_verdict(app, &herald).await;
    (report, python)
}

/// Exports the trail as an outsider receives it and runs tools/verify_audit.py on it.
async fn independent_verdict(app: &TestApp, herald: &Herald) -> String {
    let dir = app.dir.path().join("export");
    std::fs::create_dir_all(&dir).unwrap();
    let audit = herald.audit();
    let lines = |values: Vec<Value>| {
        values
            .iter()
            .map(|v| v.to_string() + "\n")
            .collect::<String>()
    };
    // Witness and checkpoints first, entries last: a background seal in between can only add
    // entries, never a checkpoint the exported entries do not reach (which reads as a cut).
    let witness = dir.join("witness.jsonl");
    match std::fs::read(app.config.audit_witness_file()) {
        Ok(bytes) => std::fs::write(&witness, bytes).unwrap(),
        Err(_) => {
            let _ = std::fs::remove_file(&witness);
        }
    }
    let checkpoints = audit.checkpoints().await.unwrap();
    std::fs::write(
        dir.join("checkpoints.jsonl"),
        lines(checkpoints.iter().map(chain::Checkpoint::to_json).collect()),
    )
    .unwrap();
    let entries = audit.entries(0, 1_000_000).await.unwrap();
    std::fs::write(
        dir.join("entries.jsonl"),
        lines(
            entries
                .iter()
                .map(chain::SealedEntry::export_json)
                .collect(),
        ),
    )
    .unwrap();
    let keys = audit.public_keys().await.unwrap();
    let keys = json!({"keys": keys.iter().map(|k| json!({
        "key_id": k.key_id,
        "public_key": data_encoding::BASE64.encode(&k.public_key),
    })).collect::<Vec<_>>()});
    std::fs::write(dir.join("keys.json"), keys.to_string()).unwrap();
    run_verifier(&dir, &witness)
}

pub fn run_verifier(dir: &Path, witness: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/verify_audit.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg("--entries")
        .arg(dir.join("entries.jsonl"))
        .arg("--checkpoints")
        .arg(dir.join("checkpoints.jsonl"))
        .arg("--keys")
        .arg(dir.join("keys.json"))
        .arg("--witness")
        .arg(witness)
        .output()
        .expect("python3 runs tools/verify_audit.py");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.success(),
        stdout.starts_with("ok"),
        "{stdout}{stderr}"
    );
    assert!(stderr.is_empty(), "{stderr}");
    stdout
}

fn assert_finding(verdicts: &(Report, String), seq: u64, problem: Problem) {
    let (report, python) = verdicts;
    let finding = report
        .first_bad
        .as_ref()
        .expect("Herald finds the tampering");
    assert_eq!(
        (finding.seq, finding.problem),
        (seq, problem),
        "{finding:?}"
    );
    assert!(!report.ok);
    let expected = format!("FAIL {} at {seq}:", problem.as_str());
    assert!(
        python.starts_with(&expected),
        "the independent verifier said: {python}"
    );
}

#[tokio::test]
async fn an_untouched_trail_verifies_in_herald_and_independently() {
    let (app, checkpoints) = stopped_trail().await;
    assert!(checkpoints.len() >= 4);
    let (report, python) = verdicts(&app).await;
    assert!(report.ok, "{report:?}");
    assert!(report.entries >= 40);
    assert!(python.starts_with("ok"), "{python}");
}

#[tokio::test]
async fn a_modified_entry_is_found() {
    let (app, _) = stopped_trail().await;
    app.tamper_sql(
        "UPDATE audit_log SET body = REPLACE(body, '\"status\":200', '\"status\":201') WHERE seq = 17",
        &[],
    )
    .await;
    assert_finding(&verdicts(&app).await, 17, Problem::Modified);
}

#[tokio::test]
async fn a_deleted_entry_is_found() {
    let (app, _) = stopped_trail().await;
    app.tamper_sql("DELETE FROM audit_log WHERE seq = 12", &[])
        .await;
    assert_finding(&verdicts(&app).await, 12, Problem::Deleted);
}

#[tokio::test]
async fn reordered_entries_are_found() {
    let (app, _) = stopped_trail().await;
    for sql in [
        "UPDATE audit_log SET seq = -15 WHERE seq = 15",
        "UPDATE audit_log SET seq = 15 WHERE seq = 16",
        "UPDATE audit_log SET seq = 16 WHERE seq = -15",
    ] {
        app.tamper_sql(sql, &[]).await;
    }
    assert_finding(&verdicts(&app).await, 15, Problem::Reordered);
}

#[tokio::test]
async fn a_truncated_trail_is_found() {
    let (app, checkpoints) = stopped_trail().await;
    // The attacker removes the newest entries and the checkpoints that cover them.
    let cut = checkpoints[checkpoints.len() - 2];
    app.tamper_sql(&format!("DELETE FROM audit_log WHERE seq > {cut}"), &[])
        .await;
    app.tamper_sql(
        &format!("DELETE FROM audit_checkpoints WHERE seq > {cut}"),
        &[],
    )
    .await;
    assert_finding(&verdicts(&app).await, cut + 1, Problem::Truncated);
}

#[tokio::test]
async fn a_forged_checkpoint_signature_is_found() {
    let (app, checkpoints) = stopped_trail().await;
    let target = checkpoints[1];
    app.tamper_sql(
        &format!("UPDATE audit_checkpoints SET signature = $1 WHERE seq = {target}"),
        &[SqlValue::Bytes(vec![7; 64])],
    )
    .await;
    assert_finding(&verdicts(&app).await, target, Problem::BadSignature);
}

#[tokio::test]
async fn a_checkpoint_missing_from_the_database_is_found_by_the_witness() {
    let (app, checkpoints) = stopped_trail().await;
    let target = checkpoints[2];
    app.tamper_sql(
        &format!("DELETE FROM audit_checkpoints WHERE seq = {target}"),
        &[],
    )
    .await;
    assert_finding(&verdicts(&app).await, target, Problem::WitnessMismatch);
}

#[tokio::test]
async fn a_consistently_rewritten_chain_is_found_by_its_signed_checkpoints() {
    let (app, checkpoints) = stopped_trail().await;
    // An attacker who controls the database but not the signing key changes entry 10 and
    // recomputes every hash after it.
    let herald = reopen(&app).await;
    let sealed = herald.audit().entries(0, 1_000_000).await.unwrap();
    let mut previous = chain::GENESIS;
    for entry in &sealed {
        let body = if entry.seq == 10 {
            entry.body.replace("\"status\":200", "\"status\":500")
        } else {
            entry.body.clone()
        };
        let hash = chain::link(&previous, body.as_bytes());
        previous = hash;
        if entry.seq >= 10 {
            app.tamper_sql(
                &format!(
                    "UPDATE audit_log SET body = $1, hash = $2 WHERE seq = {}",
                    entry.seq
                ),
                &[SqlValue::Text(body), SqlValue::Bytes(hash.to_vec())],
            )
            .await;
        }
    }
    drop(herald);
    let before = checkpoints
        .iter()
        .copied()
        .filter(|c| *c < 10)
        .max()
        .unwrap_or(0);
    assert_finding(&verdicts(&app).await, before + 1, Problem::Modified);
}

#[tokio::test]
async fn retention_prunes_behind_a_signed_horizon_and_the_rest_still_verifies() {
    let app = TestApp::spawn_with(|c| {
        c.audit.retention = Duration::from_secs(24 * 3600);
        c.audit.checkpoint_every = 4;
    })
    .await;
    for _ in 0..10 {
        app.get("/v1/integrations", &app.admin_key).await;
    }
    let audit = app.herald.audit();
    audit.seal().await.unwrap();
    let old = audit.entries(0, 1000).await.unwrap();
    let last_old = old.last().unwrap().seq;
    app.clock.advance(TimeDelta::days(2));
    for _ in 0..5 {
        app.get("/v1/integrations", &app.admin_key).await;
    }
    let pruned = audit.prune(&Initiator::system()).await.unwrap().unwrap();
    assert_eq!(pruned.through_seq, last_old);
    assert_eq!(pruned.removed, last_old);
    let remaining = entries(&app).await;
    assert!(remaining[0]["seq"].as_u64().unwrap() > last_old);
    let horizon = audit
        .checkpoints()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.kind == chain::CheckpointKind::Horizon)
        .unwrap();
    assert_eq!(horizon.seq, last_old);
    assert_eq!(horizon.head, old.last().unwrap().hash);
    let report = audit.verify(&Initiator::system()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(with_action(&remaining, "audit.pruned").len(), 1);
    // The outsider verifies the remaining trail from the horizon checkpoint.
    let python = independent_verdict(&app, &app.herald).await;
    assert!(python.starts_with("ok"), "{python}");
    // Nothing more to prune now.
    assert!(audit.prune(&Initiator::system()).await.unwrap().is_none());
}

#[tokio::test]
async fn pruning_refuses_a_trail_that_does_not_verify() {
    let app = TestApp::spawn_with(|c| c.audit.retention = Duration::from_secs(24 * 3600)).await;
    for _ in 0..5 {
        app.get("/v1/integrations", &app.admin_key).await;
    }
    app.herald.audit().seal().await.unwrap();
    app.tamper_sql(
        "UPDATE audit_log SET body = REPLACE(body, '\"status\":200', '\"status\":201')
         WHERE seq = (SELECT MIN(seq) FROM audit_log WHERE body LIKE '%\"status\":200%')",
        &[],
    )
    .await;
    app.clock.advance(TimeDelta::days(2));
    let refused = app.herald.audit().prune(&Initiator::system()).await;
    assert!(
        matches!(
            refused,
            Err(herald_domain::audit::AuditError::PruneRefused(_))
        ),
        "{refused:?}"
    );
    assert_eq!(app.herald.audit().entries(0, 1).await.unwrap()[0].seq, 1);
}

/// A backlog sealed in one pass crosses the store's statement boundaries (SQLite writes sealed
/// entries 256 rows per statement, the last statement padded with rows it skips): every entry
/// lands once, in order, and the chain verifies.
#[tokio::test]
async fn a_backlog_spanning_several_insert_statements_seals_whole() {
    let app = TestApp::spawn_with(|c| c.audit.seal_interval = Duration::from_secs(3600)).await;
    app.herald.audit().seal().await.unwrap();
    let before = app.count("SELECT COUNT(*) FROM audit_log").await;
    // 700 = 256 (the pass's first transaction) + 444 (one full statement and a padded one).
    let requests: Vec<_> = (0..700)
        .map(|_| {
            let request = app.request(reqwest::Method::GET, "/v1/integrations", &app.admin_key);
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let pending = app.count("SELECT COUNT(*) FROM audit_pending").await;
    assert!(pending >= 700, "{pending} pending");
    let report = app.herald.audit().seal().await.unwrap();
    assert_eq!(report.sealed as i64, pending);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_pending").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_log").await,
        before + pending
    );
    // Sequence numbers run without a gap, and no padding row was written.
    assert_eq!(
        app.count("SELECT MAX(seq) - MIN(seq) + 1 FROM audit_log")
            .await,
        before + pending
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_log WHERE body IS NULL OR hash IS NULL")
            .await,
        0
    );
    let report = app
        .herald
        .audit()
        .verify(&Initiator::system())
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

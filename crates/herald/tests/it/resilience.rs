//! The binary under stress (issue 4 items 8–9): the sandbox reply command, a SIGKILL with a
//! thousand messages in flight, and two processes sharing one queue.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::fakes::{FakeWhatsapp, Receiver};
use crate::helpers::TestDb;
use crate::process::{Server, admin_key, base_env, run};

const TEMPLATES: &str = r#"
[purposes.order_updates]
basis = "contract"

[[templates]]
name = "order_shipped"
language = "de"
parameters = 1
category = "utility"
"#;

fn write_config(dir: &Path, extra: &str) {
    std::fs::write(dir.join("herald.toml"), format!("{TEMPLATES}\n{extra}")).unwrap();
}

async fn admin_post(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
    path: &str,
    body: &Value,
) -> Value {
    let response = client
        .post(server.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// An integration with a key of `scopes`; returns (integration id, key).
async fn integration(
    client: &reqwest::Client,
    server: &Server,
    admin: &str,
    name: &str,
    scopes: &[&str],
) -> (String, String) {
    let created = admin_post(
        client,
        server,
        admin,
        "/v1/integrations",
        &json!({"name": name}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let key = admin_post(
        client,
        server,
        admin,
        &format!("/v1/integrations/{id}/keys"),
        &json!({"scopes": scopes}),
    )
    .await;
    (id, key["key"].as_str().unwrap().to_owned())
}

/// Records the WhatsApp opt-in of the `count` recipients `send_many` writes to (as the
/// admin), 32 at a time.
async fn opt_in_many(server: &str, admin: &str, count: usize) {
    let client = reqwest::Client::new();
    let permits = Arc::new(Semaphore::new(32));
    let mut tasks = JoinSet::new();
    for n in 0..count {
        let (client, server, admin) = (client.clone(), server.to_owned(), admin.to_owned());
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let phone = format!("+49151{:08}", 10_000_000 + n);
            crate::helpers::grant_opt_in(
                &client,
                &server,
                &admin,
                &phone,
                "order_updates",
                chrono::Utc::now(),
            )
            .await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Accepts `count` messages through the servers (round robin), 32 at a time; returns the ids.
async fn send_many(servers: &[String], key: &str, count: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let permits = Arc::new(Semaphore::new(32));
    let mut tasks = JoinSet::new();
    for n in 0..count {
        let url = format!("{}/v1/messages", servers[n % servers.len()]);
        let (client, key, permits) = (client.clone(), key.to_owned(), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let body = json!({
                "to": format!("+49151{:08}", 10_000_000 + n),
                "purpose": "order_updates",
                "template": {"name": "order_shipped", "language": "de", "parameters": [format!("#{n}")]}
            });
            let response = client.post(url).bearer_auth(key).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 202);
            let accepted: Value = response.json().await.unwrap();
            accepted["id"].as_str().unwrap().to_owned()
        });
    }
    let mut ids = Vec::with_capacity(count);
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    ids
}

/// Message statuses straight from the database.
async fn statuses(db: &TestDb, dir: &Path) -> HashMap<String, String> {
    let rows: Vec<(String, String)> = match &db.url {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as("SELECT id, status FROM messages")
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
        None => {
            let url = format!(
                "sqlite://{}?mode=ro",
                dir.join("herald-data/herald.db").display()
            );
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as("SELECT id, status FROM messages")
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
    };
    rows.into_iter().collect()
}

async fn wait_until_final(
    db: &TestDb,
    dir: &Path,
    expected: usize,
    within: Duration,
) -> HashMap<String, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = statuses(db, dir).await;
        let done = now
            .values()
            .filter(|s| matches!(s.as_str(), "sent" | "delivered" | "read" | "failed"))
            .count();
        if now.len() == expected && done == expected {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {expected} messages final after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many times the fake accepted each message, by Herald id.
fn sends_per_message(fake: &FakeWhatsapp) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for received in fake.accepted() {
        let id = received.body["biz_opaque_callback_data"]
            .as_str()
            .unwrap()
            .to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn sandbox_reply_feeds_an_inbound_message_through_to_integrators() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    env.insert(
        "HERALD_WEBHOOKS__ALLOW_INSECURE_TARGETS".into(),
        "true".into(),
    );
    env.insert("HERALD_DELIVERY__POLL_INTERVAL".into(), "50ms".into());
    // A message from a new customer belongs to no conversation: it goes to the number's default
    // handler (configured before the integration exists).
    env.insert("HERALD_INBOUND__DEFAULT_INTEGRATION".into(), "crm".into());
    write_config(dir.path(), "");
    let server = Server::start(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let admin = admin_key(&server.stdout.lock().unwrap().join("\n"));
    let (crm, key) = integration(
        &client,
        &server,
        &admin,
        "crm",
        &["messages:read", "messages:send", "subjects:write"],
    )
    .await;
    let receiver = Receiver::start().await;
    let created = admin_post(
        &client,
        &server,
        &admin,
        &format!("/v1/integrations/{crm}/webhooks"),
        &json!({"url": receiver.url(), "events": ["message.inbound"]}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();

    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &[
            "sandbox",
            "reply",
            "--phone",
            "+4915112345678",
            "--text",
            "Hallo, ist das Paket da?",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap();
    let subject = answer["subject_id"].as_str().unwrap();
    assert!(subject.starts_with("sub_"));
    assert!(
        !stderr.contains("Paket") && !stderr.contains("4915112345678"),
        "no personal data in logs"
    );

    let delivery = crate::delivery::eventually("the inbound event", || async {
        receiver.deliveries().into_iter().next()
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    crate::fakes::verify_standard_webhook(
        &secret,
        &delivery.id,
        delivery.timestamp,
        &delivery.signature,
        &delivery.body,
        now,
    )
    .unwrap();
    let event = delivery.json();
    assert_eq!(event["type"], "message.inbound");
    assert_eq!(event["data"]["subject_id"], subject);
    assert_eq!(event["data"]["content"]["text"], "Hallo, ist das Paket da?");
    // The window is open: free-form text to that subject is accepted now.
    let response = client
        .post(server.url("/v1/messages"))
        .bearer_auth(&key)
        .json(&json!({"subject_id": subject, "purpose": "order_updates", "text": "Ja, heute."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    server.terminate().await;

    // With WhatsApp configured the sandbox is off, and the command says so.
    write_config(dir.path(), &FakeWhatsapp::start().await.toml());
    let (code, _, stderr) = run(
        dir.path(),
        &env,
        &[
            "sandbox",
            "reply",
            "--phone",
            "+4915112345678",
            "--text",
            "x",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("sandbox channel is off"), "{stderr}");
}

fn crash_env(db: &TestDb) -> BTreeMap<String, String> {
    let mut env = base_env(db);
    env.insert("HERALD_DELIVERY__LEASE".into(), "5s".into());
    env.insert("HERALD_DELIVERY__POLL_INTERVAL".into(), "50ms".into());
    env.insert("HERALD_HTTP__SHUTDOWN_GRACE".into(), "2s".into());
    // Thousands of requests with one key in seconds: a load test, which the rate limits
    // exist to stop; these tests are about crashes.
    env.insert("HERALD_LIMITS__ENABLED".into(), "false".into());
    env
}

#[tokio::test]
async fn a_killed_server_loses_no_accepted_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let fake = FakeWhatsapp::start().await;
    // A slow provider: the thousand messages are still being sent when the process dies.
    fake.set_latency(Duration::from_millis(250));
    write_config(dir.path(), &fake.toml());
    let env = crash_env(&db);
    let server = Server::start(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let admin = admin_key(&server.stdout.lock().unwrap().join("\n"));
    let (_, key) = integration(
        &client,
        &server,
        &admin,
        "shop",
        &["messages:send", "subjects:write"],
    )
    .await;
    opt_in_many(&server.url(""), &admin, 1000).await;
    let ids = send_many(&[server.url("")], &key, 1000).await;
    assert_eq!(ids.len(), 1000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_before_kill = fake.accepted().len();
    assert!(
        sent_before_kill < 1000,
        "the kill must come with messages in flight"
    );
    // SIGKILL: no graceful anything.
    let pid = server.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(200)).await;

    fake.set_latency(Duration::from_millis(1));
    let restarted = Server::start(dir.path(), &env).await;
    let statuses = wait_until_final(&db, dir.path(), 1000, Duration::from_secs(90)).await;
    let sends = sends_per_message(&fake);
    for id in &ids {
        assert_eq!(statuses.get(id).map(String::as_str), Some("sent"), "{id}");
        assert!(sends.contains_key(id), "{id} never reached the provider");
    }
    let duplicates = sends.values().filter(|n| **n > 1).count();
    // Only a message whose lease expired mid-call (in flight at the kill) may go twice; the
    // worker has 32 calls in flight at most.
    eprintln!("crash test: {sent_before_kill} sent before the kill, {duplicates} sent twice");
    assert!(duplicates <= 32, "{duplicates} messages were sent twice");
    assert_eq!(fake.violations(), Vec::<String>::new());
    restarted.terminate().await;
}

#[tokio::test]
async fn two_processes_share_one_queue_without_sending_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let fake = FakeWhatsapp::start().await;
    fake.set_latency(Duration::from_millis(5));
    write_config(dir.path(), &fake.toml());
    let env = crash_env(&db);
    let first = Server::start(dir.path(), &env).await;
    let second = Server::start(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let admin = admin_key(&first.stdout.lock().unwrap().join("\n"));
    let (_, key) = integration(
        &client,
        &first,
        &admin,
        "shop",
        &["messages:send", "subjects:write"],
    )
    .await;
    opt_in_many(&first.url(""), &admin, 2000).await;
    let ids = send_many(&[first.url(""), second.url("")], &key, 2000).await;
    let statuses = wait_until_final(&db, dir.path(), 2000, Duration::from_secs(90)).await;
    assert!(ids.iter().all(|id| statuses[id] == "sent"));
    let sends = sends_per_message(&fake);
    assert_eq!(sends.len(), 2000, "every message reached the provider");
    let duplicates: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "sent twice: {duplicates:?}");
    assert_eq!(fake.accepted().len(), 2000);
    let (a, _, _) = first.terminate().await;
    let (b, _, _) = second.terminate().await;
    assert_eq!((a, b), (Some(0), Some(0)));
}

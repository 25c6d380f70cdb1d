//! The test harness: a real Herald (real HTTP on a random port, real database, real keys) per
//! test, on SQLite by default and on PostgreSQL when `HERALD_TEST_DATABASE_URL` is set.
//!
//! PostgreSQL: each test gets a fresh database on that server, dropped afterwards. If the
//! variable is set but the server cannot be reached, tests fail: the PostgreSQL leg never
//! silently turns into a second SQLite run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use herald::Config;
use herald::startup::{Herald, StartupError};
use herald_domain::clock::{Clock, ManualClock};
use serde_json::Value;
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PG_ENV: &str = "HERALD_TEST_DATABASE_URL";

/// Registers `phone` at the Herald at `base` and records consent for `purpose` (method
/// `api`) with a key holding `subjects:write` and `consents:write`; returns the subject id.
pub async fn grant_opt_in(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    phone: &str,
    purpose: &str,
    captured_at: DateTime<Utc>,
) -> String {
    let registered = client
        .post(format!("{base}/v1/subjects"))
        .bearer_auth(key)
        .json(&serde_json::json!({"phone": phone}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success(), "{}", registered.status());
    let subject = registered.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let granted = client
        .put(format!("{base}/v1/subjects/{subject}/consents/{purpose}"))
        .bearer_auth(key)
        .json(&serde_json::json!({"evidence": {
            "method": "api",
            "captured_at": captured_at.to_rfc3339(),
            "source": "test harness"
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200, "{}", granted.text().await.unwrap());
    subject
}

/// A fixed start time, so tests can reason about expiry.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,herald=debug")
            .with_test_writer()
            .try_init();
    }
}

/// The database one test runs on.
pub struct TestDb {
    /// `None`: SQLite in the test's data directory.
    pub url: Option<String>,
    postgres: Option<(String, String)>, // (server URL, database name)
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var(PG_ENV) {
            Ok(server) => Self::created_on(server).await,
            Err(_) => Self::sqlite(),
        }
    }

    /// A fresh database on the PostgreSQL server `server`, dropped with this value.
    async fn created_on(server: String) -> Self {
        let name = format!(
            "herald_test_{}",
            data_encoding::HEXLOWER.encode(&herald_crypto::random::bytes::<8>().unwrap())
        );
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL cannot be reached at {server}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        Self {
            url: Some(with_database(&server, &name)),
            postgres: Some((server, name)),
        }
    }

    /// A fresh PostgreSQL database whatever the suite runs on (cross-backend restores), on
    /// the suite's server or the local one.
    pub async fn postgres() -> Self {
        let server = std::env::var(PG_ENV)
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        Self::created_on(server).await
    }

    /// SQLite in the data directory, whatever the suite runs on.
    pub fn sqlite() -> Self {
        Self {
            url: None,
            postgres: None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async; a helper thread with its own runtime does the cleanup.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A configuration for a test: defaults, a temporary data directory, the test database.
pub fn test_config(dir: &Path, db: &TestDb) -> Config {
    let mut config = Config::defaults().unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.join("data");
    config.database_url = db.url.as_deref().map(herald::config::DatabaseUrl::new);
    config.http.shutdown_grace = std::time::Duration::from_secs(5);
    config
}

/// Runs `$body` with a direct connection `$conn` to the app's database, whichever it is.
/// The triggers that keep the audit tables from being rewritten (migration 0008).
pub const AUDIT_GUARDS: [&str; 8] = [
    "audit_pending_no_update",
    "audit_pending_delete_sealed_only",
    "audit_log_no_update",
    "audit_log_delete_behind_horizon",
    "audit_checkpoints_no_update",
    "audit_checkpoints_no_delete",
    "audit_seal_mark_forward",
    "audit_seal_mark_kept",
];

macro_rules! with_connection {
    ($app:expr, |$conn:ident| $body:expr) => {
        match &$app.db.url {
            Some(url) => {
                let mut $conn = sqlx::PgConnection::connect(url).await.unwrap();
                $body
            }
            None => {
                let mut $conn = sqlx::SqliteConnection::connect(&$app.sqlite_url())
                    .await
                    .unwrap();
                $body
            }
        }
    };
}

/// A running Herald.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub admin_key: String,
    pub herald: Herald,
    pub clock: Arc<ManualClock>,
    pub config: Config,
    pub db: Arc<TestDb>,
    pub dir: Arc<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), StartupError>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(customize: impl FnOnce(&mut Config)) -> Self {
        init_test_logging();
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let db = Arc::new(TestDb::new().await);
        let mut config = test_config(dir.path(), &db);
        customize(&mut config);
        let clock = Arc::new(ManualClock::new(epoch()));
        Box::pin(Self::start(
            config,
            dir,
            db,
            clock,
            herald::startup::OpenOptions::default(),
        ))
        .await
    }

    /// Starts on an explicit configuration, directory, database and clock (a restored copy).
    pub async fn start_on(
        config: Config,
        dir: Arc<TempDir>,
        db: Arc<TestDb>,
        clock: Arc<ManualClock>,
        options: herald::startup::OpenOptions,
    ) -> Self {
        Box::pin(Self::start(config, dir, db, clock, options)).await
    }

    async fn start(
        mut config: Config,
        dir: Arc<TempDir>,
        db: Arc<TestDb>,
        clock: Arc<ManualClock>,
        options: herald::startup::OpenOptions,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let address = listener.local_addr().unwrap();
        // The OAuth issuer is where clients reach this server (its metadata names the token
        // endpoint there); a restart keeps the first one.
        if config.oauth.issuer.is_none() {
            config.oauth.issuer = Some(format!("http://{address}"));
        }
        let herald = Box::pin(Herald::open_with(
            config.clone(),
            Arc::clone(&clock) as Arc<dyn Clock>,
            options,
        ))
        .await
        .expect("Herald starts");
        let admin_key = herald
            .bootstrap_admin()
            .await
            .unwrap()
            .map(|k| k.token.expose().to_owned())
            .unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(herald.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        // Serving starts after start-up bookkeeping (audit entries): wait until it answers.
        let client = reqwest::Client::new();
        for _ in 0..200 {
            let health = client.get(format!("http://{address}/healthz")).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Self {
            address,
            client: reqwest::Client::new(),
            admin_key,
            herald,
            clock,
            config,
            db,
            dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server gracefully (as SIGTERM would) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    /// Stops and starts again on the same data directory and database (a restart). The admin
    /// key stays the one from the first start.
    pub async fn restart(self) -> Self {
        Box::pin(self.restart_with(herald::startup::OpenOptions::default())).await
    }

    /// [`TestApp::restart`] with start-up options (`--accept-missing-ledger`).
    pub async fn restart_with(mut self, options: herald::startup::OpenOptions) -> Self {
        self.stop().await;
        let admin_key = self.admin_key.clone();
        let mut next = Box::pin(Self::start(
            self.config.clone(),
            Arc::clone(&self.dir),
            Arc::clone(&self.db),
            Arc::clone(&self.clock),
            options,
        ))
        .await;
        assert!(
            next.admin_key.is_empty(),
            "a restart must not create a second admin key"
        );
        next.admin_key = admin_key;
        next
    }

    /// Another node on the same database, data directory (root key) and clock, configured
    /// like this one but for `customize`.
    pub async fn second_node(&self, customize: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.config.clone();
        customize(&mut config);
        let mut node = Box::pin(Self::start(
            config,
            Arc::clone(&self.dir),
            Arc::clone(&self.db),
            Arc::clone(&self.clock),
            herald::startup::OpenOptions::default(),
        ))
        .await;
        node.admin_key = self.admin_key.clone();
        node
    }

    /// The app's clock in seconds since the epoch (JWT times).
    pub fn now_secs(&self) -> i64 {
        self.clock.now().timestamp()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// A request with a bearer token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    /// The `/metrics` page as text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path, key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, key)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, key: &str) -> reqwest::Response {
        self.request(reqwest::Method::DELETE, path, key)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::PUT, path, key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Registers `phone` and records its WhatsApp opt-in for `purpose` through the API (as
    /// the admin), as an integrator would before its first business-initiated template;
    /// returns the subject id.
    pub async fn opt_in(&self, phone: &str, purpose: &str) -> String {
        grant_opt_in(
            &self.client,
            &self.url(""),
            &self.admin_key,
            phone,
            purpose,
            self.clock.now(),
        )
        .await
    }

    /// Registers `phone` with `key` (create-or-find): links the key's integration to the
    /// subject, which it may then see. Returns the subject id.
    pub async fn link(&self, key: &str, phone: &str) -> String {
        let response = self
            .post("/v1/subjects", key, &serde_json::json!({"phone": phone}))
            .await;
        assert!(
            response.status() == 200 || response.status() == 201,
            "{}",
            response.status()
        );
        json(response).await["id"].as_str().unwrap().to_owned()
    }

    /// Creates an integration and a key with `scopes` for it; returns (integration id, key).
    pub async fn integration_with_key(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let integration = self
            .post(
                "/v1/integrations",
                &self.admin_key,
                &serde_json::json!({"name": name}),
            )
            .await;
        assert_eq!(integration.status(), 201);
        let id = json(integration).await["id"].as_str().unwrap().to_owned();
        let key = self
            .post(
                &format!("/v1/integrations/{id}/keys"),
                &self.admin_key,
                &serde_json::json!({"scopes": scopes}),
            )
            .await;
        assert_eq!(key.status(), 201);
        let token = json(key).await["key"].as_str().unwrap().to_owned();
        (id, token)
    }

    /// Runs a statement directly on the app's database (for tampering tests).
    pub async fn execute_sql(&self, sql: &str, binds: &[SqlValue]) {
        with_connection!(self, |conn| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
            for bind in binds {
                query = match bind {
                    SqlValue::Text(t) => query.bind(t.clone()),
                    SqlValue::Bytes(b) => query.bind(b.clone()),
                };
            }
            query.execute(&mut conn).await.unwrap();
        });
    }

    /// Runs a statement as someone who controls the database and first takes the audit
    /// tables' guards away (SQLite: drops the triggers; PostgreSQL: a session that fires
    /// none) — the tampering the trail's verification must still find.
    pub async fn tamper_sql(&self, sql: &str, binds: &[SqlValue]) {
        let postgres = self.db.is_postgres();
        with_connection!(self, |conn| {
            if postgres {
                sqlx::query("SET session_replication_role = replica")
                    .execute(&mut conn)
                    .await
                    .unwrap();
            } else {
                for guard in AUDIT_GUARDS {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP TRIGGER IF EXISTS {guard}"
                    )))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                }
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
            for bind in binds {
                query = match bind {
                    SqlValue::Text(t) => query.bind(t.clone()),
                    SqlValue::Bytes(b) => query.bind(b.clone()),
                };
            }
            query.execute(&mut conn).await.unwrap();
        });
    }

    /// Runs a statement directly on the app's database, returning the database's answer.
    pub async fn try_execute_sql(&self, sql: &str) -> Result<(), sqlx::Error> {
        with_connection!(self, |conn| {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut conn)
                .await
                .map(|_| ())
        })
    }

    /// Runs a query returning one integer (e.g. a COUNT) directly on the app's database.
    pub async fn count(&self, sql: &str) -> i64 {
        with_connection!(self, |conn| {
            let (value,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            value
        })
    }

    /// Reads one BLOB/BYTEA value directly from the app's database.
    pub async fn fetch_bytes(&self, sql: &str, id: &str) -> Vec<u8> {
        with_connection!(self, |conn| {
            let (bytes,): (Vec<u8>,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(id)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            bytes
        })
    }

    /// Rows of (text id, BLOB/BYTEA value) straight from the app's database.
    pub async fn rows_with_bytes(&self, sql: &str) -> Vec<(String, Vec<u8>)> {
        with_connection!(self, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut conn)
                .await
                .unwrap()
        })
    }

    /// A consistent copy of the whole database, as a backup would take it while Herald runs:
    /// SQLite `VACUUM INTO` a file, PostgreSQL `pg_dump`.
    pub async fn snapshot(&self) -> PathBuf {
        let path = self.dir.path().join(format!(
            "snapshot-{}",
            data_encoding::HEXLOWER.encode(&herald_crypto::random::bytes::<4>().unwrap())
        ));
        match &self.db.url {
            None => {
                self.execute_sql(&format!("VACUUM INTO '{}'", path.display()), &[])
                    .await;
            }
            Some(url) => {
                let status = std::process::Command::new("pg_dump")
                    .args(["--format=custom", "--no-owner", "--file"])
                    .arg(&path)
                    .arg(url)
                    .status()
                    .expect("pg_dump runs");
                assert!(status.success(), "pg_dump failed");
            }
        }
        path
    }

    /// Replaces the database with a snapshot (the server must be stopped).
    pub async fn restore(&self, snapshot: &Path) {
        match (&self.db.url, &self.db.postgres) {
            (None, _) => {
                let db = self.data_dir().join("herald.db");
                for suffix in ["-wal", "-shm"] {
                    let _ =
                        std::fs::remove_file(self.data_dir().join(format!("herald.db{suffix}")));
                }
                std::fs::copy(snapshot, db).unwrap();
            }
            (Some(url), Some((server, name))) => {
                let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
                for sql in [
                    format!("DROP DATABASE {name} WITH (FORCE)"),
                    format!("CREATE DATABASE {name}"),
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
                admin.close().await.ok();
                let status = std::process::Command::new("pg_restore")
                    .args(["--no-owner", "--exit-on-error", "--dbname"])
                    .arg(url)
                    .arg(snapshot)
                    .status()
                    .expect("pg_restore runs");
                assert!(status.success(), "pg_restore failed");
            }
            (Some(_), None) => unreachable!("a PostgreSQL test database has a name"),
        }
    }

    fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.data_dir().join("herald.db").display())
    }

    /// Every byte the database holds on disk for Herald's tables: the SQLite file and its WAL,
    /// or (PostgreSQL, after a checkpoint) the relation files of every table, index and TOAST
    /// table of the test database.
    pub async fn raw_database_bytes(&self) -> Vec<u8> {
        match &self.db.url {
            None => {
                let mut bytes = Vec::new();
                for name in ["herald.db", "herald.db-wal"] {
                    if let Ok(mut b) = std::fs::read(self.data_dir().join(name)) {
                        bytes.append(&mut b);
                    }
                }
                assert!(!bytes.is_empty());
                bytes
            }
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query("CHECKPOINT").execute(&mut conn).await.unwrap();
                let (data_dir,): (String,) =
                    sqlx::query_as("SELECT current_setting('data_directory')")
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                let files: Vec<(Option<String>,)> = sqlx::query_as(
                    "SELECT pg_relation_filepath(c.oid) FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname IN ('public', 'pg_toast') AND c.relkind IN ('r', 'i', 't')",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let mut bytes = Vec::new();
                for (file,) in files {
                    let Some(file) = file else { continue };
                    if let Ok(mut b) = std::fs::read(Path::new(&data_dir).join(&file)) {
                        bytes.append(&mut b);
                    }
                }
                assert!(
                    !bytes.is_empty(),
                    "no PostgreSQL relation files could be read"
                );
                bytes
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub enum SqlValue {
    Text(String),
    Bytes(Vec<u8>),
}

pub async fn json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

/// Asserts a problem document: status, `code`, content type, request id in body and header.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "unexpected status for {code}"
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let header_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:herald:problem:{code}"));
    assert!(body["title"].is_string());
    assert_eq!(body["request_id"], header_id.as_str());
    body
}

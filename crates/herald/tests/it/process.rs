//! The `herald` binary as an operator runs it: first start, what reaches stdout and the logs,
//! signals, TLS, configuration errors, and the administration commands.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{TestDb, assert_problem};

const BINARY: &str = env!("CARGO_BIN_EXE_herald");
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

/// The environment for a child: nothing of ours inherited, JSON logs, a free port, and the
/// test database when running the PostgreSQL leg.
pub(crate) fn base_env(db: &TestDb) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("HERALD_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("HERALD_LOG__FORMAT".into(), "json".into());
    env.insert("HERALD_HTTP__SHUTDOWN_GRACE".into(), "5s".into());
    if let Some(url) = &db.url {
        env.insert("HERALD_DATABASE_URL".into(), url.clone());
    }
    env
}

pub(crate) fn command(dir: &Path, env: &BTreeMap<String, String>) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir).kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.envs(env);
    command
}

/// A running `herald serve`.
pub(crate) struct Server {
    pub(crate) child: Child,
    address: SocketAddr,
    pub(crate) stdout: Arc<Mutex<Vec<String>>>,
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().unwrap().push(line);
        }
    });
}

impl Server {
    pub(crate) async fn start(dir: &Path, env: &BTreeMap<String, String>) -> Self {
        Self::try_start(dir, env)
            .await
            .unwrap_or_else(|(status, err)| panic!("herald serve exited with {status}:\n{err}"))
    }

    /// Starts `herald serve`; if it exits before listening, returns its status and stderr.
    async fn try_start(
        dir: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, (String, String)> {
        let mut child = command(dir, env)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), Arc::clone(&stdout));
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr));
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let listening = stderr.lock().unwrap().iter().find_map(|line| {
                let entry: Value = serde_json::from_str(line).ok()?;
                (entry["message"] == "Herald is listening").then(|| {
                    entry["listen"]
                        .as_str()
                        .unwrap()
                        .parse::<SocketAddr>()
                        .unwrap()
                })
            });
            if let Some(address) = listening {
                return Ok(Self {
                    child,
                    address,
                    stdout,
                    stderr,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err((status.to_string(), stderr.lock().unwrap().join("\n")));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "herald did not start in time"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Sends SIGTERM and waits: returns (exit code, stdout, stderr).
    pub(crate) async fn terminate(mut self) -> (Option<i32>, String, String) {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("herald stops within the grace period")
            .unwrap();
        // Let the readers drain the pipes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stdout = self.stdout.lock().unwrap().join("\n");
        let stderr = self.stderr.lock().unwrap().join("\n");
        (status.code(), stdout, stderr)
    }
}

/// Runs a one-shot command (`herald …`); returns (exit code, stdout, stderr).
pub(crate) async fn run(
    dir: &Path,
    env: &BTreeMap<String, String>,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let output = command(dir, env).args(args).output().await.unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub(crate) fn admin_key(stdout: &str) -> String {
    let start = stdout.find("hk_").expect("an admin key on stdout");
    stdout[start..start + 55].to_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn first_start_creates_private_files_and_prints_the_admin_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let env = base_env(&db);
    let server = Server::start(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (code, stdout, stderr) = server.terminate().await;
    assert_eq!(code, Some(0), "graceful shutdown exits 0:\n{stderr}");
    assert!(stderr.contains("shutdown complete"));
    let key = admin_key(&stdout);
    assert_eq!(stdout.matches("hk_").count(), 1);
    assert!(!stderr.contains(&key), "the admin key reached the log");

    let data = dir.path().join("herald-data");
    // The root key lives apart from the data (HHS-KEYSEP): a copy of the data directory
    // decrypts nothing.
    assert!(!data.join("root.key").exists());
    let keys = dir.path().join("herald-keys");
    #[cfg(unix)]
    {
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&keys.join("root.key")), 0o600);
        if !db.is_postgres() {
            assert_eq!(mode(&data.join("herald.db")), 0o600);
        }
    }
    // A second start neither creates nor prints a key, and the first key still works.
    let server = Server::start(dir.path(), &env).await;
    let integrations = client
        .get(server.url("/v1/integrations"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(integrations.status(), 200);
    let (code, stdout, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    assert!(
        !stdout.contains("hk_"),
        "a later start printed a key: {stdout}"
    );
}

#[tokio::test]
async fn logs_never_contain_personal_data_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    // As verbose as it gets, for every crate.
    env.insert("HERALD_LOG__LEVEL".into(), "trace".into());
    let server = Server::start(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let admin = admin_key(&server.stdout.lock().unwrap().join("\n"));
    let phone = "+49 151 1234 5678";
    let text = "Hello Anna, your prescription for Metformin is ready";

    let integration: Value = client
        .post(server.url("/v1/integrations"))
        .bearer_auth(&admin)
        .json(&json!({"name": "pharmacy"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created: Value = client
        .post(server.url(&format!(
            "/v1/integrations/{}/keys",
            integration["id"].as_str().unwrap()
        )))
        .bearer_auth(&admin)
        .json(&json!({"scopes": ["subjects:write", "subjects:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let r = client
            .post(server.url("/v1/subjects"))
            .bearer_auth(&key)
            .json(&json!({"phone": phone}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let r = client
        .post(server.url("/v1/subjects/lookup"))
        .bearer_auth(&key)
        .json(&json!({"phone": "+4915112345678"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Personal data in places it does not belong: unknown fields, bad JSON, bad numbers,
    // query strings, paths, headers.
    let bad_requests = [
        client
            .post(server.url("/v1/subjects"))
            .bearer_auth(&key)
            .json(&json!({"phone": phone, "text": text})),
        client
            .post(server.url("/v1/subjects"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(format!("{{\"phone\": \"{phone}\", \"text\": \"{text}")),
        client
            .post(server.url("/v1/subjects"))
            .bearer_auth(&key)
            .json(&json!({"phone": "+49 151 1234 5678 999 999"})),
        client
            .get(server.url("/v1/integrations?phone=%2B4915112345678"))
            .bearer_auth(&admin),
        client
            .get(server.url("/v1/subjects/+4915112345678"))
            .bearer_auth(&key),
        client
            .get(server.url("/v1/subjects/sub_00000000000000000000000000"))
            .bearer_auth(format!("{key}x")),
    ];
    for request in bad_requests {
        let response = request.send().await.unwrap();
        assert!(response.status().is_client_error());
    }
    let noted = client
        .get(server.url("/healthz"))
        .header("x-note", text)
        .send()
        .await
        .unwrap();
    assert_eq!(noted.status(), 200);
    let (code, stdout, stderr) = server.terminate().await;
    assert_eq!(code, Some(0));
    assert!(
        stderr.lines().count() > 10,
        "the scenario was logged:\n{stderr}"
    );
    for secret in [
        "4915112345678",
        "151 1234 5678",
        "1234 5678",
        "Anna",
        "Metformin",
        key.as_str(),
        &key[3..],
        admin.as_str(),
        &admin[3..],
    ] {
        assert!(!stderr.contains(secret), "the log contains {secret:?}");
    }
    // stdout holds the admin key banner and nothing else.
    assert_eq!(stdout.matches("hk_").count(), 1);
    assert!(!stdout.contains(&key));
}

#[tokio::test]
async fn config_check_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("root-key");
    std::fs::write(
        &secret_file,
        "1:c2VjcmV0LXJvb3Qta2V5LW1hdGVyaWFsLTMyYnl0ZXM=\n",
    )
    .unwrap();
    let mut env = BTreeMap::new();
    env.insert(
        "HERALD_DATABASE_URL".to_owned(),
        "postgres://herald:hunter2-pw@db.internal/herald".to_owned(),
    );
    env.insert("HERALD_KEYS__PROVIDER".to_owned(), "env".to_owned());
    env.insert(
        "HERALD_KEYS__ROOT_KEY_FILE".to_owned(),
        secret_file.display().to_string(),
    );
    env.insert("HERALD_DEFAULT_REGION".to_owned(), "DE".to_owned());
    let (code, stdout, stderr) = run(dir.path(), &env, &["config", "check"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("postgres://herald:********@db.internal/herald"),
        "{stdout}"
    );
    assert!(stdout.contains("root_key = \"********\""), "{stdout}");
    assert!(stdout.contains("default_region = \"DE\""), "{stdout}");
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("c2VjcmV0"),
        "{stdout}"
    );

    let (code, stdout, _) = run(dir.path(), &env, &["config", "check", "--json"]).await;
    assert_eq!(code, Some(0));
    let value: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(value["keys"]["root_key"], "********");
    assert_eq!(value["listen"], "127.0.0.1:8080");

    // A herald.toml in the working directory is read; the environment still wins.
    std::fs::write(
        dir.path().join("herald.toml"),
        "listen = \"127.0.0.1:9999\"\ndefault_region = \"FR\"\n",
    )
    .unwrap();
    let (_, stdout, _) = run(dir.path(), &env, &["config", "check", "--json"]).await;
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["listen"], "127.0.0.1:9999");
    assert_eq!(value["default_region"], "DE");
}

#[tokio::test]
async fn configuration_mistakes_stop_the_binary_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expected) in [
        ("HERALD_LISTN", "0.0.0.0:1", "listn"),
        ("HERALD_DATABASE_URL", "mysql://x/y", "database_url"),
        ("HERALD_TLS__CERT_FILE", "/nowhere.pem", "tls"),
    ] {
        let env = BTreeMap::from([(key.to_owned(), value.to_owned())]);
        let (code, stdout, stderr) = run(dir.path(), &env, &["serve"]).await;
        assert_eq!(code, Some(1), "{key}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(expected), "{key}: {stderr}");
    }
    assert!(
        !dir.path().join("herald-data").exists(),
        "nothing is created on a bad configuration"
    );
}

#[tokio::test]
async fn a_missing_root_key_stops_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let env = base_env(&db);
    let server = Server::start(dir.path(), &env).await;
    server.terminate().await;
    std::fs::remove_file(dir.path().join("herald-keys/root.key")).unwrap();
    let Err((status, stderr)) = Server::try_start(dir.path(), &env).await else {
        panic!("herald started without its root key");
    };
    assert!(status.contains('1'), "{status}");
    assert!(
        stderr.contains("root key that is not available"),
        "{stderr}"
    );
    assert!(!dir.path().join("herald-data/root.key").exists());
}

#[tokio::test]
async fn plain_http_on_a_public_address_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    env.insert("HERALD_LISTEN".into(), "0.0.0.0:0".into());
    let server = Server::start(dir.path(), &env).await;
    let (_, _, stderr) = server.terminate().await;
    assert!(stderr.contains("TLS IS OFF"), "{stderr}");
    let loopback = Server::start(dir.path(), &base_env(&db)).await;
    let (_, _, stderr) = loopback.terminate().await;
    assert!(!stderr.contains("TLS IS OFF"));
}

fn tls_client(max_tls12: bool) -> reqwest::Client {
    let ca = std::fs::read(fixtures().join("ca.pem")).unwrap();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    if max_tls12 {
        builder = builder.max_tls_version(reqwest::tls::Version::TLS_1_2);
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn tls_serves_https_with_hsts_on_tls_1_2_and_1_3() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    env.insert(
        "HERALD_TLS__CERT_FILE".into(),
        fixtures().join("cert.pem").display().to_string(),
    );
    env.insert(
        "HERALD_TLS__KEY_FILE".into(),
        fixtures().join("key.pem").display().to_string(),
    );
    let server = Server::start(dir.path(), &env).await;
    let url = format!("https://localhost:{}/healthz", server.address.port());
    for tls12_only in [false, true] {
        let response = tls_client(tls12_only).get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=63072000; includeSubDomains"
        );
    }
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://localhost:{}/healthz",
            server.address.port()
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err());
    let (code, _, _) = server.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn the_command_line_administers_integrations_and_keys_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let env = base_env(&db);
    let server = Server::start(dir.path(), &env).await;
    let client = reqwest::Client::new();

    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &["integrations", "create", "shop", "--json"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let integration: Value = serde_json::from_str(&stdout).expect("--json prints one document");
    assert_eq!(integration["name"], "shop");

    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &[
            "keys",
            "create",
            "--integration",
            "shop",
            "--scope",
            "subjects:write",
            "--scope",
            "subjects:read",
            "--expires-in-days",
            "10",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(
        created["scopes"],
        json!(["subjects:read", "subjects:write"])
    );

    let registered = client
        .post(server.url("/v1/subjects"))
        .bearer_auth(&key)
        .json(&json!({"phone": "+4915112345678"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    let (code, stdout, _) = run(
        dir.path(),
        &env,
        &[
            "keys",
            "list",
            "--integration",
            integration["id"].as_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(!stdout.contains(&key), "keys list never shows a key");

    let (code, stdout, _) = run(dir.path(), &env, &["integrations", "list"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("shop") && stdout.contains("admin"));

    let (code, _, stderr) = run(
        dir.path(),
        &env,
        &["keys", "revoke", created["id"].as_str().unwrap()],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let refused = client
        .post(server.url("/v1/subjects"))
        .bearer_auth(&key)
        .json(&json!({"phone": "+4915112345678"}))
        .send()
        .await
        .unwrap();
    assert_problem(refused, 401, "unauthorized").await;

    // Unknown scopes and integrations are clear errors.
    let (code, _, stderr) = run(
        dir.path(),
        &env,
        &[
            "keys",
            "create",
            "--integration",
            "shop",
            "--scope",
            "everything",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("unknown scope"), "{stderr}");
    let (code, _, stderr) = run(
        dir.path(),
        &env,
        &[
            "keys",
            "create",
            "--integration",
            "nobody",
            "--scope",
            "admin",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("integration not found"), "{stderr}");

    // Root-key rotation while the server runs: the server keeps reading everything.
    let (code, stdout, stderr) = run(dir.path(), &env, &["keys", "rotate-root", "--json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["active_version"], 2);
    assert_eq!(report["subject_keys_rewrapped"], 1);
    let admin = admin_key(&server.stdout.lock().unwrap().join("\n"));
    let found = client
        .post(server.url("/v1/subjects/lookup"))
        .bearer_auth(&admin)
        .json(&json!({"phone": "+4915112345678"}))
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), 200);
    let (code, _, _) = server.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn migrate_prepares_a_database_and_generate_root_prints_a_usable_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let env = base_env(&db);
    let (code, stdout, stderr) = run(dir.path(), &env, &["migrate"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("migrated"));

    let (code, stdout, _) = run(dir.path(), &env, &["keys", "generate-root"]).await;
    assert_eq!(code, Some(0));
    let ring = herald_crypto::RootKeyRing::parse(&stdout).unwrap();
    assert_eq!(ring.active_version(), 1);
    // Such a key serves as the env provider's root key.
    let mut env = env;
    env.insert("HERALD_KEYS__PROVIDER".into(), "env".into());
    env.insert("HERALD_KEYS__ROOT_KEY".into(), stdout.trim().to_owned());
    let server = Server::start(dir.path(), &env).await;
    let (code, _, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    assert!(!dir.path().join("herald-data/root.key").exists());
}

#[tokio::test]
async fn the_audit_commands_export_a_trail_an_outsider_can_verify() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let env = base_env(&db);
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

    let (code, stdout, stderr) = run(dir.path(), &env, &["audit", "verify", "--json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["entries"].as_u64().unwrap() >= 10);

    let export = dir.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let (code, entries, stderr) = run(dir.path(), &env, &["audit", "export"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        entries
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
    std::fs::write(export.join("entries.jsonl"), &entries).unwrap();
    let (code, checkpoints, _) = run(dir.path(), &env, &["audit", "checkpoints"]).await;
    assert_eq!(code, Some(0));
    std::fs::write(export.join("checkpoints.jsonl"), &checkpoints).unwrap();
    let (code, keys, _) = run(dir.path(), &env, &["audit", "public-key", "--json"]).await;
    assert_eq!(code, Some(0));
    std::fs::write(export.join("keys.json"), &keys).unwrap();
    let witness = dir.path().join("herald-data/audit-witness.jsonl");
    let verdict = crate::audit::run_verifier(&export, &witness);
    assert!(verdict.starts_with("ok"), "{verdict}");

    // A partial export (after a sequence number) is anchored by a checkpoint, or refused.
    let (_, partial, _) = run(dir.path(), &env, &["audit", "export", "--after", "3"]).await;
    let first: Value = serde_json::from_str(partial.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 4);

    // The export itself is recorded, and later verification still passes.
    let (code, stdout, _) = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("ok:"), "{stdout}");
    let (_, all, _) = run(dir.path(), &env, &["audit", "export"]).await;
    assert!(all.contains("\"action\":\"audit.exported\""));
    assert!(all.contains("\"action\":\"audit.verified\""));

    // Tampering makes the command fail (exit 1) and name the entry: the first API call's.
    let target = all
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["details"]["status"] == 200)
        .expect("an API call's entry")["seq"]
        .as_u64()
        .unwrap();
    let tamper = format!(
        "UPDATE audit_log SET body = REPLACE(body, '\"status\":200', '\"status\":204') WHERE seq = {target}"
    );
    past_the_guards(&db, dir.path(), "audit_log_no_update", &tamper).await;
    let (code, stdout, stderr) = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("does NOT verify: modified at entry {target}")),
        "{stdout}"
    );
}

/// Runs `sql` on a stopped server's database as someone in control of it would, past the
/// audit tables' guards: on PostgreSQL with triggers disabled for the session, on SQLite by
/// dropping `sqlite_trigger` first.
pub async fn past_the_guards(db: &TestDb, dir: &Path, sqlite_trigger: &str, sql: &str) {
    match &db.url {
        Some(url) => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
                .await
                .unwrap();
            sqlx::query("SET session_replication_role = replica")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        None => {
            let url = format!("sqlite://{}", dir.join("herald-data/herald.db").display());
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP TRIGGER {sqlite_trigger}"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

//! The disaster-recovery runbook (docs/operations.md) followed with the real binary: back up
//! while serving, verify, escrow the root key, lose the machine, restore on a new one, be
//! refused without the ledger, import it, start, and find the erased subject still erased.
//! Also `herald keys move` for an installation whose key still sits in the data directory.

use std::path::Path;

use age::secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::process::{Server, admin_key, base_env, run};

fn write_identity(dir: &Path) -> (std::path::PathBuf, String) {
    let identity = age::x25519::Identity::generate();
    let file = dir.join("restore-identity.txt");
    std::fs::write(&file, format!("{}\n", identity.to_string().expose_secret())).unwrap();
    (file, identity.to_public().to_string())
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn the_runbook_restores_a_lost_machine_with_nothing_erased_coming_back() {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    let offline = tempfile::tempdir().unwrap();
    let (identity, recipient) = write_identity(offline.path());
    let db = TestDb::new().await;
    let env = base_env(&db);
    let config = format!("[backup]\nrecipients = [\"{recipient}\"]\n");
    std::fs::write(old.path().join("herald.toml"), &config).unwrap();

    let server = Server::start(old.path(), &env).await;
    let client = reqwest::Client::new();
    let key = admin_key(&server.stdout.lock().unwrap().join("\n"));
    let mut subjects = Vec::new();
    for phone in ["+4915112345678", "+4915112345679"] {
        let created = client
            .post(server.url("/v1/subjects"))
            .bearer_auth(&key)
            .json(&json!({"phone": phone}))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success());
        subjects.push(
            created.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Backed up while the server runs.
    let (code, stdout, stderr) = run(old.path(), &env, &["backup", "create", "--json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let created = json_of(&stdout);
    // Printed as configured (relative to the working directory).
    let manifest = old
        .path()
        .join(created["manifest"].as_str().unwrap())
        .display()
        .to_string();
    assert_eq!(created["counts"]["subjects"], 2);
    let (code, stdout, stderr) = run(
        old.path(),
        &env,
        &[
            "backup",
            "verify",
            &manifest,
            "--identity",
            identity.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let verified = json_of(&stdout);
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["subjects"], 2);
    assert_eq!(verified["recorded"], true);
    // The key goes into escrow, to another offline recipient.
    let escrow_dir = tempfile::tempdir().unwrap();
    let (escrow_identity, escrow_recipient) = write_identity(escrow_dir.path());
    let escrow = offline.path().join("root-key.age");
    let (code, _, stderr) = run(
        old.path(),
        &env,
        &[
            "keys",
            "escrow",
            "--recipient",
            &escrow_recipient,
            "--out",
            escrow.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    // After the backup: an erasure.
    let erased = &subjects[1];
    let response = client
        .delete(server.url(&format!("/v1/subjects/{erased}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (code, _, _) = server.terminate().await;
    assert_eq!(code, Some(0));

    // The new machine: configuration, then the restore into an empty data directory.
    std::fs::write(new.path().join("herald.toml"), &config).unwrap();
    // PostgreSQL: the new machine's own, empty database.
    let target_db = if db.is_postgres() {
        Some(TestDb::postgres().await)
    } else {
        None
    };
    let mut new_env = env.clone();
    if let Some(target) = &target_db {
        new_env.insert("HERALD_DATABASE_URL".into(), target.url.clone().unwrap());
    }
    let (code, stdout, stderr) = run(
        new.path(),
        &new_env,
        &[
            "backup",
            "restore",
            &manifest,
            "--identity",
            identity.to_str().unwrap(),
            "--data-dir",
            "herald-data",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let restored = json_of(&stdout);
    assert_eq!(restored["erasure_ledger"]["outcome"], "missing");
    assert_eq!(restored["root_key_versions"], json!([1]));
    // The root key from escrow, decrypted by the age command line.
    std::fs::create_dir_all(new.path().join("herald-keys")).unwrap();
    let key_file = new.path().join("herald-keys/root.key");
    let decrypted = std::process::Command::new("age")
        .args(["-d", "-i"])
        .arg(&escrow_identity)
        .arg("-o")
        .arg(&key_file)
        .arg(&escrow)
        .status()
        .unwrap();
    assert!(decrypted.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Without the ledger the start is refused, naming the way out.
    let (code, _, stderr) = run(new.path(), &new_env, &["serve"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("erasure ledger"), "{stderr}");
    assert!(stderr.contains("herald erasures import"), "{stderr}");
    // The old machine's ledger (from shared storage, in a real loss) is imported.
    let ledger = old.path().join("herald-data/erasure-ledger.jsonl");
    let (code, stdout, stderr) = run(
        new.path(),
        &new_env,
        &["erasures", "import", ledger.to_str().unwrap(), "--json"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json_of(&stdout)["erasures_reapplied"], 1);
    let server = Server::start(new.path(), &new_env).await;
    for (subject, status) in [(&subjects[0], 200), (&subjects[1], 410)] {
        let response = client
            .get(server.url(&format!("/v1/subjects/{subject}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{subject}");
    }
    let verify = client
        .get(server.url("/v1/audit/verify"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(verify.json::<Value>().await.unwrap()["ok"], true);
    server.terminate().await;
}

#[tokio::test]
async fn keys_move_takes_a_legacy_key_out_of_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let env = base_env(&db);
    let server = Server::start(dir.path(), &env).await;
    server.terminate().await;
    // An installation from before the key moved out: its key in the data directory.
    std::fs::rename(
        dir.path().join("herald-keys/root.key"),
        dir.path().join("herald-data/root.key"),
    )
    .unwrap();
    std::fs::remove_dir(dir.path().join("herald-keys")).unwrap();
    let server = Server::start(dir.path(), &env).await;
    let (code, _, stderr) = server.terminate().await;
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("herald keys move"),
        "it starts, warned: {stderr}"
    );

    let (code, stdout, stderr) = run(dir.path(), &env, &["keys", "move", "--json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let moved = json_of(&stdout);
    assert_eq!(moved["set_keys_file"], false);
    assert!(!dir.path().join("herald-data/root.key").exists());
    assert!(dir.path().join("herald-keys/root.key").exists());
    let server = Server::start(dir.path(), &env).await;
    let (code, _, stderr) = server.terminate().await;
    assert_eq!(code, Some(0));
    assert!(!stderr.contains("herald keys move"), "{stderr}");
    let (code, stdout, _) = run(dir.path(), &env, &["audit", "export"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(stdout.matches("\"action\":\"keys.moved\"").count(), 1);
}

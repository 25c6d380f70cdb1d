//! OAuth 2.0 over time (issue 15; ADR 0014): revocation of tokens, clients and integrations on
//! every node at once, signing-key rotation, introspection, and the audit trail and logs of it
//! all — with no secret, assertion or token in either.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, json};
use crate::oauth_kit::{
    ClientKey, access_token, claims_of, create_client, header_of, integration_with_token,
    secret_client, token_basic, token_with_assertion,
};
use crate::process::{Server, base_env, run};

async fn revoke_token(app: &TestApp, id: &str, secret: &str, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/oauth/revoke"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_revokes_its_own_token_and_only_that() {
    let app = TestApp::spawn().await;
    let (integration, id, secret, token) =
        integration_with_token(&app, "shop", &["messages:read"]).await;
    let other_token = access_token(&app, &id, &secret).await;
    assert_eq!(app.get("/v1/requests", &token).await.status(), 403);
    // Another client may not revoke it.
    let (intruder, intruder_secret) = secret_client(&app, &integration, &["messages:read"]).await;
    let refused = revoke_token(&app, &intruder, &intruder_secret, &token).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(json(refused).await["error"], "unauthorized_client");
    assert_eq!(app.get("/v1/requests", &token).await.status(), 403);
    // Without client authentication: invalid_client.
    let anonymous = app
        .client
        .post(app.url("/oauth/revoke"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let revoked = revoke_token(&app, &id, &secret, &token).await;
    assert_eq!(revoked.status(), 200);
    assert_eq!(revoked.headers()["cache-control"], "no-store");
    assert_eq!(app.get("/v1/requests", &token).await.status(), 401);
    // The client's other token and new tokens go on working.
    assert_eq!(app.get("/v1/requests", &other_token).await.status(), 403);
    let fresh = access_token(&app, &id, &secret).await;
    assert_eq!(app.get("/v1/requests", &fresh).await.status(), 403);
    // Revoking again, or revoking garbage, is not an error (RFC 7009 §2.2).
    assert_eq!(revoke_token(&app, &id, &secret, &token).await.status(), 200);
    assert_eq!(
        revoke_token(&app, &id, &secret, "not-a-token")
            .await
            .status(),
        200
    );
    let missing = app
        .client
        .post(app.url("/oauth/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(json(missing).await["error"], "invalid_request");
    // A revoked token is remembered only until it would have expired anyway.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM oauth_revoked_tokens").await,
        1
    );
}

#[tokio::test]
async fn revocation_on_one_node_binds_the_next_request_on_another() {
    let node1 = TestApp::spawn().await;
    let node2 = node1.second_node(|_| {}).await;
    let (_, id, secret, token) = integration_with_token(&node1, "shop", &["messages:read"]).await;
    let api_key = node1.admin_key.clone();
    // Both nodes know the token (each has verified it once and cached that).
    assert_eq!(node1.get("/v1/requests", &token).await.status(), 403);
    assert_eq!(node2.get("/v1/requests", &token).await.status(), 403);

    // A token revoked through node 1 is refused by node 2's very next request.
    assert_eq!(
        revoke_token(&node1, &id, &secret, &token).await.status(),
        200
    );
    assert_eq!(node2.get("/v1/requests", &token).await.status(), 401);

    // A client revoked on node 2: its tokens die on node 1, and it gets no new ones.
    let second = access_token(&node1, &id, &secret).await;
    assert_eq!(node1.get("/v1/requests", &second).await.status(), 403);
    let revoked = node2
        .delete(&format!("/v1/oauth-clients/{id}"), &api_key)
        .await;
    assert_eq!(revoked.status(), 200);
    let revoked = json(revoked).await;
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(node1.get("/v1/requests", &second).await.status(), 401);
    let refused = token_basic(
        &node1,
        &id,
        &secret,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(refused.status(), 401);

    // An integration revoked on node 1: its API keys and every client's tokens die on node 2.
    let (_, key) = node1.integration_with_key("crm", &["messages:read"]).await;
    let crm = json(node1.get("/v1/integrations?limit=500", &api_key).await).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "crm")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (crm_client, crm_secret) = secret_client(&node1, &crm, &["messages:read"]).await;
    let crm_token = access_token(&node2, &crm_client, &crm_secret).await;
    assert_eq!(node2.get("/v1/requests", &key).await.status(), 403);
    assert_eq!(node2.get("/v1/requests", &crm_token).await.status(), 403);
    let gone = node1
        .delete(&format!("/v1/integrations/{crm}"), &api_key)
        .await;
    assert_eq!(gone.status(), 200);
    let gone = json(gone).await;
    assert_eq!(gone["api_keys_revoked"], 1);
    assert_eq!(gone["oauth_clients_revoked"], 1);
    assert!(gone["revoked_at"].is_string());
    assert_eq!(node2.get("/v1/requests", &key).await.status(), 401);
    assert_eq!(node2.get("/v1/requests", &crm_token).await.status(), 401);
    // A revoked integration takes no new credentials.
    let new_key = node2
        .post(
            &format!("/v1/integrations/{crm}/keys"),
            &api_key,
            &json!({"scopes": ["messages:read"]}),
        )
        .await;
    assert_eq!(new_key.status(), 409);
    assert_eq!(json(new_key).await["code"], "integration_revoked");
    let new_client = node2
        .post(
            &format!("/v1/integrations/{crm}/oauth-clients"),
            &api_key,
            &json!({"name": "again", "scopes": ["messages:read"]}),
        )
        .await;
    assert_eq!(new_client.status(), 409);
    // Revoking again changes nothing.
    let again = json(
        node2
            .delete(&format!("/v1/integrations/{crm}"), &api_key)
            .await,
    )
    .await;
    assert_eq!(again["api_keys_revoked"], 0);
    assert_eq!(again["revoked_at"], gone["revoked_at"]);
    // The admin integration cannot be revoked: the operator would lock themselves out.
    let admin_id = json(node1.get("/v1/integrations?limit=500", &api_key).await).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = node1
        .delete(&format!("/v1/integrations/{admin_id}"), &api_key)
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(node1.get("/v1/integrations", &api_key).await.status(), 200);
    // The first integration is untouched throughout.
    let (_, _, _, shop_token) = integration_with_token(&node2, "shop-2", &["messages:read"]).await;
    assert_eq!(node1.get("/v1/requests", &shop_token).await.status(), 403);
}

#[tokio::test]
async fn a_rotated_signing_key_verifies_its_tokens_until_they_expire() {
    let app = TestApp::spawn().await;
    let (_, id, secret, old_token) = integration_with_token(&app, "shop", &["messages:read"]).await;
    let old_kid = header_of(&old_token)["kid"].as_str().unwrap().to_owned();
    app.clock.advance(TimeDelta::seconds(300));
    let (kid, previous) = app
        .herald
        .auth()
        .oauth()
        .rotate_signing_key(&herald_domain::audit::Initiator::admin())
        .await
        .unwrap();
    assert_eq!(previous.as_deref(), Some(old_kid.as_str()));
    let jwks = json(
        app.client
            .get(app.url("/oauth/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&kid.as_str()) && kids.contains(&old_kid.as_str()));
    // The new key signs; the old one still verifies what it signed.
    app.clock.advance(TimeDelta::seconds(200));
    let new_token = access_token(&app, &id, &secret).await;
    assert_eq!(header_of(&new_token)["kid"], kid.as_str());
    assert_eq!(app.get("/v1/requests", &old_token).await.status(), 403);
    assert_eq!(app.get("/v1/requests", &new_token).await.status(), 403);
    // The private half of the retired key is gone from the database.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM oauth_signing_keys WHERE private_key_ciphertext IS NOT NULL"
        )
        .await,
        1
    );
    // Once every token the old key can have signed has expired (the rotation's time plus
    // a token lifetime), it leaves the key set.
    app.clock.advance(TimeDelta::seconds(401));
    let jwks = json(
        app.client
            .get(app.url("/oauth/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(app.get("/v1/requests", &old_token).await.status(), 401);
    assert_eq!(app.get("/v1/requests", &new_token).await.status(), 403);
    // Keys survive a restart (they are in the database, the private half sealed).
    let app = app.restart().await;
    assert_eq!(app.get("/v1/requests", &new_token).await.status(), 403);
}

#[tokio::test]
async fn introspection_shows_a_token_only_to_its_own_integration() {
    let app = TestApp::spawn().await;
    let (integration, _, _, token) = integration_with_token(&app, "shop", &["messages:read"]).await;
    let (_, other_token) = app.integration_with_key("crm", &["oauth:introspect"]).await;
    let own = app
        .post(
            &format!("/v1/integrations/{integration}/keys"),
            &app.admin_key,
            &json!({"scopes": ["oauth:introspect"]}),
        )
        .await;
    let own = json(own).await["key"].as_str().unwrap().to_owned();
    let introspect = |key: String, token: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/oauth/introspect"))
                .bearer_auth(key)
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
        }
    };
    let seen = introspect(own.clone(), token.clone()).await;
    assert_eq!(seen.status(), 200);
    assert_eq!(seen.headers()["cache-control"], "no-store");
    let seen = json(seen).await;
    let claims = claims_of(&token);
    assert_eq!(seen["active"], true);
    for field in [
        "scope",
        "client_id",
        "exp",
        "iat",
        "sub",
        "aud",
        "iss",
        "jti",
        "integration_id",
    ] {
        assert_eq!(seen[field], claims[field], "{field}");
    }
    assert_eq!(seen["token_type"], "Bearer");
    // Another integration's token is "inactive" to this caller (RFC 7662 §2.2).
    let hidden = json(introspect(other_token.clone(), token.clone()).await).await;
    assert_eq!(hidden, json!({"active": false}));
    // The admin sees every token; garbage is simply inactive.
    let admin = json(introspect(app.admin_key.clone(), token.clone()).await).await;
    assert_eq!(admin["active"], true);
    let garbage = json(introspect(own.clone(), "a.b.c".into()).await).await;
    assert_eq!(garbage, json!({"active": false}));
    // Without the scope: 403; without a credential: 401.
    let (_, plain) = app.integration_with_key("plain", &["messages:read"]).await;
    assert_eq!(introspect(plain, token.clone()).await.status(), 403);
    let anonymous = app
        .client
        .post(app.url("/oauth/introspect"))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // Expired: inactive.
    app.clock.advance(TimeDelta::seconds(600));
    let expired = json(introspect(own, token).await).await;
    assert_eq!(expired, json!({"active": false}));
}

#[tokio::test]
async fn every_oauth_event_is_audited_without_secrets() {
    let app = TestApp::spawn().await;
    let (integration, id, secret, token) =
        integration_with_token(&app, "shop", &["messages:read"]).await;
    let key = ClientKey::generate();
    let jwt_client = create_client(
        &app,
        &integration,
        json!({"name": "signer", "scopes": ["messages:read"],
               "token_endpoint_auth_method": "private_key_jwt", "jwk": key.jwk()}),
    )
    .await;
    let jwt_id = jwt_client["client_id"].as_str().unwrap();
    let assertion = key.assertion(&app, jwt_id, "one-time");
    assert_eq!(
        token_with_assertion(&app, &assertion, &[]).await.status(),
        200
    );
    assert_eq!(
        token_with_assertion(&app, &assertion, &[]).await.status(),
        401
    );
    let bad = token_basic(
        &app,
        &id,
        "hcs_guess",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(bad.status(), 401);
    // A request with the token is audited with the OAuth actor.
    let unknown = app
        .get("/v1/messages/msg_00000000000000000000000000", &token)
        .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(revoke_token(&app, &id, &secret, &token).await.status(), 200);
    app.herald
        .auth()
        .oauth()
        .rotate_signing_key(&herald_domain::audit::Initiator::admin())
        .await
        .unwrap();
    assert_eq!(
        app.delete(&format!("/v1/oauth-clients/{id}"), &app.admin_key)
            .await
            .status(),
        200
    );

    let entries = crate::audit::entries(&app).await;
    let of = |action: &str| -> Vec<&Value> {
        entries.iter().filter(|e| e["action"] == action).collect()
    };
    assert_eq!(of("oauth.client_created").len(), 2);
    let created = of("oauth.client_created")[1];
    assert_eq!(
        created["target"],
        json!({"type": "oauth_client", "id": jwt_id})
    );
    assert_eq!(created["details"]["auth_method"], "private_key_jwt");
    assert_eq!(of("oauth.token_issued").len(), 2);
    let issued = of("oauth.token_issued")[0];
    assert_eq!(issued["actor"]["type"], "oauth_client");
    assert_eq!(issued["actor"]["client_id"], id.as_str());
    assert_eq!(issued["actor"]["token_id"], claims_of(&token)["jti"]);
    let reasons: Vec<&Value> = of("oauth.token_refused")
        .iter()
        .map(|e| &e["details"]["reason"])
        .collect();
    assert!(
        reasons.contains(&&json!("replayed_assertion")),
        "{reasons:?}"
    );
    assert!(reasons.contains(&&json!("bad_secret")), "{reasons:?}");
    assert_eq!(of("oauth.token_revoked").len(), 1);
    assert_eq!(of("oauth.client_revoked").len(), 1);
    // The first key at the first start, the rotation now.
    let keys = of("oauth.signing_key_created");
    assert_eq!(keys.len(), 2);
    assert!(keys[1]["details"]["previous_key_id"].is_string());
    let request = entries
        .iter()
        .find(|e| e["action"] == "api.request" && e["actor"]["type"] == "oauth_client")
        .expect("the request with the token is audited");
    assert_eq!(request["actor"]["integration_id"], integration.as_str());
    assert_eq!(request["actor"]["token_id"], claims_of(&token)["jti"]);

    let trail = serde_json::to_string(&entries).unwrap();
    let signature = token.rsplit('.').next().unwrap();
    for secret in [secret.as_str(), &token, signature, &assertion, "hcs_guess"] {
        assert!(!trail.contains(secret), "a secret reached the audit trail");
    }
    // Secrets are stored as keyed hashes only: nowhere in the database's bytes.
    let raw = app.raw_database_bytes().await;
    assert!(
        !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the client secret is stored in clear"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM oauth_clients WHERE secret_hash IS NOT NULL")
            .await,
        1
    );
}

/// The real binary with trace logs: the whole OAuth flow leaves no secret, token or
/// assertion in them; the CLI manages clients and signing keys.
#[tokio::test]
async fn the_cli_manages_clients_and_the_logs_hold_no_oauth_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    env.insert("HERALD_LOG__LEVEL".into(), "trace".into());
    let (code, _, stderr) = run(dir.path(), &env, &["integrations", "create", "shop"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &[
            "oauth-clients",
            "create",
            "--integration",
            "shop",
            "--name",
            "backend",
            "--scope",
            "subjects:read",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let key = ClientKey::generate();
    let jwk_file = dir.path().join("client.jwk");
    std::fs::write(&jwk_file, key.jwk().to_string()).unwrap();
    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &[
            "oauth-clients",
            "create",
            "--integration",
            "shop",
            "--name",
            "signer",
            "--scope",
            "messages:read",
            "--auth-method",
            "private_key_jwt",
            "--jwk-file",
            jwk_file.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let signer: Value = serde_json::from_str(&stdout).unwrap();
    assert!(signer.get("client_secret").is_none());
    let (code, stdout, _) = run(
        dir.path(),
        &env,
        &["oauth-clients", "list", "--integration", "shop", "--json"],
    )
    .await;
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert!(!stdout.contains(&secret), "a listing shows no secret");

    let server = Server::start(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let metadata: Value = client
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer: Value = client
        .post(server.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let messages = client
        .get(server.url("/v1/requests"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(messages.status(), 200);
    // The issuer defaults to the listen address; an assertion names it as its audience.
    let now = chrono::Utc::now().timestamp();
    let signer_id = signer["client_id"].as_str().unwrap();
    let assertion = key.sign(&json!({
        "iss": signer_id, "sub": signer_id, "aud": metadata["token_endpoint"],
        "jti": "cli-test", "iat": now, "exp": now + 60}));
    for expected in [200, 401] {
        let response = client
            .post(server.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", crate::oauth_kit::ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }
    let wrong = client
        .post(server.url("/oauth/token"))
        .basic_auth(&id, Some("hcs_not-the-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let forged = client
        .get(server.url("/v1/requests"))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let (code, stdout, stderr) =
        run(dir.path(), &env, &["oauth", "rotate-signing-key", "--json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let rotated: Value = serde_json::from_str(&stdout).unwrap();
    assert!(rotated["key_id"].is_string() && rotated["previous_key_id"].is_string());
    let (code, _, stderr) = run(
        dir.path(),
        &env,
        &["oauth-clients", "revoke", &id, "--json"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    // The running server sees the CLI's revocation at its next request.
    let after = client
        .get(server.url("/v1/requests"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &["integrations", "revoke", "shop", "--json"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let revoked: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        revoked["oauth_clients_revoked"], 1,
        "the other client was revoked already"
    );

    let (code, _, stderr) = server.terminate().await;
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("access token issued"),
        "the flow reached the log"
    );
    let signature = token.rsplit('.').next().unwrap();
    for secret in [
        secret.as_str(),
        &token,
        signature,
        &assertion,
        "hcs_not-the-secret",
    ] {
        assert!(!stderr.contains(secret), "a secret reached the log");
    }
}

/// The independent oracle: an integrator's client built from authlib and PyJWT (from PyPI,
/// pinned in tools/requirements.txt) discovers Herald, gets tokens both ways, validates them
/// against the JWKS and sends with them (tools/oauth_oracle.py).
#[tokio::test]
async fn an_off_the_shelf_oauth_library_gets_tokens_that_pyjwt_validates() {
    let app = TestApp::spawn().await;
    // PyJWT checks times against the real clock.
    app.clock.set(chrono::Utc::now());
    let phone = "+4915112345678";
    app.opt_in(phone, "demo").await;
    let python = tokio::task::spawn_blocking(crate::oauth_kit::oracle_python)
        .await
        .unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/oauth_oracle.py");
    // Async: the server under test runs on this same runtime.
    let output = tokio::process::Command::new(python)
        .arg(script)
        .args([app.url("").as_str(), app.admin_key.as_str(), phone])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the oracle failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["forged_refused"], true);
    let integration = result["integration_id"].as_str().unwrap();
    let messages = result["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    // Both messages are really queued, for the oracle's integration.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM messages WHERE integration_id = '{integration}'"
        ))
        .await,
        2
    );
    // PyJWT read the same claims Herald audited as issued.
    let entries = crate::audit::entries(&app).await;
    for claims in result["claims"].as_array().unwrap() {
        assert_eq!(claims["integration_id"], integration);
        assert!(
            entries
                .iter()
                .any(|e| e["action"] == "oauth.token_issued"
                    && e["actor"]["token_id"] == claims["jti"]),
            "{claims}"
        );
    }
}

//! Helpers for OAuth 2.0 tests: clients, token requests, and client keys that sign
//! assertions the way an integrator's library would.

use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use crate::helpers::{TestApp, json};

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Registers a client with the admin key; returns the creation answer.
pub async fn create_client(app: &TestApp, integration: &str, body: Value) -> Value {
    let created = app
        .post(
            &format!("/v1/integrations/{integration}/oauth-clients"),
            &app.admin_key,
            &body,
        )
        .await;
    assert_eq!(created.status(), 201);
    json(created).await
}

/// A `client_secret_basic` client with `scopes`: (client_id, client_secret).
pub async fn secret_client(app: &TestApp, integration: &str, scopes: &[&str]) -> (String, String) {
    let created = create_client(
        app,
        integration,
        json!({"name": "backend", "scopes": scopes}),
    )
    .await;
    (
        created["client_id"].as_str().unwrap().to_owned(),
        created["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// A token request with Basic client authentication and the given extra form fields.
pub async fn token_basic(
    app: &TestApp,
    client_id: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    app.client
        .post(app.url("/oauth/token"))
        .basic_auth(client_id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// An access token for a `client_secret_basic` client.
pub async fn access_token(app: &TestApp, client_id: &str, secret: &str) -> String {
    let response = token_basic(
        app,
        client_id,
        secret,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(response.status(), 200);
    json(response).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An integration with a secret client holding `scopes`, and a token of that client:
/// (integration id, client id, secret, access token).
pub async fn integration_with_token(
    app: &TestApp,
    name: &str,
    scopes: &[&str],
) -> (String, String, String, String) {
    let (integration, _) = app.integration_with_key(name, &["messages:read"]).await;
    let (client_id, secret) = secret_client(app, &integration, scopes).await;
    let token = access_token(app, &client_id, &secret).await;
    (integration, client_id, secret, token)
}

/// A client's Ed25519 key pair, as an integrator holds it.
pub struct ClientKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl ClientKey {
    pub fn generate() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec();
        let public = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec();
        Self { pkcs8, public }
    }

    /// The public JWK to register.
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": BASE64URL_NOPAD.encode(&self.public)})
    }

    /// A signed client assertion (RFC 7523 §3) with these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = Header::new(Algorithm::EdDSA);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }

    /// The usual assertion: iss = sub = client, aud = the token endpoint, 60 s, a fresh jti.
    pub fn assertion(&self, app: &TestApp, client_id: &str, jti: &str) -> String {
        let now = app.now_secs();
        self.sign(&json!({
            "iss": client_id, "sub": client_id, "aud": app.url("/oauth/token"),
            "jti": jti, "iat": now, "exp": now + 60,
        }))
    }
}

/// A token request authenticated with a client assertion.
pub async fn token_with_assertion(
    app: &TestApp,
    assertion: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    form.extend_from_slice(extra);
    app.client
        .post(app.url("/oauth/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// A token's claims, read without verifying (tests look inside what Herald signed).
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap()
}

/// A token's header.
pub fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&BASE64URL_NOPAD.decode(header.as_bytes()).unwrap()).unwrap()
}

/// A Python with `tools/requirements.txt` installed: `$HERALD_TEST_PYTHON` (what `.ci/run`
/// sets up), else a virtual environment under the target directory, made once from PyPI.
pub fn oracle_python() -> std::path::PathBuf {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(python) = std::env::var_os("HERALD_TEST_PYTHON") {
                return python.into();
            }
            let requirements = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tools/requirements.txt");
            let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("oracle-venv");
            let python = venv.join("bin/python");
            let stamp = venv.join("installed-requirements.txt");
            let wanted = std::fs::read_to_string(&requirements).unwrap();
            if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
                let made = std::process::Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 makes a virtual environment");
                assert!(made.success(), "python3 -m venv failed");
                let installed = std::process::Command::new(&python)
                    .args(["-m", "pip", "install", "-q", "-r"])
                    .arg(&requirements)
                    .status()
                    .expect("pip runs");
                assert!(
                    installed.success(),
                    "pip install -r tools/requirements.txt failed"
                );
                std::fs::write(&stamp, wanted).unwrap();
            }
            python
        })
        .clone()
}

//! OAuth 2.0 for integrations (issue 15; ADR 0014; compliance.md OAUTH-1): the client-credentials flow with both
//! client authentication methods, every RFC 6749 §5.2 error, scope narrowing, and the access
//! tokens that must be refused. Revocation, rotation, introspection and audit are in
//! `oauth_lifecycle.rs`.

use chrono::TimeDelta;
use data_encoding::BASE64URL_NOPAD;
use herald_domain::clock::Clock;
use serde_json::{Value, json};

use crate::helpers::{TestApp, json};
use crate::oauth_kit::{
    ASSERTION_TYPE, ClientKey, access_token, claims_of, create_client, header_of,
    integration_with_token, secret_client, token_basic, token_with_assertion,
};

const PHONE: &str = "+4915112345678";

fn demo_send(to: &str) -> Value {
    json!({"to": to, "purpose": "demo",
           "template": {"name": "demo_update", "language": "en", "parameters": ["hello"]}})
}

/// An OAuth answer: JSON, never cached (RFC 6749 §5.1).
fn assert_oauth_headers(response: &reqwest::Response) {
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
}

/// An RFC 6749 §5.2 error: the status, `error`, a description, nothing else.
async fn assert_oauth_error(response: reqwest::Response, status: u16, error: &str) {
    assert_eq!(response.status(), status);
    assert_oauth_headers(&response);
    if status == 401 {
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"herald\""
        );
    }
    let body = json(response).await;
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn a_secret_client_gets_a_token_and_sends_a_message_with_it() {
    let app = TestApp::spawn().await;
    app.opt_in(PHONE, "demo").await;
    let (integration, _) = app.integration_with_key("shop", &["messages:read"]).await;
    let created = create_client(
        &app,
        &integration,
        json!({"name": "shop-backend", "scopes": ["messages:send", "subjects:write", "messages:read"]}),
    )
    .await;
    let client_id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    assert_eq!(created["id"], client_id);
    assert_eq!(created["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(created["integration_id"], integration.as_str());
    // 256 random bits, base32: 52 characters after the prefix.
    assert!(
        secret.starts_with("hcs_") && secret.len() >= 4 + 52,
        "{secret}"
    );

    let response = token_basic(
        &app,
        client_id,
        secret,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_oauth_headers(&response);
    let answer = json(response).await;
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 600);
    let mut granted: Vec<&str> = answer["scope"].as_str().unwrap().split(' ').collect();
    granted.sort_unstable();
    assert_eq!(
        granted,
        ["messages:read", "messages:send", "subjects:write"]
    );
    let token = answer["access_token"].as_str().unwrap();

    // RFC 9068: the header and every required claim.
    let header = header_of(token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    let jwks = json(
        app.client
            .get(app.url("/oauth/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    let claims = claims_of(token);
    let now = app.now_secs();
    assert_eq!(claims["iss"], app.url(""));
    assert_eq!(claims["aud"], app.url(""));
    assert_eq!(claims["sub"], client_id);
    assert_eq!(claims["client_id"], client_id);
    assert_eq!(claims["integration_id"], integration.as_str());
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["exp"], now + 600);
    assert!(claims["jti"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(claims["scope"], answer["scope"]);

    let sent = app.post("/v1/messages", token, &demo_send(PHONE)).await;
    assert_eq!(sent.status(), 202, "{}", sent.text().await.unwrap());
    let sent = json(sent).await;
    let read = app
        .get(
            &format!("/v1/messages/{}", sent["id"].as_str().unwrap()),
            token,
        )
        .await;
    assert_eq!(read.status(), 200);
    // The message is the integration's, whichever credential sent it.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM messages WHERE integration_id = '{integration}'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn client_secret_post_is_its_own_method() {
    let app = TestApp::spawn().await;
    let (integration, _) = app.integration_with_key("shop", &["messages:read"]).await;
    let created = create_client(
        &app,
        &integration,
        json!({"name": "poster", "scopes": ["messages:read"],
               "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    let id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    let posted = app
        .client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let token = json(posted).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get("/v1/requests", &token).await.status(), 403);
    // The registered method is the only one: the same secret in a Basic header is refused.
    let basic = token_basic(&app, id, secret, &[("grant_type", "client_credentials")]).await;
    assert_oauth_error(basic, 401, "invalid_client").await;
    // And a basic client's secret may not travel in the body.
    let (basic_id, basic_secret) = secret_client(&app, &integration, &["messages:read"]).await;
    let in_body = app
        .client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", basic_id.as_str()),
            ("client_secret", basic_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(in_body, 401, "invalid_client").await;
}

#[tokio::test]
async fn private_key_jwt_clients_sign_assertions_that_work_once() {
    let app = TestApp::spawn().await;
    app.opt_in(PHONE, "demo").await;
    let (integration, _) = app.integration_with_key("clinic", &["messages:read"]).await;
    let key = ClientKey::generate();
    let created = create_client(
        &app,
        &integration,
        json!({"name": "clinic-backend", "scopes": ["messages:send", "subjects:write"],
               "token_endpoint_auth_method": "private_key_jwt", "jwk": key.jwk()}),
    )
    .await;
    assert!(created.get("client_secret").is_none(), "{created}");
    assert_eq!(created["jwk"]["x"], key.jwk()["x"]);
    let id = created["client_id"].as_str().unwrap();

    let assertion = key.assertion(&app, id, "assertion-1");
    let response = token_with_assertion(&app, &assertion, &[]).await;
    assert_eq!(response.status(), 200);
    let token = json(response).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&token)["client_id"], id);
    let sent = app.post("/v1/messages", &token, &demo_send(PHONE)).await;
    assert_eq!(sent.status(), 202);

    // The same assertion again: a replay (its jti was seen within its lifetime).
    let replayed = token_with_assertion(&app, &assertion, &[]).await;
    assert_oauth_error(replayed, 401, "invalid_client").await;
    // With client_id in the form too (RFC 7523 §3 allows it); a different one is refused.
    let fresh = key.assertion(&app, id, "assertion-2");
    let with_id = token_with_assertion(&app, &fresh, &[("client_id", id)]).await;
    assert_eq!(with_id.status(), 200);
    let other_id = key.assertion(&app, id, "assertion-3");
    let mismatch = token_with_assertion(
        &app,
        &other_id,
        &[("client_id", "ocl_00000000000000000000000000")],
    )
    .await;
    assert_oauth_error(mismatch, 401, "invalid_client").await;

    let now = app.now_secs();
    let token_endpoint = app.url("/oauth/token");
    let other_key = ClientKey::generate();
    let bad: [(&str, String); 6] = [
        (
            "wrong audience",
            key.sign(
                &json!({"iss": id, "sub": id, "aud": "https://elsewhere.example/token",
                             "jti": "a", "iat": now, "exp": now + 60}),
            ),
        ),
        (
            "expired",
            key.sign(&json!({"iss": id, "sub": id, "aud": token_endpoint,
                             "jti": "b", "iat": now - 600, "exp": now - 120})),
        ),
        (
            "too long-lived",
            key.sign(&json!({"iss": id, "sub": id, "aud": token_endpoint,
                             "jti": "c", "iat": now, "exp": now + 2 * 3600})),
        ),
        (
            "sub is not the client",
            key.sign(&json!({"iss": id, "sub": "someone", "aud": token_endpoint,
                             "jti": "d", "iat": now, "exp": now + 60})),
        ),
        (
            "no jti",
            key.sign(&json!({"iss": id, "sub": id, "aud": token_endpoint,
                             "iat": now, "exp": now + 60})),
        ),
        ("another key", other_key.assertion(&app, id, "e")),
    ];
    for (what, assertion) in bad {
        let response = token_with_assertion(&app, &assertion, &[]).await;
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(json(response).await["error"], "invalid_client", "{what}");
    }
    // The replay memory is per jti, and only for its lifetime.
    assert!(
        app.count("SELECT COUNT(*) FROM oauth_assertions").await >= 2,
        "assertion ids are remembered"
    );
}

#[tokio::test]
async fn a_private_key_jwt_client_needs_a_public_key_of_a_supported_kind() {
    let app = TestApp::spawn().await;
    let (integration, _) = app.integration_with_key("shop", &["messages:read"]).await;
    let path = format!("/v1/integrations/{integration}/oauth-clients");
    let key = ClientKey::generate();
    let mut private = key.jwk();
    private["d"] = json!(BASE64URL_NOPAD.encode(&[7u8; 32]));
    for (what, body) in [
        (
            "no key",
            json!({"name": "c", "scopes": ["messages:read"], "token_endpoint_auth_method": "private_key_jwt"}),
        ),
        (
            "a private key",
            json!({"name": "c", "scopes": ["messages:read"], "token_endpoint_auth_method": "private_key_jwt", "jwk": private}),
        ),
        (
            "an RSA key",
            json!({"name": "c", "scopes": ["messages:read"], "token_endpoint_auth_method": "private_key_jwt",
                   "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
        ),
        (
            "a key for a secret client",
            json!({"name": "c", "scopes": ["messages:read"], "jwk": key.jwk()}),
        ),
        (
            "an unknown method",
            json!({"name": "c", "scopes": ["messages:read"], "token_endpoint_auth_method": "none"}),
        ),
        (
            "an unknown scope",
            json!({"name": "c", "scopes": ["messages:everything"]}),
        ),
        ("no scope", json!({"name": "c", "scopes": []})),
    ] {
        let response = app.post(&path, &app.admin_key, &body).await;
        assert_eq!(response.status(), 400, "{what}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM oauth_clients").await, 0);
    // Only an admin key grants admin; an operator key may not.
    let (_, operator) = app
        .integration_with_key("ops", &["integrations:manage"])
        .await;
    let admin_grant = app
        .post(&path, &operator, &json!({"name": "c", "scopes": ["admin"]}))
        .await;
    assert_eq!(admin_grant.status(), 403);
    let unknown = app
        .post(
            "/v1/integrations/int_00000000000000000000000000/oauth-clients",
            &app.admin_key,
            &json!({"name": "c", "scopes": ["messages:read"]}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_token_endpoint_answers_each_rfc_6749_error() {
    let app = TestApp::spawn().await;
    let (integration, _) = app.integration_with_key("shop", &["messages:read"]).await;
    let (id, secret) = secret_client(&app, &integration, &["messages:read", "messages:send"]).await;
    let cc = ("grant_type", "client_credentials");

    assert_oauth_error(
        token_basic(&app, &id, &secret, &[]).await,
        400,
        "invalid_request",
    )
    .await;
    assert_oauth_error(
        token_basic(&app, &id, &secret, &[("grant_type", "password")]).await,
        400,
        "unsupported_grant_type",
    )
    .await;
    assert_oauth_error(
        token_basic(
            &app,
            &id,
            &secret,
            &[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")],
        )
        .await,
        400,
        "unauthorized_client",
    )
    .await;
    for scope in [
        "subjects:erase",
        "messages:read admin",
        "messages:everything",
    ] {
        assert_oauth_error(
            token_basic(&app, &id, &secret, &[cc, ("scope", scope)]).await,
            400,
            "invalid_scope",
        )
        .await;
    }
    assert_oauth_error(
        token_basic(&app, &id, "hcs_wrong", &[cc]).await,
        401,
        "invalid_client",
    )
    .await;
    assert_oauth_error(
        token_basic(&app, "ocl_00000000000000000000000000", &secret, &[cc]).await,
        401,
        "invalid_client",
    )
    .await;
    let anonymous = app
        .client
        .post(app.url("/oauth/token"))
        .form(&[cc])
        .send()
        .await
        .unwrap();
    assert_oauth_error(anonymous, 401, "invalid_client").await;
    let bearer = app
        .client
        .post(app.url("/oauth/token"))
        .bearer_auth(&app.admin_key)
        .form(&[cc])
        .send()
        .await
        .unwrap();
    assert_oauth_error(bearer, 401, "invalid_client").await;
    // Two authentication methods at once; a parameter twice; JSON instead of a form.
    let twice = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[
            cc,
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(twice, 400, "invalid_request").await;
    let repeated = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_oauth_error(repeated, 400, "invalid_request").await;
    let as_json = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(as_json, 400, "invalid_request").await;
    let half_assertion = app
        .client
        .post(app.url("/oauth/token"))
        .form(&[cc, ("client_assertion_type", ASSERTION_TYPE)])
        .send()
        .await
        .unwrap();
    assert_oauth_error(half_assertion, 400, "invalid_request").await;
    // Unknown parameters are ignored (RFC 6749 §3.2), and the secret still works.
    let extra = token_basic(&app, &id, &secret, &[cc, ("resource", "x")]).await;
    assert_eq!(extra.status(), 200);
    // Nothing was issued but that one token.
    let entries = crate::audit::entries(&app).await;
    let issued = entries
        .iter()
        .filter(|e| e["action"] == "oauth.token_issued")
        .count();
    assert_eq!(issued, 1);
    // Every refusal is in the trail, aggregated per source and reason: the first of each
    // reason at once, not one entry per request.
    let refused: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "oauth.token_refused")
        .collect();
    assert!(
        !refused.is_empty() && refused.len() <= 8,
        "{}",
        refused.len()
    );
}

#[tokio::test]
async fn a_client_may_ask_for_less_than_it_holds() {
    let app = TestApp::spawn().await;
    app.opt_in(PHONE, "demo").await;
    let (integration, _) = app.integration_with_key("shop", &["messages:read"]).await;
    let (id, secret) = secret_client(
        &app,
        &integration,
        &["messages:send", "subjects:write", "messages:read"],
    )
    .await;
    let narrow = token_basic(
        &app,
        &id,
        &secret,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "messages:read"),
        ],
    )
    .await;
    assert_eq!(narrow.status(), 200);
    let narrow = json(narrow).await;
    assert_eq!(narrow["scope"], "messages:read");
    let token = narrow["access_token"].as_str().unwrap();
    assert_eq!(claims_of(token)["scope"], "messages:read");
    let refused = app.post("/v1/messages", token, &demo_send(PHONE)).await;
    assert_eq!(refused.status(), 403);
    let full = access_token(&app, &id, &secret).await;
    assert_eq!(
        app.post("/v1/messages", &full, &demo_send(PHONE))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn a_token_of_one_integration_never_reaches_another_s_message() {
    let app = TestApp::spawn().await;
    app.opt_in(PHONE, "demo").await;
    let (_, _, _, a_token) = integration_with_token(
        &app,
        "shop",
        &["messages:send", "subjects:write", "messages:read"],
    )
    .await;
    let (_, _, _, b_token) = integration_with_token(&app, "crm", &["messages:read"]).await;
    let sent = json(app.post("/v1/messages", &a_token, &demo_send(PHONE)).await).await;
    let path = format!("/v1/messages/{}", sent["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &a_token).await.status(), 200);
    let other = app.get(&path, &b_token).await;
    assert_eq!(other.status(), 404);
}

/// A token with its payload replaced, re-encoded but with the original signature.
fn with_claims(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = claims_of(token);
    change(&mut claims);
    parts[1] = BASE64URL_NOPAD.encode(&serde_json::to_vec(&claims).unwrap());
    parts.join(".")
}

#[tokio::test]
async fn forged_altered_and_out_of_time_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let (_, _, _, token) = integration_with_token(&app, "shop", &["messages:read"]).await;
    assert_eq!(app.get("/v1/requests", &token).await.status(), 403);
    let list = "/v1/audit";

    // Tampered: more scope, another integration. The signature no longer matches.
    let tampered = with_claims(&token, |c| c["scope"] = json!("admin"));
    let moved = with_claims(&token, |c| {
        c["integration_id"] = json!("int_00000000000000000000000000");
    });
    // alg none: the same claims, no signature.
    let header = BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
    let payload = token.split('.').nth(1).unwrap();
    let unsigned = format!("{header}.{payload}.");
    // HS256 keyed with the public key (the classic algorithm confusion).
    let jwks = json(
        app.client
            .get(app.url("/oauth/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let public = BASE64URL_NOPAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap().as_bytes())
        .unwrap();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.typ = Some("at+jwt".into());
    hs_header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    let hmac = jsonwebtoken::encode(
        &hs_header,
        &claims_of(&token),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    for (what, forged) in [
        ("tampered scope", tampered),
        ("tampered integration", moved),
        ("alg none", unsigned),
        ("HS256 with the public key", hmac),
        ("truncated", token[..token.len() - 3].to_owned()),
    ] {
        let response = app.get(list, &forged).await;
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"herald\", error=\"invalid_token\"",
            "{what}"
        );
    }
    // The original still works (and the forgeries did not poison its cache entry).
    assert_eq!(app.get("/v1/requests", &token).await.status(), 403);

    // Not yet valid: the node's clock is behind the issuer's by more than the leeway.
    app.clock.set(app.clock.now() - TimeDelta::seconds(120));
    assert_eq!(app.get("/v1/requests", &token).await.status(), 401);
    // Within the leeway of 30 s it is accepted.
    app.clock.set(app.clock.now() + TimeDelta::seconds(100));
    assert_eq!(app.get("/v1/requests", &token).await.status(), 403);
    // Expired: ten minutes after issue, not a second more.
    app.clock
        .set(app.clock.now() + TimeDelta::seconds(20 + 599));
    assert_eq!(app.get("/v1/requests", &token).await.status(), 403);
    app.clock.advance(TimeDelta::seconds(1));
    assert_eq!(app.get("/v1/requests", &token).await.status(), 401);
}

#[tokio::test]
async fn tokens_of_another_issuer_or_audience_are_refused() {
    let app = TestApp::spawn().await;
    let (_, _, _, token) = integration_with_token(&app, "shop", &["messages:read"]).await;
    // Two more nodes on the same database and keys, one configured as another issuer, one
    // for another audience: neither may take this token.
    let same = app.second_node(|_| {}).await;
    assert_eq!(same.get("/v1/requests", &token).await.status(), 403);
    let other_issuer = app
        .second_node(|c| c.oauth.issuer = Some("https://other-herald.example".into()))
        .await;
    assert_eq!(other_issuer.get("/v1/requests", &token).await.status(), 401);
    let other_audience = app
        .second_node(|c| c.oauth.audience = Some("https://other-api.example".into()))
        .await;
    assert_eq!(
        other_audience.get("/v1/requests", &token).await.status(),
        401
    );
}

#[tokio::test]
async fn the_metadata_document_has_rfc_8414_s_fields() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metadata = json(response).await;
    let issuer = app.url("");
    // §2: issuer (REQUIRED, https or the configured URL, no query or fragment), the token
    // endpoint (REQUIRED for any grant but implicit), response_types_supported (REQUIRED).
    assert_eq!(metadata["issuer"], issuer);
    assert_eq!(metadata["token_endpoint"], format!("{issuer}/oauth/token"));
    assert_eq!(metadata["jwks_uri"], format!("{issuer}/oauth/jwks.json"));
    assert!(metadata["response_types_supported"].is_array());
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    // §2: "none" MUST NOT be listed among the signing algorithms.
    let algs = metadata["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(!algs.is_empty() && !algs.contains(&json!("none")));
    assert_eq!(
        metadata["revocation_endpoint"],
        format!("{issuer}/oauth/revoke")
    );
    assert_eq!(
        metadata["introspection_endpoint"],
        format!("{issuer}/oauth/introspect")
    );
    let scopes = metadata["scopes_supported"].as_array().unwrap();
    assert!(
        scopes.contains(&json!("messages:send")) && scopes.contains(&json!("oauth:introspect"))
    );
    // Every URL the document names is served.
    for field in [
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        let url = metadata[field].as_str().unwrap();
        let status = app.client.post(url).send().await.unwrap().status().as_u16();
        assert_ne!(status, 404, "{field}");
    }
    let jwks = json(
        app.client
            .get(metadata["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert_eq!(key["use"], "sig");
    assert!(
        key.get("d").is_none(),
        "the private half is never published"
    );
}

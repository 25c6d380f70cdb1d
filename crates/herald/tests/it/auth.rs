//! Integrations and API keys: issuing, listing, revoking, expiry, scopes, and the 401/403/404
//! answers (API.md "Status codes", compliance.md TOKENS-1).

use chrono::TimeDelta;
use serde_json::json;

use crate::helpers::{TestApp, assert_problem, epoch, json};

#[tokio::test]
async fn missing_malformed_and_unknown_credentials_are_401_with_www_authenticate() {
    let app = TestApp::spawn().await;
    let unknown_key = format!("hk_{}", "a".repeat(52));
    let cases: [(Option<String>, &str); 6] = [
        (None, "Bearer realm=\"herald\""),
        (
            Some("Basic dXNlcjpwYXNz".into()),
            "Bearer realm=\"herald\", error=\"invalid_request\"",
        ),
        (
            Some("Bearer".into()),
            "Bearer realm=\"herald\", error=\"invalid_request\"",
        ),
        (
            Some("Bearer not-a-key".into()),
            "Bearer realm=\"herald\", error=\"invalid_token\"",
        ),
        (
            Some(format!("Bearer {unknown_key}")),
            "Bearer realm=\"herald\", error=\"invalid_token\"",
        ),
        (
            Some(format!("bearer {}", app.admin_key.to_uppercase())),
            "Bearer realm=\"herald\", error=\"invalid_token\"",
        ),
    ];
    for (authorization, challenge) in cases {
        let mut request = app.client.get(app.url("/v1/integrations"));
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            challenge,
            "{authorization:?}"
        );
        assert_problem(response, 401, "unauthorized").await;
    }
    // The scheme is case-insensitive (RFC 7235).
    let ok = app
        .client
        .get(app.url("/v1/integrations"))
        .header("authorization", format!("bearer {}", app.admin_key))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_key_without_the_scope_is_403_and_admin_includes_every_scope() {
    let app = TestApp::spawn().await;
    let (_, reader) = app.integration_with_key("crm", &["subjects:read"]).await;
    let response = app
        .post("/v1/subjects", &reader, &json!({"phone": "+4915112345678"}))
        .await;
    let problem = assert_problem(response, 403, "forbidden").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("subjects:write")
    );
    let response = app.get("/v1/integrations", &reader).await;
    assert_problem(response, 403, "forbidden").await;
    // The admin key holds only `admin`, which includes subjects:write.
    let response = app
        .post(
            "/v1/subjects",
            &app.admin_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    // A 403 happens before the body is read: a wrong body still gets 403, not 400.
    let response = app
        .post("/v1/subjects", &reader, &json!({"nonsense": true}))
        .await;
    assert_problem(response, 403, "forbidden").await;
}

#[tokio::test]
async fn issuing_a_key_shows_the_token_once() {
    let app = TestApp::spawn().await;
    let integration = json(
        app.post(
            "/v1/integrations",
            &app.admin_key,
            &json!({"name": "web-shop"}),
        )
        .await,
    )
    .await;
    let id = integration["id"].as_str().unwrap();
    assert!(id.starts_with("int_"));
    assert_eq!(integration["name"], "web-shop");
    let created = app
        .post(
            &format!("/v1/integrations/{id}/keys"),
            &app.admin_key,
            &json!({"scopes": ["subjects:write", "messages:send"], "expires_in_days": 30}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created = json(created).await;
    let token = created["key"].as_str().unwrap();
    assert!(
        token.starts_with("hk_") && token.len() == 55,
        "256 bits: {token}"
    );
    assert!(token.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(
        created["scopes"],
        json!(["messages:send", "subjects:write"])
    );
    assert_eq!(created["integration_id"], id);
    assert_eq!(
        created["expires_at"],
        (epoch() + TimeDelta::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert!(created["revoked_at"].is_null());

    let listed = json(
        app.get(&format!("/v1/integrations/{id}/keys"), &app.admin_key)
            .await,
    )
    .await;
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);
    assert!(listed[0].get("key").is_none(), "the token is never listed");
    assert!(!listed[0].to_string().contains(token));

    // The token works, with its scopes.
    let response = app
        .post("/v1/subjects", token, &json!({"phone": "+4915112345678"}))
        .await;
    assert_eq!(response.status(), 201);
    // Only a hash is stored.
    let stored = app
        .fetch_bytes(
            "SELECT token_hash FROM api_keys WHERE id = $1",
            created["id"].as_str().unwrap(),
        )
        .await;
    assert_eq!(stored.len(), 32);
    let raw = app.raw_database_bytes().await;
    assert!(
        !raw.windows(token.len()).any(|w| w == token.as_bytes()),
        "token stored in clear"
    );
}

#[tokio::test]
async fn default_lifetime_comes_from_configuration() {
    let app = TestApp::spawn_with(|c| c.auth.default_key_lifetime_days = 7).await;
    let integration = json(
        app.post("/v1/integrations", &app.admin_key, &json!({"name": "a"}))
            .await,
    )
    .await;
    let id = integration["id"].as_str().unwrap();
    let created = json(
        app.post(
            &format!("/v1/integrations/{id}/keys"),
            &app.admin_key,
            &json!({"scopes": ["audit:read"]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        created["expires_at"],
        (epoch() + TimeDelta::days(7)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let never = TestApp::spawn_with(|c| c.auth.default_key_lifetime_days = 0).await;
    let integration = json(
        never
            .post("/v1/integrations", &never.admin_key, &json!({"name": "b"}))
            .await,
    )
    .await;
    let id = integration["id"].as_str().unwrap();
    let created = json(
        never
            .post(
                &format!("/v1/integrations/{id}/keys"),
                &never.admin_key,
                &json!({"scopes": ["audit:read"]}),
            )
            .await,
    )
    .await;
    assert!(created["expires_at"].is_null());
}

#[tokio::test]
async fn bad_key_requests_are_400_and_unknown_integrations_404() {
    let app = TestApp::spawn().await;
    let integration = json(
        app.post("/v1/integrations", &app.admin_key, &json!({"name": "shop"}))
            .await,
    )
    .await;
    let path = format!(
        "/v1/integrations/{}/keys",
        integration["id"].as_str().unwrap()
    );
    let cases = [
        (json!({"scopes": []}), "scopes"),
        (
            json!({"scopes": ["messages:send", "messages:write"]}),
            "scopes[1]",
        ),
        (
            json!({"scopes": ["admin"], "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"scopes": ["admin"], "expires_in_days": 3651}),
            "expires_in_days",
        ),
        (json!({"scopes": "admin"}), "scopes"),
        (json!({"scopes": ["admin"], "owner": "me"}), "owner"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(
            app.post(&path, &app.admin_key, &body).await,
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let keys = json(app.get(&path, &app.admin_key).await).await;
    assert!(
        keys["data"].as_array().unwrap().is_empty(),
        "no key was created"
    );

    let unknown = "/v1/integrations/int_00000000000000000000000000/keys";
    assert_problem(
        app.post(unknown, &app.admin_key, &json!({"scopes": ["admin"]}))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(app.get(unknown, &app.admin_key).await, 404, "not_found").await;
    assert_problem(
        app.get("/v1/integrations/not-an-id/keys", &app.admin_key)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.delete("/v1/keys/key_00000000000000000000000000", &app.admin_key)
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn integration_names_are_unique() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.post("/v1/integrations", &app.admin_key, &json!({"name": "shop"}))
            .await
            .status(),
        201
    );
    let again = app
        .post("/v1/integrations", &app.admin_key, &json!({"name": "shop"}))
        .await;
    assert_problem(again, 409, "already_exists").await;
    let admin = app
        .post(
            "/v1/integrations",
            &app.admin_key,
            &json!({"name": "admin"}),
        )
        .await;
    assert_problem(admin, 409, "already_exists").await;
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let app = TestApp::spawn().await;
    let (_, key) = app.integration_with_key("shop", &["subjects:read"]).await;
    let key_id = {
        let keys = json(app.get("/v1/integrations", &app.admin_key).await).await;
        let shop = keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "shop")
            .unwrap()
            .clone();
        let listed = json(
            app.get(
                &format!("/v1/integrations/{}/keys", shop["id"].as_str().unwrap()),
                &app.admin_key,
            )
            .await,
        )
        .await;
        listed["data"][0]["id"].as_str().unwrap().to_owned()
    };
    let subject = "/v1/subjects/sub_00000000000000000000000000";
    assert_eq!(app.get(subject, &key).await.status(), 404, "authenticated");
    let revoked = app
        .delete(&format!("/v1/keys/{key_id}"), &app.admin_key)
        .await;
    assert_eq!(revoked.status(), 200);
    let revoked = json(revoked).await;
    assert_eq!(
        revoked["revoked_at"],
        epoch().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert_problem(app.get(subject, &key).await, 401, "unauthorized").await;
    // Revoking again keeps the first time.
    app.clock.advance(TimeDelta::hours(1));
    let again = json(
        app.delete(&format!("/v1/keys/{key_id}"), &app.admin_key)
            .await,
    )
    .await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let app = TestApp::spawn().await;
    let integration = json(
        app.post("/v1/integrations", &app.admin_key, &json!({"name": "shop"}))
            .await,
    )
    .await;
    let created = json(
        app.post(
            &format!(
                "/v1/integrations/{}/keys",
                integration["id"].as_str().unwrap()
            ),
            &app.admin_key,
            &json!({"scopes": ["subjects:read"], "expires_in_days": 1}),
        )
        .await,
    )
    .await;
    let key = created["key"].as_str().unwrap();
    let subject = "/v1/subjects/sub_00000000000000000000000000";
    app.clock.advance(TimeDelta::hours(23));
    assert_eq!(app.get(subject, key).await.status(), 404);
    app.clock.advance(TimeDelta::hours(1));
    assert_problem(app.get(subject, key).await, 401, "unauthorized").await;
}

#[tokio::test]
async fn last_used_is_written_in_batches_not_per_request() {
    // No background flush during the test (under a loaded test run the default 10 s can pass
    // between the requests and the check).
    let app = TestApp::spawn_with(|c| {
        c.auth.last_used_flush_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let (integration, key) = app.integration_with_key("shop", &["subjects:read"]).await;
    let keys_path = format!("/v1/integrations/{integration}/keys");
    app.clock.advance(TimeDelta::minutes(5));
    for _ in 0..3 {
        app.get("/v1/subjects/sub_00000000000000000000000000", &key)
            .await;
    }
    let before = json(app.get(&keys_path, &app.admin_key).await).await;
    assert!(
        before["data"][0]["last_used_at"].is_null(),
        "no write on the request path"
    );
    let written = app.herald.auth().flush_last_used().await.unwrap();
    assert!(written >= 1);
    let after = json(app.get(&keys_path, &app.admin_key).await).await;
    assert_eq!(
        after["data"][0]["last_used_at"],
        (epoch() + TimeDelta::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
}

#[tokio::test]
async fn pending_last_used_times_are_written_at_shutdown() {
    let app = TestApp::spawn().await;
    let (integration, key) = app.integration_with_key("shop", &["subjects:read"]).await;
    app.get("/v1/subjects/sub_00000000000000000000000000", &key)
        .await;
    let app = app.restart().await;
    let keys = json(
        app.get(
            &format!("/v1/integrations/{integration}/keys"),
            &app.admin_key,
        )
        .await,
    )
    .await;
    assert!(keys["data"][0]["last_used_at"].is_string());
}

#[tokio::test]
async fn the_admin_key_is_created_once_and_survives_restarts() {
    let app = TestApp::spawn().await;
    assert!(app.admin_key.starts_with("hk_"));
    let app = app.restart().await; // asserts no second key was created
    assert_eq!(
        app.get("/v1/integrations", &app.admin_key).await.status(),
        200
    );
    let integrations = json(app.get("/v1/integrations", &app.admin_key).await).await;
    let admin: Vec<_> = integrations["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == "admin")
        .collect();
    assert_eq!(admin.len(), 1);
    let keys = json(
        app.get(
            &format!("/v1/integrations/{}/keys", admin[0]["id"].as_str().unwrap()),
            &app.admin_key,
        )
        .await,
    )
    .await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    assert_eq!(keys["data"][0]["scopes"], json!(["admin"]));
}

//! Operations endpoints, the OpenAPI document, and headers every response carries.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{TestApp, assert_problem, json};

#[tokio::test]
async fn healthz_and_readyz_answer_without_credentials() {
    let app = TestApp::spawn().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(json(health).await["status"], "ok");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(json(ready).await["status"], "ready");
}

#[tokio::test]
async fn readyz_reports_an_unreachable_database() {
    let app = TestApp::spawn().await;
    // Close the pools under the running server: the database is now unreachable for it.
    herald_domain::store::Store::close(app.herald.store().as_ref()).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_problem(ready, 503, "unavailable").await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status(),
        200,
        "liveness does not depend on the database"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_security_headers() {
    let app = TestApp::spawn().await;
    let mut ids = BTreeSet::new();
    for path in ["/healthz", "/v1/subjects/sub_x", "/nowhere"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        let headers = response.headers();
        let id = headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.starts_with("req_") && id.len() == 20, "{id}");
        assert!(ids.insert(id), "request ids are unique");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(
            headers.get("strict-transport-security").is_none(),
            "HSTS only under TLS"
        );
    }
}

/// The value of the sample named `series` in a metrics text, if present.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let app = TestApp::spawn().await;
    let health = r#"herald_http_requests_total{method="GET",route="/healthz",status="200"}"#;
    let health_latency =
        r#"herald_http_request_duration_seconds_count{method="GET",route="/healthz"}"#;
    let metrics = || async {
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        response.text().await.unwrap()
    };
    let before = metrics().await;
    for _ in 0..3 {
        app.client.get(app.url("/healthz")).send().await.unwrap();
    }
    let subject = app
        .get(
            "/v1/subjects/sub_00000000000000000000000000",
            &app.admin_key,
        )
        .await;
    assert_eq!(subject.status(), 404);
    let text = metrics().await;
    let count = |t: &str, s: &str| sample(t, s).unwrap_or(0);
    assert_eq!(count(&text, health) - count(&before, health), 3, "{text}");
    assert_eq!(
        count(&text, health_latency) - count(&before, health_latency),
        3,
        "{text}"
    );
    // The route template, never the concrete id.
    assert!(
        text.contains(r#"route="/v1/subjects/{id}",status="404"} 1"#),
        "{text}"
    );
    assert!(!text.contains("sub_0000"), "{text}");
}

async fn openapi(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    json(response).await
}

/// Every `$ref` in the document, with where it was found.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[tokio::test]
async fn openapi_document_is_valid() {
    let app = TestApp::spawn().await;
    let doc = openapi(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    if let Some(license) = doc["info"].get("license") {
        assert!(
            !license["name"].as_str().unwrap_or("").is_empty(),
            "a licence needs a name"
        );
    }
    // utoipa's own model must read it back.
    let _: utoipa::openapi::OpenApi = serde_json::from_value(doc.clone()).unwrap();
    // Every reference resolves.
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    assert!(!all_refs.is_empty());
    for reference in all_refs {
        let pointer = reference.strip_prefix('#').expect("local reference");
        assert!(
            doc.pointer(pointer).is_some(),
            "unresolved reference {reference}"
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with('/'), "{path}");
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, operation) in item.as_object().unwrap() {
            assert!(METHODS.contains(&method.as_str()), "{method} {path}");
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                !responses.is_empty(),
                "{method} {path} documents no response"
            );
            for status in responses.keys() {
                let code: u16 = status.parse().unwrap();
                assert!((100..600).contains(&code));
            }
            // Each path template parameter is declared as a path parameter, and vice versa.
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(declared, templated, "{method} {path}");
            if let Some(id) = operation["operationId"].as_str() {
                assert!(
                    operation_ids.insert(id.to_owned()),
                    "duplicate operationId {id}"
                );
            }
            for requirement in operation["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(
                        schemes.contains_key(scheme),
                        "unknown security scheme {scheme}"
                    );
                }
            }
        }
    }
}

/// The contract (API.md) for what exists so far, as (method, path, scope or "none").
const CONTRACT: [(&str, &str, &str); 61] = [
    ("get", "/healthz", "none"),
    ("get", "/readyz", "none"),
    ("get", "/metrics", "none"),
    ("get", "/openapi.json", "none"),
    ("post", "/v1/integrations", "integrations:manage"),
    ("get", "/v1/integrations", "integrations:manage"),
    ("post", "/v1/integrations/{id}/keys", "integrations:manage"),
    ("get", "/v1/integrations/{id}/keys", "integrations:manage"),
    ("delete", "/v1/keys/{id}", "integrations:manage"),
    ("post", "/v1/subjects", "subjects:write"),
    ("post", "/v1/subjects/lookup", "subjects:read"),
    ("get", "/v1/subjects/{id}", "subjects:read"),
    ("patch", "/v1/subjects/{id}", "subjects:write"),
    ("delete", "/v1/subjects/{id}", "subjects:erase"),
    ("post", "/v1/subjects/{id}/restriction", "subjects:write"),
    ("delete", "/v1/subjects/{id}/restriction", "subjects:write"),
    ("put", "/v1/subjects/{id}/legal-hold", "subjects:hold"),
    ("delete", "/v1/subjects/{id}/legal-hold", "subjects:hold"),
    ("get", "/v1/subjects/{id}/export", "subjects:export"),
    ("get", "/v1/audit", "audit:read"),
    ("get", "/v1/backups", "backups:read"),
    ("post", "/v1/incidents", "incidents:write"),
    ("get", "/v1/incidents", "incidents:read"),
    ("get", "/v1/incidents/{id}", "incidents:read"),
    ("patch", "/v1/incidents/{id}", "incidents:write"),
    ("post", "/v1/incidents/{id}/scope", "incidents:write"),
    ("get", "/v1/incidents/{id}/affected", "incidents:read"),
    ("get", "/v1/incidents/{id}/notifications", "incidents:read"),
    (
        "post",
        "/v1/incidents/{id}/notify-subjects",
        "incidents:write",
    ),
    (
        "post",
        "/v1/incidents/{id}/notify-integrations",
        "incidents:write",
    ),
    ("post", "/v1/vendors", "vendors:write"),
    ("get", "/v1/vendors", "vendors:read"),
    ("get", "/v1/vendors/{id}", "vendors:read"),
    ("patch", "/v1/vendors/{id}", "vendors:write"),
    ("get", "/v1/audit/verify", "audit:read"),
    ("get", "/v1/audit/checkpoints", "audit:read"),
    ("get", "/v1/audit/public-key", "audit:read"),
    ("post", "/v1/messages", "messages:send"),
    ("get", "/v1/messages/{id}", "messages:read"),
    (
        "post",
        "/v1/integrations/{id}/webhooks",
        "integrations:manage",
    ),
    (
        "get",
        "/v1/integrations/{id}/webhooks",
        "integrations:manage",
    ),
    (
        "put",
        "/v1/subjects/{id}/consents/{purpose}",
        "consents:write",
    ),
    (
        "delete",
        "/v1/subjects/{id}/consents/{purpose}",
        "consents:write",
    ),
    ("get", "/v1/subjects/{id}/consents", "consents:read"),
    ("post", "/v1/opt-ins", "consents:write"),
    ("post", "/v1/requests", "subjects:write"),
    ("get", "/v1/requests", "subjects:read"),
    ("post", "/v1/requests/{id}/extend", "subjects:write"),
    ("post", "/v1/requests/{id}/complete", "subjects:write"),
    (
        "post",
        "/v1/integrations/{id}/oauth-clients",
        "integrations:manage",
    ),
    (
        "get",
        "/v1/integrations/{id}/oauth-clients",
        "integrations:manage",
    ),
    ("delete", "/v1/oauth-clients/{id}", "integrations:manage"),
    ("delete", "/v1/integrations/{id}", "integrations:manage"),
    ("patch", "/v1/integrations/{id}", "integrations:manage"),
    ("post", "/oauth/token", "none"),
    ("post", "/oauth/revoke", "none"),
    ("post", "/oauth/introspect", "oauth:introspect"),
    ("get", "/oauth/jwks.json", "none"),
    ("get", "/.well-known/oauth-authorization-server", "none"),
    ("get", "/webhooks/whatsapp", "none"),
    ("post", "/webhooks/whatsapp", "none"),
];

#[tokio::test]
async fn openapi_lists_every_route_and_every_listed_route_exists() {
    let app = TestApp::spawn().await;
    let doc = openapi(&app).await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            // The scope the document names is the one the server enforces.
            let scope = operation["security"][0]["bearer"][0]
                .as_str()
                .unwrap_or("none");
            let expected = CONTRACT
                .iter()
                .find(|(m, p, _)| m == method && p == path)
                .map(|(_, _, s)| *s);
            assert_eq!(
                expected,
                Some(scope),
                "{method} {path} is not in the contract or names another scope"
            );
        }
    }
    for (method, path, _) in CONTRACT {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not documented"
        );
    }
    // Every documented route is served: without credentials it answers anything but the
    // router's own 404/405.
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "x_0");
        let request = app
            .client
            .request(method.to_uppercase().parse().unwrap(), app.url(&concrete));
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        if status == 404 {
            // A 404 from a routed handler is fine (unknown id); check the route matched by
            // looking at the metrics label.
            let metrics = app.metrics_text().await;
            assert!(
                metrics.contains(&format!("route=\"{path}\"")),
                "{method} {path} is documented but not routed"
            );
        }
    }
}

/// The committed `docs/openapi.json` is the generated one (regenerate with
/// `UPDATE_OPENAPI=1 cargo test -p herald --test it openapi_document_is_committed`).
#[test]
fn openapi_document_is_committed() {
    let generated = herald::http::openapi().to_pretty_json().unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale; regenerate it with \
         UPDATE_OPENAPI=1 cargo test -p herald --test it openapi_document_is_committed"
    );
}

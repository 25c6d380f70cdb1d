//! The isolation matrix (issue 14; ADR 0011; compliance.md GDPR-25, HIPAA-502b): two
//! integrations, A and B, B holding one key per scope. Every operation of the served OpenAPI
//! document is called by every one of B's keys on A's resources. B never gets A's data and never
//! changes it: a key without the operation's scope gets `403`, a key with it gets `404` for what
//! belongs to A, and collections list only B's own. The classification below must name every
//! operation, so a new route cannot escape the matrix.

use reqwest::Method;
use serde_json::{Value, json};

use herald_domain::auth::Scope;
use herald_domain::clock::Clock;

use crate::consent_kit::{NOTICE, consent_app, phone};
use crate::fakes::FakeWhatsapp;
use crate::helpers::{TestApp, json};
use crate::oauth_kit::{access_token, secret_client};

/// What an operation does with what belongs to A, and so what B may get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// Unauthenticated (probes, the document, the provider's signed webhook).
    Public,
    /// Acts on one of A's resources named in the path or body: `404` with the scope.
    Owned,
    /// Lists what the caller owns: `200`, none of A's ids in it.
    Collection,
    /// An operator's route (integrations and keys, the audit trail, which holds no personal
    /// data): the scope is the whole grant, by design (docs/api.md, "Scopes").
    Operator,
    /// Names a number it may have to register: without `subjects:write` as well, `403` naming
    /// it, whether the number is known or not (no oracle).
    ByNumber,
    /// Registers a number: with `subjects:write` the caller may create, and so links itself
    /// (the answer carries only the pseudonymous id). Run last, since it links B.
    Registers,
    /// Token introspection (RFC 7662) of A's access token: `200 {"active": false}`, nothing
    /// of the token shown.
    Introspects,
}

fn class_of(method: &str, path: &str) -> Option<Class> {
    Some(match (method, path) {
        ("get", "/healthz" | "/readyz" | "/metrics" | "/openapi.json") => Class::Public,
        ("get" | "post", "/webhooks/whatsapp") => Class::Public,
        // The authorization server: clients authenticate in the request itself.
        ("post", "/oauth/token" | "/oauth/revoke") => Class::Public,
        ("get", "/oauth/jwks.json" | "/.well-known/oauth-authorization-server") => Class::Public,
        ("post", "/oauth/introspect") => Class::Introspects,
        (_, p) if p.starts_with("/v1/oauth-clients/") => Class::Operator,
        (_, p) if p.starts_with("/v1/integrations") || p.starts_with("/v1/keys/") => {
            Class::Operator
        }
        (_, p) if p.starts_with("/v1/audit") || p == "/v1/backups" => Class::Operator,
        (_, p) if p.starts_with("/v1/incidents") || p.starts_with("/v1/vendors") => Class::Operator,
        ("get", "/v1/requests") => Class::Collection,
        ("post", "/v1/subjects") => Class::Registers,
        ("post", "/v1/opt-ins") => Class::ByNumber,
        ("post", "/v1/subjects/lookup" | "/v1/messages" | "/v1/requests") => Class::Owned,
        (_, p) if p.starts_with("/v1/subjects/{id}") => Class::Owned,
        (_, p) if p.starts_with("/v1/messages/{id}") || p.starts_with("/v1/requests/{id}") => {
            Class::Owned
        }
        _ => return None,
    })
}

/// What A owns, which B tries to reach.
struct Owned {
    integration: String,
    phone: String,
    subject: String,
    message: String,
    request: String,
    spare_key: String,
    /// An integration of A's side that the operator routes may revoke (not A itself, whose
    /// view is compared at the end).
    spare_integration: String,
    spare_client: String,
    access_token: String,
    /// An incident in the (instance-wide, operator's) register.
    incident: String,
}

impl Owned {
    fn path(&self, template: &str) -> String {
        // The register is the operator's, instance-wide: the shipped sandbox entry.
        if template.starts_with("/v1/vendors/") {
            return template.replace("{id}", "herald_sandbox");
        }
        let id = if template == "/v1/integrations/{id}" {
            &self.spare_integration
        } else if template.starts_with("/v1/oauth-clients/") {
            &self.spare_client
        } else if template.starts_with("/v1/messages/") {
            &self.message
        } else if template.starts_with("/v1/requests/") {
            &self.request
        } else if template.starts_with("/v1/integrations/") {
            &self.integration
        } else if template.starts_with("/v1/keys/") {
            &self.spare_key
        } else if template.starts_with("/v1/incidents/") {
            &self.incident
        } else {
            &self.subject
        };
        template
            .replace("{id}", id)
            .replace("{purpose}", "newsletter")
    }

    /// A valid body for each operation that takes one, aimed at A's resources.
    fn body(&self, method: &str, path: &str, now: &str) -> Option<Value> {
        let evidence = json!({"method": "web_form", "captured_at": now,
                              "source": "https://crm.example/form", "notice_version": "v1"});
        Some(match (method, path) {
            ("post", "/v1/integrations") => json!({"name": "intruder"}),
            ("post", "/v1/incidents") => json!({"summary": "an operator's incident",
                "detected_at": now, "became_aware_at": now, "kinds": ["availability"],
                "source": "alert"}),
            ("patch", "/v1/incidents/{id}") => json!({"measures": "keys rotated"}),
            ("post", "/v1/vendors") => json!({"id": "intruder_vendor", "reason": "matrix",
                "facts": {"legal_name": "Intruder Ltd", "service": "SMS",
                    "role": {"kind": "processor"}, "transfer_mechanism": "none",
                    "storage_mode": {"kind": "default"}, "deletion": {"support": "none"}}}),
            ("patch", "/v1/vendors/{id}") => json!({"status": "approved", "reason": "matrix"}),
            ("post", "/v1/incidents/{id}/scope") => json!({"integration": self.integration,
                "from": "2020-01-01T00:00:00Z"}),
            ("post", "/v1/incidents/{id}/notify-subjects") => json!({"purpose": "alerts",
                "template": "order_shipped", "language": "de", "parameters": ["a", "b"]}),
            ("post", "/v1/integrations/{id}/keys") => json!({"scopes": ["audit:read"]}),
            ("patch", "/v1/integrations/{id}") => {
                json!({"rate_limit": {"per_minute": 60, "burst": 10}})
            }
            ("post", "/v1/integrations/{id}/oauth-clients") => {
                json!({"name": "intruder", "scopes": ["audit:read"]})
            }
            ("post", "/oauth/introspect") => json!({"token": self.access_token}),
            ("post", "/v1/integrations/{id}/webhooks") => {
                json!({"url": "http://127.0.0.1:9/hook", "events": ["message.status"]})
            }
            ("post", "/v1/messages") => json!({"subject_id": self.subject, "purpose": "newsletter",
                "template": {"name": "order_shipped", "language": "de", "parameters": ["B", "#2"]}}),
            ("post", "/v1/opt-ins") => {
                json!({"to": self.phone, "purpose": "newsletter", "notice_version": "v1"})
            }
            ("post", "/v1/requests") => {
                json!({"kind": "erasure", "received_at": now, "subject_id": self.subject})
            }
            ("post", "/v1/requests/{id}/extend") => {
                json!({"months": 1, "reason": "an intruder's extension"})
            }
            ("post", "/v1/subjects" | "/v1/subjects/lookup") => json!({"phone": self.phone}),
            ("patch", "/v1/subjects/{id}") => json!({"phone": phone(9_999)}),
            ("put", "/v1/subjects/{id}/consents/{purpose}") => json!({"evidence": evidence}),
            ("put", "/v1/subjects/{id}/legal-hold") => json!({"reason": "an intruder's hold"}),
            ("post", "/v1/subjects/{id}/restriction") => json!({"reason": "an intruder"}),
            ("delete", "/v1/subjects/{id}/restriction") => json!({"subject_notified_at": now}),
            _ => return None,
        })
    }
}

/// What A's key holds: every scope on personal data.
fn a_scopes() -> Vec<&'static str> {
    b_scopes()
        .into_iter()
        .filter(|s| {
            ![
                "audit:read",
                "integrations:manage",
                "backups:read",
                "incidents:read",
                "incidents:write",
                "vendors:read",
                "vendors:write",
            ]
            .contains(s)
        })
        .collect()
}

/// Everything B may be given, one key each: every scope but admin, the bootstrap superuser,
/// which is not issued to integrations. Taken from the domain, so a new scope joins the matrix.
fn b_scopes() -> Vec<&'static str> {
    Scope::ALL
        .into_iter()
        .filter(|s| *s != Scope::Admin)
        .map(Scope::as_str)
        .collect()
}

async fn key_for(app: &TestApp, integration: &str, scopes: &[&str]) -> (String, String) {
    let created = app
        .post(
            &format!("/v1/integrations/{integration}/keys"),
            &app.admin_key,
            &json!({"scopes": scopes}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created = json(created).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

/// A's subject, opted in by A, with a message, consent evidence and a rights request of A's.
async fn a_s_world(app: &TestApp, a: &str, a_key: &str) -> Owned {
    let phone = phone(8_001);
    let subject = app.link(a_key, &phone).await;
    let now = app.clock.now().to_rfc3339();
    let granted = app
        .put(
            &format!("/v1/subjects/{subject}/consents/newsletter"),
            a_key,
            &json!({"evidence": {"method": "web_form", "captured_at": now,
                    "source": "https://shop.example/only-a-knows", "notice_version": "v1"}}),
        )
        .await;
    assert_eq!(granted.status(), 200);
    let sent = app
        .post(
            "/v1/messages",
            a_key,
            &json!({"subject_id": subject, "purpose": "newsletter",
                    "template": {"name": "order_shipped", "language": "de",
                                 "parameters": ["Annegret", "#A-7781"]}}),
        )
        .await;
    assert_eq!(sent.status(), 202);
    let message = json(sent).await["id"].as_str().unwrap().to_owned();
    let logged = app
        .post(
            "/v1/requests",
            a_key,
            &json!({"kind": "access", "received_at": now, "subject_id": subject}),
        )
        .await;
    assert_eq!(logged.status(), 201);
    let request = json(logged).await["id"].as_str().unwrap().to_owned();
    let (spare_key, _) = key_for(app, a, &["messages:read"]).await;
    let (client_id, secret) = secret_client(app, a, &["messages:read"]).await;
    let access_token = access_token(app, &client_id, &secret).await;
    let (spare_client, _) = secret_client(app, a, &["messages:read"]).await;
    let (spare_integration, _) = app
        .integration_with_key("shop-spare", &["messages:read"])
        .await;
    let opened = app
        .post(
            "/v1/incidents",
            &app.admin_key,
            &json!({"summary": "a lost laptop", "detected_at": now, "became_aware_at": now,
                    "kinds": ["confidentiality"], "source": "report"}),
        )
        .await;
    assert_eq!(opened.status(), 201);
    let incident = json(opened).await["id"].as_str().unwrap().to_owned();
    Owned {
        integration: a.to_owned(),
        phone,
        subject,
        message,
        request,
        spare_key,
        spare_integration,
        spare_client,
        access_token,
        incident,
    }
}

/// What A reads of its own world, to compare before and after B's attempts.
async fn a_s_view(app: &TestApp, a_key: &str, owned: &Owned) -> Value {
    let mut view = json!({});
    for path in [
        format!("/v1/subjects/{}", owned.subject),
        format!("/v1/subjects/{}/consents", owned.subject),
    ] {
        let response = app.get(&path, a_key).await;
        assert_eq!(response.status(), 200, "{path}");
        view[path] = json(response).await;
    }
    // The message's delivery goes on meanwhile; what it is and whose stays.
    let message = app
        .get(&format!("/v1/messages/{}", owned.message), a_key)
        .await;
    assert_eq!(message.status(), 200);
    let message = json(message).await;
    view["message"] = json!([message["id"], message["subject_id"], message["purpose"]]);
    let requests = json(app.get("/v1/requests", &app.admin_key).await).await;
    // A's access token is A's to introspect, active throughout.
    let introspected = app
        .client
        .post(app.url("/oauth/introspect"))
        .bearer_auth(a_key)
        .form(&[("token", &owned.access_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(introspected.status(), 200);
    view["token"] = json(introspected).await;
    assert_eq!(view["token"]["active"], true);
    view["request"] = requests["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == owned.request.as_str())
        .cloned()
        .unwrap();
    view
}

/// Strings that only A's data contains: none may reach B.
fn a_s_secrets(owned: &Owned) -> [String; 4] {
    [
        owned.phone.trim_start_matches('+').to_owned(),
        "only-a-knows".into(),
        "Annegret".into(),
        "A-7781".into(),
    ]
}

#[tokio::test]
async fn integration_b_never_reaches_integration_a_s_data_on_any_route() {
    let fake = FakeWhatsapp::start().await;
    let app = consent_app(&fake).await;
    let (a, a_key) = app.integration_with_key("shop", &a_scopes()).await;
    let (b, _) = app.integration_with_key("crm", &["messages:read"]).await;
    let owned = a_s_world(&app, &a, &a_key).await;
    let before = a_s_view(&app, &a_key, &owned).await;
    let mut b_keys = Vec::new();
    for scope in b_scopes() {
        b_keys.push((scope, key_for(&app, &b, &[scope]).await.1));
    }

    let document = json(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let now = app.clock.now().to_rfc3339();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let class = class_of(method, path)
                .unwrap_or_else(|| panic!("{method} {path} is not in the isolation matrix"));
            let scope = operation["security"][0]["bearer"][0]
                .as_str()
                .map(str::to_owned);
            let takes_body = operation.get("requestBody").is_some();
            let body = owned.body(method, path, &now);
            assert!(
                class == Class::Public || takes_body == body.is_some(),
                "{method} {path}: the matrix has no body for it (or one it does not take)"
            );
            assert_eq!(
                scope.is_none(),
                class == Class::Public,
                "{method} {path}: a public route needs no key, every other one a scope"
            );
            operations.push((method.clone(), path.clone(), class, scope, body));
        }
    }
    // Registering links B: last.
    operations.sort_by_key(|(_, _, class, _, _)| *class == Class::Registers);
    assert!(operations.len() >= 37, "{} operations", operations.len());

    let secrets = a_s_secrets(&owned);
    let mut checked = 0;
    for (method, template, class, scope, body) in &operations {
        if *class == Class::Public {
            continue;
        }
        let scope = scope.as_deref().unwrap();
        let path = owned.path(template);
        for (held, key) in &b_keys {
            let mut request =
                app.request(method.to_uppercase().parse::<Method>().unwrap(), &path, key);
            request = match (class, body) {
                (Class::Introspects, _) => request.form(&[("token", &owned.access_token)]),
                (_, Some(body)) => request.json(body),
                (_, None) => request,
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            let what = format!("{method} {template} with B's {held} key: {status} {text}");
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "A's data reached B: {what}"
                );
            }
            if *held != scope {
                assert!(status == 403 || status == 404, "{what}");
                continue;
            }
            match class {
                Class::Owned => assert_eq!(status, 404, "{what}"),
                Class::ByNumber => {
                    assert_eq!(status, 403, "{what}");
                    assert!(text.contains("subjects:write"), "{what}");
                }
                Class::Collection => {
                    assert_eq!(status, 200, "{what}");
                    assert!(!text.contains(&owned.request), "{what}");
                    assert!(!text.contains(&owned.subject), "{what}");
                }
                Class::Operator => assert!((200..300).contains(&status), "{what}"),
                Class::Introspects => {
                    assert_eq!(status, 200, "{what}");
                    assert_eq!(text, r#"{"active":false}"#, "{what}");
                }
                Class::Registers => {
                    assert!(status == 200 || status == 201, "{what}");
                    let answer: Value = serde_json::from_str(&text).unwrap();
                    let fields: Vec<&String> = answer.as_object().unwrap().keys().collect();
                    assert!(
                        fields
                            .iter()
                            .all(|f| ["id", "created_at"].contains(&f.as_str())),
                        "{what}"
                    );
                }
                Class::Public => unreachable!(),
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} in-scope calls");

    // Nothing of A's changed: the same subject, consents, message and request; A's key works.
    let after = a_s_view(&app, &a_key, &owned).await;
    assert_eq!(before, after);
    // B's own consent evidence after linking is still only B's: A's is not shown to B.
    let (_, b_reader) = key_for(&app, &b, &["consents:read"]).await;
    let seen = app
        .get(
            &format!("/v1/subjects/{}/consents", owned.subject),
            &b_reader,
        )
        .await;
    assert_eq!(seen.status(), 200);
    let seen = seen.text().await.unwrap();
    assert!(!seen.contains("only-a-knows"), "{seen}");
    assert!(!seen.contains(NOTICE), "{seen}");
}

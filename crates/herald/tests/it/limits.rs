//! Rate limits (issue 15; ADR 0015), through the real app on the injected clock: exact bursts
//! and `Retry-After`, `RateLimit` headers, the stricter route classes, per-source cooling off
//! after failures (also behind a trusted proxy, and at the token endpoint and the webhook),
//! per-integration rates, the enumeration signal, metrics and `herald config check`.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::fakes::FakeWhatsapp;
use crate::helpers::{TestApp, TestDb, assert_problem, json};
use crate::oauth_kit::secret_client;
use herald::config::RateConfig;

fn rate(per_minute: u32, burst: u32) -> RateConfig {
    RateConfig { per_minute, burst }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

async fn metric(app: &TestApp, line_start: &str) -> u64 {
    let text = app.metrics_text().await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

#[tokio::test]
async fn a_burst_above_the_credential_limit_gets_exactly_its_2xx_then_429() {
    let app = TestApp::spawn_with(|c| c.limits.credential = rate(60, 5)).await;
    let (_, key) = app
        .integration_with_key("ops", &["integrations:manage"])
        .await;
    for remaining in (0..5).rev() {
        let response = app.get("/v1/integrations", &key).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "ratelimit-policy"),
            "\"credential\";q=60;w=60"
        );
        // One request a second comes back: full again 5 - remaining seconds from now.
        assert_eq!(
            header(&response, "ratelimit"),
            format!("\"credential\";r={remaining};t={}", 5 - remaining)
        );
    }
    for _ in 0..2 {
        let refused = app.get("/v1/integrations", &key).await;
        assert_eq!(header(&refused, "retry-after"), "1");
        assert_eq!(header(&refused, "ratelimit"), "\"credential\";r=0;t=1");
        assert_eq!(
            header(&refused, "ratelimit-policy"),
            "\"credential\";q=60;w=60"
        );
        let body = assert_problem(refused, 429, "rate_limited").await;
        assert_eq!(body["limit"], "credential");
    }
    // Another credential has its own bucket; this one gets one back per second.
    assert_eq!(
        app.get("/v1/integrations", &app.admin_key).await.status(),
        200
    );
    app.clock.advance(TimeDelta::seconds(1));
    assert_eq!(app.get("/v1/integrations", &key).await.status(), 200);
    assert_eq!(app.get("/v1/integrations", &key).await.status(), 429);
    assert_eq!(
        metric(&app, "herald_rate_limited_total{limit=\"credential\"}").await,
        3
    );
    // Refusals are audited aggregated, not one entry each.
    let entries = crate::audit::entries(&app).await;
    let limited: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "api.rate_limited")
        .collect();
    assert_eq!(
        limited.len(),
        1,
        "the first of the minute; the rest are counted later"
    );
    assert_eq!(limited[0]["details"]["reason"], "credential");
}

#[tokio::test]
async fn exports_are_limited_far_below_sends() {
    let app = TestApp::spawn().await;
    app.opt_in("+4915112345678", "demo").await;
    let (_, key) = app
        .integration_with_key(
            "shop",
            &["subjects:export", "subjects:write", "messages:send"],
        )
        .await;
    let subject = app.link(&key, "+4915112345678").await;
    let export = format!("/v1/subjects/{subject}/export");
    for _ in 0..20 {
        let response = app.get(&export, &key).await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "ratelimit").starts_with("\"route:export\";"));
    }
    let refused = app.get(&export, &key).await;
    // 10 a minute: one every 6 s.
    assert_eq!(header(&refused, "retry-after"), "6");
    let body = assert_problem(refused, 429, "rate_limited").await;
    assert_eq!(body["limit"], "route:export");
    // The same credential still sends: the export class is its own, stricter bucket.
    let send = json!({"to": "+4915112345678", "purpose": "demo",
        "template": {"name": "demo_update", "language": "en", "parameters": ["x"]}});
    for _ in 0..30 {
        assert_eq!(app.post("/v1/messages", &key, &send).await.status(), 202);
    }
    app.clock.advance(TimeDelta::seconds(6));
    assert_eq!(app.get(&export, &key).await.status(), 200);
    assert_eq!(
        metric(&app, "herald_rate_limited_total{limit=\"route:export\"}").await,
        1
    );
}

#[tokio::test]
async fn a_hundred_bad_keys_from_one_address_cool_the_network_off() {
    let app = TestApp::spawn().await;
    let before = crate::audit::entries(&app).await.len();
    let mut statuses = Vec::new();
    for i in 0..100 {
        let response = app.get("/v1/integrations", &format!("hk_{i:040}")).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_eq!(header(&response, "retry-after"), "300");
            let body = json(response).await;
            assert_eq!(body["limit"], "source");
        }
    }
    // 20 failures a minute are allowed; the 21st starts the cooling-off.
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 21);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 79);
    assert!(statuses[..21].iter().all(|s| *s == 401));
    // The network is refused even with a good key until the cooling-off ends.
    assert_eq!(
        app.get("/v1/integrations", &app.admin_key).await.status(),
        429
    );
    assert_eq!(
        metric(&app, "herald_rate_limited_total{limit=\"source\"}").await,
        80
    );
    app.clock.advance(TimeDelta::seconds(299));
    assert_eq!(
        app.get("/v1/integrations", &app.admin_key).await.status(),
        429
    );
    app.clock.advance(TimeDelta::seconds(1));
    assert_eq!(
        app.get("/v1/integrations", &app.admin_key).await.status(),
        200
    );
    // A hundred refusals, a handful of entries: the first of each kind at once, the rest
    // counted when the minute is over.
    app.herald.audit().flush_failures(true).await.unwrap();
    let entries = crate::audit::entries(&app).await;
    let new = &entries[before..];
    let count = |action: &str| -> (usize, u64) {
        let of: Vec<&Value> = new.iter().filter(|e| e["action"] == action).collect();
        let total = of
            .iter()
            .map(|e| e["details"]["count"].as_u64().unwrap())
            .sum();
        (of.len(), total)
    };
    let (failed, failures) = count("auth.failed");
    let (limited, refusals) = count("api.rate_limited");
    assert!(failed <= 3 && limited <= 3, "{failed} + {limited} entries");
    assert_eq!((failures, refusals), (21, 81));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_source() {
    let app = TestApp::spawn_with(|c| {
        c.http.trusted_proxies = vec!["127.0.0.1/32".into()];
        c.limits.source_failures = rate(5, 5);
    })
    .await;
    let guess = |from: &'static str| {
        app.client
            .get(app.url("/v1/integrations"))
            .bearer_auth("hk_0000000000000000000000000000000000000000")
            .header("x-forwarded-for", from)
            .send()
    };
    for _ in 0..6 {
        assert_eq!(guess("203.0.113.5").await.unwrap().status(), 401);
    }
    assert_eq!(
        guess("203.0.113.77").await.unwrap().status(),
        429,
        "same /24"
    );
    // Another client behind the same proxy is not punished for it.
    assert_eq!(guess("198.51.100.5").await.unwrap().status(), 401);
    let good = app
        .client
        .get(app.url("/v1/integrations"))
        .bearer_auth(&app.admin_key)
        .header("x-forwarded-for", "198.51.100.5")
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);

    // Without trusted proxies the header is the client's word and means nothing.
    let direct = TestApp::spawn_with(|c| c.limits.source_failures = rate(5, 5)).await;
    for i in 0..6 {
        let response = direct
            .client
            .get(direct.url("/v1/integrations"))
            .bearer_auth("hk_0000000000000000000000000000000000000000")
            .header("x-forwarded-for", format!("198.51.{i}.1"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let refused = direct
        .client
        .get(direct.url("/v1/integrations"))
        .bearer_auth(&direct.admin_key)
        .header("x-forwarded-for", "192.0.2.1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
}

#[tokio::test]
async fn failed_client_authentication_and_bad_webhook_signatures_cool_off_too() {
    let fake = FakeWhatsapp::start().await;
    let app = TestApp::spawn_with(|c| {
        fake.configure(c);
        c.limits.source_failures = rate(3, 3);
    })
    .await;
    let (integration, _) = app.integration_with_key("shop", &["messages:read"]).await;
    let (id, _) = secret_client(&app, &integration, &["messages:read"]).await;
    let token = |secret: &'static str| {
        app.client
            .post(app.url("/oauth/token"))
            .basic_auth(&id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    for _ in 0..4 {
        assert_eq!(token("hcs_wrong").await.unwrap().status(), 401);
    }
    let refused = token("hcs_wrong").await.unwrap();
    let body = assert_problem(refused, 429, "rate_limited").await;
    assert_eq!(body["limit"], "source");

    let webhook = TestApp::spawn_with(|c| {
        fake.configure(c);
        c.limits.source_failures = rate(3, 3);
    })
    .await;
    let post = || {
        webhook
            .client
            .post(webhook.url("/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
            .body("{}")
            .send()
    };
    for _ in 0..4 {
        assert_eq!(post().await.unwrap().status(), 401);
    }
    assert_eq!(post().await.unwrap().status(), 429);
}

#[tokio::test]
async fn a_lookup_sweep_raises_the_enumeration_signal_and_normal_traffic_does_not() {
    let app = TestApp::spawn_with(|c| c.limits.enumeration.distinct_numbers = 20).await;
    let (_, shop) = app
        .integration_with_key("shop", &["subjects:read", "subjects:write"])
        .await;
    let (_, sweeper) = app.integration_with_key("leaked", &["subjects:read"]).await;
    // A shop looks up its few customers again and again, and registers a handful.
    for round in 0..20 {
        for n in 0..5 {
            let phone = format!("+4915112345{n:03}");
            if round == 0 {
                app.link(&shop, &phone).await;
            }
            let found = app
                .post("/v1/subjects/lookup", &shop, &json!({"phone": phone}))
                .await;
            assert_eq!(found.status(), 200);
        }
    }
    let quiet = crate::audit::entries(&app).await;
    assert!(
        !quiet
            .iter()
            .any(|e| e["action"] == "security.enumeration_suspected"),
        "normal traffic raised the signal"
    );
    // A leaked key walks the number space.
    for n in 0..40 {
        let probe = app
            .post(
                "/v1/subjects/lookup",
                &sweeper,
                &json!({"phone": format!("+49151999{n:05}")}),
            )
            .await;
        assert_eq!(probe.status(), 404);
    }
    let entries = crate::audit::entries(&app).await;
    let raised: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "security.enumeration_suspected")
        .collect();
    assert_eq!(raised.len(), 1, "once per window");
    assert_eq!(raised[0]["details"]["distinct_numbers"], 21);
    assert_eq!(raised[0]["details"]["window_seconds"], 600);
    assert_eq!(raised[0]["actor"]["type"], "integration");
    let text = serde_json::to_string(&raised).unwrap();
    assert!(!text.contains("49151999"), "no number in the entry");
    assert_eq!(metric(&app, "herald_enumeration_suspected_total").await, 1);
}

async fn new_key(app: &TestApp, integration: &str) -> String {
    let created = app
        .post(
            &format!("/v1/integrations/{integration}/keys"),
            &app.admin_key,
            &json!({"scopes": ["messages:read"]}),
        )
        .await;
    json(created).await["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_integration_gets_a_rate_of_its_own_and_gives_it_back() {
    let app = TestApp::spawn_with(|c| {
        c.limits.credential = rate(60, 3);
        c.limits.integrations.insert("bulk".into(), rate(600, 8));
        // The operator's own key, by its integration's name.
        c.limits
            .integrations
            .insert("admin".into(), rate(6000, 1000));
    })
    .await;
    let (shop, key) = app.integration_with_key("shop", &["messages:read"]).await;
    let path = format!("/v1/integrations/{shop}");
    let changed = app
        .request(reqwest::Method::PATCH, &path, &app.admin_key)
        .json(&json!({"rate_limit": {"per_minute": 600, "burst": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let changed = json(changed).await;
    assert_eq!(
        changed["rate_limit"],
        json!({"per_minute": 600, "burst": 10})
    );
    let burst = |key: String| {
        let app = &app;
        async move {
            let mut passed = 0;
            while app.get("/v1/requests", &key).await.status() == 403 {
                passed += 1;
            }
            passed
        }
    };
    assert_eq!(burst(key.clone()).await, 10);
    // A second node reads it at its next refresh (every 30 s).
    let node2 = app.second_node(|_| {}).await;
    let fresh = new_key(&app, &shop).await;
    let mut passed = 0;
    while node2.get("/v1/requests", &fresh).await.status() == 403 {
        passed += 1;
    }
    assert_eq!(passed, 10);
    // Back to the configured rate.
    let reset = app
        .request(reqwest::Method::PATCH, &path, &app.admin_key)
        .json(&json!({"rate_limit": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(reset).await["rate_limit"],
        json!({"per_minute": 60, "burst": 3})
    );
    let another = new_key(&app, &shop).await;
    assert_eq!(burst(another).await, 3);
    // The configuration's rate for an integration by name.
    let (_, bulk) = app.integration_with_key("bulk", &["messages:read"]).await;
    app.herald
        .limits()
        .refresh(app.herald.store().as_ref())
        .await
        .unwrap();
    assert_eq!(burst(bulk).await, 8);
    // Bad changes change nothing.
    for body in [
        json!({"rate_limit": {"per_minute": 0, "burst": 1}}),
        json!({"rate_limit": {"per_minute": 10}}),
        json!({"rate_limit": "fast"}),
        json!({}),
        json!({"rate_limit": null, "name": "x"}),
    ] {
        let refused = app
            .request(reqwest::Method::PATCH, &path, &app.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{body}");
    }
    let unknown = app
        .request(
            reqwest::Method::PATCH,
            "/v1/integrations/int_00000000000000000000000000",
            &app.admin_key,
        )
        .json(&json!({"rate_limit": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let entries = crate::audit::entries(&app).await;
    let changes: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "integration.rate_limit_changed")
        .collect();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["details"]["burst"], 10);
    assert_eq!(changes[1]["details"]["rate"], "default");
}

#[tokio::test]
async fn config_check_prints_the_effective_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await;
    let mut env = crate::process::base_env(&db);
    env.insert(
        "HERALD_LIMITS__ROUTES__EXPORT__PER_MINUTE".into(),
        "4".into(),
    );
    let (code, stdout, stderr) = crate::process::run(dir.path(), &env, &["config", "check"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("effective rate limits (on;"), "{stdout}");
    let export = stdout.lines().find(|l| l.contains("route:export")).unwrap();
    assert!(export.contains("4/min, burst 20"), "{export}");
    let (code, stdout, _) =
        crate::process::run(dir.path(), &env, &["config", "check", "--json"]).await;
    assert_eq!(code, Some(0));
    let value: Value = serde_json::from_str(&stdout).unwrap();
    let limits = value["effective_limits"].as_array().unwrap();
    assert!(limits.contains(&json!({"limit": "route:export", "per_minute": 4, "burst": 20})));
    env.insert("HERALD_LIMITS__CREDENTIAL__BURST".into(), "0".into());
    let (code, _, stderr) = crate::process::run(dir.path(), &env, &["config", "check"]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("limits.credential"), "{stderr}");
}

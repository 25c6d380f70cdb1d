//! HTTP conventions (API.md): every error is a problem document with a stable code; bad input
//! is refused with a clear answer and changes nothing.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, assert_problem, json};

async fn integration_count(app: &TestApp) -> usize {
    json(app.get("/v1/integrations", &app.admin_key).await).await["data"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn unknown_route_is_a_problem_404() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_problem(response, 404, "not_found").await;
}

#[tokio::test]
async fn wrong_method_is_a_problem_405_with_allow() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .put(app.url("/v1/subjects"))
        .send()
        .await
        .unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST"), "{allow}");
    assert_problem(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let big = json!({"name": "x".repeat(70 * 1024)});
    let response = app.post("/v1/integrations", &app.admin_key, &big).await;
    assert_problem(response, 413, "payload_too_large").await;

    // Also when the client streams the body without announcing its length.
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let chunk = "x".repeat(70 * 1024);
    let request = format!(
        "POST /v1/integrations HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{}\r\n0\r\n\r\n",
        app.admin_key,
        chunk.len(),
        chunk
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"code\":\"payload_too_large\""),
        "{answer}"
    );

    assert_eq!(
        integration_count(&app).await,
        1,
        "only the admin integration exists"
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = TestApp::spawn().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .request(reqwest::Method::POST, "/v1/integrations", &app.admin_key)
            .body(r#"{"name":"shop"}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_problem(response, 415, "unsupported_media_type").await;
    }
    assert_eq!(integration_count(&app).await, 1);
}

#[tokio::test]
async fn malformed_json_is_400_malformed_json() {
    let app = TestApp::spawn().await;
    for body in ["", "{", "{\"name\": }", "not json", "{\"name\":\"a\"} {}"] {
        let response = app
            .request(reqwest::Method::POST, "/v1/integrations", &app.admin_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "malformed_json").await;
    }
    assert_eq!(integration_count(&app).await, 1);
}

#[tokio::test]
async fn wrong_shapes_are_400_invalid_request_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({}), "name", "is required"),
        (
            json!({"name": "shop", "colour": "red"}),
            "colour",
            "unknown field",
        ),
        (json!({"name": 42}), "name", "has the wrong type"),
        (
            json!({"name": "-bad"}),
            "name",
            "must start with a letter or digit",
        ),
    ];
    for (body, field, message) in cases {
        let response = app.post("/v1/integrations", &app.admin_key, &body).await;
        let problem = assert_problem(response, 400, "invalid_request").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
        assert_eq!(problem["errors"][0]["message"], message, "{body}");
    }
    // Unknown fields are refused on every write endpoint, and values are never echoed back.
    let response = app
        .post(
            "/v1/subjects",
            &app.admin_key,
            &json!({"phone": "+4915112345678", "note": "Hello Anna"}),
        )
        .await;
    let problem = assert_problem(response, 400, "invalid_request").await;
    assert_eq!(problem["errors"][0]["field"], "note");
    assert!(!problem.to_string().contains("Anna"));
    assert!(!problem.to_string().contains("4915112345678"));
    assert_eq!(integration_count(&app).await, 1);
}

#[tokio::test]
async fn query_strings_are_checked() {
    let app = TestApp::spawn().await;
    // Phone numbers never travel in URLs: an unknown parameter is refused, not ignored.
    let response = app
        .get("/v1/integrations?phone=%2B4915112345678", &app.admin_key)
        .await;
    let problem = assert_problem(response, 400, "invalid_request").await;
    assert_eq!(problem["errors"][0]["field"], "phone");
    assert!(!problem.to_string().contains("4915112345678"));
    for bad in ["limit=0", "limit=501", "limit=ten", "limit=-1"] {
        let response = app
            .get(&format!("/v1/integrations?{bad}"), &app.admin_key)
            .await;
        let problem = assert_problem(response, 400, "invalid_request").await;
        assert_eq!(problem["errors"][0]["field"], "limit", "{bad}");
    }
}

#[tokio::test]
async fn lists_page_with_a_cursor() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        let response = app
            .post(
                "/v1/integrations",
                &app.admin_key,
                &json!({"name": format!("system-{i}")}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(cursor) => format!("/v1/integrations?limit=2&after={cursor}"),
            None => "/v1/integrations?limit=2".to_owned(),
        };
        let page = json(app.get(&path, &app.admin_key).await).await;
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 6, "5 created + admin, each exactly once");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_503_unavailable() {
    let app = TestApp::spawn_with(|c| {
        c.http.request_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    // Announce a body and never finish sending it: the handler waits, the timeout answers.
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let request = format!(
        "POST /v1/integrations HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"na",
        app.admin_key
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer before the client gives up")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"code\":\"unavailable\""), "{answer}");
    assert_eq!(integration_count(&app).await, 1);
}

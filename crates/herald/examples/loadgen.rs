//! A small HTTP load generator for Herald's benchmarks (see `bench/run.sh`, BENCHMARKS.md).
//!
//! `cargo run --release --example loadgen -- <base-url> <api-key> <scenario> <connections> <seconds>`
//! Scenarios: `health` (no auth, no database), `register` (create subjects with new numbers:
//! key unwrap, encryption, one write transaction), `lookup` (blind index + indexed read),
//! `get` (authenticated indexed read), `send` (POST /v1/messages, a template to one of 1,000
//! known numbers: auth, parse, blind index, subject read, policy, encryption, group commit).
//! The load goes through a lean HTTP/1.1 client on raw keep-alive connections (requests
//! serialised before the clock starts); `LOADGEN_CLIENT=reqwest` uses reqwest instead.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, key, scenario, connections, seconds] = &args[..] else {
        panic!(
            "usage: loadgen <base-url> <api-key> <health|register|lookup|get> <connections> <seconds>"
        );
    };
    let connections: u64 = connections.parse().unwrap();
    let duration = Duration::from_secs(seconds.parse().unwrap());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections as usize)
        .build()
        .unwrap();

    // A subject to read in the lookup/get scenarios (`token` has no API key: its "key" is an
    // OAuth client's `client_id:client_secret`).
    let probe = "+4916000000001";
    let subject = if scenario == "token" {
        String::new()
    } else {
        let created: serde_json::Value = client
            .post(format!("{base}/v1/subjects"))
            .bearer_auth(key)
            .json(&json!({"phone": probe}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["id"].as_str().unwrap().to_owned()
    };

    // Known recipients for the send scenario (registered first, as an integrator would have).
    // RECIPIENTS (default 1,000): fewer for runs under valgrind.
    let recipients: u64 = std::env::var("RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // Each with its WhatsApp opt-in recorded: a template to someone who never wrote is
    // business-initiated and needs one.
    if scenario == "send" {
        for n in 0..recipients {
            let registered: serde_json::Value = client
                .post(format!("{base}/v1/subjects"))
                .bearer_auth(key)
                .json(&json!({"phone": format!("+4916{:09}", n)}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = registered["id"].as_str().unwrap();
            let granted = client
                .put(format!("{base}/v1/subjects/{id}/consents/demo"))
                .bearer_auth(key)
                .json(
                    &json!({"evidence": {"method": "api", "captured_at": "2026-01-01T00:00:00Z",
                                           "source": "loadgen"}}),
                )
                .send()
                .await
                .unwrap();
            assert!(granted.status().is_success(), "recording the opt-in failed");
        }
    }
    let next_number = Arc::new(AtomicU64::new(0));
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 90;
    let deadline = Instant::now() + duration;
    // The request each scenario sends; `n` numbers the request (distinct numbers to register,
    // recipients in turn to send to).
    let request_for = {
        let subject = subject.clone();
        let scenario = scenario.clone();
        move |n: u64| -> Request {
            match scenario.as_str() {
                "health" => Request::get("/healthz".into(), false),
                // OAuth client credentials (client_secret_basic): one token per request.
                "token" => Request {
                    path: "/oauth/token".into(),
                    auth: false,
                    body: None,
                    form: Some("grant_type=client_credentials".into()),
                },
                "register" => {
                    // Valid German mobile numbers, distinct per request and per run.
                    let phone = format!("+49151{:02}{:06}", 10 + run_id, n % 1_000_000);
                    Request::post("/v1/subjects".into(), json!({"phone": phone}))
                }
                "lookup" => Request::post("/v1/subjects/lookup".into(), json!({"phone": probe})),
                "get" => Request::get(format!("/v1/subjects/{subject}"), true),
                "send" => Request::post(
                    "/v1/messages".into(),
                    json!({
                        "to": format!("+4916{:09}", n % recipients),
                        "purpose": "demo",
                        "template": {"name": "demo_update", "language": "en",
                                     "parameters": ["Your order 20417 has shipped"]},
                    }),
                ),
                other => panic!("unknown scenario {other}"),
            }
        }
    };
    // LOADGEN_CLIENT=reqwest drives the load through reqwest (a full client: pool, header maps,
    // a body per request); the default is a lean HTTP/1.1 client on raw keep-alive TCP
    // connections with the requests serialised before the clock starts, so that on a shared
    // 2-core machine the generator takes as little as possible of the CPU it measures.
    let lean = std::env::var("LOADGEN_CLIENT").as_deref() != Ok("reqwest");
    let prepared: Arc<Vec<Vec<u8>>> = Arc::new(if lean && scenario != "register" {
        let distinct = if scenario == "send" { recipients } else { 1 };
        (0..distinct)
            .map(|n| request_for(n).to_bytes(base, key))
            .collect()
    } else {
        Vec::new()
    });
    let request_for = Arc::new(request_for);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = client.clone();
        let base = base.clone();
        let key = key.clone();
        let next_number = Arc::clone(&next_number);
        let prepared = Arc::clone(&prepared);
        let request_for = Arc::clone(&request_for);
        tasks.push(tokio::spawn(async move {
            if lean {
                return lean_connection(
                    &base,
                    &key,
                    &prepared,
                    &*request_for,
                    &next_number,
                    deadline,
                )
                .await;
            }
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let started = Instant::now();
                let request = request_for(next_number.fetch_add(1, Ordering::Relaxed));
                let builder = match request.body {
                    Some(body) => client.post(format!("{base}{}", request.path)).json(&body),
                    None => client.get(format!("{base}{}", request.path)),
                };
                let builder = if request.auth {
                    builder.bearer_auth(&key)
                } else {
                    builder
                };
                match builder.send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(started.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    let count = latencies.len();
    let pct =
        |p: f64| latencies[((count as f64 * p) as usize).min(count - 1)].as_secs_f64() * 1000.0;
    println!(
        "{scenario:>8}  connections={connections:<3}  requests/s={:>8.0}  p50={:.2}ms  p99={:.2}ms  errors={errors}  total={count}",
        count as f64 / duration.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
}

/// One request of a scenario: a GET (with or without the API key) or an authenticated POST
/// of a JSON body.
struct Request {
    path: String,
    auth: bool,
    body: Option<serde_json::Value>,
    /// A form body, sent with the "key" (`client_id:client_secret`) as Basic credentials.
    form: Option<String>,
}

impl Request {
    fn get(path: String, auth: bool) -> Self {
        Self {
            path,
            auth,
            body: None,
            form: None,
        }
    }

    fn post(path: String, body: serde_json::Value) -> Self {
        Self {
            path,
            auth: true,
            body: Some(body),
            form: None,
        }
    }

    /// The request as HTTP/1.1 bytes on a keep-alive connection.
    fn to_bytes(&self, base: &str, key: &str) -> Vec<u8> {
        let host = base.trim_start_matches("http://");
        if let Some(form) = &self.form {
            let basic = data_encoding::BASE64.encode(key.as_bytes());
            let mut bytes = format!(
                "POST {} HTTP/1.1\r\nhost: {host}\r\nauthorization: Basic {basic}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
                self.path,
                form.len()
            )
            .into_bytes();
            bytes.extend_from_slice(form.as_bytes());
            return bytes;
        }
        let method = if self.body.is_some() { "POST" } else { "GET" };
        let mut head = format!("{method} {} HTTP/1.1\r\nhost: {host}\r\n", self.path);
        if self.auth {
            head.push_str(&format!("authorization: Bearer {key}\r\n"));
        }
        let body = self
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        if self.body.is_some() {
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

/// One keep-alive connection of the lean client: writes a prepared request (or, for
/// `register`, a fresh one), reads the response (headers parsed by httparse, the body by its
/// Content-Length), and counts a success only for a 2xx. A broken connection is reopened.
async fn lean_connection(
    base: &str,
    key: &str,
    prepared: &[Vec<u8>],
    request_for: &(dyn Fn(u64) -> Request + Send + Sync),
    next_number: &AtomicU64,
    deadline: Instant,
) -> (Vec<Duration>, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://").to_owned();
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let mut buffer = vec![0u8; 16 * 1024];
    'connect: while Instant::now() < deadline {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stream.set_nodelay(true).unwrap();
        while Instant::now() < deadline {
            let n = next_number.fetch_add(1, Ordering::Relaxed);
            let fresh;
            let request = if prepared.is_empty() {
                fresh = request_for(n).to_bytes(base, key);
                &fresh
            } else {
                &prepared[(n % prepared.len() as u64) as usize]
            };
            let started = Instant::now();
            if stream.write_all(request).await.is_err() {
                errors += 1;
                continue 'connect;
            }
            // Read until the head is complete, then until the body is.
            let mut filled = 0;
            let (status, body_start, body_length) = loop {
                match stream.read(&mut buffer[filled..]).await {
                    Ok(0) | Err(_) => {
                        errors += 1;
                        continue 'connect;
                    }
                    Ok(read) => filled += read,
                }
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(&buffer[..filled]) {
                    Ok(httparse::Status::Complete(head)) => {
                        let length: usize = response
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                            .expect("Herald answers with a Content-Length");
                        break (response.code.unwrap_or(0), head, length);
                    }
                    Ok(httparse::Status::Partial) if filled < buffer.len() => {}
                    _ => panic!("an unreadable response"),
                }
            };
            let end = body_start + body_length;
            assert!(end <= buffer.len(), "a response larger than the buffer");
            while filled < end {
                match stream.read(&mut buffer[filled..end]).await {
                    Ok(0) | Err(_) => {
                        errors += 1;
                        continue 'connect;
                    }
                    Ok(read) => filled += read,
                }
            }
            if (200..300).contains(&status) {
                latencies.push(started.elapsed());
            } else {
                errors += 1;
            }
        }
    }
    (latencies, errors)
}

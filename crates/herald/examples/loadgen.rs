//! A small HTTP load generator for Herald's benchmarks (see `bench/run.sh`, BENCHMARKS.md).
//!
//! `cargo run --release --example loadgen -- <base-url> <api-key> <scenario> <connections> <seconds>`
//! Scenarios: `health` (no auth, no database), `register` (create subjects with new numbers:
//! key unwrap, encryption, one write transaction), `lookup` (blind index + indexed read),
//! `get` (authenticated indexed read), `send` (POST /v1/messages, a template to one of 1,000
//! known numbers: auth, parse, blind index, subject read, policy, encryption, group commit).

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

    // A subject to read in the lookup/get scenarios.
    let probe = "+4916000000001";
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
    let subject = created["id"].as_str().unwrap().to_owned();

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
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = client.clone();
        let base = base.clone();
        let key = key.clone();
        let scenario = scenario.clone();
        let subject = subject.clone();
        let next_number = Arc::clone(&next_number);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let started = Instant::now();
                let request = match scenario.as_str() {
                    "health" => client.get(format!("{base}/healthz")),
                    "register" => {
                        let n = next_number.fetch_add(1, Ordering::Relaxed);
                        // Valid German mobile numbers, distinct per request and per run.
                        let phone = format!("+49151{:02}{:06}", 10 + run_id, n % 1_000_000);
                        client
                            .post(format!("{base}/v1/subjects"))
                            .bearer_auth(&key)
                            .json(&json!({"phone": phone}))
                    }
                    "lookup" => client
                        .post(format!("{base}/v1/subjects/lookup"))
                        .bearer_auth(&key)
                        .json(&json!({"phone": probe})),
                    "get" => client
                        .get(format!("{base}/v1/subjects/{subject}"))
                        .bearer_auth(&key),
                    "send" => {
                        let n = next_number.fetch_add(1, Ordering::Relaxed) % recipients;
                        client
                            .post(format!("{base}/v1/messages"))
                            .bearer_auth(&key)
                            .json(&json!({
                                "to": format!("+4916{:09}", n),
                                "purpose": "demo",
                                "template": {"name": "demo_update", "language": "en",
                                             "parameters": ["Your order 20417 has shipped"]},
                            }))
                    }
                    other => panic!("unknown scenario {other}"),
                };
                match request.send().await {
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

//! The erasure benchmark (issue 6, see `bench/erasure.sh`, BENCHMARKS.md): for each size, a
//! new subject gets that many messages (accepted and queued: the node runs without its delivery
//! worker, so every message is still to be cancelled — the costliest case), then
//! `DELETE /v1/subjects/{id}` is timed.
//!
//! `cargo run --release --example erasure_bench -- <base-url> <api-key> <sizes, e.g. 1,1000,10000>`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::time::Instant;

use serde_json::{Value, json};

/// Sends in flight at once while filling a subject.
const CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, key, sizes] = &args[..] else {
        panic!("usage: erasure_bench <base-url> <api-key> <sizes>");
    };
    let client = reqwest::Client::new();
    for (n, size) in sizes.split(',').enumerate() {
        let size: usize = size.parse().unwrap();
        let phone = format!("+491700000{n:04}");
        let subject: Value = client
            .post(format!("{base}/v1/subjects"))
            .bearer_auth(key)
            .json(&json!({"phone": phone}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let subject = subject["id"].as_str().unwrap().to_owned();
        let granted = client
            .put(format!("{base}/v1/subjects/{subject}/consents/demo"))
            .bearer_auth(key)
            .json(&json!({"evidence": {"method": "api", "captured_at": chrono::Utc::now().to_rfc3339(), "source": "bench"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(granted.status(), 200, "{}", granted.text().await.unwrap());
        let filled = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..CONCURRENCY {
            let client = client.clone();
            let (base, key, subject) = (base.clone(), key.clone(), subject.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = worker;
                while i < size {
                    let response = client
                        .post(format!("{base}/v1/messages"))
                        .bearer_auth(&key)
                        .json(&json!({"subject_id": subject, "purpose": "demo",
                            "template": {"name": "demo_update", "language": "en", "parameters": [format!("#{i}")]}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 202);
                    i += CONCURRENCY;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let fill = filled.elapsed();
        let started = Instant::now();
        let erased = client
            .delete(format!("{base}/v1/subjects/{subject}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(erased.status(), 200);
        let receipt: Value = erased.json().await.unwrap();
        let erased = &receipt["receipt"]["statement"]["erased"];
        println!(
            "messages={size} erase_ms={:.1} cancelled={} contents_deleted={} (filled in {:.1} s)",
            took.as_secs_f64() * 1000.0,
            erased["messages_cancelled"],
            erased["message_contents_deleted"],
            fill.as_secs_f64()
        );
    }
}

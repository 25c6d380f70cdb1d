//! A local sink that answers like the WhatsApp Cloud API, for the send benchmark
//! (`bench/send.sh`): `POST /{version}/{phone-number-id}/messages` → `200` with a fresh wamid;
//! `GET /stats` → how many it accepted, and when the first and the latest arrived.
//!
//! `cargo run --release --example wa_sink -- 127.0.0.1:18090`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    first_ms: AtomicU64,
    last_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn messages(State(stats): State<Arc<Stats>>, body: axum::body::Bytes) -> axum::Json<Value> {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = stats.accepted.fetch_add(1, Ordering::Relaxed);
    let now = now_ms();
    let _ = stats
        .first_ms
        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    stats.last_ms.fetch_max(now, Ordering::Relaxed);
    let to = request["to"].as_str().unwrap_or("").to_owned();
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": format!("wamid.SINK{n:012}{now}"), "message_status": "accepted"}]
    }))
}

async fn stats(State(stats): State<Arc<Stats>>) -> axum::Json<Value> {
    axum::Json(json!({
        "accepted": stats.accepted.load(Ordering::Relaxed),
        "first_ms": stats.first_ms.load(Ordering::Relaxed),
        "last_ms": stats.last_ms.load(Ordering::Relaxed),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let stats_state = Arc::new(Stats::default());
    let app = Router::new()
        .route("/{version}/{phone}/messages", post(messages))
        .route("/stats", get(stats))
        .with_state(stats_state);
    let listener = tokio::net::TcpListener::bind(&listen).await.unwrap();
    println!("sink listening on {listen}");
    axum::serve(listener, app).await.unwrap();
}

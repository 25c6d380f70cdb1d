//! Audit-trail benchmarks (see `bench/audit.sh`, BENCHMARKS.md).
//!
//! `audit_bench seal <database-url|-> <producers> <seconds>`: producers append entries as fast
//! as they can (batched, durable) while the background sealer seals; reports append and seal
//! rates and the sealing lag (age of the oldest unsealed entry, sampled every 100 ms).
//!
//! `audit_bench backlog <database-url|-> <entries>`: appends that many entries with no sealer
//! running, then times sealing the whole backlog: the sealer's own throughput.
//!
//! `audit_bench verify <database-url|-> <entries>`: fills a trail with that many entries, then
//! times a full verification (database reads included) and the chain check alone (in memory,
//! one core).
//!
//! `-` for the database means SQLite in a temporary directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald::Config;
use herald::startup::Herald;
use herald_domain::audit::{Action, AuditEvent, ChainHead, Details, Initiator, Outcome, chain};
use herald_domain::clock::{Clock, SystemClock};

fn event() -> AuditEvent {
    AuditEvent::new(&Initiator::system(), Action::ApiRequest, Outcome::Success).details(
        Details::new()
            .with("method", "GET")
            .with("status", 200u32)
            .with_opt(
                "route",
                herald_domain::audit::Detail::route("/v1/subjects/{id}"),
            ),
    )
}

async fn open(url: &str, dir: &std::path::Path) -> Herald {
    // Defaults, adjustable through HERALD_* variables (e.g. HERALD_AUDIT__SEAL_BATCH).
    let mut config = Config::load(None).unwrap();
    config.data_dir = dir.join("data");
    if url != "-" {
        config.database_url = Some(herald::config::DatabaseUrl::new(url));
    }
    config.database.max_connections = 32;
    Herald::open(config, Arc::new(SystemClock) as Arc<dyn Clock>)
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = tempfile::tempdir().unwrap();
    match args.get(1).map(String::as_str) {
        Some("seal") => {
            let herald = open(&args[2], dir.path()).await;
            seal(&herald, args[3].parse().unwrap(), args[4].parse().unwrap()).await;
        }
        Some("backlog") => {
            let herald = open(&args[2], dir.path()).await;
            backlog(&herald, args[3].parse().unwrap()).await;
        }
        Some("verify") => {
            let herald = open(&args[2], dir.path()).await;
            verify(&herald, args[3].parse().unwrap()).await;
        }
        _ => panic!(
            "usage: audit_bench seal <url|-> <producers> <seconds> | verify <url|-> <entries>"
        ),
    }
}

async fn seal(herald: &Herald, producers: usize, seconds: u64) {
    let audit = herald.audit().clone();
    let store = Arc::clone(herald.store());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sealer = tokio::spawn({
        let audit = audit.clone();
        async move { audit.run_sealer(Duration::from_millis(100), stop_rx).await }
    });
    let appended = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let audit = audit.clone();
        let appended = Arc::clone(&appended);
        let running = Arc::clone(&running);
        tasks.push(tokio::spawn(async move {
            let event = event();
            while running.load(Ordering::Relaxed) {
                audit.append(&event).await.unwrap();
                appended.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // (seconds since start, appended so far, sealed so far)
    let baseline = store.audit_entries(0, u32::MAX).await.unwrap().len() as u64;
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut max_lag = 0f64;
    let deadline = started + Duration::from_secs(seconds);
    let drained_at = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = started.elapsed().as_secs_f64();
        let done = appended.load(Ordering::Relaxed);
        let pending = store.audit_pending_count().await.unwrap();
        let sealed = (done + baseline).saturating_sub(pending);
        samples.push((now, done + baseline, sealed));
        // The oldest unsealed entry is number sealed+1: when was it appended?
        if let Some((appended_at, _, _)) = samples.iter().find(|(_, a, _)| *a > sealed) {
            max_lag = max_lag.max(now - appended_at);
        }
        if Instant::now() >= deadline && running.swap(false, Ordering::Relaxed) {
            for task in tasks.drain(..) {
                task.await.unwrap();
            }
        }
        if !running.load(Ordering::Relaxed) && pending == 0 {
            break now;
        }
    };
    let _ = stop_tx.send(true);
    sealer.await.unwrap();
    let total = appended.load(Ordering::Relaxed);
    let report = audit.verify(&Initiator::system()).await.unwrap();
    assert!(report.ok, "{report:?}");
    println!(
        "backend={} producers={producers} appended={total} append_rate={:.0}/s seal_rate={:.0}/s max_lag={:.2}s drain={:.2}s checkpoints={}",
        store.backend(),
        total as f64 / seconds as f64,
        total as f64 / drained_at,
        max_lag,
        drained_at - seconds as f64,
        audit.checkpoints().await.unwrap().len(),
    );
}

/// Appends `entries` entries from 500 concurrent tasks (durable, batched), without sealing.
async fn fill(audit: &herald_domain::audit::Audit, entries: u64) {
    let per_task = entries / 500;
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            let event = event();
            for _ in 0..per_task {
                audit.append(&event).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

async fn backlog(herald: &Herald, entries: u64) {
    let audit = herald.audit().clone();
    fill(&audit, entries).await;
    let started = Instant::now();
    let report = audit.seal().await.unwrap();
    let took = started.elapsed().as_secs_f64();
    println!(
        "backend={} sealed={} in {took:.2}s = {:.0}/s, checkpoints={}",
        herald.store().backend(),
        report.sealed,
        report.sealed as f64 / took,
        report.checkpoints,
    );
}

async fn verify(herald: &Herald, entries: u64) {
    let audit = herald.audit().clone();
    let store = Arc::clone(herald.store());
    // Fill the trail: concurrent appends, then seal.
    let filling = Instant::now();
    fill(&audit, entries).await;
    audit.seal().await.unwrap();
    let filled = filling.elapsed();

    let started = Instant::now();
    let report = audit.verify(&Initiator::system()).await.unwrap();
    let end_to_end = started.elapsed();
    assert!(report.ok, "{report:?}");

    // The chain check alone, on entries already in memory, on this one thread.
    let all = store.audit_entries(0, u32::MAX).await.unwrap();
    let checkpoints = store.audit_checkpoints().await.unwrap();
    let keys = store
        .audit_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.key_id, k.public_key))
        .collect();
    let witness: Vec<Result<chain::Checkpoint, String>> =
        checkpoints.iter().cloned().map(Ok).collect();
    let started = Instant::now();
    let mut verifier = chain::ChainVerifier::new(ChainHead::GENESIS, &checkpoints, &witness, &keys);
    for entry in &all {
        verifier.push(entry.seq, &entry.hash, &entry.body);
    }
    let in_memory = verifier.finish();
    let chain_only = started.elapsed();
    assert!(in_memory.ok);
    println!(
        "backend={} entries={} fill={:.1}s verify_end_to_end={:.2}s ({:.0}/s) verify_chain_only={:.2}s ({:.0}/s) checkpoints={}",
        store.backend(),
        report.entries,
        filled.as_secs_f64(),
        end_to_end.as_secs_f64(),
        report.entries as f64 / end_to_end.as_secs_f64(),
        chain_only.as_secs_f64(),
        all.len() as f64 / chain_only.as_secs_f64(),
        checkpoints.len(),
    );
}

//! The loop every background worker shares (message delivery, provider callbacks, events to
//! integrators): claim due items with a lease, handle each in its own task up to a concurrency
//! limit, sleep when nothing is due, and on shutdown let the items in hand finish.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore, watch};

use crate::store::StoreError;

#[async_trait]
pub trait LeasedWork: Clone + Send + Sync + 'static {
    type Item: Send + 'static;
    /// For logs.
    fn name(&self) -> &'static str;
    /// Claims up to `limit` due items (each leased to this node).
    async fn claim(&self, limit: u32) -> Result<Vec<Self::Item>, StoreError>;
    /// Handles one item. Failures are the handler's to record; an item whose outcome could not
    /// be recorded comes back when its lease expires.
    async fn handle(&self, item: Self::Item);
}

/// How a worker paces itself.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Items handled at once.
    pub concurrency: usize,
    /// Items one claim takes at most.
    pub claim_batch: u32,
    /// How long an idle worker waits before looking again (unless woken).
    pub poll_interval: Duration,
}

/// Claims and handles until `stop` turns true, then waits for the items in hand.
pub async fn run<W: LeasedWork>(
    work: W,
    settings: WorkerSettings,
    wake: Option<Arc<Notify>>,
    mut stop: watch::Receiver<bool>,
) {
    let concurrency = settings.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let wake = wake.unwrap_or_default();
    loop {
        if *stop.borrow() {
            break;
        }
        let free = u32::try_from(permits.available_permits()).unwrap_or(u32::MAX);
        let limit = free.min(settings.claim_batch.max(1));
        let claimed = if limit == 0 {
            // Every slot is busy: wait for one to free up rather than claim what cannot start.
            match Arc::clone(&permits).acquire_owned().await {
                Ok(permit) => drop(permit),
                Err(_) => break,
            }
            continue;
        } else {
            match work.claim(limit).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(worker = work.name(), error = %e, "claiming work failed; will retry");
                    Vec::new()
                }
            }
        };
        let full = claimed.len() >= limit as usize;
        for item in claimed {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let work = work.clone();
            tokio::spawn(async move {
                let _permit = permit;
                work.handle(item).await;
            });
        }
        if !full {
            // Less than a full claim: the queue is drained for now.
            tokio::select! {
                _ = stop.changed() => {}
                () = wake.notified() => {}
                () = tokio::time::sleep(settings.poll_interval) => {}
            }
        }
    }
    let _ = permits
        .acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX))
        .await;
}

/// One pass, for tests and tools: claims up to `limit` items and handles them all before
/// returning how many there were.
pub async fn run_once<W: LeasedWork>(work: &W, limit: u32) -> Result<usize, StoreError> {
    let claimed = work.claim(limit).await?;
    let count = claimed.len();
    let tasks: Vec<_> = claimed
        .into_iter()
        .map(|item| {
            let work = work.clone();
            tokio::spawn(async move { work.handle(item).await })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| StoreError::Internal(Box::new(e)))?;
    }
    Ok(count)
}

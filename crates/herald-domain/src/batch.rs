//! Group commit: callers hand in one operation each and wait; a task writes whatever is queued
//! in one transaction and answers them all once it is durable. Several transactions may be in
//! flight, so the next batch gathers while one commits.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::StoreError;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// A queue into batched transactions. Cheap to clone.
pub struct Batcher<T, R> {
    queue: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the batching task. `write` gets up to `max_batch` operations and returns one
    /// result per operation, in order, or an error for all of them.
    pub fn spawn<F, Fut>(max_batch: usize, in_flight: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        let (queue, mut incoming) = mpsc::channel::<(T, Reply<R>)>(max_batch * 4);
        let write = Arc::new(write);
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(in_flight.max(1)));
            while let Some(first) = incoming.recv().await {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match incoming.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let write = Arc::clone(&write);
                tokio::spawn(async move {
                    let _permit = permit;
                    let (operations, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    let count = operations.len();
                    match write(operations).await {
                        Ok(results) if results.len() == count => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Ok(_) => {
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Internal(
                                    "a batch returned the wrong number of results".into(),
                                )));
                            }
                        }
                        Err(error) => {
                            for reply in replies {
                                let _ = reply.send(Err(error.duplicate()));
                            }
                        }
                    }
                });
            }
        });
        Self { queue }
    }

    /// Queues one operation and waits for its batch to be durable.
    pub async fn submit(&self, operation: T) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the batch writer stopped".into());
        self.queue
            .send((operation, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_operations_share_batches_and_get_their_own_results() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&batches);
        let batcher = Batcher::spawn(64, 2, move |ops: Vec<u32>| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(ops.into_iter().map(|op| op * 2).collect())
            }
        });
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (i, batcher.submit(i).await.unwrap()) })
            })
            .collect();
        for task in tasks {
            let (i, doubled) = task.await.unwrap();
            assert_eq!(doubled, i * 2);
        }
        assert!(
            batches.load(Ordering::Relaxed) < 200,
            "operations were batched"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_operation_in_it() {
        let batcher = Batcher::spawn(8, 1, |_ops: Vec<u32>| async {
            Err::<Vec<u32>, _>(StoreError::Unavailable("disk full".into()))
        });
        let error = batcher.submit(1).await.unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)));
    }
}

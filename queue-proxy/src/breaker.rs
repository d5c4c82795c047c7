//! The breaker: at most `containerConcurrency` requests in flight to the user process, at most
//! `10 × containerConcurrency` more waiting; past that, requests are refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Knative's queue depth per unit of containerConcurrency.
pub const QUEUE_DEPTH_PER_SLOT: usize = 10;

/// Limits in-flight requests and bounds the queue in front of them.
#[derive(Debug)]
pub struct Breaker {
    slots: Arc<Semaphore>,
    pending: AtomicUsize,
    max_pending: usize,
}

/// The queue is full: the caller answers 503.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("pending request queue full")]
pub struct QueueFull;

/// A held slot; dropping it lets the next queued request in.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    breaker: Arc<Breaker>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.breaker.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breaker {
    /// A breaker for `concurrency` slots (≥ 1) and a queue of `queue_depth`.
    pub fn new(concurrency: u32, queue_depth: usize) -> Arc<Self> {
        let slots = concurrency.max(1) as usize;
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(slots)),
            pending: AtomicUsize::new(0),
            max_pending: slots + queue_depth,
        })
    }

    /// Knative's breaker for a containerConcurrency: none when unlimited.
    pub fn for_concurrency(concurrency: u32) -> Option<Arc<Self>> {
        (concurrency > 0)
            .then(|| Self::new(concurrency, QUEUE_DEPTH_PER_SLOT * concurrency as usize))
    }

    /// Waits for a slot, or fails at once when the queue is full.
    pub async fn acquire(self: &Arc<Self>) -> Result<Slot, QueueFull> {
        let reserved = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < self.max_pending).then_some(p + 1)
            });
        if reserved.is_err() {
            return Err(QueueFull);
        }
        // The reservation is released by Slot's Drop, or here if the wait is cancelled.
        struct Unreserve<'a>(&'a Breaker, bool);
        impl Drop for Unreserve<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        let mut guard = Unreserve(self, true);
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("breaker semaphore is never closed");
        guard.1 = false;
        Ok(Slot {
            _permit: permit,
            breaker: self.clone(),
        })
    }

    /// Requests in flight or waiting.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_concurrency_then_queues_then_refuses() {
        let b = Breaker::new(1, 2);
        let first = b.acquire().await.unwrap();
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire().await.map(drop) })
            })
            .collect();
        while b.pending() < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(b.acquire().await.unwrap_err(), QueueFull);
        drop(first);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(b.pending(), 0);
    }

    #[tokio::test]
    async fn cancelled_wait_releases_its_place() {
        let b = Breaker::new(1, 1);
        let held = b.acquire().await.unwrap();
        let wait = b.acquire();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), wait)
                .await
                .is_err()
        );
        assert_eq!(b.pending(), 1);
        drop(held);
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn unlimited_concurrency_has_no_breaker() {
        assert!(Breaker::for_concurrency(0).is_none());
        assert_eq!(Breaker::for_concurrency(2).unwrap().max_pending, 22);
    }
}

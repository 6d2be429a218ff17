//! The api's budget of request-body bytes held across all PATCHes
//! (`REELAY_API_BUFFER_MIB`). A PATCH takes room for each piece of body it
//! holds and gives it back once the piece is published. When the budget is
//! full, a PATCH first publishes what it holds (a shorter chunk; workers
//! take chunks of any size) and then waits, not reading its body, so TCP
//! slows the client down rather than the api failing it, and no PATCH
//! waits while holding bytes others wait for.

use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::Semaphore;

pub struct Budget {
    room: Semaphore,
    total: usize,
    /// The most ever held at once (the `reelay_api_buffered_bytes_peak`
    /// gauge).
    peak: AtomicUsize,
    /// Held while the gauges are set from a fresh reading: two changes at
    /// once could otherwise leave the older reading on the gauge last.
    gauges: Mutex<()>,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        let total = bytes.clamp(1, u32::MAX as usize);
        Self {
            room: Semaphore::new(total),
            total,
            peak: AtomicUsize::new(0),
            gauges: Mutex::new(()),
        }
    }

    /// Room for `bytes` (at most the whole budget) if there is some now.
    pub fn try_take(&self, bytes: usize) -> Option<usize> {
        let n = bytes.clamp(1, self.total);
        let permit = self.room.try_acquire_many(n as u32).ok()?;
        permit.forget();
        self.held_changed();
        Some(n)
    }

    /// Waits for room for `bytes` (at most the whole budget).
    pub async fn take(&self, bytes: usize) -> usize {
        let n = bytes.clamp(1, self.total);
        self.room
            .acquire_many(n as u32)
            .await
            .expect("the budget is never closed")
            .forget();
        self.held_changed();
        n
    }

    pub fn give(&self, taken: usize) {
        if taken > 0 {
            self.room.add_permits(taken);
            self.held_changed();
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.total - self.room.available_permits()
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn held_changed(&self) {
        let _setting = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.held();
        let peak = self.peak.fetch_max(held, Ordering::Relaxed).max(held);
        metrics::gauge!("reelay_api_buffered_bytes").set(held as f64);
        metrics::gauge!("reelay_api_buffered_bytes_peak").set(peak as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn room_is_taken_given_back_and_waited_for() {
        let budget = Arc::new(Budget::new(100));
        assert_eq!(budget.try_take(60), Some(60));
        assert_eq!(budget.try_take(60), None, "only 40 left");
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.take(1_000).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "it waits while 60 are held");
        budget.give(60);
        assert_eq!(waiter.await.unwrap(), 100, "capped at the whole budget");
        assert_eq!((budget.held(), budget.peak()), (100, 100));
    }
}

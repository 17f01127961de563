//! The memory budget of S3 appends: one semaphore of bytes (counted in KiB) shared by
//! every append of a store, so that N concurrent or stalled requests cannot hold N
//! parts. Not a scheduler: it only counts.
//!
//! # Why it cannot deadlock
//!
//! An append grows its [`Grant`] without waiting (`try_grow`) as bytes arrive. When that
//! fails it first moves everything it holds out of memory (a pending segment in the
//! bucket), releases its whole grant, and only then waits (`grow`), holding nothing. So no
//! append ever waits while holding budget: there is no hold-and-wait, hence no cycle.
//! Every holder is either receiving its body (and gives its bytes to the bucket once its
//! client has been idle for a while, see `SPILL_IDLE` in `s3.rs`, or when the request
//! ends) or doing S3 I/O (which ends, by success or timeout), so budget always comes
//! back, and the semaphore queues waiters first come, first served. A request for more
//! than the whole budget is clamped to the whole budget.

use tokio::sync::Semaphore;

/// Bytes per permit: a part may be up to 5 GiB, more permits than one `u32` request holds.
const UNIT: usize = 1024;

fn units(bytes: usize) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as usize) as u32
}

pub(super) struct Budget {
    permits: Semaphore,
    total: u32,
}

impl Budget {
    pub(super) fn new(bytes: usize) -> Budget {
        let total = units(bytes);
        Budget { permits: Semaphore::new(total as usize), total }
    }

    /// Bytes not held by any grant now.
    #[cfg(test)]
    pub(super) fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }

    pub(super) fn grant(&self) -> Grant<'_> {
        Grant { budget: self, held: 0 }
    }
}

/// The part of the budget one append holds; given back when dropped.
pub(super) struct Grant<'a> {
    budget: &'a Budget,
    held: u32,
}

impl Grant<'_> {
    /// Takes `bytes` more if they are free now.
    pub(super) fn try_grow(&mut self, bytes: usize) -> bool {
        let n = units(bytes);
        match self.budget.permits.try_acquire_many(n) {
            Ok(p) => {
                p.forget();
                self.held += n;
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for `bytes` (at most the whole budget). Only called holding nothing: see
    /// the module doc.
    pub(super) async fn grow(&mut self, bytes: usize) {
        debug_assert_eq!(self.held, 0, "waiting for budget while holding some");
        let n = units(bytes).min(self.budget.total);
        let p = self.budget.permits.acquire_many(n).await.expect("the budget's semaphore is never closed");
        p.forget();
        self.held += n;
    }

    /// Gives back all but what `bytes` need.
    pub(super) fn shrink_to(&mut self, bytes: usize) {
        let keep = units(bytes).min(self.held);
        self.budget.permits.add_permits((self.held - keep) as usize);
        self.held = keep;
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grants_take_from_one_budget_and_give_back_when_dropped() {
        let budget = Budget::new(10 * UNIT);
        let mut a = budget.grant();
        assert!(a.try_grow(6 * UNIT));
        let mut b = budget.grant();
        assert!(!b.try_grow(5 * UNIT), "past the budget");
        assert!(b.try_grow(4 * UNIT - 100), "rounded up to whole units");
        assert_eq!(budget.available(), 0);
        a.shrink_to(UNIT + 1);
        assert_eq!(budget.available(), 4 * UNIT);
        drop(a);
        drop(b);
        assert_eq!(budget.available(), 10 * UNIT);
    }

    #[tokio::test]
    async fn a_waiting_grant_gets_its_bytes_once_another_gives_them_back() {
        let budget = std::sync::Arc::new(Budget::new(8 * UNIT));
        let mut holder = budget.grant();
        assert!(holder.try_grow(8 * UNIT));
        let waiter = {
            let budget = std::sync::Arc::clone(&budget);
            tokio::spawn(async move {
                let mut g = budget.grant();
                // More than the whole budget: clamped, so it can be served.
                g.grow(100 * UNIT).await;
                g.held
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(holder);
        assert_eq!(waiter.await.unwrap(), 8);
        assert_eq!(budget.available(), 8 * UNIT);
    }
}

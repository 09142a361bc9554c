//! How long a worker's lease runs, and how it keeps the lease alive while the store is slow.
//!
//! The checker takes a worker for dead once `worker_lease_until` is past. The worker computes
//! that time when it *sends* a write; the write lands when the store answers. On DynamoDB that
//! is milliseconds later, but a throttled table (the SDK backing off), a store under strain,
//! or the local emulator under a 60-session chaos run can take longer than the lease itself:
//! the lease then lands already spent, the checker ends the turn `worker_lost`, and an answer
//! complete at the provider never reaches the transcript (chaos seed 304). So:
//! - the lease a write asks for is the base lease plus twice the slowest recent store call
//!   ([`LeaseClock::until`]; slowness fades by an eighth with each call after it), so a slow
//!   store stretches the lease and a healthy one (tens of ms) leaves it at the base;
//! - while any store call of the worker is in flight, a renewal is sent beside it every
//!   heartbeat, its lease stretched by how long that call has been waiting
//!   ([`crate::agent::worker`] does this around each write).
//!
//! The stretch is capped ([`MAX_STRETCH`]), so a worker that dies while the store is slow is
//! still taken for dead within the base lease plus the cap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Timestamp;

/// The most a slow store may add to the lease.
pub const MAX_STRETCH: Duration = Duration::from_secs(120);

/// The base lease for a run polled every `poll_interval`: 15 s, or five intervals when that
/// is longer, so a worker misses several heartbeats (half an interval each) before the checker
/// gives it up.
pub fn base_lease(poll_interval: Duration) -> Duration {
    Duration::from_secs(15).max(poll_interval * 5)
}

/// Sizes a worker's lease to the store's pace (see the module doc). Shared by every
/// invocation of a warm worker, so what one turn learnt of the store's pace the next one
/// starts from.
#[derive(Debug)]
pub struct LeaseClock {
    base: Duration,
    slowest_ms: AtomicU64,
}

impl LeaseClock {
    /// A clock whose lease is `base` while the store answers promptly.
    pub fn new(base: Duration) -> Self {
        Self { base, slowest_ms: AtomicU64::new(0) }
    }

    /// The base lease.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// What the store's slowness currently adds to the lease, for a write sent while another
    /// call has been waiting `pending_for`.
    pub fn stretch(&self, pending_for: Duration) -> Duration {
        let slowest = Duration::from_millis(self.slowest_ms.load(Ordering::Relaxed));
        (slowest.max(pending_for) * 2).min(MAX_STRETCH)
    }

    /// When the lease of a write sent now ends.
    pub fn until(&self, pending_for: Duration) -> Timestamp {
        let lease = self.base + self.stretch(pending_for);
        Timestamp::from_epoch_millis(Timestamp::now().epoch_millis() + lease.as_millis() as i64)
    }

    /// Records that a store call took `took`: the slowest recent call, an eighth of it
    /// forgotten with each call since.
    pub fn observe(&self, took: Duration) {
        let took = took.as_millis().min(u64::MAX as u128) as u64;
        let _ = self.slowest_ms.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |slowest| {
            Some(took.max(slowest - slowest / 8))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_lease_is_fifteen_seconds_or_five_poll_intervals() {
        assert_eq!(base_lease(Duration::from_secs(1)), Duration::from_secs(15));
        assert_eq!(base_lease(Duration::from_secs(2)), Duration::from_secs(15));
        assert_eq!(base_lease(Duration::from_secs(5)), Duration::from_secs(25));
    }

    #[test]
    fn a_slow_store_stretches_the_lease_and_the_stretch_fades_once_it_is_prompt_again() {
        let clock = LeaseClock::new(Duration::from_secs(15));
        assert_eq!(clock.stretch(Duration::ZERO), Duration::ZERO, "a prompt store: the base");
        clock.observe(Duration::from_millis(20));
        assert_eq!(clock.stretch(Duration::ZERO), Duration::from_millis(40));
        // A write that waited 22 s (seed 304's p95): the next leases are 15 + 44 s.
        clock.observe(Duration::from_secs(22));
        assert_eq!(clock.stretch(Duration::ZERO), Duration::from_secs(44));
        let until = clock.until(Duration::ZERO).epoch_millis() - Timestamp::now().epoch_millis();
        assert!((58_900..=59_000).contains(&until), "{until} ms");
        // A call still waiting longer than any seen stretches it further, up to the cap.
        assert_eq!(clock.stretch(Duration::from_secs(30)), Duration::from_secs(60));
        assert_eq!(clock.stretch(Duration::from_secs(600)), MAX_STRETCH);
        // Prompt answers since: an eighth forgotten each, back near the base after ~40 calls.
        clock.observe(Duration::from_millis(10));
        assert_eq!(clock.stretch(Duration::ZERO), Duration::from_millis(2 * 19_250));
        for _ in 0..40 {
            clock.observe(Duration::from_millis(10));
        }
        assert!(clock.stretch(Duration::ZERO) < Duration::from_millis(200));
    }
}

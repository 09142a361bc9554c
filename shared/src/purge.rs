//! Finishing deletes, however long the transcript and whatever interrupts them.
//!
//! A delete marks the session (a tombstone: 404 everywhere from then on, in the purge queue
//! index), then removes its events in batches for as long as its budget allows and removes
//! the tombstone once none is left. Whatever a delete leaves (its budget ran out, DynamoDB
//! failed, the function died) the purge sweeper finishes: a scheduled function that reads
//! the queue oldest first and goes on purging where the delete stopped. Each batch removes
//! events for good, so a purge resumed any number of times, or by two callers at once,
//! only ever gets nearer the end; the tombstone goes last, so the queue forgets a session
//! only when its events are gone.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::domain::SessionId;
use crate::store::StoreError;
use crate::store::events::{EventStore, PurgeProgress};
use crate::store::sessions::SessionStore;

/// How long the delete request itself may spend removing events (its function has 10 s;
/// the mark before and the tombstone's removal after fit in the rest).
pub const DELETE_PURGE_BUDGET: Duration = Duration::from_secs(5);

/// How old a mark must be before the sweeper takes its purge over by default: longer than a
/// delete request can still be purging it, so the two rarely do the same work twice (it
/// would be harmless).
pub const SWEEP_GRACE: Duration = Duration::from_secs(30);

/// How long before its function's deadline the sweeper stops starting batches: one batch
/// with its retries fits, and the report still gets out.
pub const SWEEP_MARGIN: Duration = Duration::from_secs(5);

/// The longest one sweep runs: its function's timeout (55 s in template.yaml) less
/// [`SWEEP_MARGIN`].
pub const SWEEP_BUDGET: Duration = Duration::from_secs(50);

/// Tombstones read per page of the queue.
const QUEUE_PAGE: usize = 25;

/// Purges deleted sessions' events.
#[derive(Debug, Clone)]
pub struct Purger {
    sessions: SessionStore,
    events: EventStore,
}

/// What a sweep did, as the sweeper answers and logs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Sessions whose purge it finished (events and tombstone gone).
    pub finished: usize,
    /// Sessions it left for the next sweep because its time ran out.
    pub left: usize,
    /// Sessions whose purge failed (DynamoDB errors); the next sweep tries again.
    pub failed: usize,
    /// Events it deleted.
    pub events_deleted: usize,
    /// Age in seconds of the oldest mark it found (0 for none): how far behind purges are.
    pub oldest_pending_secs: i64,
}

/// What a caller (the schedule, or an operator) may ask of one sweep.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepRequest {
    /// Take over purges marked at least this many seconds ago (default [`SWEEP_GRACE`]); 0
    /// takes every one, a delete still under way included.
    pub grace_seconds: Option<u64>,
}

impl Purger {
    /// A purger over the two stores.
    pub fn new(sessions: SessionStore, events: EventStore) -> Self {
        Self { sessions, events }
    }

    /// Removes the events of `id`, a session marked deleted, until none is left or
    /// `deadline` has passed (at least one batch either way), then, when none is left, the
    /// session item too.
    pub async fn purge_session(
        &self,
        id: &SessionId,
        deadline: std::time::Instant,
    ) -> Result<PurgeProgress, StoreError> {
        let progress = self.events.purge(&id.as_string(), deadline).await?;
        if progress.finished {
            self.sessions.remove_deleted(id).await?;
        }
        Ok(progress)
    }

    /// One sweep of the purge queue: every session marked deleted more than `grace` before
    /// `now`, oldest first, purged in turn until the queue is empty or `deadline` passes.
    /// A session whose purge fails is counted and passed over; the next sweep retries it.
    pub async fn sweep(
        &self,
        now: Timestamp,
        grace: Duration,
        deadline: std::time::Instant,
    ) -> Result<SweepReport, StoreError> {
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let marked_before =
            Timestamp::from_epoch_millis(now.epoch_millis().saturating_sub(grace_ms));
        let mut report = SweepReport::default();
        let mut cursor = None;
        loop {
            let first_page = cursor.is_none();
            let page = self.sessions.pending_purges(marked_before, QUEUE_PAGE, cursor).await?;
            if first_page && let Some((_, oldest)) = page.sessions.first() {
                report.oldest_pending_secs = (now.epoch_secs() - oldest.epoch_secs()).max(0);
            }
            for (index, (id, _)) in page.sessions.iter().enumerate() {
                if std::time::Instant::now() >= deadline {
                    report.left += page.sessions.len() - index;
                    // More may wait beyond this page; the next sweep sees them.
                    return Ok(report);
                }
                match self.purge_session(id, deadline).await {
                    Ok(progress) => {
                        report.events_deleted += progress.deleted;
                        if progress.finished {
                            report.finished += 1;
                        } else {
                            report.left += 1;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(session_id = %id, %error, "purge failed; the next sweep retries it");
                        report.failed += 1;
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(report),
            }
        }
    }
}

/// The `Route` dimension of the purge sweeper's metrics.
pub const PURGE_SWEEPER_ROUTE: &str = "purge-sweeper";

/// When a sweep must stop starting work: [`SWEEP_MARGIN`] before the invocation's deadline
/// (milliseconds since the epoch, as the Lambda runtime gives it), and never later than
/// [`SWEEP_BUDGET`] from now. A deadline already past cannot come from Lambda: `cargo lambda
/// watch` sends its timeout there (600000) rather than a time, and then the budget alone
/// applies.
pub fn sweep_deadline(deadline_epoch_ms: u64) -> std::time::Instant {
    let now_ms = u64::try_from(crate::clock::Timestamp::now().epoch_millis()).unwrap_or(0);
    let left = match deadline_epoch_ms.checked_sub(now_ms) {
        Some(left) => std::time::Duration::from_millis(left).saturating_sub(SWEEP_MARGIN),
        None => SWEEP_BUDGET,
    };
    std::time::Instant::now() + left.min(SWEEP_BUDGET)
}

impl SweepReport {
    /// Logs the sweep (at debug level when nothing was queued, the common case once a
    /// minute) and emits it as metrics (`OldestPendingPurgeSeconds` is the one the backlog
    /// alarm watches).
    pub fn record(&self) {
        use crate::telemetry::{self, Unit};
        if *self == SweepReport::default() {
            tracing::debug!("purge sweep: nothing to do");
        } else {
            tracing::info!(report = ?self, "purge sweep");
        }
        telemetry::emit(
            PURGE_SWEEPER_ROUTE,
            &[
                ("PurgesFinished", self.finished as f64, Unit::Count),
                ("PurgesLeft", (self.left + self.failed) as f64, Unit::Count),
                ("PurgeEventsDeleted", self.events_deleted as f64, Unit::Count),
                ("OldestPendingPurgeSeconds", self.oldest_pending_secs as f64, Unit::Seconds),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_stops_a_margin_before_its_deadline_and_within_its_budget() {
        let now_ms = crate::clock::Timestamp::now().epoch_millis() as u64;
        let soon = sweep_deadline(now_ms + 20_000) - std::time::Instant::now();
        assert!(soon <= std::time::Duration::from_secs(15), "{soon:?}");
        assert!(soon >= std::time::Duration::from_secs(14), "{soon:?}");
        let later = sweep_deadline(now_ms + 900_000) - std::time::Instant::now();
        assert!(later <= SWEEP_BUDGET && later >= SWEEP_BUDGET - std::time::Duration::from_secs(1));
        // cargo lambda watch's deadline (a duration, in the past as a time): the budget.
        let local = sweep_deadline(600_000) - std::time::Instant::now();
        assert!(local <= SWEEP_BUDGET && local >= SWEEP_BUDGET - std::time::Duration::from_secs(1));
        // Less than the margin left: stop at once.
        assert!(sweep_deadline(now_ms + 1_000) <= std::time::Instant::now());
    }
}

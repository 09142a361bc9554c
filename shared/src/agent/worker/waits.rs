//! How the worker waits: a store call with lease renewals beside it when it is slow, and the
//! model or a tool with the heartbeat and the stop watch beside it.

use super::*;

impl Worker {
    /// Waits for `work`, one store call of the worker on `turn`, sending a lease renewal
    /// beside it every heartbeat while it waits (stretched by how long it has waited; a
    /// renewal still unanswered at the next heartbeat is dropped for a fresh one), and
    /// records how long it took ([`LeaseClock::observe`]). A renewal's refusal or failure is
    /// left for `work` itself, or the next write or heartbeat, to meet.
    pub(super) async fn kept_alive<T>(
        &self,
        turn: &ClaimedTurn,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = tokio::time::Instant::now();
        let heartbeat = self.settings.heartbeat;
        tokio::pin!(work);
        let mut next = started + heartbeat;
        let mut renewal = std::pin::pin!(OptionFuture::from(None));
        let mut renewing = false;
        loop {
            tokio::select! {
                biased;
                output = &mut work => {
                    self.lease.observe(started.elapsed());
                    return output;
                }
                renewed = &mut renewal, if renewing => {
                    if let Some(Err(error)) = renewed {
                        tracing::warn!(%error, "a renewal beside a slow store call failed");
                    }
                    renewing = false;
                    renewal.set(None.into());
                }
                () = tokio::time::sleep_until(next) => {
                    next = tokio::time::Instant::now() + heartbeat;
                    let waited = started.elapsed();
                    let until = self.lease.until(waited);
                    let waited_ms = waited.as_millis() as u64;
                    if renewing {
                        // One renewal stuck for a whole heartbeat (a connection the SDK
                        // retries on, a throttled attempt backing off) must not let the lease
                        // run out beside a live call: it is abandoned for a fresh one. If the
                        // abandoned one still lands, late, it sets a lease one heartbeat older
                        // than the fresh one's, still far beyond the base lease.
                        tracing::warn!(waited_ms, "a renewal beside a slow store call has not answered in a heartbeat; sending a fresh one");
                    } else {
                        tracing::info!(waited_ms, "store slow; renewing the lease beside it");
                    }
                    renewal.set(Some(self.sessions.renew_lease(turn, until)).into());
                    renewing = true;
                }
            }
        }
    }
}

impl<'a> Play<'a> {
    /// Waits for `work`, renewing the lease at every heartbeat. `None` when a renewal was
    /// refused: `work` is dropped at once (for a model call, that closes its connection).
    /// Meanwhile the stop watch reads every [`STOP_WATCH_EVERY`] whether the turn is still
    /// this worker's, and drops `work` as soon as it is not: a cancel or a delete closes the
    /// model call within about that long, not a heartbeat later. A failed read is left to
    /// the heartbeat.
    /// Neither the watch's read nor the heartbeat's renewal holds up the other, or `work`:
    /// each runs beside it (a renewal the store answers slowly must not delay the watch).
    pub(super) async fn watched<F: Future>(
        &mut self,
        work: F,
    ) -> Result<Option<F::Output>, WorkerError> {
        tokio::pin!(work);
        let mut watch = self.watch.take();
        let mut renewal = self.renewal.take();
        let outcome = loop {
            let now = tokio::time::Instant::now();
            if watch.is_none() && now >= self.next_watch {
                watch = Some(self.stop_watch_read());
            }
            if renewal.is_none() && now >= self.next_heartbeat {
                renewal = Some(self.heartbeat_renewal());
                self.next_heartbeat = now + self.worker.settings.heartbeat;
            }
            let watch_due = self.next_watch;
            let heartbeat_due = self.next_heartbeat;
            tokio::select! {
                biased;
                output = &mut work => break Ok(Some(output)),
                seen = async { watch.as_mut().expect("guarded by is_some").await }, if watch.is_some() => {
                    watch = None;
                    self.next_watch =
                        tokio::time::Instant::now() + self.worker.settings.stop_watch_every;
                    match seen {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(session_id = %self.turn.session_id, "stop watch: the turn is no longer this worker's");
                            break Ok(None);
                        }
                        Err(error) => tracing::warn!(%error, "stop watch read failed; the heartbeat still watches"),
                    }
                }
                renewed = async { renewal.as_mut().expect("guarded by is_some").await }, if renewal.is_some() => {
                    renewal = None;
                    match renewed {
                        Ok(true) => {}
                        Ok(false) => break Ok(None),
                        Err(error) => break Err(error.into()),
                    }
                }
                () = tokio::time::sleep_until(watch_due), if watch.is_none() => {}
                () = tokio::time::sleep_until(heartbeat_due), if renewal.is_none() => {}
            }
        };
        self.watch = watch;
        self.renewal = renewal;
        outcome
    }

    /// One heartbeat's lease renewal, owning what it needs so it can outlive one wait.
    pub(super) fn heartbeat_renewal(&self) -> Beside<'a> {
        let worker: &'a Worker = self.worker;
        let turn = self.turn.clone();
        Box::pin(async move {
            let lease = worker.lease_until();
            worker.kept_alive(&turn, worker.sessions.renew_lease(&turn, lease)).await
        })
    }

    /// One stop watch read of this turn, owning what it needs so it can outlive one wait.
    pub(super) fn stop_watch_read(&self) -> Beside<'a> {
        let worker: &'a Worker = self.worker;
        let turn = self.turn.clone();
        Box::pin(async move { worker.sessions.turn_is_still_ours(&turn).await })
    }
}

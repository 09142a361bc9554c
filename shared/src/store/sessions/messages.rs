//! A user message: one that starts a run, or one queued for the running one.

use super::*;

impl SessionStore {
    /// Appends the user message `event` and makes `run` the session's active run, if no
    /// live run holds the session (none, or one dead past its timeout) and it is not
    /// cancelled. The caller then starts the run's execution. `false` when refused.
    pub async fn append_message_starting_run(
        &self,
        session: &SessionRecord,
        event: &NewEvent,
        run: &RunId,
        run_timeout: std::time::Duration,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let append = Append {
            set: ", active_run = :run, run_started_at = :now_ms, run_expires_at = :expires, \
                  turn_step = :zero, queued_messages = :zero, turn_messages = :one, \
                  #status = :running, \
                  runs_started = if_not_exists(runs_started, :zero) + :one, \
                  turn_seq = if_not_exists(turn_seq, :zero) + :one",
            remove: Some(DEAD_RUN_LEFTOVERS),
            condition: "attribute_not_exists(cancelled_at) \
                        AND (attribute_not_exists(active_run) OR run_expires_at <= :now_ms)",
            values: vec![
                (":run", s(run.as_str())),
                (":now_ms", n(now.epoch_millis())),
                (":expires", n(now.epoch_millis() + run_timeout.as_millis() as i64)),
                (":zero", n(0)),
                (":one", n(1)),
                (":running", s(SessionStatus::Running.as_str())),
            ],
        };
        let event = event.clone().in_turn(session.turn_seq + 1);
        self.append(session, &event, append, now).await
    }

    /// Appends the user message `event` and queues it for `run`'s next turn, if `run` is
    /// still the session's active run and the session is not cancelled. `false` when
    /// refused (the run ended meanwhile: start a new one instead).
    pub async fn append_message_queued(
        &self,
        session: &SessionRecord,
        event: &NewEvent,
        run: &RunId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let append = Append {
            set: ", queued_messages = if_not_exists(queued_messages, :zero) + :one",
            remove: None,
            condition: "active_run = :run AND turn_seq = :seq AND attribute_not_exists(cancelled_at)",
            values: vec![
                (":run", s(run.as_str())),
                (":seq", n(session.turn_seq)),
                (":zero", n(0)),
                (":one", n(1)),
            ],
        };
        // Answered by the turn after the one in flight.
        let event = event.clone().in_turn(session.turn_seq + 1);
        self.append(session, &event, append, now).await
    }
}

//! The writes of a run's checker on the session item: its poll's token, a worker started
//! again, the hand-over of queued messages to the next turn or a new run, the turn's last
//! event, a failed turn.

use super::*;

impl SessionStore {
    /// A poll of `run`: stores the task token the poll waits on (`poll_token`) with when its
    /// poll step was entered (`poll_token_at`), renews the run's lease on the session
    /// (`run_expires_at`, until `lease_until`) and reads the session, all in one `UpdateItem`
    /// (`ALL_NEW`): so either this read sees a cancel's stamp, or that cancel's write returns
    /// this token and wakes the run.
    ///
    /// A token never replaces one of a later poll step: a checker invocation that arrives
    /// late (it waited for a free instance, or the step was retried meanwhile) would store a
    /// token that timed out over the live one, and a cancel's wake-up would then miss. Such a
    /// poll writes nothing and is answered [`PollRead::Stale`]. When `run` is no longer the
    /// session's active run, nothing is written either and the session is read as it is (the
    /// failed condition's `ALL_OLD`). `None` when the session no longer exists.
    pub async fn note_poll(
        &self,
        id: &str,
        run: &RunId,
        token: &str,
        entered_at: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<PollRead>, StoreError> {
        let result = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.sessions_table)
                .key("id", s(id))
                .update_expression(
                    "SET poll_token = :token, poll_token_at = :entered, run_expires_at = :lease",
                )
                .condition_expression(
                    "active_run = :run \
                     AND (attribute_not_exists(poll_token_at) OR poll_token_at <= :entered)",
                )
                .expression_attribute_values(":token", s(token))
                .expression_attribute_values(":entered", n(entered_at.epoch_millis()))
                .expression_attribute_values(":lease", n(lease_until.epoch_millis()))
                .expression_attribute_values(":run", s(run.as_str()))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
        })
        .await;
        match result {
            Ok(output) => output
                .attributes
                .as_ref()
                .map(|item| SessionRecord::from_item(item).map(|s| PollRead::Current(Box::new(s))))
                .transpose(),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let Some(item) = failed.item() else { return Ok(None) };
                    let session = SessionRecord::from_item(item)?;
                    let ours = session.active_run.as_ref().is_some_and(|active| active.id == *run);
                    Ok(Some(if ours {
                        PollRead::Stale
                    } else {
                        PollRead::Current(Box::new(session))
                    }))
                }
                _ => Err(StoreError::sdk("UpdateItem", error)),
            },
        }
    }

    /// Makes the run start its current turn's worker again, at most once every `every`: when
    /// the turn is still unclaimed (no worker has written `worker_id`), the run is `run`, and
    /// no restart happened within `every`, records one (`worker_restarted_at`) and answers
    /// `true`. The start of a worker is an asynchronous invoke behind a task token's answer,
    /// either of which AWS can lose; a second worker finds the turn claimed and does nothing.
    pub async fn note_worker_restart(
        &self,
        session: &SessionRecord,
        run: &RunId,
        every: std::time::Duration,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let due = now.epoch_millis() - every.as_millis() as i64;
        let result = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.sessions_table)
                .key("id", s(&session.id))
                .update_expression("SET worker_restarted_at = :now")
                .condition_expression(
                    "active_run = :run AND attribute_not_exists(worker_id) \
                     AND attribute_not_exists(turn_result) AND attribute_not_exists(cancelled_at) \
                     AND attribute_not_exists(deleted_at) \
                     AND (attribute_not_exists(worker_restarted_at) OR worker_restarted_at <= :due)",
                )
                .expression_attribute_values(":now", n(now.epoch_millis()))
                .expression_attribute_values(":due", n(due))
                .expression_attribute_values(":run", s(run.as_str()))
                .send()
        })
        .await;
        updated(result)
    }

    /// Hands `run`'s next turn (the user messages queued during the one that just finished) to
    /// a new run, `next`, whose execution the caller then starts: the same write as
    /// [`Self::start_next_turn`], which also makes `next` the active run, holding the session
    /// for `lease` until its first poll. Used when `run`'s execution has too little time left
    /// for another turn. `false` when refused (something changed since the read). A write
    /// whose answer was lost and that the SDK sent again counts as written (the item then
    /// names `next`).
    pub async fn hand_over_next_turn(
        &self,
        session: &SessionRecord,
        run: &ActiveRun,
        next: &RunId,
        lease: std::time::Duration,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let attempts = Attempts::default();
        let result = retry_conflicts(|| {
            attempts.reset();
            self.client
                .update_item()
                .table_name(&self.sessions_table)
                .key("id", s(&session.id))
                .update_expression(format!(
                    "SET active_run = :next, turn_step = :zero, run_started_at = :now_ms, \
                     run_expires_at = :expires, queued_messages = :zero, turn_messages = :seen, \
                     turn_seq = turn_seq + :one, runs_started = if_not_exists(runs_started, :zero) + :one \
                     REMOVE poll_token, poll_token_at, {TURN_WORKER_ATTRIBUTES}"
                ))
                .condition_expression(
                    "attribute_exists(id) AND attribute_not_exists(deleted_at) \
                     AND attribute_not_exists(cancelled_at) AND active_run = :run \
                     AND turn_step = :step AND queued_messages = :seen",
                )
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now_ms", n(now.epoch_millis()))
                .expression_attribute_values(
                    ":expires",
                    n(now.epoch_millis() + lease.as_millis() as i64),
                )
                .expression_attribute_values(":next", s(next.as_str()))
                .expression_attribute_values(":run", s(run.id.as_str()))
                .expression_attribute_values(":step", n(run.step))
                .expression_attribute_values(":seen", n(session.queued_messages))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .customize()
                .interceptor(attempts.clone())
                .send()
        })
        .await;
        match result {
            Err(error) if attempts.retried() => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => Ok(failed
                    .item()
                    .is_some_and(|old| get_s(old, "active_run") == Some(next.as_str()))),
                _ => Err(StoreError::sdk("UpdateItem", error)),
            },
            other => updated(other),
        }
    }

    /// Appends one event of `run`'s agent step `run.step`, if `run` is still the session's
    /// active run at that step and the session is not cancelled. With `finish`, the event
    /// ends the turn and the run: the run is cleared and the session goes idle, only if no
    /// user message is queued for it. `false` when the guard refused (cancelled, superseded,
    /// a message queued meanwhile, or the step was already written).
    pub async fn append_turn_event(
        &self,
        session: &SessionRecord,
        run: &ActiveRun,
        event: &NewEvent,
        finish: bool,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let append = Append {
            set: if finish { ", #status = :idle" } else { ", turn_step = :next" },
            remove: finish.then_some(RUN_ATTRIBUTES),
            condition: if finish {
                "active_run = :run AND turn_step = :step \
                 AND attribute_not_exists(cancelled_at) AND queued_messages = :none"
            } else {
                "active_run = :run AND turn_step = :step AND attribute_not_exists(cancelled_at)"
            },
            values: if finish {
                vec![
                    (":run", s(run.id.as_str())),
                    (":step", n(run.step)),
                    (":idle", s(SessionStatus::Idle.as_str())),
                    (":none", n(0)),
                ]
            } else {
                vec![
                    (":run", s(run.id.as_str())),
                    (":step", n(run.step)),
                    (":next", n(run.step + 1)),
                ]
            },
        };
        self.append(session, event, append, now).await
    }

    /// Ends `run` through its failure path: appends the `error` event, clears the run and
    /// leaves the session idle, if `run` is still active, the session is not cancelled, and
    /// exactly the `session.queued_messages` messages the event names as unanswered are
    /// queued: a message queued since the read makes the guard refuse, so the caller reads
    /// again and names it too (none is dropped without a word). `guard` adds what else must
    /// still hold ([`FailureGuard`]).
    pub async fn fail_turn(
        &self,
        session: &SessionRecord,
        run: &RunId,
        event: &NewEvent,
        guard: FailureGuard,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut condition = String::from(if session.queued_messages == 0 {
            "active_run = :run AND attribute_not_exists(cancelled_at) \
             AND (attribute_not_exists(queued_messages) OR queued_messages = :seen)"
        } else {
            "active_run = :run AND attribute_not_exists(cancelled_at) \
             AND queued_messages = :seen"
        });
        let mut values = vec![
            (":run", s(run.as_str())),
            (":idle", s(SessionStatus::Idle.as_str())),
            (":seen", n(session.queued_messages)),
        ];
        if guard == FailureGuard::LeaseRunOut {
            condition.push_str(
                " AND (attribute_not_exists(worker_lease_until) OR worker_lease_until < :now_ms) \
                 AND (attribute_not_exists(worker_renewed_until) OR worker_renewed_until < :now_ms)",
            );
            values.push((":now_ms", n(now.epoch_millis())));
        }
        let append = Append {
            set: ", #status = :idle",
            remove: Some(RUN_ATTRIBUTES),
            condition: &condition,
            values,
        };
        self.append(session, event, append, now).await
    }

    /// Starts `run`'s next turn, for the user messages queued during the one that just
    /// finished: the step counter and turn clock restart and the queue is emptied, if
    /// nothing changed since the read. Writes no event (the next turn's events follow the
    /// queued messages). `false` when refused. A write whose answer was lost, so that the
    /// SDK sent it again and its own effect refused the copy, counts as written: the item
    /// then shows this run, the next turn number and this call's turn clock.
    pub async fn start_next_turn(
        &self,
        session: &SessionRecord,
        run: &ActiveRun,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let attempts = Attempts::default();
        let result = retry_conflicts(|| {
            attempts.reset();
            self.client
                .update_item()
                .table_name(&self.sessions_table)
                .key("id", s(&session.id))
                .update_expression(format!(
                    "SET turn_step = :zero, run_started_at = :now_ms, queued_messages = :zero, \
                     turn_messages = :seen, turn_seq = turn_seq + :one \
                     REMOVE {TURN_WORKER_ATTRIBUTES}"
                ))
                .condition_expression(
                    "attribute_exists(id) AND attribute_not_exists(deleted_at) \
                 AND attribute_not_exists(cancelled_at) AND active_run = :run \
                 AND turn_step = :step AND queued_messages = :seen",
                )
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now_ms", n(now.epoch_millis()))
                .expression_attribute_values(":run", s(run.id.as_str()))
                .expression_attribute_values(":step", n(run.step))
                .expression_attribute_values(":seen", n(session.queued_messages))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .customize()
                .interceptor(attempts.clone())
                .send()
        })
        .await;
        match result {
            Err(error) if attempts.retried() => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(failed.item().is_some_and(|old| {
                        get_s(old, "active_run") == Some(run.id.as_str())
                            && get_i64(old, "run_started_at") == Some(now.epoch_millis())
                            && get_i64(old, "turn_seq") == i64::try_from(session.turn_seq + 1).ok()
                    }))
                }
                _ => Err(StoreError::sdk("UpdateItem", error)),
            },
            other => updated(other),
        }
    }
}

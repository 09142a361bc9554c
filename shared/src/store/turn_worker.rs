//! The writes of a turn's worker (see [`crate::agent::worker`]) on the session item.
//!
//! A run's turn is played by exactly one worker invocation. It claims the turn by writing its
//! id into `worker_id` (only while none is there), and from then on every write it makes is
//! guarded by `worker_id = :me AND active_run = :run`, besides the guards every append has
//! (see [`super::sessions`]): so a second delivery of the same start (Step Functions retries,
//! Lambda's asynchronous retries) finds the turn claimed and writes nothing, and a worker
//! that was given up for dead (its lease ran out; the checker ended the run) cannot write
//! after the fact, because ending the run removes `worker_id`.
//!
//! The lease is renewed by every write the worker makes (`worker_lease_until`) and by a
//! heartbeat between writes (`worker_renewed_until`); it runs until the later of the two. Two
//! attributes, because an append the store answers late lands with the lease computed when
//! it was sent, and must not take back what the renewals sent beside it have granted since
//! (chaos seed 304, and its test). The heartbeat's guard also fails once the session is
//! cancelled or deleted: that failure is how the worker learns, within one heartbeat, to drop
//! its model call (the stop watch, [`SessionStore::turn_is_still_ours`], usually first).
//!
//! When the model has finished, the worker records how (`turn_result`, and for a failure
//! `turn_error_type` and `turn_error_message`) and the turn's token usage; the checker, at
//! its next poll, writes the turn's last event (`status_idle` or `error`) and ends the run.
//! The checker stays the one that decides that a run is over.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::sessions::{Append, NewEvent, SessionRecord, SessionStore};
use super::{Attempts, StoreError, get_s, n, retry_conflicts, s, updated};
use crate::clock::Timestamp;
use crate::domain::{EventId, RunId};

/// The guard of every write a worker makes while it plays the turn.
const WORKER_HOLDS_TURN: &str = "active_run = :run AND worker_id = :me \
     AND attribute_not_exists(cancelled_at) AND attribute_not_exists(deleted_at)";

/// Which turn a worker plays, and its own view of the session's transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTurn {
    /// The session.
    pub session_id: String,
    /// The owning user (the tools act for this user only).
    pub user_id: String,
    /// The owning organisation.
    pub org_id: String,
    /// The run the turn belongs to.
    pub run: RunId,
    /// This worker invocation's id, as written in `worker_id`.
    pub worker_id: String,
    /// How many steps of the turn are written: the guard of the next event.
    pub step: u32,
    /// The turn's number (`turn_seq`), carried by each event the worker writes.
    pub turn_seq: u64,
    /// The last event of the transcript as this worker knows it.
    pub last_event_id: EventId,
}

/// Token counts of a model call or a turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
}

/// How a turn ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEnd {
    /// The model ended its answer (`end_turn`, `max_tokens`, or `max_steps` when the step
    /// cap stopped the tool loop).
    Finished(String),
    /// The turn failed: the `error` event's `errorType` and `message`.
    Failed {
        /// Machine-readable kind, e.g. `overloaded_error`.
        error_type: String,
        /// What the user reads.
        message: String,
    },
}

impl SessionStore {
    /// Claims the current turn of `run` for `worker_id`, if no worker has claimed it and the
    /// session is neither cancelled nor being deleted; the lease runs until `lease_until`.
    /// Answers the session as written, or `None` when the turn is not this worker's to play.
    pub async fn claim_turn(
        &self,
        session_id: &str,
        run: &RunId,
        worker_id: &str,
        lease_until: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let attempts = Attempts::default();
        let result = retry_conflicts(|| {
            attempts.reset();
            self.client
                .update_item()
                .table_name(&self.sessions_table)
                .key("id", s(session_id))
                .update_expression("SET worker_id = :me, worker_lease_until = :lease")
                .condition_expression(
                    "active_run = :run AND attribute_not_exists(worker_id) \
                     AND attribute_not_exists(turn_result) \
                     AND attribute_not_exists(cancelled_at) AND attribute_not_exists(deleted_at)",
                )
                .expression_attribute_values(":me", s(worker_id))
                .expression_attribute_values(":lease", n(lease_until.epoch_millis()))
                .expression_attribute_values(":run", s(run.as_str()))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .customize()
                .interceptor(attempts.clone())
                .send()
        })
        .await;
        match result {
            Ok(output) => output.attributes.as_ref().map(SessionRecord::from_item).transpose(),
            Err(error) => match error.as_service_error() {
                // Refused. When the SDK sent the claim more than once, the refusal may be of
                // its own earlier attempt, which committed and whose answer was lost: the
                // item then names this worker, and the turn is this worker's after all.
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    match failed.item() {
                        Some(item) if get_s(item, "worker_id") == Some(worker_id) => {
                            SessionRecord::from_item(item).map(Some)
                        }
                        _ => Ok(None),
                    }
                }
                _ => Err(StoreError::sdk("UpdateItem", error)),
            },
        }
    }

    /// Renews the worker's lease until `lease_until`. `false` when the turn is no longer the
    /// worker's to play: cancelled, deleted, ended by the checker, or superseded.
    pub async fn renew_lease(
        &self,
        turn: &ClaimedTurn,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.update_own_turn(turn, "SET worker_renewed_until = :lease", WORKER_HOLDS_TURN, |u| {
            u.expression_attribute_values(":lease", n(lease_until.epoch_millis()))
        })
        .await
    }

    /// Whether the turn is still the worker's to play: the session neither cancelled nor
    /// being deleted, its active run and claimed worker still these. One strongly consistent
    /// `GetItem` (1 read unit while the item is under 4 KB; the projection trims what is sent,
    /// not what is billed): what the worker's stop watch reads every
    /// [`crate::agent::worker::STOP_WATCH_EVERY`], so a cancel stops the model call within
    /// about that long whatever the poll interval. A session that is gone is not ours.
    pub async fn turn_is_still_ours(&self, turn: &ClaimedTurn) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.sessions_table)
            .key("id", s(&turn.session_id))
            .consistent_read(true)
            .projection_expression("cancelled_at, deleted_at, active_run, worker_id")
            .send()
            .await
            .map_err(|error| StoreError::sdk("GetItem", error))?;
        let Some(item) = output.item else { return Ok(false) };
        Ok(get_s(&item, "cancelled_at").is_none()
            && get_s(&item, "deleted_at").is_none()
            && get_s(&item, "active_run") == Some(turn.run.as_str())
            && get_s(&item, "worker_id") == Some(turn.worker_id.as_str()))
    }

    /// Appends one event of the turn at the worker's step, renewing the lease, and advances
    /// the worker's view (`step`, `last_event_id`). `false` when the turn is no longer the
    /// worker's; an event that only lost the race with a concurrent append (a user message
    /// queued meanwhile) is retried after the session is read again.
    pub async fn append_worker_event(
        &self,
        turn: &mut ClaimedTurn,
        event: &NewEvent,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let event = event.clone().in_turn(turn.turn_seq);
        for _ in 0..5 {
            let append = Append {
                set: ", turn_step = :next, worker_lease_until = :lease",
                remove: None,
                condition: "active_run = :run AND worker_id = :me AND turn_step = :step \
                            AND attribute_not_exists(cancelled_at)",
                values: vec![
                    (":run", s(turn.run.as_str())),
                    (":me", s(&turn.worker_id)),
                    (":step", n(turn.step)),
                    (":next", n(turn.step + 1)),
                    (":lease", n(lease_until.epoch_millis())),
                ],
            };
            let written = self
                .append_after(&turn.session_id, &turn.last_event_id, &event, append, now)
                .await?;
            if let Some(event_id) = written {
                turn.step += 1;
                turn.last_event_id = event_id;
                return Ok(true);
            }
            // Refused: still this worker's turn at this step? Then only the event order
            // raced another writer; take the newer last event and try again.
            let Some(session) = self.get(&turn.session_id).await? else {
                return Ok(false);
            };
            let Some(run) = session.active_run.as_ref() else { return Ok(false) };
            let still_ours = session.cancelled_at.is_none()
                && session.deleted_at.is_none()
                && run.id == turn.run
                && run.step == turn.step
                && run.worker.worker_id.as_deref() == Some(turn.worker_id.as_str());
            if !still_ours {
                return Ok(false);
            }
            turn.last_event_id = session.last_event_id;
        }
        Err(StoreError::Unfinished(format!(
            "session {}: events kept racing the worker's append",
            turn.session_id
        )))
    }

    /// Records how the turn ended and its token usage, for the checker to finish it. `false`
    /// when the turn is no longer the worker's.
    pub async fn finish_turn(
        &self,
        turn: &ClaimedTurn,
        end: &TurnEnd,
        usage: TokenUsage,
    ) -> Result<bool, StoreError> {
        let (result, error) = match end {
            TurnEnd::Finished(reason) => (reason.as_str(), None),
            TurnEnd::Failed { error_type, message } => ("failed", Some((error_type, message))),
        };
        let set = if error.is_some() {
            "SET turn_result = :result, turn_input_tokens = :in, turn_output_tokens = :out, \
             turn_error_type = :error_type, turn_error_message = :error_message"
        } else {
            "SET turn_result = :result, turn_input_tokens = :in, turn_output_tokens = :out"
        };
        self.update_own_turn(turn, set, WORKER_HOLDS_TURN, |mut u| {
            u = u
                .expression_attribute_values(":result", s(result))
                .expression_attribute_values(":in", n(usage.input))
                .expression_attribute_values(":out", n(usage.output));
            if let Some((error_type, message)) = error {
                u = u
                    .expression_attribute_values(":error_type", s(error_type.as_str()))
                    .expression_attribute_values(":error_message", s(message.as_str()));
            }
            u
        })
        .await
    }

    /// Adds one model call's tokens to the session's lifetime totals (`input_tokens_total`,
    /// `output_tokens_total`), also for a call that a cancel cut off: spend is recorded
    /// whatever became of the turn. `call_id` names the model call: the same write records it
    /// in `usage_call` and is refused when it is already there, so a write whose answer was
    /// lost and that the SDK sent again never counts the call twice. `false` when the session
    /// no longer exists.
    pub async fn add_token_usage(
        &self,
        session_id: &str,
        call_id: &str,
        usage: TokenUsage,
    ) -> Result<bool, StoreError> {
        let result = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.sessions_table)
                .key("id", s(session_id))
                .update_expression(
                    "ADD input_tokens_total :in, output_tokens_total :out SET usage_call = :call",
                )
                .condition_expression(
                    "attribute_exists(id) AND (attribute_not_exists(usage_call) \
                     OR usage_call <> :call)",
                )
                .expression_attribute_values(":in", n(usage.input))
                .expression_attribute_values(":out", n(usage.output))
                .expression_attribute_values(":call", s(call_id))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) => match error.as_service_error() {
                // Refused: the session is gone, or this call's usage is already counted (by
                // this very write, whose answer was lost).
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(failed.item().is_some_and(|item| get_s(item, "usage_call") == Some(call_id)))
                }
                _ => Err(StoreError::sdk("UpdateItem", error)),
            },
        }
    }

    /// One `UpdateItem` of the worker's own turn under `condition` (which may use `:run` and
    /// `:me`); `false` when the condition failed. Sent again while it meets a transaction in
    /// flight on the session item ([`retry_conflicts`]): a user message's append is one, and
    /// a heartbeat that lost to it must not end the turn. Every write here sets values only
    /// (no counters), so a copy the SDK resends after a lost answer writes the same again.
    async fn update_own_turn(
        &self,
        turn: &ClaimedTurn,
        update: &str,
        condition: &str,
        values: impl FnOnce(
            aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        )
            -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.sessions_table)
            .key("id", s(&turn.session_id))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_values(":run", s(turn.run.as_str()))
            .expression_attribute_values(":me", s(&turn.worker_id));
        let request = values(request);
        updated(retry_conflicts(|| request.clone().send()).await)
    }
}

impl ClaimedTurn {
    /// The turn as the claim wrote it; `None` when the session read back holds no run.
    pub fn from_claim(session: &SessionRecord, worker_id: &str) -> Option<Self> {
        let run = session.active_run.as_ref()?;
        Some(Self {
            session_id: session.id.clone(),
            user_id: session.user_id.clone(),
            org_id: session.org_id.clone(),
            run: run.id.clone(),
            worker_id: worker_id.to_owned(),
            step: run.step,
            turn_seq: session.turn_seq,
            last_event_id: session.last_event_id.clone(),
        })
    }
}

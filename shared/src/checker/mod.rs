//! The checker: what the turn workflow's poll step runs on every cycle.
//!
//! The turn itself is played by a worker ([`crate::agent::worker`]) that the state machine
//! starts beside the poll loop; the checker stays the one that decides when a run is over.
//! Each `poll` reads the session (one strongly consistent `GetItem`) and then, in order:
//! 1. session gone or being deleted → stop, writing nothing;
//! 2. session cancelled → write the one `status_terminated` event (unless the cancel
//!    function or an earlier cycle already did) and stop: the graceful exit (the worker sees
//!    the cancel at its next heartbeat and drops its model call);
//! 3. this run is no longer the session's active run → stop, writing nothing;
//! 4. the worker reported the turn finished → start the next turn if user messages were
//!    queued during this one (answer `startWorker`), else append `status_idle`, which also
//!    clears the run; the worker reported a failure → append its `error` event, end the run;
//! 5. the worker's lease ran out (it died or hangs) → append an `error` event
//!    (`worker_lost`) and end the run, so a dead worker never holds the session;
//! 6. otherwise the turn goes on.
//!
//! A `fail` (the state machine's `Catch` path) writes an `error` event and frees the session,
//! unless it was cancelled meanwhile (then `status_terminated`, as above).
//!
//! An execution can also end without reaching its own last step: `RecordFailure` itself
//! failed on every retry, the execution timed out, or someone stopped it. Step Functions then
//! reports the execution's status to EventBridge, and the rule in template.yaml
//! (`RunEndedUnfinished`) invokes the checker with that event ([`ExecutionEnded`]): it takes
//! the `fail` path for that run, so a dead run's queued messages are named and a cancelled
//! session gets its `status_terminated` at once, not at the next request. For a run that
//! recorded its own end, the session no longer names the run and nothing is written.

use serde::{Deserialize, Serialize};
use serde_json::json;

use std::time::Duration;

use crate::clock::Timestamp;
use crate::domain::{EventType, RunId, SessionId};
use crate::store::StoreError;
use crate::store::sessions::{
    ActiveRun, FailureGuard, NewEvent, PollRead, SessionRecord, SessionStore,
};
use crate::telemetry;
use crate::test_hooks::{CHECKER_FAULT, TestHooks};
use crate::workflow::{RUN_LEASE, TIMEOUT_MARGIN, TURN_TIMEOUT, WorkflowStarter};

mod messages;

use messages::diagnostic;
pub use messages::*;

/// How long a turn may stay unclaimed before the run starts its worker again (and again
/// every so often, until [`Checker::new`]'s grace ends it as lost): the start of a worker is
/// an asynchronous invoke behind a task token's answer, and AWS can lose either.
pub const WORKER_RESTART_EVERY: Duration = Duration::from_secs(5);

/// How long an execution may have run and still start a queued turn itself. Past this, the
/// next turn goes to a new run (a new execution), so that a turn never starts with too little
/// of its execution's [`TURN_TIMEOUT`] left and is cut mid-answer by it.
pub const HAND_OVER_AFTER: Duration = Duration::from_secs(300);

/// The `Route` dimension of the checker's metrics.
pub const METRICS_ROUTE: &str = "checker";

/// The `error` event that ends a failed run; `error_type` names what failed.
pub fn error_event(error_type: &str) -> NewEvent {
    error_event_with(
        error_type,
        "The agent's turn failed and was stopped. Send a message to try again.",
    )
}

/// The `error` event `{message, errorType}` that ends a failed run.
pub fn error_event_with(error_type: &str, message: &str) -> NewEvent {
    NewEvent::new(EventType::Error, json!({ "message": message, "errorType": error_type }))
}

/// The `errorType` of a turn whose worker stopped renewing its lease.
pub const WORKER_LOST: &str = "worker_lost";

/// The `errorType` of a run ended because its execution was about to time out.
pub const RUN_TIMEOUT: &str = "run_timeout";

/// What one poll is about.
struct Poll<'a> {
    session_id: &'a str,
    run_id: &'a RunId,
    task_token: Option<&'a str>,
    /// When the poll step was entered (`$$.State.EnteredTime`), else when the checker began.
    entered_at: Timestamp,
    out_of_time: bool,
    /// How long the run's execution has run, when known.
    run_age: Option<Duration>,
    /// The state machine running the run (`$$.StateMachine.Id`), for a hand-over.
    state_machine: Option<&'a str>,
}

/// How long ago `at` (RFC 3339) was at `now`; `None` for an unreadable time.
fn age(at: &str, now: Timestamp) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    u64::try_from(now.epoch_millis() - at.timestamp_millis()).ok().map(Duration::from_millis)
}

/// Whether a run whose execution started at `started_at` (RFC 3339) is within
/// [`TIMEOUT_MARGIN`] of [`TURN_TIMEOUT`] at `now`. An unreadable time is not.
pub fn near_timeout(started_at: &str, now: Timestamp) -> bool {
    let Ok(started) = chrono::DateTime::parse_from_rfc3339(started_at) else {
        return false;
    };
    let limit = (TURN_TIMEOUT - TIMEOUT_MARGIN).as_millis() as i64;
    now.epoch_millis() - started.timestamp_millis() >= limit
}

/// How many user messages a run that ends now leaves unanswered: those queued for its next
/// turn, and those of its current turn when that turn has written nothing yet.
pub fn unanswered_messages(session: &SessionRecord) -> u32 {
    let current = session
        .active_run
        .as_ref()
        .filter(|run| run.step == 0)
        .map_or(0, |_| session.turn_messages);
    session.queued_messages + current
}

/// `event` (an `error`) with a sentence about the `count` messages it leaves unanswered.
fn with_unanswered(event: &NewEvent, count: u32) -> NewEvent {
    let mut event = event.clone();
    if count > 0
        && let Some(message) = event.payload.get("message").and_then(|m| m.as_str())
    {
        let note = match count {
            1 => " Your last message was not answered.".to_string(),
            n => format!(" Your last {n} messages were not answered."),
        };
        event.payload["message"] = json!(format!("{message}{note}"));
        event.payload["unansweredMessages"] = json!(count);
    }
    event
}

/// Runs the checker's cycle.
#[derive(Debug, Clone)]
pub struct Checker {
    sessions: SessionStore,
    workflow: WorkflowStarter,
    worker_start_grace: Duration,
    fault_injection: bool,
}

impl Checker {
    /// A checker over `sessions`, answering the poll step's task tokens through `workflow`.
    /// A turn whose worker has not claimed it within `worker_start_grace` of the turn's start
    /// is taken for lost; `fault_injection` lets tests make polls fail (never enabled by the
    /// template).
    pub fn new(
        sessions: SessionStore,
        workflow: WorkflowStarter,
        worker_start_grace: Duration,
        fault_injection: bool,
    ) -> Self {
        Self { sessions, workflow, worker_start_grace, fault_injection }
    }

    /// Handles whatever invoked the checker: a state machine step, or an execution's end as
    /// EventBridge reports it (the `fail` path for that run; an event that names no turn run
    /// is logged and answered as nothing to do).
    pub async fn handle_event(&self, event: CheckerEvent) -> Result<CheckerResponse, CheckerError> {
        match event {
            CheckerEvent::Step(request) => self.handle(request).await,
            CheckerEvent::ExecutionEnded(ended) => match ended.as_failure() {
                Some(request) => self.handle(request).await,
                None => {
                    tracing::info!(?ended, "an execution's end that names no turn run");
                    Ok(CheckerResponse::go_on())
                }
            },
        }
    }

    /// Handles one request from the state machine.
    pub async fn handle(&self, request: CheckerRequest) -> Result<CheckerResponse, CheckerError> {
        let now = Timestamp::now();
        let response = match &request {
            CheckerRequest::Poll {
                session_id,
                run_id,
                task_token,
                run_started_at,
                poll_entered_at,
                state_machine_arn,
            } => {
                let run = RunId::from_stored(run_id.clone());
                let out_of_time = run_started_at.as_deref().is_some_and(|at| near_timeout(at, now));
                let entered_at =
                    poll_entered_at.as_deref().and_then(Timestamp::parse_rfc3339).unwrap_or(now);
                let poll = Poll {
                    session_id,
                    run_id: &run,
                    task_token: task_token.as_deref(),
                    entered_at,
                    out_of_time,
                    run_age: run_started_at.as_deref().and_then(|at| age(at, now)),
                    state_machine: state_machine_arn.as_deref(),
                };
                let polled = self.poll(poll, now).await;
                if let Some(token) = task_token {
                    self.answer_token(token, &polled).await;
                }
                polled?
            }
            CheckerRequest::Fail { session_id, run_id, error } => {
                let run = RunId::from_stored(run_id.clone());
                self.fail(session_id, &run, error.as_deref(), now).await?
            }
        };
        tracing::info!(?request, ?response, "checker");
        Ok(response)
    }

    /// Answers the poll step's token with the checker's answer when the run must not simply
    /// wait for its next poll, or with the error; a plain "continue" is left to time out.
    async fn answer_token(&self, token: &str, polled: &Result<CheckerResponse, CheckerError>) {
        let answered = match polled {
            Ok(response) if response.next == Next::Continue => return,
            Ok(response) => {
                let output = serde_json::to_string(response).expect("a plain enum pair");
                self.workflow.answer(token, &output).await
            }
            Err(error) => {
                let (error_type, message) = diagnostic(error);
                self.workflow.fail(token, error_type, &message).await
            }
        };
        if let Err(error) = answered {
            // The step then times out and the next poll decides again.
            tracing::warn!(%error, "the poll step's token could not be answered");
        }
    }

    async fn poll(&self, poll: Poll<'_>, now: Timestamp) -> Result<CheckerResponse, CheckerError> {
        let Poll {
            session_id,
            run_id,
            task_token,
            entered_at,
            out_of_time,
            run_age,
            state_machine,
        } = poll;
        let lease = Timestamp::from_epoch_millis(now.epoch_millis() + RUN_LEASE.as_millis() as i64);
        let read = match task_token {
            Some(token) => {
                match self.sessions.note_poll(session_id, run_id, token, entered_at, lease).await? {
                    // A later poll step of this run decides; this one's token has timed out.
                    Some(PollRead::Stale) => {
                        tracing::info!(session_id, run_id = %run_id, "late poll; left to the next");
                        return Ok(CheckerResponse::go_on());
                    }
                    Some(PollRead::Current(session)) => Some(*session),
                    None => None,
                }
            }
            None => self.sessions.get(session_id).await?,
        };
        let session = match self.judge_for_run(read, run_id, now).await? {
            ForRun::GoesOn(session) => session,
            ForRun::Over(answer) => return Ok(answer),
        };
        if TestHooks::new(self.fault_injection).checker_fails(session.injected_fault.as_deref()) {
            return Err(CheckerError::Injected(CHECKER_FAULT.into()));
        }
        let run = session.active_run.as_ref().expect("read_for_run checked the run is active");
        if out_of_time {
            tracing::warn!(session_id, run_id = %run_id, "run near its execution timeout");
            let event = error_event_with(
                RUN_TIMEOUT,
                "The agent's run reached its time limit and was stopped. Send a message to \
                 continue.",
            );
            return self.end_failed(&session, run_id, &event, FailureGuard::RunActive, now).await;
        }
        let worker = &run.worker;
        let Some(result) = worker.result.as_deref() else {
            let grace = self.worker_start_grace.as_millis() as i64;
            let deadline = worker.lease_until.unwrap_or_else(|| {
                Timestamp::from_epoch_millis(run.started_at.epoch_millis() + grace)
            });
            if now <= deadline {
                let unclaimed_for = now.epoch_millis() - run.started_at.epoch_millis();
                if worker.worker_id.is_none()
                    && unclaimed_for >= WORKER_RESTART_EVERY.as_millis() as i64
                    && self
                        .sessions
                        .note_worker_restart(&session, run_id, WORKER_RESTART_EVERY, now)
                        .await?
                {
                    tracing::warn!(session_id, run_id = %run_id, unclaimed_for, "worker started again");
                    return Ok(CheckerResponse {
                        next: Next::StartWorker,
                        outcome: Outcome::Running,
                    });
                }
                return Ok(CheckerResponse::go_on());
            }
            tracing::warn!(session_id, run_id = %run_id, worker_id = ?worker.worker_id, "worker lost");
            let event = error_event_with(
                WORKER_LOST,
                "The agent stopped responding and its turn was ended. Send a message to try again.",
            );
            return self.end_failed(&session, run_id, &event, FailureGuard::LeaseRunOut, now).await;
        };
        if result == "failed" {
            let event = error_event_with(
                worker.error_type.as_deref().unwrap_or("unknown_error"),
                worker.error_message.as_deref().unwrap_or("The agent's turn failed."),
            );
            return self.end_failed(&session, run_id, &event, FailureGuard::RunActive, now).await;
        }
        if session.queued_messages > 0 {
            if let Some(arn) = state_machine
                && run_age.is_some_and(|age| age >= HAND_OVER_AFTER)
            {
                return self.hand_over(&session, run, arn, now).await;
            }
            if self.sessions.start_next_turn(&session, run, now).await? {
                return Ok(CheckerResponse { next: Next::StartWorker, outcome: Outcome::Running });
            }
            return self.after_refusal(session_id, run_id, now).await;
        }
        let idle = NewEvent::new(
            EventType::StatusIdle,
            json!({
                "stopReason": result,
                "usage": { "inputTokens": worker.input_tokens, "outputTokens": worker.output_tokens },
            }),
        );
        if self.sessions.append_turn_event(&session, run, &idle, true, now).await? {
            return Ok(CheckerResponse::stop(Outcome::Idle));
        }
        // The guard refused: a cancel (or a queued message) landed since the read.
        self.after_refusal(session_id, run_id, now).await
    }

    /// Gives the queued turn to a new run in a new execution of `state_machine`: this one has
    /// run too long to start another turn. The session names the new run first (so this run
    /// stops), then its execution starts; if that start fails, the new run ends at once
    /// through the failure path, naming the messages it leaves unanswered.
    async fn hand_over(
        &self,
        session: &SessionRecord,
        run: &ActiveRun,
        state_machine: &str,
        now: Timestamp,
    ) -> Result<CheckerResponse, CheckerError> {
        let next = RunId::new();
        if !self.sessions.hand_over_next_turn(session, run, &next, RUN_LEASE, now).await? {
            return self.after_refusal(&session.id, &run.id, now).await;
        }
        let Some(id) = SessionId::parse(&session.id) else {
            return Err(StoreError::Corrupt(format!("session id {}", session.id)).into());
        };
        tracing::info!(session_id = %session.id, run_id = %run.id, next = %next, "turn handed over");
        if let Err(error) = self.workflow.start_on(state_machine, &id, &next).await {
            tracing::error!(%error, session_id = %session.id, "the handed-over run could not start");
            let queued = session.queued_messages;
            let failed = error_event_with(
                "run_start_failed",
                "The agent could not start its next turn. Send a message to try again.",
            );
            for _ in 0..3 {
                let Some(current) = self.sessions.get(&session.id).await? else { break };
                if current.active_run.as_ref().map(|active| &active.id) != Some(&next) {
                    break;
                }
                let event = with_unanswered(&failed, unanswered_messages(&current).max(queued));
                if self
                    .sessions
                    .fail_turn(&current, &next, &event, FailureGuard::RunActive, now)
                    .await?
                {
                    break;
                }
            }
        }
        Ok(CheckerResponse::stop(Outcome::HandedOver))
    }

    /// Ends the run with `event` (an `error`), unless something changed since the read. Messages
    /// queued for the run's next turn are not answered then: the event says so, so none is
    /// dropped silently (they stay in the transcript, and the next message's turn sees them).
    async fn end_failed(
        &self,
        session: &SessionRecord,
        run_id: &RunId,
        event: &NewEvent,
        guard: FailureGuard,
        now: Timestamp,
    ) -> Result<CheckerResponse, CheckerError> {
        let event = with_unanswered(event, unanswered_messages(session));
        if self.sessions.fail_turn(session, run_id, &event, guard, now).await? {
            return Ok(CheckerResponse::stop(Outcome::Failed));
        }
        self.after_refusal(&session.id, run_id, now).await
    }

    async fn fail(
        &self,
        session_id: &str,
        run_id: &RunId,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<CheckerResponse, CheckerError> {
        let event = error_event(error.unwrap_or("Unknown"));
        // A refusal with the run still active means another event slipped in between the
        // read and the write: read again and retry.
        for _ in 0..3 {
            let session = match self.read_for_run(session_id, run_id, now).await? {
                ForRun::GoesOn(session) => session,
                ForRun::Over(answer) => return Ok(answer),
            };
            let event = with_unanswered(&event, unanswered_messages(&session));
            if self
                .sessions
                .fail_turn(&session, run_id, &event, FailureGuard::RunActive, now)
                .await?
            {
                tracing::warn!(session_id, run_id = %run_id, error, "turn failed");
                return Ok(CheckerResponse::stop(Outcome::Failed));
            }
        }
        Err(StoreError::Unfinished(format!("session {session_id}: events kept racing the failure"))
            .into())
    }

    /// Reads the session (one consistent `GetItem`) and says whether `run_id` may go on
    /// with it: [`Self::judge_for_run`].
    async fn read_for_run(
        &self,
        session_id: &str,
        run_id: &RunId,
        now: Timestamp,
    ) -> Result<ForRun, CheckerError> {
        let read = self.sessions.get(session_id).await?;
        self.judge_for_run(read, run_id, now).await
    }

    /// Says whether `run_id` may go on with the session as read. It may not when the session
    /// is gone or being deleted (stop, writing nothing), cancelled (write the termination if
    /// no one has, then stop), or held by another run or none (stop, writing nothing).
    async fn judge_for_run(
        &self,
        read: Option<SessionRecord>,
        run_id: &RunId,
        now: Timestamp,
    ) -> Result<ForRun, CheckerError> {
        let Some(session) = read else {
            return Ok(ForRun::Over(CheckerResponse::stop(Outcome::Gone)));
        };
        if session.deleted_at.is_some() {
            return Ok(ForRun::Over(CheckerResponse::stop(Outcome::Gone)));
        }
        if session.cancelled_at.is_some() {
            let termination = self.sessions.terminate(&session, "cancelled", now).await?;
            telemetry::record_termination(METRICS_ROUTE, &session, termination, Timestamp::now());
            return Ok(ForRun::Over(CheckerResponse::stop(Outcome::Cancelled)));
        }
        if session.active_run.as_ref().map(|run| &run.id) != Some(run_id) {
            return Ok(ForRun::Over(CheckerResponse::stop(Outcome::Superseded)));
        }
        Ok(ForRun::GoesOn(Box::new(session)))
    }

    /// Re-reads the session after a refused append and says what follows.
    async fn after_refusal(
        &self,
        session_id: &str,
        run_id: &RunId,
        now: Timestamp,
    ) -> Result<CheckerResponse, CheckerError> {
        Ok(match self.read_for_run(session_id, run_id, now).await? {
            ForRun::GoesOn(_) => CheckerResponse::go_on(),
            ForRun::Over(answer) => answer,
        })
    }
}

/// What [`Checker::read_for_run`] found.
enum ForRun {
    /// The run still holds the session, as read.
    GoesOn(Box<SessionRecord>),
    /// The run must stop, with this answer.
    Over(CheckerResponse),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_the_state_machine_payloads() {
        let poll: CheckerRequest =
            serde_json::from_str(r#"{"action":"poll","sessionId":"s","runId":"r"}"#).unwrap();
        let expected = CheckerRequest::Poll {
            session_id: "s".into(),
            run_id: "r".into(),
            task_token: None,
            run_started_at: None,
            poll_entered_at: None,
            state_machine_arn: None,
        };
        assert_eq!(poll, expected);
        let with_token: CheckerRequest = serde_json::from_str(
            r#"{"action":"poll","sessionId":"s","runId":"r","taskToken":"t"}"#,
        )
        .unwrap();
        assert!(matches!(with_token, CheckerRequest::Poll { task_token: Some(t), .. } if t == "t"));
        let fail: CheckerRequest = serde_json::from_str(
            r#"{"action":"fail","sessionId":"s","runId":"r","error":"Knoq.InjectedFault"}"#,
        )
        .unwrap();
        assert!(
            matches!(fail, CheckerRequest::Fail { error: Some(e), .. } if e == "Knoq.InjectedFault")
        );
        assert!(serde_json::from_str::<CheckerRequest>(r#"{"action":"dance"}"#).is_err());
    }

    #[test]
    fn an_execution_that_ended_unfinished_is_the_fail_path_of_its_run() {
        let event = |status: &str, input: &str| -> CheckerEvent {
            serde_json::from_value(json!({
                "version": "0",
                "detail-type": "Step Functions Execution Status Change",
                "source": "aws.states",
                "detail": { "executionArn": "arn", "name": "r", "status": status, "input": input },
            }))
            .unwrap()
        };
        let input = r#"{"sessionId":"s","runId":"r"}"#;
        for (status, error) in [
            ("FAILED", "Knoq.RunFailed"),
            ("TIMED_OUT", "Knoq.RunTimedOut"),
            ("ABORTED", "Knoq.RunAborted"),
        ] {
            let CheckerEvent::ExecutionEnded(ended) = event(status, input) else {
                panic!("{status}: read as a step");
            };
            let expected = CheckerRequest::Fail {
                session_id: "s".into(),
                run_id: "r".into(),
                error: Some(error.into()),
            };
            assert_eq!(ended.as_failure(), Some(expected), "{status}");
        }
        let CheckerEvent::ExecutionEnded(succeeded) = event("SUCCEEDED", input) else { panic!() };
        assert_eq!(succeeded.as_failure(), None, "a run that ended itself needs nothing");
        let CheckerEvent::ExecutionEnded(other) = event("FAILED", "{}") else { panic!() };
        assert_eq!(other.as_failure(), None, "an input that names no run");
        let step: CheckerEvent =
            serde_json::from_str(r#"{"action":"poll","sessionId":"s","runId":"r"}"#).unwrap();
        assert!(matches!(step, CheckerEvent::Step(CheckerRequest::Poll { .. })));
    }

    #[test]
    fn a_logged_request_never_shows_its_task_token() {
        let poll: CheckerRequest = serde_json::from_str(
            r#"{"action":"poll","sessionId":"s","runId":"r","taskToken":"AQCEAAAAKgAAAAMAAAAA-secret"}"#,
        )
        .unwrap();
        let logged = format!("{poll:?}");
        assert!(!logged.contains("secret"), "{logged}");
        assert!(logged.contains("<present>"), "{logged}");
    }

    #[test]
    fn responses_are_what_the_choice_state_reads() {
        let response = serde_json::to_value(CheckerResponse::go_on()).unwrap();
        assert_eq!(response, json!({ "next": "continue", "outcome": "running" }));
        let response = serde_json::to_value(CheckerResponse::stop(Outcome::Cancelled)).unwrap();
        assert_eq!(response, json!({ "next": "stop", "outcome": "cancelled" }));
    }

    #[test]
    fn a_run_ends_itself_before_its_execution_times_out() {
        let start = "2026-01-01T00:00:00Z";
        let at = |secs: i64| Timestamp::from_epoch_millis(1_767_225_600_000 + secs * 1000);
        let limit = (TURN_TIMEOUT - TIMEOUT_MARGIN).as_secs() as i64;
        assert!(!near_timeout(start, at(limit - 1)));
        assert!(near_timeout(start, at(limit)));
        assert!(!near_timeout("not a time", at(limit + 100)));
    }

    #[test]
    fn an_error_ending_a_run_with_queued_messages_says_they_were_not_answered() {
        let event = error_event("worker_lost");
        assert_eq!(with_unanswered(&event, 0), event);
        let noted = with_unanswered(&event, 2);
        assert!(
            noted.payload["message"]
                .as_str()
                .unwrap()
                .ends_with("Your last 2 messages were not answered.")
        );
        assert_eq!(noted.payload["unansweredMessages"], 2);
        assert_eq!(noted.payload["errorType"], "worker_lost");
    }

    #[test]
    fn checker_errors_carry_names_the_state_machine_can_match() {
        let diagnostic: lambda_runtime::Diagnostic =
            CheckerError::Injected(CHECKER_FAULT.into()).into();
        assert_eq!(diagnostic.error_type, "Knoq.InjectedFault");
    }
}

//! What the checker is asked (a poll, a failure, an execution that ended unfinished), what it
//! answers the state machine, and how its errors reach Step Functions.

use super::*;

/// What the state machine asks the checker.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum CheckerRequest {
    /// One poll cycle of a run.
    Poll {
        /// The session.
        session_id: String,
        /// The run doing the polling.
        run_id: String,
        /// The token the poll step waits on (`$$.Task.Token`): answered when the run must
        /// stop or start its next turn, else left to time out, which is the loop's wait.
        #[serde(default)]
        task_token: Option<String>,
        /// When the run's execution started (`$$.Execution.StartTime`, RFC 3339): a run this
        /// close to its execution timeout ends itself through the failure path.
        #[serde(default)]
        run_started_at: Option<String>,
        /// When this poll step was entered (`$$.State.EnteredTime`, RFC 3339): a late poll's
        /// token never replaces a later one's.
        #[serde(default)]
        poll_entered_at: Option<String>,
        /// The state machine's ARN (`$$.StateMachine.Id`): where a queued turn is handed over
        /// when this execution has too little time left.
        #[serde(default)]
        state_machine_arn: Option<String>,
    },
    /// The run's poll failed on every retry: end it through the failure path.
    Fail {
        /// The session.
        session_id: String,
        /// The failed run.
        run_id: String,
        /// The error name Step Functions caught, if any.
        #[serde(default)]
        error: Option<String>,
    },
}

/// What invokes the checker: a step of the turn state machine, or EventBridge reporting that
/// a turn execution ended FAILED, TIMED_OUT or ABORTED.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CheckerEvent {
    /// A step of the state machine (`Poll`, `RecordFailure`).
    Step(CheckerRequest),
    /// EventBridge's "Step Functions Execution Status Change" event.
    ExecutionEnded(ExecutionEnded),
}

/// EventBridge's "Step Functions Execution Status Change" event, as much of it as the checker
/// reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecutionEnded {
    /// `Step Functions Execution Status Change`.
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// The execution and its status.
    pub detail: ExecutionDetail,
}

/// The `detail` of an [`ExecutionEnded`] event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecutionDetail {
    /// `FAILED`, `TIMED_OUT`, `ABORTED` (the rule sends only these), or another status.
    pub status: String,
    /// The execution's input as a JSON string: `{"sessionId", "runId"}` for a turn run.
    #[serde(default)]
    pub input: Option<String>,
}

impl ExecutionEnded {
    /// The `fail` request this event stands for, when it reports a turn run that ended without
    /// its own last step; `None` for any other event (another status, an input that names no
    /// run).
    pub fn as_failure(&self) -> Option<CheckerRequest> {
        let error = match self.detail.status.as_str() {
            "FAILED" => "Knoq.RunFailed",
            "TIMED_OUT" => "Knoq.RunTimedOut",
            "ABORTED" => "Knoq.RunAborted",
            _ => return None,
        };
        let input: serde_json::Value = serde_json::from_str(self.detail.input.as_deref()?).ok()?;
        Some(CheckerRequest::Fail {
            session_id: input["sessionId"].as_str()?.to_owned(),
            run_id: input["runId"].as_str()?.to_owned(),
            error: Some(error.to_owned()),
        })
    }
}

/// Logs a request without its task token: a token lets whoever holds it steer the run.
impl std::fmt::Debug for CheckerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Poll {
                session_id, run_id, task_token, run_started_at, poll_entered_at, ..
            } => f
                .debug_struct("Poll")
                .field("session_id", session_id)
                .field("run_id", run_id)
                .field("task_token", &task_token.as_ref().map(|_| "<present>"))
                .field("run_started_at", run_started_at)
                .field("poll_entered_at", poll_entered_at)
                .finish_non_exhaustive(),
            Self::Fail { session_id, run_id, error } => f
                .debug_struct("Fail")
                .field("session_id", session_id)
                .field("run_id", run_id)
                .field("error", error)
                .finish(),
        }
    }
}

/// Whether the state machine loops again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Next {
    /// Wait one interval and poll again.
    Continue,
    /// Start a worker for the run's next turn (messages were queued), then poll again.
    StartWorker,
    /// The run is over.
    Stop,
}

/// Why the run goes on or stopped, for the execution history and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The turn is still going.
    Running,
    /// The turn finished; `status_idle` is written.
    Idle,
    /// The session was cancelled; `status_terminated` is written (by this run or the
    /// cancel function).
    Cancelled,
    /// The session no longer exists, or is being deleted.
    Gone,
    /// The session's active run is not this one any more.
    Superseded,
    /// This execution had too little time left for the queued turn: a new run plays it.
    HandedOver,
    /// The run ended through the failure path; `error` is written.
    Failed,
}

/// The checker's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckerResponse {
    /// Loop or stop.
    pub next: Next,
    /// Why.
    pub outcome: Outcome,
}

impl CheckerResponse {
    pub(super) fn go_on() -> Self {
        Self { next: Next::Continue, outcome: Outcome::Running }
    }

    pub(super) fn stop(outcome: Outcome) -> Self {
        Self { next: Next::Stop, outcome }
    }
}

/// Why a checker call failed; the state machine retries, then takes its failure path.
#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    /// DynamoDB failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A test planted this fault on the session.
    #[error("injected fault: {0}")]
    Injected(String),
}

/// The error name the state machine's `Retry` and `Catch` match (and its history shows),
/// and the message.
pub(super) fn diagnostic(error: &CheckerError) -> (&'static str, String) {
    let error_type = match error {
        CheckerError::Store(_) => "Knoq.StoreError",
        CheckerError::Injected(_) => "Knoq.InjectedFault",
    };
    (error_type, error.to_string())
}

impl From<CheckerError> for lambda_runtime::Diagnostic {
    fn from(error: CheckerError) -> Self {
        let (error_type, error_message) = diagnostic(&error);
        Self { error_type: error_type.into(), error_message }
    }
}

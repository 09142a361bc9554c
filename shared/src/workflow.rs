//! Starting runs of the turn workflow, and answering its poll step.
//!
//! The Step Functions state machine in `infra/workflow/turn.asl.json` starts the turn's
//! worker, then loops on `Poll`: it invokes the checker ([`crate::checker`]) with a task token and
//! waits for that token at most one poll interval. Nobody answers a token while the turn
//! simply goes on (the timeout is the loop's wait); the checker answers it when the run must
//! stop or start its next turn, and a cancel answers it to wake the run at once
//! ([`WorkflowStarter::wake`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::WorkflowConfig;
use crate::domain::{RunId, SessionId};

/// The longest a run may last: the state machine's `TimeoutSeconds`. A run whose session
/// still names it past this is dead (its execution timed out without recording its end).
pub const TURN_TIMEOUT: Duration = Duration::from_secs(900);

/// A run's lease on its session: set when the run is made active and renewed by every poll
/// (the checker's `UpdateItem` that stores the poll token). A run whose execution never
/// started, died, or stopped polling stops holding the session this long after its last poll,
/// instead of after the whole [`TURN_TIMEOUT`]: its session reads as idle again, a message
/// starts a new run, and a cancel ends the session itself.
pub const RUN_LEASE: Duration = Duration::from_secs(60);

/// How long before [`TURN_TIMEOUT`] a run ends itself through the failure path (an `error`
/// event, the session idle), so that a run never times out without recording its end.
pub const TIMEOUT_MARGIN: Duration = Duration::from_secs(30);

/// The input of one execution, and what each poll step passes on to the checker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInput {
    /// The session the run works on.
    pub session_id: String,
    /// The run's id; also the execution's name.
    pub run_id: String,
    /// Seconds the state machine waits before each poll.
    pub poll_seconds: u64,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// This function was deployed without the state machine's ARN.
    #[error("TURN_STATE_MACHINE_ARN is not set for this function")]
    NotConfigured,
    /// Step Functions refused or could not be reached.
    #[error("StartExecution failed: {0}")]
    Start(String),
}

/// Why answering a task token failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The task is over (it timed out, or was answered) or never was: expected, since a
    /// token lives one poll interval; nothing to do.
    #[error("the task token is no longer current: {0}")]
    NotCurrent(String),
    /// Step Functions refused or could not be reached.
    #[error("answering the task token failed: {0}")]
    Failed(String),
}

/// What a cancel sends to wake a run: the run polls again at once.
pub const WAKE_UP: &str = r#"{"next":"continue","outcome":"woken"}"#;

/// Starts runs of the turn state machine, and answers its poll step's task tokens.
#[derive(Debug, Clone)]
pub struct WorkflowStarter {
    client: aws_sdk_sfn::Client,
    config: WorkflowConfig,
}

impl WorkflowStarter {
    /// A starter for the configured state machine.
    pub fn new(client: aws_sdk_sfn::Client, config: WorkflowConfig) -> Self {
        Self { client, config }
    }

    /// Starts the execution named `run` for `session`. The name makes a retried start of
    /// the same run idempotent: Step Functions refuses a second execution of one name.
    pub async fn start(&self, session: &SessionId, run: &RunId) -> Result<(), WorkflowError> {
        let arn = self.config.state_machine_arn.as_deref().ok_or(WorkflowError::NotConfigured)?;
        self.start_on(arn, session, run).await
    }

    /// [`Self::start`] on the state machine `arn` (the checker, which the template cannot give
    /// the state machine's ARN, learns it from the execution it serves).
    pub async fn start_on(
        &self,
        arn: &str,
        session: &SessionId,
        run: &RunId,
    ) -> Result<(), WorkflowError> {
        let input = RunInput {
            session_id: session.as_string(),
            run_id: run.as_str().to_owned(),
            poll_seconds: self.config.poll_interval_secs,
        };
        self.client
            .start_execution()
            .state_machine_arn(arn)
            .name(run.as_str())
            .input(serde_json::to_string(&input).expect("a plain struct serialises"))
            .send()
            .await
            .map_err(|e| {
                WorkflowError::Start(aws_sdk_sfn::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }

    /// Completes the poll step waiting on `token` with `output` (the checker's answer, or
    /// [`WAKE_UP`]): the run moves on at once.
    pub async fn answer(&self, token: &str, output: &str) -> Result<(), TokenError> {
        let result = self.client.send_task_success().task_token(token).output(output).send().await;
        result.map(|_| ()).map_err(|error| {
            use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError as E;
            let not_current = matches!(
                error.as_service_error(),
                Some(E::TaskTimedOut(_) | E::InvalidToken(_) | E::TaskDoesNotExist(_))
            );
            let text = aws_sdk_sfn::error::DisplayErrorContext(error).to_string();
            if not_current { TokenError::NotCurrent(text) } else { TokenError::Failed(text) }
        })
    }

    /// Wakes the run whose poll step waits on `token`, so that it polls now instead of at the
    /// end of its interval.
    pub async fn wake(&self, token: &str) -> Result<(), TokenError> {
        self.answer(token, WAKE_UP).await
    }

    /// Fails the poll step waiting on `token` with the error `error` (the name the state
    /// machine's Retry and Catch match).
    pub async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), TokenError> {
        let result = self
            .client
            .send_task_failure()
            .task_token(token)
            .error(error)
            .cause(cause)
            .send()
            .await;
        result.map(|_| ()).map_err(|error| {
            TokenError::Failed(aws_sdk_sfn::error::DisplayErrorContext(error).to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_timeout_in_the_definition_is_the_run_timeout() {
        let definition: serde_json::Value =
            serde_json::from_str(include_str!("../../infra/workflow/turn.asl.json")).unwrap();
        assert_eq!(definition["TimeoutSeconds"], TURN_TIMEOUT.as_secs());
    }

    #[test]
    fn the_wake_up_is_an_answer_the_choice_state_loops_on() {
        let wake: serde_json::Value = serde_json::from_str(WAKE_UP).unwrap();
        assert_eq!(wake["next"], "continue");
        let definition: serde_json::Value =
            serde_json::from_str(include_str!("../../infra/workflow/turn.asl.json")).unwrap();
        let choices = definition["States"]["TurnGoesOn"]["Choices"].as_array().unwrap();
        assert!(choices.iter().any(|c| c["StringEquals"] == "continue" && c["Next"] == "Poll"));
    }

    #[test]
    fn run_input_is_camel_case() {
        let input = RunInput { session_id: "s".into(), run_id: "r".into(), poll_seconds: 1 };
        assert_eq!(
            serde_json::to_value(&input).unwrap(),
            serde_json::json!({ "sessionId": "s", "runId": "r", "pollSeconds": 1 })
        );
    }
}

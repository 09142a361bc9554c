//! Starting runs of the turn workflow: the Step Functions state machine in
//! `infra/workflow/turn.asl.json`, which waits one poll interval, invokes the checker
//! (`crate::turn`), and loops on its answer until the turn ends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::WorkflowConfig;
use crate::domain::{RunId, SessionId};

/// The longest a run may last: the state machine's `TimeoutSeconds`. A run whose session
/// still names it past this is dead (its execution timed out without recording its end).
pub const TURN_TIMEOUT: Duration = Duration::from_secs(900);

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

/// Starts runs of the turn state machine.
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
    fn run_input_is_camel_case() {
        let input = RunInput { session_id: "s".into(), run_id: "r".into(), poll_seconds: 1 };
        assert_eq!(
            serde_json::to_value(&input).unwrap(),
            serde_json::json!({ "sessionId": "s", "runId": "r", "pollSeconds": 1 })
        );
    }
}

//! The turn workflow's executions in the emulator's Step Functions, and invoking functions.

use super::*;

/// The status of the turn workflow's execution for `run_id` (`RUNNING`, `SUCCEEDED`,
/// `FAILED`, ...), read from the emulator's Step Functions.
pub async fn execution_status(run_id: &str) -> String {
    let machine = config().workflow.state_machine_arn.expect("TURN_STATE_MACHINE_ARN is set");
    let execution = format!("{}:{run_id}", machine.replacen(":stateMachine:", ":execution:", 1));
    let sfn = aws_sdk_sfn::Client::new(&knoq_shared::app::load_sdk_config().await);
    let output = sfn.describe_execution().execution_arn(execution).send().await.expect("describe");
    output.status().as_str().to_string()
}

/// Stops the turn workflow's execution for `run_id` from outside (`StopExecution`), as an
/// operator or a failed deployment would: it ends `ABORTED`, without its own last step.
pub async fn stop_execution(run_id: &str) {
    let machine = config().workflow.state_machine_arn.expect("TURN_STATE_MACHINE_ARN is set");
    let execution = format!("{}:{run_id}", machine.replacen(":stateMachine:", ":execution:", 1));
    let sfn = aws_sdk_sfn::Client::new(&knoq_shared::app::load_sdk_config().await);
    sfn.stop_execution().execution_arn(execution).send().await.expect("stop the execution");
}

/// How many times the execution for `run_id` entered its `Poll` state at or after `since`,
/// read from its Step Functions history. "Within one poll interval" of a cancel means the
/// first poll cycle after it ends the run: at most one `Poll` entered after the cancel,
/// however slow a loaded machine makes that cycle.
pub async fn poll_steps_entered_since(run_id: &str, since: std::time::SystemTime) -> usize {
    let machine = config().workflow.state_machine_arn.expect("TURN_STATE_MACHINE_ARN is set");
    let execution = format!("{}:{run_id}", machine.replacen(":stateMachine:", ":execution:", 1));
    let sfn = aws_sdk_sfn::Client::new(&knoq_shared::app::load_sdk_config().await);
    let since = aws_sdk_sfn::primitives::DateTime::from(since);
    let pages = sfn.get_execution_history().execution_arn(execution).into_paginator().items();
    let events: Vec<_> = pages.send().collect::<Result<_, _>>().await.expect("execution history");
    let entered_poll = |event: &&aws_sdk_sfn::types::HistoryEvent| {
        let details = event.state_entered_event_details();
        details.is_some_and(|d| d.name() == "Poll") && event.timestamp() >= &since
    };
    events.iter().filter(entered_poll).count()
}

/// Waits until the execution for `run_id` has ended; its final status.
pub async fn execution_end(run_id: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = execution_status(run_id).await;
        if status != "RUNNING" || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Invokes the worker directly (the Lambda Invoke API of `cargo lambda watch`), as a second
/// delivery of the state machine's start would: its answer.
pub async fn invoke_worker(session_id: &str, run_id: &str) -> Value {
    invoke("worker", serde_json::json!({ "sessionId": session_id, "runId": run_id })).await
}

/// Invokes the function `name` directly with `payload` (the Lambda Invoke API of
/// `cargo lambda watch`, as the state machine or a schedule would): its answer.
pub async fn invoke(name: &str, payload: Value) -> Value {
    let base = std::env::var("KNOQ_API_URL").expect("KNOQ_API_URL: run through `make test`");
    let url = format!("{base}/2015-03-31/functions/{name}/invocations");
    let response = reqwest::Client::new().post(url).json(&payload).send().await.unwrap();
    assert!(response.status().is_success(), "{response:?}");
    response.json().await.unwrap()
}

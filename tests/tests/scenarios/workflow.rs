//! The turn workflow end to end: HTTP through `cargo lambda watch`, the real state machine
//! (infra/workflow/turn.asl.json, the file template.yaml deploys) executing in the
//! emulator, the worker it starts playing the turn against the bundled provider emulator, and
//! the checker Lambda it invokes every poll interval. A `[[emu delay_ms=N]]` in a test's text
//! slows the model's answer (N ms a word, 40 words) where the test needs a turn in flight.
//!
//! Timing bound: a cancel's `status_terminated` must be visible within one poll interval
//! plus [`MARGIN`]. The margin covers the checker call (the emulator invoking `cargo lambda
//! watch` over HTTP, one GetItem, one transaction), the test's own 25 ms polling of the
//! transcript, and a shared two-core machine running other tests at the same time.

use std::time::{Duration, Instant};

use futures::future::join_all;
use knoq_shared::clock::Timestamp;
use knoq_shared::domain::{MessageText, RunId, SessionId};
use knoq_shared::store::sessions::{CancelOutcome, Termination};
use knoq_shared::workflow::TURN_TIMEOUT;
use knoq_tests::*;
use serde_json::{Value, json};

/// What a cancel may take beyond one poll interval to show its `status_terminated`.
const MARGIN: Duration = Duration::from_millis(1500);

fn poll_interval() -> Duration {
    Duration::from_secs(config().workflow.poll_interval_secs)
}

fn ids(transcript: &Value) -> Vec<String> {
    transcript["events"].as_array().unwrap().iter().map(|e| e["id"].to_string()).collect()
}

/// Asserts the transcript ends with exactly one `status_terminated` (reason cancelled),
/// with nothing after it.
fn assert_ends_terminated_once(transcript: &Value) {
    let types = event_types(transcript);
    assert_eq!(count_of(transcript, "status_terminated"), 1, "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("status_terminated"), "{types:?}");
    let last = transcript["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["payload"]["reason"], "cancelled");
    for field in ["cancelledBy", "cancelRequestId"] {
        let named = last["payload"][field].as_str().is_some_and(|v| !v.is_empty());
        assert!(named, "status_terminated names who cancelled and the request: {last}");
    }
}

const FAST: Duration = Duration::from_millis(25);
const PATIENT: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_cancel_mid_turn_ends_the_run_within_one_poll_interval_keeping_the_transcript() {
    let client = ApiClient::for_new_caller().await;
    let text = "Summarise the quarterly report [[emu delay_ms=300]]";
    let (id, run_id) = client.create(text).await;
    let before = client
        .transcript_until(&id, PATIENT, Duration::from_secs(20), |t| {
            count_of(t, "tool_result") == 1
        })
        .await;
    assert_eq!(before["workflowRunId"], run_id.as_str(), "a run is active mid-turn");

    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    let answered = Instant::now();
    let after = client
        .transcript_until(&id, FAST, poll_interval() + Duration::from_secs(10), |t| {
            count_of(t, "status_terminated") > 0
        })
        .await;
    let waited = answered.elapsed();
    assert!(
        waited <= poll_interval() + MARGIN,
        "status_terminated took {waited:?}; the bound is {:?}",
        poll_interval() + MARGIN
    );

    let (before_ids, after_ids) = (ids(&before), ids(&after));
    assert_eq!(
        after_ids[..before_ids.len()],
        before_ids[..],
        "every earlier event stays, in order"
    );
    assert_ends_terminated_once(&after);
    assert_eq!(after["workflowRunId"], Value::Null);
    assert_eq!(after["title"], text);

    // Nothing follows, even after more poll intervals.
    tokio::time::sleep(poll_interval() * 2 + Duration::from_millis(500)).await;
    assert_eq!(ids(&client.transcript(&id).await), after_ids);
    assert_eq!(client.cancel(&id).await, json!({ "ok": true, "alreadyCancelled": true }));
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
    let session = session_item(&id).await.unwrap();
    assert_eq!(attr(&session, "status"), Some("terminated"));
    assert!(attr(&session, "active_run").is_none());
}

/// The wake-up is a shortcut, not the guarantee: with the cancel's `SendTaskSuccess` never
/// made, or refused, the run's poll step times out at the end of its interval, polls, and
/// ends the run all the same, at that first poll.
#[tokio::test]
async fn a_cancel_whose_wake_up_fails_still_ends_the_run_at_the_next_poll() {
    let client = ApiClient::for_new_caller().await;
    for fault in ["skip", "refuse"] {
        let (id, run_id) = client.create("Keep going [[emu delay_ms=300]]").await;
        client
            .transcript_until(&id, PATIENT, Duration::from_secs(20), |t| {
                count_of(t, "tool_result") == 1
            })
            .await;
        let body = json!({ "sessionId": id }).to_string();
        let header = knoq_shared::test_hooks::WAKE_UP_FAULT_HEADER;
        let (status, _, answer) = client.post_with("cancel", body, &[(header, fault)]).await;
        assert_eq!((status.as_u16(), answer), (200, json!({ "ok": true })), "{fault}");
        let answered = std::time::SystemTime::now();
        let ended = client
            .transcript_until(&id, FAST, poll_interval() * 2 + Duration::from_secs(10), |t| {
                count_of(t, "status_terminated") > 0
            })
            .await;
        assert_ends_terminated_once(&ended);
        assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
        // Without the wake-up, the poll step waiting at the cancel times out at the end of its
        // interval, and the one poll after it ends the run: no second cycle. Counted in the
        // execution's history rather than timed, so a loaded machine cannot fail it (CI of
        // 2c6e658: 3.0 s against a 2.5 s bound, with the run ending at its first poll).
        let polls = poll_steps_entered_since(&run_id, answered).await;
        assert!(polls <= 1, "{fault}: Poll entered {polls} times after the cancel's answer");
    }
}

#[tokio::test]
async fn a_turn_left_alone_ends_idle_and_a_cancel_then_ends_it_once() {
    let client = ApiClient::for_new_caller().await;
    // 200 ms a word is the provider emulator's default under `make dev`.
    let (id, run_id) = client.create("Plan a three-day trip to Lisbon [[emu delay_ms=200]]").await;
    let done = client
        .transcript_until(&id, PATIENT, Duration::from_secs(30), |t| count_of(t, "status_idle") > 0)
        .await;
    let types = event_types(&done);
    // Text is written in pieces every flush (0.5 s by default), so the words before the tool
    // call may be one agent_message or several: the test compares the shape with runs of
    // agent_message folded into one.
    let mut shape = types.clone();
    shape.dedup_by(|next, previous| next == "agent_message" && previous == "agent_message");
    assert_eq!(
        shape[..4],
        ["user_message", "agent_message", "tool_use", "tool_result"],
        "{types:?}"
    );
    assert_eq!(types.last().map(String::as_str), Some("status_idle"));
    assert_eq!(count_of(&done, "status_idle"), 1);
    let events = done["events"].as_array().unwrap();
    let tool_use = types.iter().position(|t| t == "tool_use").unwrap();
    assert_eq!(events[tool_use + 1]["type"], "tool_result", "{types:?}");
    assert_eq!(
        events[tool_use]["payload"]["toolUseId"],
        events[tool_use + 1]["payload"]["toolUseId"]
    );
    let at = |event: &Value| {
        chrono::DateTime::parse_from_rfc3339(event["occurredAt"].as_str().unwrap()).unwrap()
    };
    let lasted = at(events.last().unwrap()) - at(&events[0]);
    assert!(lasted >= chrono::Duration::seconds(8), "a local turn lasts at least 8 s: {lasted}");
    assert_eq!(done["workflowRunId"], Value::Null);
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
    assert_eq!(attr(&session_item(&id).await.unwrap(), "status"), Some("idle"));

    // No run is active, so the cancel itself writes the termination, before it answers.
    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    let ended = client.transcript(&id).await;
    assert_eq!(ids(&ended)[..events.len()], ids(&done)[..]);
    assert_ends_terminated_once(&ended);
    assert_eq!(client.cancel(&id).await, json!({ "ok": true, "alreadyCancelled": true }));
    assert_eq!(count_of(&client.transcript(&id).await, "status_terminated"), 1);
}

#[tokio::test]
async fn a_session_cancelled_before_its_first_cycle_ends_at_that_cycle() {
    let client = ApiClient::for_new_caller().await;
    let (id, run_id) = client.create("Never mind [[emu silent_ms=5000]]").await;
    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    let ended = client
        .transcript_until(&id, FAST, poll_interval() + Duration::from_secs(10), |t| {
            count_of(t, "status_terminated") > 0
        })
        .await;
    assert_eq!(event_types(&ended), ["user_message", "status_terminated"]);
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_cancels_of_a_running_turn_end_it_exactly_once() {
    let client = ApiClient::for_new_caller().await;
    let (id, run_id) = client.create("Race me [[emu delay_ms=300]]").await;
    client
        .transcript_until(&id, PATIENT, Duration::from_secs(20), |t| count_of(t, "tool_use") == 1)
        .await;
    let answers = join_all((0..25).map(|_| client.cancel(&id))).await;
    let firsts = answers.iter().filter(|a| **a == json!({ "ok": true })).count();
    assert_eq!(firsts, 1, "{answers:?}");
    client
        .transcript_until(&id, FAST, poll_interval() + Duration::from_secs(10), |t| {
            count_of(t, "status_terminated") > 0
        })
        .await;
    tokio::time::sleep(poll_interval() * 2).await;
    assert_ends_terminated_once(&client.transcript(&id).await);
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
}

/// Cancels aimed around the moment a turn finishes: the worker has reported the turn done
/// and the checker writes `status_idle` at its next poll. Some cancels land before that write
/// (the run writes the termination), some after it (the cancel does). Either way, exactly one
/// `status_terminated`, and it is last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_timed_to_land_as_the_turn_finishes_still_end_it_exactly_once() {
    let client = ApiClient::for_new_caller().await;
    let offsets_ms = [0u64, 150, 300, 450, 600, 750, 900, 2500];
    let text = "Finish line [[emu notool=1 words=10 delay_ms=100]]";
    let sessions = join_all(offsets_ms.iter().map(|_| client.create(text))).await;
    let outcomes = join_all(sessions.iter().zip(offsets_ms).map(|((id, _), offset)| {
        let client = &client;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !session_item(id).await.unwrap().contains_key("turn_result") {
                assert!(Instant::now() < deadline, "the worker did not finish");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(offset)).await;
            client.cancel(id).await;
            let ended = client
                .transcript_until(id, PATIENT, poll_interval() + Duration::from_secs(10), |t| {
                    count_of(t, "status_terminated") > 0
                })
                .await;
            tokio::time::sleep(poll_interval() * 2).await;
            let last = client.transcript(id).await;
            assert_eq!(ids(&last), ids(&ended), "nothing was written after the termination");
            assert_ends_terminated_once(&last);
            count_of(&last, "status_idle") == 1
        }
    }))
    .await;
    assert!(outcomes[offsets_ms.len() - 1], "2.5 s after the worker finished, the turn had");
    for (_, run_id) in &sessions {
        assert_eq!(execution_end(run_id, Duration::from_secs(10)).await, "SUCCEEDED");
    }
}

/// A run holds its session on a lease that every poll renews (`RUN_LEASE`), not for the
/// whole execution timeout: a run whose execution never started (the function died between
/// its write and `StartExecution`, or Step Functions refused it after a cancel) stops holding
/// the session once its lease runs out, and the next message starts a new run.
#[tokio::test]
async fn a_run_that_never_polls_frees_its_session_when_its_lease_runs_out() {
    let app = app().await;
    let caller = new_caller().await;
    let scope = scope_of(&app, &caller).await;
    let id = SessionId::new();
    let text = MessageText::parse("no execution behind this run".into()).unwrap();
    let lease = Duration::from_millis(1500);
    app.sessions.create(&scope, &id, &text, &RunId::new(), lease, Timestamp::now()).await.unwrap();
    let client = ApiClient::new(Some(&caller.token));
    let listed = client.sessions().await;
    assert_eq!(listed[0]["status"], "running", "the lease holds at first");
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(client.sessions().await[0]["status"], "idle", "a run past its lease is dead");
    let (status, _, body) =
        client.message(&id.as_string(), "Anyone there? [[emu notool=1 words=3]]").await;
    assert_eq!(status.as_u16(), 200, "{body}");
    let session = session_item(&id.as_string()).await.unwrap();
    assert_eq!(number(&session, "runs_started"), Some(2), "the message started a new run");
    client
        .transcript_until(&id.as_string(), PATIENT, Duration::from_secs(30), |t| {
            count_of(t, "status_idle") == 1
        })
        .await;
}

#[tokio::test]
async fn every_poll_renews_the_runs_lease() {
    let client = ApiClient::for_new_caller().await;
    let (id, _) = client.create("Take your time [[emu notool=1 silent_ms=6000]]").await;
    let expiry = |item: &Item| number(item, "run_expires_at").unwrap();
    let first = expiry(&session_item(&id).await.unwrap());
    tokio::time::sleep(poll_interval() * 3).await;
    let later = expiry(&session_item(&id).await.unwrap());
    assert!(later >= first + 2 * poll_interval().as_millis() as i64, "{first} -> {later}");
    let lease = knoq_shared::workflow::RUN_LEASE.as_millis() as i64;
    assert!(later <= Timestamp::now().epoch_millis() + lease, "a lease, not the execution timeout");
    client.cancel(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_terminations_of_one_cancelled_session_write_one_event() {
    let app = app().await;
    let caller = new_caller().await;
    let scope = scope_of(&app, &caller).await;
    let id = SessionId::new();
    let text = MessageText::parse("no execution behind this run".into()).unwrap();
    let run = RunId::new();
    app.sessions.create(&scope, &id, &text, &run, TURN_TIMEOUT, Timestamp::now()).await.unwrap();
    let outcome = app.sessions.cancel(&scope, &id, "request-1", Timestamp::now()).await.unwrap();
    assert_eq!(outcome, CancelOutcome::Cancelled { run_is_live: true, poll_token: None });
    let session = app.sessions.get(&id.as_string()).await.unwrap().unwrap();
    let results =
        join_all((0..20).map(|_| app.sessions.terminate(&session, "cancelled", Timestamp::now())))
            .await;
    let written = results.iter().filter(|r| matches!(r, Ok(Termination::Written))).count();
    assert_eq!(written, 1, "{results:?}");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let events = event_items(&id.as_string()).await;
    let types: Vec<_> = events.iter().map(|e| attr(e, "type").unwrap().to_owned()).collect();
    assert_eq!(types, ["user_message", "status_terminated"]);
    let payload: Value = serde_json::from_str(attr(&events[1], "payload").unwrap()).unwrap();
    let who = json!({
        "reason": "cancelled", "cancelledBy": scope.user_id(), "cancelRequestId": "request-1"
    });
    assert_eq!(payload, who, "status_terminated names who cancelled, with which request");
}

#[tokio::test]
async fn a_checker_that_keeps_failing_ends_the_turn_with_an_error_event_and_frees_the_session() {
    let client = ApiClient::for_new_caller().await;
    let (id, run_id) = client.create("This turn will fail [[emu delay_ms=300]]").await;
    dynamodb()
        .await
        .update_item()
        .table_name(config().tables.sessions)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.clone()))
        .update_expression("SET inject_fault = :fault")
        .expression_attribute_values(
            ":fault",
            aws_sdk_dynamodb::types::AttributeValue::S(
                knoq_shared::test_hooks::CHECKER_FAULT.into(),
            ),
        )
        .send()
        .await
        .unwrap();
    let failed = client
        .transcript_until(&id, PATIENT, Duration::from_secs(40), |t| count_of(t, "error") > 0)
        .await;
    let types = event_types(&failed);
    assert_eq!(types.last().map(String::as_str), Some("error"), "{types:?}");
    let error = failed["events"].as_array().unwrap().last().unwrap();
    assert_eq!(error["payload"]["errorType"], "Knoq.InjectedFault");
    assert_eq!(failed["workflowRunId"], Value::Null, "the session is not left running");
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "FAILED");
    let session = session_item(&id).await.unwrap();
    assert_eq!(attr(&session, "status"), Some("idle"));
    assert!(attr(&session, "active_run").is_none());

    // With no run holding it, a cancel ends the session at once.
    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    assert_ends_terminated_once(&client.transcript(&id).await);
}

/// Issue 15, defect 4: a run that ends through the failure path (`RecordFailure`) with a
/// message queued for its next turn says that message was not answered.
#[tokio::test]
async fn a_run_ended_by_its_failure_path_names_the_queued_message_it_leaves_unanswered() {
    let client = ApiClient::for_new_caller().await;
    let (id, run_id) = client.create("This turn will fail too [[emu delay_ms=300]]").await;
    let (status, _, body) = client.message(&id, "And one more thing").await;
    assert_eq!((status.as_u16(), &body), (200, &json!({ "ok": true })));
    // The turn has written its first events: only the queued message is left unanswered.
    client
        .transcript_until(&id, PATIENT, Duration::from_secs(20), |t| count_of(t, "tool_result") > 0)
        .await;
    dynamodb()
        .await
        .update_item()
        .table_name(config().tables.sessions)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.clone()))
        .update_expression("SET inject_fault = :fault")
        .expression_attribute_values(
            ":fault",
            aws_sdk_dynamodb::types::AttributeValue::S(
                knoq_shared::test_hooks::CHECKER_FAULT.into(),
            ),
        )
        .send()
        .await
        .unwrap();
    let failed = client
        .transcript_until(&id, PATIENT, Duration::from_secs(40), |t| count_of(t, "error") > 0)
        .await;
    let error = failed["events"].as_array().unwrap().last().unwrap();
    assert_eq!(error["type"], "error", "{:?}", event_types(&failed));
    assert_eq!(error["payload"]["errorType"], "Knoq.InjectedFault");
    assert_eq!(error["payload"]["unansweredMessages"], 1, "{error}");
    assert!(error["payload"]["message"].as_str().unwrap().contains("was not answered"));
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "FAILED");
}

/// An execution that ends without its own last step (stopped from outside, timed out, or its
/// `RecordFailure` failed too) is reported by Step Functions to EventBridge; the rule in
/// template.yaml has the checker take that run's failure path: the session is freed at once
/// and the message queued behind the turn is named unanswered (before, it waited for the
/// lease to run out and was never named).
#[tokio::test]
async fn a_run_whose_execution_is_stopped_from_outside_ends_with_an_error_naming_its_queued_message()
 {
    let client = ApiClient::for_new_caller().await;
    let (id, run_id) = client.create("A long answer [[emu delay_ms=500]]").await;
    let (status, _, body) = client.message(&id, "And one more thing").await;
    assert_eq!((status.as_u16(), &body), (200, &json!({ "ok": true })));
    client
        .transcript_until(&id, PATIENT, Duration::from_secs(20), |t| count_of(t, "tool_result") > 0)
        .await;
    stop_execution(&run_id).await;
    // AWS reports a stopped execution ABORTED; moto's interpreter (seen with 5.2) reports FAILED
    // when the stop meets a waiting task. Either way the rule sends it to the checker.
    let ended_as = execution_end(&run_id, Duration::from_secs(10)).await;
    let error_type = match ended_as.as_str() {
        "ABORTED" => "Knoq.RunAborted",
        "FAILED" => "Knoq.RunFailed",
        other => panic!("the stopped execution ended {other}"),
    };
    let ended = client
        .transcript_until(&id, PATIENT, Duration::from_secs(15), |t| count_of(t, "error") > 0)
        .await;
    let error = ended["events"].as_array().unwrap().last().unwrap();
    assert_eq!(error["type"], "error", "{:?}", event_types(&ended));
    assert_eq!(error["payload"]["errorType"], error_type, "{error}");
    assert_eq!(error["payload"]["unansweredMessages"], 1, "{error}");
    assert_eq!(ended["workflowRunId"], Value::Null, "the session is free at once");
}

/// Sets attributes of session `id` directly, as a run or a worker that is gone left them.
async fn set_on_session(id: &str, values: &[(&str, aws_sdk_dynamodb::types::AttributeValue)]) {
    let mut update = dynamodb()
        .await
        .update_item()
        .table_name(config().tables.sessions)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.to_owned()));
    let mut clauses = Vec::new();
    for (index, (name, value)) in values.iter().enumerate() {
        clauses.push(format!("#n{index} = :v{index}"));
        update = update
            .expression_attribute_names(format!("#n{index}"), *name)
            .expression_attribute_values(format!(":v{index}"), value.clone());
    }
    update.update_expression(format!("SET {}", clauses.join(", "))).send().await.unwrap();
}

fn s_value(text: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(text.to_owned())
}

fn n_value(number: i64) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::N(number.to_string())
}

fn rfc3339_ago(ago: Duration) -> String {
    Timestamp::from_epoch_millis(epoch_ms() - ago.as_millis() as i64).rfc3339()
}

/// Issue 15, defect 3: a turn whose worker start was lost (the asynchronous invoke, or the
/// answer of the token that asked for it) gets its worker started again, at most once every
/// few seconds, instead of ending `worker_lost` a minute later.
#[tokio::test]
async fn an_unclaimed_turn_gets_its_worker_started_again() {
    use knoq_shared::checker::WORKER_RESTART_EVERY;
    let app = app().await;
    let caller = new_caller().await;
    let id = quiet_session(&app, &caller, "Nobody started my worker").await;
    let run = attr(&session_item(&id).await.unwrap(), "active_run").unwrap().to_owned();
    let poll = json!({ "action": "poll", "sessionId": id, "runId": run });
    assert_eq!(invoke("checker", poll.clone()).await["next"], "continue", "still in time");
    let started = epoch_ms() - WORKER_RESTART_EVERY.as_millis() as i64 - 1_000;
    set_on_session(&id, &[("run_started_at", n_value(started))]).await;
    let answer = invoke("checker", poll.clone()).await;
    assert_eq!(answer, json!({ "next": "startWorker", "outcome": "running" }));
    let again = invoke("checker", poll).await;
    assert_eq!(again["next"], "continue", "one restart per {WORKER_RESTART_EVERY:?}");
    assert!(number(&session_item(&id).await.unwrap(), "worker_restarted_at").is_some());
}

/// Issue 15, defect 3: a checker invocation that arrives late (its poll step already timed
/// out and the next one stored its token) never stores its expired token over the live one,
/// which a cancel's wake-up answers.
#[tokio::test]
async fn a_late_poll_never_stores_its_expired_token_over_a_later_one() {
    let app = app().await;
    let caller = new_caller().await;
    let id = quiet_session(&app, &caller, "Poll me twice").await;
    let run = attr(&session_item(&id).await.unwrap(), "active_run").unwrap().to_owned();
    let poll = |token: &str, entered: String| {
        json!({ "action": "poll", "sessionId": id, "runId": run, "taskToken": token,
                "pollEnteredAt": entered })
    };
    let fresh = invoke("checker", poll("token-of-the-later-step", rfc3339_ago(Duration::ZERO)));
    assert_eq!(fresh.await["next"], "continue");
    let late =
        invoke("checker", poll("token-of-the-earlier-step", rfc3339_ago(Duration::from_secs(3))));
    assert_eq!(late.await["next"], "continue");
    let session = session_item(&id).await.unwrap();
    assert_eq!(attr(&session, "poll_token"), Some("token-of-the-later-step"));
}

/// Issue 15, defect 5: a message queued while a long execution's turn ran is handed to a new
/// run (a new execution), instead of starting inside an execution with too little time left
/// (which would cut its answer with `run_timeout`).
#[tokio::test]
async fn a_queued_turn_late_in_its_execution_is_handed_to_a_new_run() {
    use knoq_shared::checker::HAND_OVER_AFTER;
    let app = app().await;
    let caller = new_caller().await;
    let later = unique("handed");
    let id = quiet_session(&app, &caller, "A long conversation").await;
    let client = ApiClient::new(Some(&caller.token));
    let follow_up = format!("And now this [[emu tag={later} notool=1 words=3 delay_ms=1]]");
    let (status, _, body) = client.message(&id, &follow_up).await;
    assert_eq!((status.as_u16(), &body), (200, &json!({ "ok": true })), "queued");
    let old_run = attr(&session_item(&id).await.unwrap(), "active_run").unwrap().to_owned();
    // The turn's worker finished (as its record says); the execution has run a long time.
    set_on_session(&id, &[("worker_id", s_value("gone")), ("turn_result", s_value("end_turn"))])
        .await;
    let arn = config().workflow.state_machine_arn.expect("the state machine's ARN");
    let poll = json!({ "action": "poll", "sessionId": id, "runId": old_run,
        "runStartedAt": rfc3339_ago(HAND_OVER_AFTER + Duration::from_secs(10)),
        "stateMachineArn": arn });
    let answer = invoke("checker", poll).await;
    assert_eq!(answer, json!({ "next": "stop", "outcome": "handedOver" }));
    let session = session_item(&id).await.unwrap();
    let new_run = attr(&session, "active_run").expect("a new run holds the session").to_owned();
    assert_ne!(new_run, old_run);
    assert_eq!(number(&session, "queued_messages"), Some(0));
    let done = client.until_turn_ends(&id, Duration::from_secs(30)).await;
    assert_eq!(event_types(&done).last().map(String::as_str), Some("status_idle"), "{done}");
    assert_eq!(provider_calls(&later).await.len(), 1, "the new run answered the message once");
    assert_eq!(execution_end(&new_run, Duration::from_secs(10)).await, "SUCCEEDED");
}

/// Issue 15, also: a new run on a session whose previous run died (its lease ran out) does
/// not inherit the dead worker's claim and result: its worker plays the new turn.
#[tokio::test]
async fn a_new_run_after_a_dead_one_plays_its_own_turn() {
    let app = app().await;
    let caller = new_caller().await;
    let tag = unique("afresh");
    let id = quiet_session(&app, &caller, "An old turn whose run died").await;
    let dead = epoch_ms() - 1_000;
    set_on_session(
        &id,
        &[
            ("run_expires_at", n_value(dead)),
            ("worker_id", s_value("dead-worker")),
            ("turn_result", s_value("max_tokens")),
        ],
    )
    .await;
    let client = ApiClient::new(Some(&caller.token));
    let text = format!("A new question [[emu tag={tag} notool=1 words=3 delay_ms=1]]");
    let (status, _, body) = client.message(&id, &text).await;
    assert_eq!((status.as_u16(), &body), (200, &json!({ "ok": true })));
    let done = client.until_turn_ends(&id, Duration::from_secs(30)).await;
    let last = done["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "status_idle", "{done}");
    assert_eq!(last["payload"]["stopReason"], "end_turn", "not the dead turn's result");
    assert_eq!(provider_calls(&tag).await.len(), 1, "the new turn called the model");
    assert_eq!(count_of(&done, "agent_message"), 1, "{:?}", event_types(&done));
}

/// Issue 15, also: a cancel of a run that died while its lease on the session was still on
/// (no poll step waits on its stored token) writes `status_terminated` itself, at once,
/// instead of leaving the session unterminated until the lease runs out.
#[tokio::test]
async fn a_cancel_of_a_run_that_died_with_its_lease_on_ends_the_session_at_once() {
    let app = app().await;
    let caller = new_caller().await;
    let id = quiet_session(&app, &caller, "My run died").await;
    set_on_session(&id, &[("poll_token", s_value("a-token-no-step-waits-on"))]).await;
    let client = ApiClient::new(Some(&caller.token));
    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    // No waiting: the termination was written before the answer.
    assert_ends_terminated_once(&client.transcript(&id).await);
    assert_eq!(attr(&session_item(&id).await.unwrap(), "status"), Some("terminated"));
}

/// A run that fails before its turn wrote anything names the turn's own message as
/// unanswered too, not only the queued ones (found by the chaos test, seed 7).
#[tokio::test]
async fn a_run_that_fails_before_its_turn_wrote_anything_names_its_message_unanswered() {
    let app = app().await;
    let caller = new_caller().await;
    let id = quiet_session(&app, &caller, "Never answered").await;
    let run = attr(&session_item(&id).await.unwrap(), "active_run").unwrap().to_owned();
    let fail = json!({ "action": "fail", "sessionId": id, "runId": run,
                       "error": "Lambda.ServiceException" });
    assert_eq!(invoke("checker", fail).await["outcome"], "failed");
    let transcript = ApiClient::new(Some(&caller.token)).transcript(&id).await;
    let error = transcript["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(error["type"], "error", "{transcript}");
    assert_eq!(error["payload"]["unansweredMessages"], 1, "{error}");
    assert!(
        error["payload"]["message"]
            .as_str()
            .unwrap()
            .ends_with("Your last message was not answered.")
    );
}

//! The agent runtime end to end: HTTP through `cargo lambda watch`, the real state machine in
//! the emulator starting the worker beside its poll loop, the worker streaming from the
//! bundled provider emulator (infra/local/provider_emulator.py) with the real adapter, and
//! the checker deciding when each run is over.
//!
//! Each test steers the provider emulator with a `[[emu ...]]` directive in its text (answer
//! length, word delay, failures, silence) and a unique `tag`, under which the emulator records
//! every model call: when it started, when the connection closed and who closed it.

use std::collections::HashSet;
use std::time::Duration;

use knoq_tests::*;
use serde_json::{Value, json};

const PATIENT: Duration = Duration::from_millis(100);
const FAST: Duration = Duration::from_millis(25);

fn poll_interval() -> Duration {
    Duration::from_secs(config().workflow.poll_interval_secs)
}

fn millis(at: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap()).unwrap().timestamp_millis()
}

fn events(transcript: &Value) -> &Vec<Value> {
    transcript["events"].as_array().unwrap()
}

fn last_event(transcript: &Value) -> &Value {
    events(transcript).last().unwrap()
}

async fn idle(client: &ApiClient, id: &str, within: Duration) -> Value {
    client.transcript_until(id, PATIENT, within, |t| count_of(t, "status_idle") > 0).await
}

async fn terminated(client: &ApiClient, id: &str) -> Value {
    client
        .transcript_until(id, FAST, poll_interval() + Duration::from_secs(10), |t| {
            count_of(t, "status_terminated") > 0
        })
        .await
}

/// The stored `cancelled_at` of a session, in epoch milliseconds.
async fn cancelled_at_ms(id: &str) -> i64 {
    let session = session_item(id).await.unwrap();
    millis(&json!(attr(&session, "cancelled_at").unwrap()))
}

#[tokio::test]
async fn a_turn_calls_a_tool_then_streams_its_answer_into_the_transcript_in_order() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("turn");
    let text = format!("Lisbon itinerary notes [[emu tag={tag} words=60 delay_ms=60]]");
    let (id, run_id) = client.create(&text).await;
    let done = idle(&client, &id, Duration::from_secs(30)).await;

    let types = event_types(&done);
    let first_tool = types.iter().position(|t| t == "tool_use").expect("a tool call");
    assert_eq!(types[first_tool + 1], "tool_result", "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("status_idle"));
    let all = events(&done);
    let (tool_use, tool_result) = (&all[first_tool], &all[first_tool + 1]);
    assert_eq!(tool_use["payload"]["name"], "search_sessions");
    assert_eq!(tool_use["payload"]["input"], json!({ "query": "Lisbon itinerary notes" }));
    assert_eq!(tool_result["payload"]["toolUseId"], tool_use["payload"]["toolUseId"]);
    assert_eq!(tool_result["payload"]["isError"], false);
    let found: Value = serde_json::from_str(tool_result["payload"]["content"].as_str().unwrap())
        .expect("search_sessions answers JSON");
    assert_eq!(found["sessions"][0]["sessionId"], id.as_str(), "it finds this very session");

    // Two model calls; the transcript's agent texts are exactly what the model streamed.
    let calls = provider_calls(&tag).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["authHeader"], "x-api-key");
    assert_eq!(calls[0]["toolNames"], json!(["search_sessions"]));
    assert_eq!(calls[1]["messageCount"], 3, "the tool result went back with the conversation");
    let streamed: String = calls.iter().map(|c| c["textSent"].as_str().unwrap()).collect();
    assert_eq!(agent_texts(&done).concat(), streamed);
    assert!(streamed.split_whitespace().count() > 60, "{streamed}");

    // A 3.6 s answer shows progress at least every 2 s: several pieces, none far apart.
    let answer: Vec<&Value> =
        all[first_tool + 2..].iter().filter(|event| event["type"] == "agent_message").collect();
    assert!(answer.len() >= 2, "{types:?}");
    for pair in answer.windows(2) {
        let gap = millis(&pair[1]["occurredAt"]) - millis(&pair[0]["occurredAt"]);
        assert!(gap <= 2_600, "{gap} ms between two pieces of the answer");
    }
    let usage = &last_event(&done)["payload"]["usage"];
    assert!(usage["inputTokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["outputTokens"].as_u64().unwrap() >= 60, "{usage}");
    assert_eq!(last_event(&done)["payload"]["stopReason"], "end_turn");
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
    let session = session_item(&id).await.unwrap();
    assert!(number(&session, "output_tokens_total").unwrap() >= 60);

    // A follow-up continues the conversation: the model gets the whole of it.
    let follow = unique("follow");
    let (status, _, body) =
        client.message(&id, &format!("And Porto? [[emu tag={follow} notool=1 words=4]]")).await;
    assert_eq!(status, 200, "{body}");
    let again = client
        .transcript_until(&id, PATIENT, Duration::from_secs(30), |t| {
            count_of(t, "status_idle") == 2
        })
        .await;
    let calls = provider_calls(&follow).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["messageCount"], 5, "user, assistant, tool result, answer, follow-up");
    assert!(agent_texts(&again).concat().ends_with(calls[0]["textSent"].as_str().unwrap()));
}

#[tokio::test]
async fn a_cancel_mid_stream_closes_the_provider_connection_within_one_poll_interval() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("cut");
    let (id, run_id) = client
        .create(&format!("Write a long essay [[emu tag={tag} notool=1 words=400 delay_ms=40]]"))
        .await;
    client
        .transcript_until(&id, FAST, Duration::from_secs(20), |t| count_of(t, "agent_message") > 0)
        .await;
    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    let answered = epoch_ms();

    let calls = provider_calls_until(&tag, Duration::from_secs(5), |calls| {
        calls.first().is_some_and(|call| !call["closedAtMs"].is_null())
    })
    .await;
    let call = &calls[0];
    assert_eq!(call["closedBy"], "client", "the worker hung up: {call}");
    let closed_after = call["closedAtMs"].as_i64().unwrap() - answered;
    assert!(
        closed_after <= poll_interval().as_millis() as i64,
        "the provider connection closed {closed_after} ms after the cancel's answer"
    );

    let ended = terminated(&client, &id).await;
    tokio::time::sleep(poll_interval() * 2).await;
    let last = client.transcript(&id).await;
    assert_eq!(events(&last), events(&ended), "nothing is written after the termination");
    assert_eq!(count_of(&last, "status_terminated"), 1);
    assert_eq!(event_types(&last).last().map(String::as_str), Some("status_terminated"));
    let stamp = cancelled_at_ms(&id).await;
    for event in events(&last).iter().filter(|e| e["type"] == "agent_message") {
        assert!(millis(&event["occurredAt"]) <= stamp, "an agent event after the cancel: {event}");
    }
    let written = agent_texts(&last).concat();
    let sent = call["textSent"].as_str().unwrap();
    assert!(sent.starts_with(&written) && written.len() < sent.len(), "{written:?} / {sent:?}");
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
    let session = session_item(&id).await.unwrap();
    assert!(number(&session, "input_tokens_total").unwrap() > 0, "the cut call's spend is kept");
}

#[tokio::test]
async fn a_cancel_while_the_model_is_silent_closes_the_connection_too() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("silent");
    let (id, _) =
        client.create(&format!("Think hard [[emu tag={tag} notool=1 silent_ms=30000]]")).await;
    provider_calls_until(&tag, Duration::from_secs(20), |calls| {
        calls.first().is_some_and(|call| !call["firstByteAtMs"].is_null())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    let answered = epoch_ms();
    let calls = provider_calls_until(&tag, Duration::from_secs(5), |calls| {
        !calls[0]["closedAtMs"].is_null()
    })
    .await;
    assert_eq!(calls[0]["closedBy"], "client");
    let closed_after = calls[0]["closedAtMs"].as_i64().unwrap() - answered;
    assert!(closed_after <= poll_interval().as_millis() as i64, "closed {closed_after} ms after");
    assert_eq!(event_types(&terminated(&client, &id).await), ["user_message", "status_terminated"]);
}

#[tokio::test]
async fn two_overloaded_answers_are_retried_and_the_turn_then_succeeds() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("529");
    let (id, _) = client
        .create(&format!("Hello [[emu tag={tag} notool=1 words=5 fail=529:2 retry_after=0]]"))
        .await;
    let done = idle(&client, &id, Duration::from_secs(30)).await;
    assert_eq!(count_of(&done, "error"), 0, "{done}");
    let calls = provider_calls(&tag).await;
    let statuses: Vec<i64> = calls.iter().map(|c| c["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [529, 529, 200]);
    assert_eq!(agent_texts(&done).concat(), calls[2]["textSent"].as_str().unwrap());
}

#[tokio::test]
async fn a_provider_that_keeps_failing_ends_the_turn_with_an_error_and_the_next_message_works() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("down");
    let (id, run_id) =
        client.create(&format!("Hello [[emu tag={tag} notool=1 fail=500:always]]")).await;
    let failed = client
        .transcript_until(&id, PATIENT, Duration::from_secs(40), |t| count_of(t, "error") > 0)
        .await;
    let error = last_event(&failed);
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"]["errorType"], "api_error");
    assert!(error["payload"]["message"].as_str().unwrap().contains("500"), "{error}");
    assert_eq!(failed["workflowRunId"], Value::Null, "the session is not left running");
    assert_eq!(
        provider_calls(&tag).await.len(),
        4,
        "the provider was tried a bounded number of times"
    );
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
    let key = std::env::var("KNOQ_PROVIDER_API_KEY").expect("run through `make test`");
    assert!(!failed.to_string().contains(&key), "the API key is never in an event");

    let (status, _, _) = client.message(&id, "Try again [[emu notool=1 words=3]]").await;
    assert_eq!(status, 200);
    let done = idle(&client, &id, Duration::from_secs(30)).await;
    assert_eq!(event_types(&done).last().map(String::as_str), Some("status_idle"));
    assert!(!agent_texts(&done).is_empty());
}

#[tokio::test]
async fn a_malformed_stream_ends_the_turn_with_an_error_event() {
    let client = ApiClient::for_new_caller().await;
    let (id, _) = client.create("Hello [[emu notool=1 malformed=1]]").await;
    let failed = client
        .transcript_until(&id, PATIENT, Duration::from_secs(40), |t| count_of(t, "error") > 0)
        .await;
    let error_type = last_event(&failed)["payload"]["errorType"].as_str().unwrap().to_owned();
    assert!(
        ["malformed_stream", "connection_error"].contains(&error_type.as_str()),
        "{error_type}"
    );
    assert_eq!(failed["workflowRunId"], Value::Null);
}

#[tokio::test]
async fn a_worker_that_hangs_mid_turn_is_detected_and_the_session_stays_usable() {
    let client = ApiClient::for_new_caller().await;
    let (id, run_id) = client
        .create(&format!(
            "Start {} [[emu notool=1 words=200 delay_ms=50]]",
            knoq_shared::test_hooks::HANG_FAULT_MARKER
        ))
        .await;
    let failed = client
        .transcript_until(&id, PATIENT, Duration::from_secs(60), |t| count_of(t, "error") > 0)
        .await;
    assert_eq!(last_event(&failed)["payload"]["errorType"], knoq_shared::checker::WORKER_LOST);
    assert_eq!(count_of(&failed, "agent_message"), 1, "the worker wrote one event, then hung");
    assert_eq!(failed["workflowRunId"], Value::Null);
    assert_eq!(execution_end(&run_id, Duration::from_secs(10)).await, "SUCCEEDED");
    let (status, _, _) = client.message(&id, "Are you back? [[emu notool=1 words=3]]").await;
    assert_eq!(status, 200);
    let done = idle(&client, &id, Duration::from_secs(30)).await;
    assert_eq!(event_types(&done).last().map(String::as_str), Some("status_idle"));
}

#[tokio::test]
async fn a_second_delivery_of_the_workers_start_writes_nothing() {
    let client = ApiClient::for_new_caller().await;
    let (id, run_id) = client.create("Duplicates please [[emu words=40 delay_ms=50]]").await;
    client
        .transcript_until(&id, FAST, Duration::from_secs(20), |t| count_of(t, "tool_use") > 0)
        .await;
    let answer = invoke_worker(&id, &run_id).await;
    assert_eq!(answer["outcome"], "notClaimed", "{answer}");
    let done = idle(&client, &id, Duration::from_secs(30)).await;
    assert_eq!(invoke_worker(&id, &run_id).await["outcome"], "notClaimed");
    tokio::time::sleep(poll_interval() * 2).await;
    let last = client.transcript(&id).await;
    assert_eq!(events(&last), events(&done), "nothing more was written");
    assert_eq!((count_of(&last, "tool_use"), count_of(&last, "tool_result")), (1, 1));
    assert_eq!(count_of(&last, "status_idle"), 1);
    let ids: HashSet<&str> = events(&last).iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events(&last).len());
}

#[tokio::test]
async fn the_step_cap_ends_a_model_that_keeps_calling_tools() {
    let client = ApiClient::for_new_caller().await;
    let (id, _) = client.create("Loop forever [[emu tool_rounds=100 words=2]]").await;
    let done = idle(&client, &id, Duration::from_secs(60)).await;
    let cap = knoq_shared::config::DEFAULT_MAX_STEPS as usize;
    assert_eq!(count_of(&done, "tool_use"), cap);
    assert_eq!(count_of(&done, "tool_result"), cap);
    assert_eq!(last_event(&done)["payload"]["stopReason"], "max_steps");
}

#[tokio::test]
async fn an_unknown_tool_is_an_error_result_and_the_turn_goes_on() {
    let client = ApiClient::for_new_caller().await;
    let (id, _) = client.create("Delete it all [[emu tool=delete_everything words=3]]").await;
    let done = idle(&client, &id, Duration::from_secs(30)).await;
    let result = events(&done).iter().find(|e| e["type"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["isError"], true);
    assert!(result["payload"]["content"].as_str().unwrap().contains("delete_everything"));
    assert_eq!(last_event(&done)["payload"]["stopReason"], "end_turn");
}

#[tokio::test]
async fn search_sessions_finds_only_the_callers_own_sessions() {
    let word = unique("zanzibar").replace('-', "");
    let other = ApiClient::for_new_caller().await;
    let (foreign, _) = other.create(&format!("{word} plans [[emu notool=1 words=2]]")).await;
    let client = ApiClient::for_new_caller().await;
    let (id, _) = client.create(&format!("{word} [[emu words=2]]")).await;
    let done = idle(&client, &id, Duration::from_secs(30)).await;
    let result = events(&done).iter().find(|e| e["type"] == "tool_result").unwrap();
    let found: Value =
        serde_json::from_str(result["payload"]["content"].as_str().unwrap()).unwrap();
    let ids: Vec<&str> = found["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "never {foreign}");
}

/// Issue 15, defect 2: a message sent before the turn's worker started (during the claim
/// delay: StartExecution, the asynchronous invoke, a cold start) is queued for the next turn.
/// The first turn's model call does not answer it too: one model call per message.
#[tokio::test]
async fn a_message_sent_before_the_worker_starts_is_left_to_the_next_turn() {
    let app = app().await;
    let caller = new_caller().await;
    let (first, second) = (unique("first"), unique("second"));
    // A run with no execution behind it: the test plays the start itself, late.
    let opening = format!("Plan my week [[emu tag={first} notool=1 words=3 delay_ms=1]]");
    let id = quiet_session(&app, &caller, &opening).await;
    let client = ApiClient::new(Some(&caller.token));
    let follow_up = format!("Also my weekend [[emu tag={second} notool=1 words=3 delay_ms=1]]");
    let (status, _, body) = client.message(&id, &follow_up).await;
    assert_eq!((status.as_u16(), &body), (200, &json!({ "ok": true })), "queued");
    let run = attr(&session_item(&id).await.unwrap(), "active_run").unwrap().to_owned();
    let answer = invoke_worker(&id, &run).await;
    assert_eq!(answer["outcome"], "finished", "{answer}");
    let calls = provider_calls(&first).await;
    assert_eq!(calls.len(), 1, "the opening message's one model call: {calls:?}");
    assert_eq!(calls[0]["messageCount"], 1, "it carries the opening message alone");
    assert!(provider_calls(&second).await.is_empty(), "the follow-up waits for its own turn");
}

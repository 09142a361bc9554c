//! SPEC §8, the robustness promises, over real HTTP against the local stack: transcript
//! paging whatever the event sizes; contention, throttling and a failing DynamoDB, injected
//! by the emulator (`Fault`, infra/local/faults.py) on the session each test owns.

use std::time::Duration;

use knoq_tests::*;
use serde_json::{Value, json};

/// The largest message the API takes, in bytes: 16,000 characters of four UTF-8 bytes each.
fn largest_message(tag: usize) -> String {
    let mut text = format!("{tag:02}");
    text.extend(std::iter::repeat_n('\u{1D11E}', 16_000 - 2));
    text
}

fn ids_of(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the session item has `attribute` (a run or a cancel wrote it).
async fn until_session_has(id: &str, attribute: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while session_item(id).await.and_then(|item| item.get(attribute).cloned()).is_none() {
        assert!(std::time::Instant::now() < deadline, "session {id} has no {attribute}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn has_more_is_true_exactly_while_events_follow_whatever_their_size() {
    let client = ApiClient::for_new_caller().await;
    let (id, _) = client.create("Twenty of the largest messages").await;
    // Queued for the running turn: each is one more 64,000-byte event.
    for tag in 0..20 {
        let (status, _, body) = client.message(&id, &largest_message(tag)).await;
        assert_eq!(status, 200, "{body}");
    }
    // Freeze the transcript: the run writes status_terminated and nothing after it.
    client.cancel(&id).await;
    until_session_has(&id, "terminated_at", Duration::from_secs(20)).await;
    let stored: Vec<String> = event_items(&id)
        .await
        .iter()
        .map(|item| attr(item, "event_id").unwrap().to_owned())
        .collect();
    assert!(
        stored.len() >= 22,
        "opening message, 20 messages, status_terminated: {}",
        stored.len()
    );

    // Page from the start, then from every event: each walk sees every later event once,
    // and each page says whether any follows.
    for from in 0..=stored.len() {
        let mut seen: Vec<String> = Vec::new();
        let mut cursor = from.checked_sub(1).map(|i| stored[i].clone());
        loop {
            let mut query = vec![("sessionId", id.as_str())];
            if let Some(cursor) = &cursor {
                query.push(("sinceEventId", cursor.as_str()));
            }
            let (status, _, page) = client.get("transcript", &query).await;
            assert_eq!(status, 200, "{page}");
            let ids = ids_of(&page);
            seen.extend(ids.iter().cloned());
            let left = stored.len().saturating_sub(from + seen.len());
            assert_eq!(
                page["hasMore"],
                left > 0,
                "from event {from}: after {} events, {left} more are stored",
                seen.len()
            );
            if left == 0 {
                break;
            }
            assert!(!ids.is_empty(), "hasMore with an empty page");
            cursor = ids.last().cloned();
        }
        assert_eq!(seen, stored[from..], "from event {from}: every later event, once, in order");
    }
}

/// A client for a new caller, and a session of theirs that only this test writes to.
async fn caller_with_quiet_session() -> (ApiClient, String, Caller) {
    let app = app().await;
    let caller = new_caller().await;
    let id = quiet_session(&app, &caller, "Hold on").await;
    (ApiClient::new(Some(&caller.token)), id, caller)
}

fn body(fields: Value) -> String {
    fields.to_string()
}

#[tokio::test]
async fn a_cancel_met_by_two_conflicts_still_answers_200() {
    let (client, id, _) = caller_with_quiet_session().await;
    let conflicts = Fault::new("UpdateItem", "SessionsTable", "TransactionConflictException")
        .times(2)
        .containing(&id)
        .plant()
        .await;
    let (status, _, answer) = client.post("cancel", body(json!({ "sessionId": id }))).await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })));
    assert_eq!(conflicts.hits().await, 2, "both conflicts were met");
    assert!(attr(&session_item(&id).await.unwrap(), "cancelled_at").is_some());
    conflicts.clear().await;
}

#[tokio::test]
async fn a_delete_met_by_conflicts_on_each_write_still_answers_200() {
    let (client, id, _) = caller_with_quiet_session().await;
    let mut faults = Vec::new();
    for operation in ["UpdateItem", "DeleteItem"] {
        let fault = Fault::new(operation, "SessionsTable", "TransactionConflictException")
            .times(2)
            .containing(&id)
            .plant()
            .await;
        faults.push(fault);
    }
    let (status, _, answer) = client.delete("session", &[("sessionId", &id)]).await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })));
    for fault in faults {
        assert_eq!(fault.hits().await, 2, "the mark and the removal each met two");
        fault.clear().await;
    }
    assert!(session_item(&id).await.is_none());
    assert!(event_items(&id).await.is_empty());
}

#[tokio::test]
async fn a_message_met_by_two_conflicts_is_kept_once() {
    let (client, id, _) = caller_with_quiet_session().await;
    let conflicts =
        Fault::new("TransactWriteItems", "SessionsTable", "TransactionConflictException")
            .times(2)
            .containing(&id)
            .plant()
            .await;
    let (status, _, answer) = client.message(&id, "Still there?").await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })));
    assert_eq!(conflicts.hits().await, 2);
    let texts: Vec<String> = event_items(&id)
        .await
        .iter()
        .filter_map(|item| attr(item, "payload").map(str::to_owned))
        .collect();
    assert_eq!(texts.iter().filter(|p| p.contains("Still there?")).count(), 1, "{texts:?}");
    assert_eq!(number(&session_item(&id).await.unwrap(), "queued_messages"), Some(1));
    conflicts.clear().await;
}

/// Every attempt but the last of the functions' DynamoDB retry policy may be throttled.
const ABSORBED: u32 = knoq_shared::store::DYNAMODB_MAX_ATTEMPTS - 1;

/// [`ABSORBED`] as the emulator counts a fault's hits.
const ABSORBED_HITS: u64 = ABSORBED as u64;

#[tokio::test]
async fn throttling_is_retried_by_the_sdk() {
    let (client, id, _) = caller_with_quiet_session().await;
    // The SDK's standard retry makes DYNAMODB_MAX_ATTEMPTS attempts: all but the last may be
    // throttled (with the SDK's default of 3, the third throttle was a 503).
    let throttled = Fault::new("TransactWriteItems", "SessionsTable", "ThrottlingException")
        .times(ABSORBED)
        .containing(&id)
        .plant()
        .await;
    let (status, _, answer) = client.message(&id, "Busy?").await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })));
    assert_eq!(throttled.hits().await, ABSORBED_HITS);
    throttled.clear().await;
    let throttled =
        Fault::new("UpdateItem", "SessionsTable", "ProvisionedThroughputExceededException")
            .times(ABSORBED)
            .containing(&id)
            .plant()
            .await;
    let (status, _, answer) = client.post("cancel", body(json!({ "sessionId": id }))).await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })));
    assert_eq!(throttled.hits().await, ABSORBED_HITS);
    throttled.clear().await;
}

/// Chaos seed 612: a worker's text flush met three busy answers in a row (the SDK's default
/// budget) and the turn ended `store_error` with the model's whole answer lost. A burst as
/// long as the retry policy allows now leaves the answer whole in the transcript.
#[tokio::test]
async fn a_burst_of_throttling_on_a_workers_text_flush_keeps_the_whole_answer() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("flush-throttled");
    let (id, run) = client
        .create(&format!("Stream for a while [[emu tag={tag} notool=1 words=20 delay_ms=50]]"))
        .await;
    let throttled =
        Fault::new("TransactWriteItems", "SessionsTable", "ProvisionedThroughputExceededException")
            .containing(&id)
            .containing("agent_message")
            .times(ABSORBED)
            .plant()
            .await;
    let done = client.until_turn_ends(&id, Duration::from_secs(40)).await;
    let hits = throttled.hits().await;
    throttled.clear().await;
    let types = event_types(&done);
    assert_eq!(hits, ABSORBED_HITS, "the flushes met every throttle: {types:?}");
    assert_eq!(count_of(&done, "error"), 0, "no store_error: {types:?}: {done}");
    assert_eq!(types.last().map(String::as_str), Some("status_idle"));
    let text: String = agent_texts(&done).concat();
    assert_eq!(text.split_whitespace().count(), 20, "the whole answer: {text}");
    assert_eq!(execution_end(&run, Duration::from_secs(10)).await, "SUCCEEDED");
}

#[tokio::test]
async fn a_cancel_throttled_through_every_retry_is_503_with_retry_after_and_changes_nothing() {
    let (client, id, _) = caller_with_quiet_session().await;
    let before = session_item(&id).await.unwrap();
    let throttled = Fault::new("UpdateItem", "SessionsTable", "ThrottlingException")
        .containing(&id)
        .plant()
        .await;
    let (status, retry_after, answer) =
        client.post("cancel", body(json!({ "sessionId": id }))).await;
    assert_eq!(status.as_u16(), 503, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!(answer, json!({ "error": "the service is busy; retry in 2 s" }));
    assert_eq!(
        throttled.hits().await,
        u64::from(knoq_shared::store::DYNAMODB_MAX_ATTEMPTS),
        "the SDK tried every attempt of the policy"
    );
    assert_eq!(session_item(&id).await.unwrap(), before, "nothing changed");
    throttled.clear().await;
    let (status, _, answer) = client.post("cancel", body(json!({ "sessionId": id }))).await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })), "the retry cancels");
}

#[tokio::test]
async fn dynamodb_failing_mid_request_answers_json_503_and_writes_nothing() {
    let (client, id, caller) = caller_with_quiet_session().await;
    let before = (session_item(&id).await.unwrap(), event_items(&id).await);
    // Every route below has already read (cookie, rate limit, session) when its write fails.
    let failing = [
        Fault::new("TransactWriteItems", "SessionsTable", "InternalServerError")
            .containing(&id)
            .plant()
            .await,
        Fault::new("UpdateItem", "SessionsTable", "InternalServerError")
            .containing(&id)
            .plant()
            .await,
        // Create's transaction names the new session's owner, not an id known beforehand.
        Fault::new("TransactWriteItems", "SessionsTable", "InternalServerError")
            .containing(&caller.user_id)
            .plant()
            .await,
    ];
    let answers = [
        client.message(&id, "Anyone?").await,
        client.post("cancel", body(json!({ "sessionId": id }))).await,
        client.post("session", body(json!({ "text": "A new one" }))).await,
    ];
    for (status, retry_after, answer) in answers {
        assert_eq!(status.as_u16(), 503, "{answer}");
        assert_eq!(retry_after.as_deref(), Some("2"));
        assert_eq!(answer, json!({ "error": "the service is busy; retry in 2 s" }));
    }
    assert_eq!((session_item(&id).await.unwrap(), event_items(&id).await), before);
    assert_eq!(sessions_owned(&caller.user_id, &caller.org_id).await, 1, "no new session");
    for fault in failing {
        let attempts = u64::from(knoq_shared::store::DYNAMODB_MAX_ATTEMPTS);
        assert!(fault.hits().await >= attempts, "the SDK retried each");
        fault.clear().await;
    }
}

/// How many stored events of session `id` carry `text`.
async fn events_with_text(id: &str, text: &str) -> usize {
    let needle = serde_json::to_string(text).unwrap();
    event_items(id)
        .await
        .iter()
        .filter(|item| attr(item, "payload").unwrap().contains(&needle))
        .count()
}

#[tokio::test]
async fn a_lost_response_of_a_queued_message_keeps_it_once() {
    let (client, id, _) = caller_with_quiet_session().await;
    let lost = Fault::new("TransactWriteItems", "SessionsTable", "CommittedResponseLost")
        .times(1)
        .containing(&id)
        .plant()
        .await;
    let (status, _, answer) = client.message(&id, "Said once").await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })));
    assert_eq!(lost.hits().await, 1, "the write committed and its answer was lost");
    assert_eq!(events_with_text(&id, "Said once").await, 1);
    assert_eq!(number(&session_item(&id).await.unwrap(), "queued_messages"), Some(1));
    lost.clear().await;
}

#[tokio::test]
async fn a_lost_response_of_a_message_that_starts_a_run_starts_it_once() {
    let (client, id, _) = caller_with_quiet_session().await;
    // Idle, as after a finished turn: no run holds the session.
    dynamodb()
        .await
        .update_item()
        .table_name(config().tables.sessions)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.clone()))
        .update_expression(
            "SET #status = :idle REMOVE active_run, run_started_at, run_expires_at, turn_step, \
             queued_messages",
        )
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(
            ":idle",
            aws_sdk_dynamodb::types::AttributeValue::S("idle".into()),
        )
        .send()
        .await
        .unwrap();
    let lost = Fault::new("TransactWriteItems", "SessionsTable", "CommittedResponseLost")
        .times(1)
        .containing(&id)
        .plant()
        .await;
    let (status, _, answer) = client.message(&id, "Start once").await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })));
    assert_eq!(lost.hits().await, 1);
    lost.clear().await;
    let session = session_item(&id).await.unwrap();
    assert_eq!(events_with_text(&id, "Start once").await, 1);
    assert_eq!(number(&session, "queued_messages"), Some(0), "not queued on its own run");
    assert_eq!(number(&session, "runs_started"), Some(2), "the opening run and this one");
    let run = attr(&session, "active_run").expect("the message's run holds the session");
    let execution = execution_status(run).await;
    assert!(["RUNNING", "SUCCEEDED"].contains(&execution.as_str()), "{execution}");
}

#[tokio::test]
async fn a_lost_response_of_a_create_answers_200_with_one_session() {
    let caller = new_caller().await;
    let client = ApiClient::new(Some(&caller.token));
    // Create's transaction names the new session's owner.
    let lost = Fault::new("TransactWriteItems", "SessionsTable", "CommittedResponseLost")
        .times(1)
        .containing(&caller.user_id)
        .plant()
        .await;
    let (id, run) = client.create("Created once").await;
    assert_eq!(lost.hits().await, 1);
    lost.clear().await;
    assert_eq!(sessions_owned(&caller.user_id, &caller.org_id).await, 1);
    assert_eq!(events_with_text(&id, "Created once").await, 1);
    let execution = execution_status(&run).await;
    assert!(["RUNNING", "SUCCEEDED"].contains(&execution.as_str()), "{execution}");
    client.cancel(&id).await;
}

#[tokio::test]
async fn a_lost_response_of_a_cancel_or_a_delete_still_reports_what_it_did() {
    let (client, id, caller) = caller_with_quiet_session().await;
    let lost = Fault::new("UpdateItem", "SessionsTable", "CommittedResponseLost")
        .times(1)
        .containing(&id)
        .plant()
        .await;
    let (status, _, answer) = client.post("cancel", body(json!({ "sessionId": id }))).await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })), "the first cancel");
    assert_eq!(lost.hits().await, 1);
    lost.clear().await;

    let id = quiet_session(&app().await, &caller, "Delete me").await;
    let lost = Fault::new("UpdateItem", "SessionsTable", "CommittedResponseLost")
        .times(1)
        .containing(&id)
        .plant()
        .await;
    let (status, _, answer) = client.delete("session", &[("sessionId", &id)]).await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })), "not a 404");
    assert_eq!(lost.hits().await, 1);
    lost.clear().await;
    assert!(session_item(&id).await.is_none());
}

/// Chaos seed 613: a delete's mark committed, its answer was lost and the SDK's two resends
/// met 500s, so the route answered 503 though the session was gone. With the functions'
/// retry policy the resends go on until one is answered, and the route recognises its own
/// mark (or cancel stamp): a cancel and a delete whose first answer is lost and whose next
/// three attempts fail still answer 200.
#[tokio::test]
async fn a_lost_response_of_a_cancel_or_a_delete_then_server_errors_still_reports_what_it_did() {
    let (client, id, caller) = caller_with_quiet_session().await;
    let plant = |id: String| async move {
        let lost = Fault::new("UpdateItem", "SessionsTable", "CommittedResponseLost")
            .times(1)
            .containing(&id)
            .plant()
            .await;
        let failing = Fault::new("UpdateItem", "SessionsTable", "InternalServerError")
            .times(3)
            .containing(&id)
            .plant()
            .await;
        (lost, failing)
    };
    let (lost, failing) = plant(id.clone()).await;
    let (status, _, answer) = client.post("cancel", body(json!({ "sessionId": id }))).await;
    let hits = (lost.hits().await, failing.hits().await);
    lost.clear().await;
    failing.clear().await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })), "the first cancel");
    assert_eq!(hits, (1, 3));

    let id = quiet_session(&app().await, &caller, "Delete me").await;
    let (lost, failing) = plant(id.clone()).await;
    let (status, _, answer) = client.delete("session", &[("sessionId", &id)]).await;
    let hits = (lost.hits().await, failing.hits().await);
    lost.clear().await;
    failing.clear().await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })), "not a 503");
    assert_eq!(hits, (1, 3));
    assert!(session_item(&id).await.is_none());
}

/// Invokes the list function over the Lambda Invoke API of the local stack with an API
/// Gateway HTTP API (payload 2.0) event whose `cookies` are `cookies`, as API Gateway
/// delivers a browser's request: every cookie of the Cookie header, one string each. Its
/// HTTP answer's status and JSON body.
async fn list_as_api_gateway_delivers(cookies: &[String]) -> (u64, Value) {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/list-sessions.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
    event["cookies"] = json!(cookies);
    event["headers"].as_object_mut().unwrap().remove("cookie");
    let base = std::env::var("KNOQ_API_URL").expect("KNOQ_API_URL: run through `make test`");
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/2015-03-31/functions/list-sessions/invocations"))
        .body(event.to_string())
        .send()
        .await
        .expect("the local Lambda endpoint answers")
        .json()
        .await
        .expect("the function's JSON answer");
    let body = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    (answer["statusCode"].as_u64().unwrap(), body)
}

#[tokio::test]
async fn unrelated_cookies_with_any_characters_do_not_hide_the_session_cookie() {
    let caller = new_caller().await;
    let session_cookie = format!("{}={}", config().cookie_name, caller.token);
    for unrelated in [
        "pref=caf\u{e9}",   // as a browser sends it (UTF-8), or a Latin-1 byte decoded
        "pref=caf\u{fffd}", // a byte that was no text, replaced
        "\u{1D11E}=\u{e9}\u{fffd}", // no cookie syntax allows these; not ours to refuse
    ] {
        for cookies in [
            vec![unrelated.to_owned(), session_cookie.clone()],
            vec![session_cookie.clone(), unrelated.to_owned()],
        ] {
            let (status, body) = list_as_api_gateway_delivers(&cookies).await;
            assert_eq!((status, &body), (200, &json!({ "sessions": [] })), "{cookies:?}");
        }
    }
}

/// `count` sessions of `caller`, one a second apart (index 0 the oldest), of which those at
/// `deleted` (counted from the newest, 0 the newest) are marked deleted as an interrupted
/// delete leaves them: still in the owner index, never to be listed. The live ids, newest
/// first.
async fn sessions_some_deleted(caller: &Caller, count: usize, deleted: &[usize]) -> Vec<String> {
    use knoq_shared::clock::Timestamp;
    use knoq_shared::domain::{MessageText, RunId, SessionId};
    let app = app().await;
    let scope = scope_of(&app, caller).await;
    let start = Timestamp::now().epoch_millis() - 3_600_000;
    let mut live = Vec::new();
    for index in 0..count {
        let id = SessionId::new();
        let at = start + 1_000 * index as i64;
        let text = MessageText::parse(format!("Session {index}")).unwrap();
        let timeout = knoq_shared::workflow::TURN_TIMEOUT;
        let created = Timestamp::from_epoch_millis(at);
        app.sessions.create(&scope, &id, &text, &RunId::new(), timeout, created).await.unwrap();
        if deleted.contains(&(count - 1 - index)) {
            // Deleted half a second later: the same place in the order.
            let marked = Timestamp::from_epoch_millis(at + 500);
            app.sessions.mark_deleted(&scope, &id, &unique("delete"), marked).await.unwrap();
        } else {
            live.push(id.as_string());
        }
    }
    live.reverse();
    live
}

fn listed_ids(sessions: &[Value]) -> Vec<String> {
    sessions.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn the_list_shows_every_live_session_when_deleted_ones_are_among_the_newest() {
    let caller = new_caller().await;
    // 55 sessions, every fifth of the newest 50 deleted: 45 live.
    let deleted: Vec<usize> = (0..50).step_by(5).collect();
    let live = sessions_some_deleted(&caller, 55, &deleted).await;
    assert_eq!(live.len(), 45);
    let listed = ApiClient::new(Some(&caller.token)).sessions().await;
    assert_eq!(listed.len(), 45);
    assert_eq!(listed_ids(&listed), live, "all 45, newest first");
}

#[tokio::test]
async fn the_list_shows_fifty_when_the_newest_sessions_are_deleted() {
    let caller = new_caller().await;
    let deleted: Vec<usize> = (0..8).collect();
    let live = sessions_some_deleted(&caller, 60, &deleted).await;
    let listed = ApiClient::new(Some(&caller.token)).sessions().await;
    assert_eq!(listed.len(), 50);
    assert_eq!(listed_ids(&listed), live[..50], "the 50 newest live sessions");
}

#[tokio::test]
async fn a_lost_response_of_the_next_turns_start_still_starts_that_turn() {
    let client = ApiClient::for_new_caller().await;
    let (id, run) = client.create("Start something long [[emu delay_ms=200]]").await;
    // The checker's start of the next turn (the one write that bumps turn_seq) commits,
    // and its answer is lost: the SDK sends it again and the copy's condition refuses it.
    let lost = Fault::new("UpdateItem", "SessionsTable", "CommittedResponseLost")
        .containing(&id)
        .containing("turn_seq + :one")
        .times(1)
        .plant()
        .await;
    let patient = Duration::from_millis(100);
    client
        .transcript_until(&id, patient, Duration::from_secs(30), |t| {
            count_of(t, "tool_result") == 1
        })
        .await;
    let (status, _, body) = client.message(&id, "Also check the budget").await;
    assert_eq!((status.as_u16(), body), (200, json!({ "ok": true })));
    let done = client
        .transcript_until(&id, patient, Duration::from_secs(60), |t| {
            count_of(t, "status_idle") == 1 || count_of(t, "error") > 0
        })
        .await;
    assert_eq!(lost.hits().await, 1, "the next turn's start met the fault");
    lost.clear().await;
    let types = event_types(&done);
    assert_eq!(count_of(&done, "error"), 0, "no worker_lost: {types:?}");
    assert_eq!(count_of(&done, "tool_use"), 2, "the queued message got its turn: {types:?}");
    assert_eq!(types.last().map(String::as_str), Some("status_idle"));
    assert_eq!(execution_end(&run, Duration::from_secs(10)).await, "SUCCEEDED");
}

/// (In-process: the limiter itself, as every rate-limited route calls it.)
#[tokio::test]
async fn a_lost_response_of_a_counter_write_counts_the_request_once() {
    let app = app().await;
    let caller = new_caller().await;
    let scope = scope_of(&app, &caller).await;
    // 2030-01-01T00:00:05Z: a window of its own, far from the clock of other tests.
    let now = knoq_shared::clock::Timestamp::from_epoch_millis(1_893_456_005_000);
    let cancel = &app.config.rate_limits.cancel;
    // The first write of the counter commits; its answer is lost and the SDK sends it again.
    let lost = Fault::new("UpdateItem", "RateLimitsTable", "CommittedResponseLost")
        .containing(&format!("#{}#", caller.user_id))
        .times(1)
        .plant()
        .await;
    app.limiter.admit(&scope, cancel, now).await.expect("admitted: its own write");
    assert_eq!(lost.hits().await, 1);
    lost.clear().await;
    let counters = counters_of(&caller.user_id).await;
    assert_eq!(number(&counters[0], "hits"), Some(1), "counted once, not twice");
    // And the limit still admits exactly 30 in the window: 29 more.
    let admitted =
        futures::future::join_all((0..40).map(|_| app.limiter.admit(&scope, cancel, now)))
            .await
            .iter()
            .filter(|r| r.is_ok())
            .count();
    assert_eq!(admitted, 29);
}

// --- Issue 15: what only AWS shows, planted on the session each test owns. ---

/// Issue 15, defect 1: a worker's own writes (lease renewals, the finish) that meet a
/// transaction in flight on the session item (a user message's append, on DynamoDB) are
/// sent again, instead of ending the turn `store_error`.
#[tokio::test]
async fn a_worker_write_that_meets_a_transaction_on_the_session_does_not_end_the_turn() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("conflict");
    let text = format!("Stream for a while [[emu tag={tag} notool=1 words=40 delay_ms=60]]");
    let (id, run) = client.create(&text).await;
    let renewals = Fault::new("UpdateItem", "SessionsTable", "TransactionConflictException")
        .containing(&id)
        .containing("SET worker_renewed_until")
        .times(3)
        .plant()
        .await;
    let finish = Fault::new("UpdateItem", "SessionsTable", "TransactionConflictException")
        .containing(&id)
        .containing("turn_result = :result")
        .times(2)
        .plant()
        .await;
    let done = client.until_turn_ends(&id, Duration::from_secs(40)).await;
    let types = event_types(&done);
    assert_eq!(count_of(&done, "error"), 0, "{types:?}: {done}");
    assert_eq!(types.last().map(String::as_str), Some("status_idle"));
    assert_eq!(renewals.hits().await, 3, "heartbeats met the conflicts");
    assert_eq!(finish.hits().await, 2, "the finish met the conflicts");
    renewals.clear().await;
    finish.clear().await;
    let text: String = agent_texts(&done).concat();
    assert_eq!(text.split_whitespace().count(), 40, "the whole answer: {text}");
    assert_eq!(execution_end(&run, Duration::from_secs(10)).await, "SUCCEEDED");
}

/// Chaos seed 618: a worker stalled past its lease (the whole machine paused 21 s). The
/// checker read the lease run out; the worker woke and renewed its lease before the
/// checker's write; both writes held, so the worker opened a model call whose answer every
/// write then refused, and the next turn answered the message again. The checker's failure
/// now holds only while no lease runs past its `now` ([`FailureGuard::LeaseRunOut`]), so
/// exactly one of the two wins, in either order. Step by step against the emulator, on a
/// session no workflow runs.
#[tokio::test]
async fn a_worker_lost_is_ended_only_if_its_lease_is_still_run_out_when_the_checker_writes() {
    use knoq_shared::checker::error_event_with;
    use knoq_shared::clock::Timestamp;
    use knoq_shared::store::sessions::FailureGuard;
    use knoq_shared::store::turn_worker::ClaimedTurn;

    let app = app().await;
    let id = quiet_session(&app, &new_caller().await, "Stall, then wake").await;
    let at =
        |offset_ms: i64| Timestamp::from_epoch_millis(Timestamp::now().epoch_millis() + offset_ms);
    let run = app.sessions.get(&id).await.unwrap().unwrap().active_run.unwrap().id;
    let claimed = app.sessions.claim_turn(&id, &run, "stalled-worker", at(-1_000)).await.unwrap();
    let turn = ClaimedTurn::from_claim(&claimed.expect("claimed"), "stalled-worker").unwrap();
    let lost = error_event_with("worker_lost", "The agent stopped responding.");

    // The checker reads the lease run out; the worker renews; then the checker writes.
    let now = at(0);
    let read = app.sessions.get(&id).await.unwrap().unwrap();
    assert!(read.active_run.as_ref().unwrap().worker.lease_until.unwrap() < now);
    assert!(app.sessions.renew_lease(&turn, at(15_000)).await.unwrap(), "the worker woke");
    let ended = app.sessions.fail_turn(&read, &run, &lost, FailureGuard::LeaseRunOut, now).await;
    assert!(!ended.unwrap(), "the renewed worker keeps its turn");
    let item = session_item(&id).await.unwrap();
    assert_eq!(attr(&item, "worker_id"), Some("stalled-worker"));
    assert_eq!(event_items(&id).await.len(), 1, "no error event, only the opening message");

    // The lease runs out again; this time the checker writes first: the worker's renewal,
    // which comes before any model call it would open, is refused.
    let later = at(16_000);
    let read = app.sessions.get(&id).await.unwrap().unwrap();
    let ended = app.sessions.fail_turn(&read, &run, &lost, FailureGuard::LeaseRunOut, later).await;
    assert!(ended.unwrap(), "the lease had run out: the turn ends");
    assert!(
        !app.sessions.renew_lease(&turn, at(31_000)).await.unwrap(),
        "a lost worker stays lost"
    );
    assert_eq!(event_items(&id).await.len(), 2, "the opening message and the error");
}

/// A turn streaming 40 words (one every 50 ms) whose next append of the worker the emulator
/// holds for the base lease plus 5 s, once: the client, the provider tag, the session, its
/// run, how long the append is held and the planted fault.
async fn a_streaming_turn_with_one_append_held(
    prefix: &str,
) -> (ApiClient, String, String, String, Duration, PlantedFault) {
    let client = ApiClient::for_new_caller().await;
    let tag = unique(prefix);
    let text = format!("Stream for a while [[emu tag={tag} notool=1 words=40 delay_ms=50]]");
    let (id, run) = client.create(&text).await;
    let poll = Duration::from_secs(config().workflow.poll_interval_secs);
    let held = knoq_shared::agent::lease::base_lease(poll) + Duration::from_secs(5);
    let slow = Fault::slow("TransactWriteItems", "SessionsTable", held)
        .containing(&id)
        .containing("turn_step = :step")
        .times(1)
        .plant()
        .await;
    (client, tag, id, run, held, slow)
}

/// Issue 15, chaos seed 304: one append of the worker held by the store for longer than the
/// worker's whole lease. The worker renews its lease beside the slow write, stretched by how
/// long the write has waited, so the checker never takes it for dead: the turn ends idle, its
/// answer whole in the transcript, from one model call. (Before: `worker_lost` at the end of
/// the lease, the message named unanswered and the answer cut.)
#[tokio::test]
async fn a_worker_write_slower_than_its_lease_keeps_the_turn_and_its_whole_answer() {
    let (client, tag, id, run, held, slow) =
        a_streaming_turn_with_one_append_held("slowstore").await;
    let done = client.until_turn_ends(&id, held + Duration::from_secs(40)).await;
    assert_eq!(slow.hits().await, 1, "one of the worker's appends was held {held:?}");
    slow.clear().await;
    let types = event_types(&done);
    assert_eq!(count_of(&done, "error"), 0, "no worker_lost: {types:?}: {done}");
    assert_eq!(types.last().map(String::as_str), Some("status_idle"));
    let calls = provider_calls(&tag).await;
    assert_eq!(calls.len(), 1, "one model call");
    assert_eq!(agent_texts(&done).concat(), calls[0]["textSent"].as_str().unwrap());
    assert_eq!(execution_end(&run, Duration::from_secs(10)).await, "SUCCEEDED");
}

/// The same slow append, and the first renewal sent beside it stalls for longer than the
/// whole wait (as one did in the clean-clone CI of 2026-12-03, for over 6 s, while the
/// emulator answered every other request in 50 ms). A renewal still unanswered at the next
/// heartbeat is dropped for a fresh one, so the lease still outlives the append: the turn
/// ends idle with its whole answer. (Before: no renewal was sent while one was pending, the
/// lease ran out and the checker ended the turn `worker_lost`.)
#[tokio::test]
async fn a_renewal_that_stalls_beside_a_slow_write_is_replaced_at_the_next_heartbeat() {
    let (client, tag, id, run, held, slow) = a_streaming_turn_with_one_append_held("stalled").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while slow.hits().await == 0 {
        assert!(std::time::Instant::now() < deadline, "no append of the worker was held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stalled = Fault::slow("UpdateItem", "SessionsTable", held * 2)
        .containing(&id)
        .containing("SET worker_renewed_until")
        .times(1)
        .plant()
        .await;
    let done = client.until_turn_ends(&id, held + Duration::from_secs(40)).await;
    assert_eq!(stalled.hits().await, 1, "a renewal beside the held append stalled");
    slow.clear().await;
    stalled.clear().await;
    let types = event_types(&done);
    assert_eq!(count_of(&done, "error"), 0, "no worker_lost: {types:?}: {done}");
    assert_eq!(types.last().map(String::as_str), Some("status_idle"));
    let calls = provider_calls(&tag).await;
    assert_eq!(agent_texts(&done).concat(), calls[0]["textSent"].as_str().unwrap());
    assert_eq!(execution_end(&run, Duration::from_secs(10)).await, "SUCCEEDED");
}

/// Issue 15, defect 6: the claim commits and its answer is lost; the SDK sends it again and
/// the copy is refused by the claim's own effect. The worker still plays the turn.
#[tokio::test]
async fn a_lost_response_of_the_workers_claim_still_plays_the_turn() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("claim");
    let (id, run) = client.create(&format!("Claim me [[emu tag={tag} notool=1 words=5]]")).await;
    let lost = Fault::new("UpdateItem", "SessionsTable", "CommittedResponseLost")
        .containing(&id)
        .containing("SET worker_id = :me")
        .times(1)
        .plant()
        .await;
    let done = client.until_turn_ends(&id, Duration::from_secs(30)).await;
    lost.clear().await;
    let types = event_types(&done);
    assert_eq!(count_of(&done, "error"), 0, "no worker_lost: {types:?}");
    assert_eq!(types.last().map(String::as_str), Some("status_idle"));
    assert_eq!(provider_calls(&tag).await.len(), 1, "one model call");
    assert_eq!(execution_end(&run, Duration::from_secs(10)).await, "SUCCEEDED");
}

/// Issue 15, defect 6: a token-usage write whose answer is lost is sent again by the SDK;
/// the call's tokens still count once in the session's totals.
#[tokio::test]
async fn a_lost_response_of_a_token_usage_write_counts_the_tokens_once() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("usage");
    let (id, _) = client.create(&format!("Count me [[emu tag={tag} notool=1 words=5]]")).await;
    let lost = Fault::new("UpdateItem", "SessionsTable", "CommittedResponseLost")
        .containing(&id)
        .containing("input_tokens_total")
        .times(1)
        .plant()
        .await;
    let done = client.until_turn_ends(&id, Duration::from_secs(30)).await;
    assert_eq!(lost.hits().await, 1, "the usage write met the fault");
    lost.clear().await;
    let idle = done["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(idle["type"], "status_idle", "{done}");
    let usage = &idle["payload"]["usage"];
    assert!(usage["inputTokens"].as_i64().unwrap() > 0);
    let session = session_item(&id).await.unwrap();
    assert_eq!(number(&session, "input_tokens_total"), usage["inputTokens"].as_i64());
    assert_eq!(number(&session, "output_tokens_total"), usage["outputTokens"].as_i64());
}

/// Issue 15, defect 7: a page is bounded by what it takes in the function's answer, where the
/// HTTP body is escaped into a JSON string: 110 messages of 16,000 `"` (6.4 MB escaped had
/// they shared one page) are answered in pages that each fit Lambda's 6 MB, and every event is
/// read once.
#[tokio::test]
async fn transcript_pages_of_quote_filled_messages_fit_a_lambda_answer() {
    use knoq_shared::clock::Timestamp;
    use knoq_shared::domain::EventType;
    use knoq_shared::store::sessions::NewEvent;
    let app = app().await;
    let caller = new_caller().await;
    let id = quiet_session(&app, &caller, "Quotes ahead").await;
    let quotes = "\"".repeat(16_000);
    for _ in 0..110 {
        let session = app.sessions.get(&id).await.unwrap().unwrap();
        let run = session.active_run.clone().unwrap();
        let event = NewEvent::new(EventType::UserMessage, json!({ "text": quotes }));
        assert!(
            app.sessions
                .append_message_queued(&session, &event, &run.id, Timestamp::now())
                .await
                .unwrap()
        );
    }
    let base = std::env::var("KNOQ_API_URL").expect("KNOQ_API_URL: run through `make test`");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/transcript.json");
    let template: Value = serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let mut event = template.clone();
        event["cookies"] = json!([format!("{}={}", config().cookie_name, caller.token)]);
        event["headers"].as_object_mut().unwrap().remove("cookie");
        let mut query = json!({ "sessionId": id });
        let mut raw = format!("sessionId={id}");
        if let Some(cursor) = &cursor {
            query["sinceEventId"] = json!(cursor);
            raw.push_str(&format!("&sinceEventId={cursor}"));
        }
        event["queryStringParameters"] = query;
        event["rawQueryString"] = json!(raw);
        let answer = reqwest::Client::new()
            .post(format!("{base}/2015-03-31/functions/transcript/invocations"))
            .body(event.to_string())
            .send()
            .await
            .expect("the local Lambda endpoint answers")
            .bytes()
            .await
            .unwrap();
        assert!(answer.len() < 6_291_456, "page {pages}: a {} byte Lambda answer", answer.len());
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(
            answer["statusCode"],
            200,
            "{}",
            &answer["body"].as_str().unwrap_or("")
                [..200.min(answer["body"].as_str().unwrap_or("").len())]
        );
        let page: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        let ids = ids_of(&page);
        assert!(!ids.is_empty(), "a page with hasMore is never empty");
        seen += ids.len();
        pages += 1;
        cursor = ids.last().cloned();
        if page["hasMore"] != true {
            break;
        }
    }
    assert_eq!(seen, 111, "the opening message and the 110 quote-filled ones");
    assert!(pages >= 2, "they do not fit one answer");
}

/// Issue 15, defect 9: a cookie used right after sign-in, whose first (eventually consistent)
/// read still sees no record, is read again strongly consistently instead of being refused
/// and remembered as unknown.
#[tokio::test]
async fn a_cookie_used_right_after_sign_in_authenticates_through_a_stale_read() {
    use knoq_shared::auth::{new_token, token_hash};
    use knoq_shared::store::auth_sessions::{AuthRecord, AuthSessionStore};
    let app = app().await;
    let token = new_token();
    let hash = token_hash(&token);
    let chaos = ScopedChaos::start(&hash, &[("dynamodb_stale_read", 1.0)]).await;
    let store = AuthSessionStore::new(dynamodb().await, config().tables.auth_sessions);
    let record = AuthRecord {
        user_id: unique("user"),
        org_id: unique("org"),
        expires_at_secs: knoq_shared::clock::Timestamp::now().epoch_secs() + 3600,
    };
    store.put(&hash, &record).await.unwrap();
    let caller = Caller { user_id: record.user_id.clone(), org_id: record.org_id.clone(), token };
    let scope =
        app.auth.authenticate(&post("/", caller.with_origin(&app.config.allowed_origin), "")).await;
    let stale = chaos.injected("dynamodb_stale_read").await;
    chaos.stop().await;
    assert!(stale >= 1, "the first read was served stale");
    let scope = scope.expect("authenticated through the consistent read");
    assert_eq!(scope.user_id(), record.user_id);
}

//! Message, list and delete over real HTTP on the local stack, with the real turn workflow.

use std::time::Duration;

use futures::future::join_all;
use knoq_shared::clock::Timestamp;
use knoq_shared::domain::{MessageText, RunId, SessionId};
use knoq_shared::workflow::TURN_TIMEOUT;
use knoq_tests::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PATIENT: Duration = Duration::from_millis(100);
const TURN: Duration = Duration::from_secs(30);

fn idle_count(n: usize) -> impl Fn(&Value) -> bool {
    move |t: &Value| {
        count_of(t, "status_idle") == n
            && event_types(t).last().map(String::as_str) == Some("status_idle")
    }
}

async fn ok(answer: Answer) {
    let (status, _, body) = answer;
    assert_eq!((status, body), (StatusCode::OK, json!({ "ok": true })));
}

#[tokio::test]
async fn a_follow_up_after_idle_runs_a_second_turn() {
    let client = ApiClient::for_new_caller().await;
    let (id, first_run) = client.create("First question").await;
    client.transcript_until(&id, PATIENT, TURN, idle_count(1)).await;
    ok(client.message(&id, "And a follow-up").await).await;
    let running = client.transcript(&id).await;
    let second_run = running["workflowRunId"].as_str().expect("a new run is active").to_owned();
    assert_ne!(second_run, first_run);
    let done = client.transcript_until(&id, PATIENT, TURN, idle_count(2)).await;
    let types = event_types(&done);
    let follow_up = types.iter().rposition(|t| t == "user_message").unwrap();
    let answer = &types[follow_up + 1..follow_up + 4];
    assert_eq!(answer, ["agent_message", "tool_use", "tool_result"], "{types:?}");
    assert_eq!(count_of(&done, "tool_use"), 2);
    assert_eq!(execution_end(&second_run, Duration::from_secs(10)).await, "SUCCEEDED");
    assert_eq!(number(&session_item(&id).await.unwrap(), "runs_started"), Some(2));
}

#[tokio::test]
async fn a_message_mid_turn_is_answered_after_that_turn_once() {
    let client = ApiClient::for_new_caller().await;
    let (id, run) = client.create("Start something long [[emu delay_ms=200]]").await;
    client.transcript_until(&id, PATIENT, TURN, |t| count_of(t, "tool_result") == 1).await;
    ok(client.message(&id, "Also check the budget").await).await;
    let done = client.transcript_until(&id, PATIENT, TURN * 2, idle_count(1)).await;
    let types = event_types(&done);
    let queued = types.iter().rposition(|t| t == "user_message").unwrap();
    assert!(queued > 2, "the message is in the transcript, mid-turn: {types:?}");
    let second_tool_use = types.iter().rposition(|t| t == "tool_use").unwrap();
    assert!(second_tool_use > queued, "a second turn answers it: {types:?}");
    assert_eq!(count_of(&done, "tool_use"), 2, "answered once, not twice: {types:?}");
    assert_eq!(count_of(&done, "status_idle"), 1, "no idle between the two turns: {types:?}");
    assert_eq!(done["workflowRunId"], Value::Null);
    assert_eq!(execution_end(&run, Duration::from_secs(10)).await, "SUCCEEDED");
    let session = session_item(&id).await.unwrap();
    assert_eq!(number(&session, "runs_started"), Some(1), "the same run took it up");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(event_types(&client.transcript(&id).await), types, "nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_messages_to_an_idle_session_start_one_run_and_lose_none() {
    let client = ApiClient::for_new_caller().await;
    let (id, _) = client.create("Opening").await;
    client.transcript_until(&id, PATIENT, TURN, idle_count(1)).await;
    let texts: Vec<String> = (0..8).map(|i| format!("message {i}")).collect();
    let answers = join_all(texts.iter().map(|text| client.message(&id, text))).await;
    for (status, _, body) in &answers {
        assert_eq!((*status, body), (StatusCode::OK, &json!({ "ok": true })));
    }
    let session = session_item(&id).await.unwrap();
    assert_eq!(number(&session, "runs_started"), Some(2), "one new run, not eight");
    let done = client.transcript_until(&id, PATIENT, TURN * 3, idle_count(2)).await;
    let sent: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "user_message")
        .map(|e| e["payload"]["text"].as_str().unwrap())
        .collect();
    for text in &texts {
        assert_eq!(sent.iter().filter(|t| *t == text).count(), 1, "{text} kept once");
    }
    assert_eq!(number(&session_item(&id).await.unwrap(), "runs_started"), Some(2));
}

#[tokio::test]
async fn messages_are_refused_with_the_reason() {
    with_window_room(20).await;
    let owner = new_caller().await;
    let client = ApiClient::new(Some(&owner.token));
    let (id, _) = client.create("Soon cancelled").await;
    let bad = |status, message: &str| (status, json!({ "error": message }));
    let cases = [
        (json!({ "text": "hi" }), bad(StatusCode::BAD_REQUEST, "sessionId is required")),
        (json!({ "sessionId": id }), bad(StatusCode::BAD_REQUEST, "text is required")),
        (
            json!({ "sessionId": id, "text": "" }),
            bad(StatusCode::BAD_REQUEST, "text must not be empty"),
        ),
        (
            json!({ "sessionId": "", "text": "x" }),
            bad(StatusCode::BAD_REQUEST, "sessionId must not be empty"),
        ),
        (
            json!({ "sessionId": 5, "text": "x" }),
            bad(StatusCode::BAD_REQUEST, "sessionId must be a string"),
        ),
        (
            json!({ "sessionId": uuid::Uuid::new_v4().to_string(), "text": "x" }),
            bad(StatusCode::NOT_FOUND, "session not found"),
        ),
    ];
    for (body, expected) in cases {
        let (status, _, answer) = client.post("message", body.to_string()).await;
        assert_eq!((status, answer), expected, "{body}");
    }
    let stranger = ApiClient::for_new_caller().await;
    let (status, _, _) = stranger.message(&id, "let me in").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    let (status, _, body) = client.message(&id, "too late").await;
    assert_eq!(
        (status, body),
        bad(StatusCode::CONFLICT, "session was cancelled; it accepts no new messages")
    );
    let transcript = client
        .transcript_until(&id, PATIENT, TURN, |t| count_of(t, "status_terminated") == 1)
        .await;
    assert_eq!(count_of(&transcript, "user_message"), 1, "no refused message was written");
}

#[tokio::test]
async fn the_sixty_first_message_in_a_minute_is_429_with_retry_after() {
    with_window_room(30).await;
    let client = ApiClient::for_new_caller().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for _ in 0..60 {
        let (status, _, _) = client.message(&unknown, "probe").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, retry_after, body) = client.message(&unknown, "probe").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs));
    assert!(body["error"].as_str().unwrap().contains("60 messages per minute"), "{body}");
}

#[tokio::test]
async fn the_list_is_the_callers_own_newest_first() {
    let owner = new_caller().await;
    let client = ApiClient::new(Some(&owner.token));
    let mut ids = Vec::new();
    // Silent models: no turn writes an event (which would move its session up) meanwhile.
    for title in ["one", "two", "three"] {
        ids.push(client.create(&format!("{title} [[emu silent_ms=8000]]")).await.0);
    }
    // Same user in another organisation, another user in the same one: not listed.
    let elsewhere = ApiClient::new(Some(&caller_in(&owner.user_id, &unique("org")).await.token));
    elsewhere.create("other org").await;
    let colleague = ApiClient::new(Some(&caller_in(&unique("user"), &owner.org_id).await.token));
    colleague.create("colleague").await;

    let listed = client.sessions().await;
    let listed_ids: Vec<&str> = listed.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    for summary in &listed {
        assert_eq!(summary["status"], "running");
        assert!(summary.get("cancelledAt").is_none() && summary.get("cancelledBy").is_none());
        for field in ["id", "title", "status", "createdAt", "updatedAt"] {
            assert!(summary[field].is_string(), "{field} in {summary}");
        }
    }
    assert_eq!(listed[2]["title"], "one [[emu silent_ms=8000]]");

    // Cancelling the oldest writes to it: it moves to the top, terminated.
    assert_eq!(client.cancel(&ids[0]).await, json!({ "ok": true }));
    let listed = client.sessions().await;
    assert_eq!(listed[0]["id"], ids[0].as_str());
    assert_eq!(listed[0]["status"], "terminated");
    assert!(listed[0]["cancelledAt"].is_string());
    assert_eq!(listed[0]["cancelledBy"], owner.user_id.as_str(), "the list names who cancelled");
    assert!(listed[0]["updatedAt"].as_str() > listed[1]["updatedAt"].as_str());
    assert_eq!(ApiClient::for_new_caller().await.sessions().await, Vec::<Value>::new());
    let (status, _, _) = ApiClient::new(None).get("sessions", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_list_holds_at_most_fifty() {
    let app = app().await;
    let caller = new_caller().await;
    let scope = scope_of(&app, &caller).await;
    let text = MessageText::parse("many".into()).unwrap();
    for _ in 0..53 {
        let (id, run) = (SessionId::new(), RunId::new());
        app.sessions
            .create(&scope, &id, &text, &run, TURN_TIMEOUT, Timestamp::now())
            .await
            .unwrap();
    }
    let listed = ApiClient::new(Some(&caller.token)).sessions().await;
    assert_eq!(listed.len(), 50);
    let updated: Vec<&str> = listed.iter().map(|s| s["updatedAt"].as_str().unwrap()).collect();
    let mut newest_first = updated.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(updated, newest_first);
}

#[tokio::test]
async fn deleting_a_running_session_removes_every_item_and_the_run_exits_cleanly() {
    let client = ApiClient::for_new_caller().await;
    let (id, run) = client.create("Delete me mid-turn").await;
    client.transcript_until(&id, PATIENT, TURN, |t| count_of(t, "tool_result") == 1).await;
    ok(client.delete("session", &[("sessionId", &id)]).await).await;

    assert!(session_item(&id).await.is_none(), "no session item");
    assert_eq!(event_items(&id).await.len(), 0, "no event item");
    let not_found = (StatusCode::NOT_FOUND, json!({ "error": "session not found" }));
    let (status, _, body) = client.get("transcript", &[("sessionId", &id)]).await;
    assert_eq!((status, body), not_found);
    let (status, _, body) = client.post("cancel", json!({ "sessionId": id }).to_string()).await;
    assert_eq!((status, body), not_found);
    let (status, _, body) = client.message(&id, "hello?").await;
    assert_eq!((status, body), not_found);
    assert!(client.sessions().await.iter().all(|s| s["id"] != id.as_str()), "never listed");
    let (status, _, body) = client.delete("session", &[("sessionId", &id)]).await;
    assert_eq!((status, body), not_found, "a second delete is 404");

    assert_eq!(execution_end(&run, Duration::from_secs(10)).await, "SUCCEEDED");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(session_item(&id).await.is_none(), "the run wrote nothing back");
    assert_eq!(event_items(&id).await.len(), 0, "the run wrote nothing back");
}

#[tokio::test]
async fn deletes_are_refused_with_the_reason_and_change_nothing() {
    let owner = new_caller().await;
    let client = ApiClient::new(Some(&owner.token));
    let (id, _) = client.create("Keep me").await;
    let cases = [
        (vec![], "sessionId is required"),
        (vec![("sessionId", "nope")], "sessionId must be a UUID"),
        (vec![("sessionId", "")], "sessionId must not be empty"),
    ];
    for (query, message) in cases {
        let (status, _, body) = client.delete("session", &query).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({ "error": message })));
    }
    let stranger = ApiClient::new(Some(&caller_in(&owner.user_id, &unique("org")).await.token));
    let (status, _, _) = stranger.delete("session", &[("sessionId", &id)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut cross_site = client.clone();
    cross_site.origin = Some("https://evil.example".into());
    let (status, _, _) = cross_site.delete("session", &[("sessionId", &id)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = ApiClient::new(None).delete("session", &[("sessionId", &id)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let session = session_item(&id).await.expect("still there");
    assert!(attr(&session, "deleted_at").is_none() && attr(&session, "cancelled_at").is_none());
    assert!(!event_items(&id).await.is_empty());
}

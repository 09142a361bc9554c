//! `GET /api/managed-agents/transcript` through its handler, against the emulator: paging by
//! cursor, tenant scope, and every kind of bad input.

use aws_sdk_dynamodb::types::AttributeValue;
use knoq_shared::App;
use knoq_shared::clock::Timestamp;
use knoq_shared::domain::{EventId, MessageText, RunId, SessionId};
use knoq_shared::routes::transcript::{self, PAGE_SIZE};
use knoq_shared::workflow::TURN_TIMEOUT;
use knoq_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

async fn transcript_as(app: &App, who: As<'_>, query: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, body) =
        read(transcript::handle(app, get("/api/managed-agents/transcript", who, query)).await);
    (status, body)
}

/// A session of `caller` (with a run that has no execution behind it, so nothing else
/// writes to it) holding its opening message and `extra` more events.
async fn session_with_events(app: &App, caller: &Caller, extra: usize) -> String {
    session_with_texts(app, caller, extra, |i| format!("part {i}")).await
}

/// As [`session_with_events`], each extra event's text made by `text`.
async fn session_with_texts(
    app: &App,
    caller: &Caller,
    extra: usize,
    text_of: impl Fn(usize) -> String,
) -> String {
    let scope = scope_of(app, caller).await;
    let id = SessionId::new();
    let text = MessageText::parse("A long conversation".into()).unwrap();
    app.sessions
        .create(&scope, &id, &text, &RunId::new(), TURN_TIMEOUT, Timestamp::now())
        .await
        .unwrap();
    for i in 0..extra {
        add_event(app, &id.as_string(), &text_of(i)).await;
    }
    id.as_string()
}

/// Writes an `agent_message` of `text` to session `id` as an append does (the event, then
/// the session naming it as its last); its id.
async fn add_event(app: &App, id: &str, text: &str) -> String {
    let db = dynamodb().await;
    let event_id = EventId::new().as_str().to_owned();
    db.put_item()
        .table_name(&app.config.tables.events)
        .item("session_id", AttributeValue::S(id.to_owned()))
        .item("event_id", AttributeValue::S(event_id.clone()))
        .item("type", AttributeValue::S("agent_message".into()))
        .item("occurred_at", AttributeValue::S(Timestamp::now().rfc3339()))
        .item("payload", AttributeValue::S(json!({ "text": text }).to_string()))
        .send()
        .await
        .unwrap();
    db.update_item()
        .table_name(&app.config.tables.sessions)
        .key("id", AttributeValue::S(id.to_owned()))
        .update_expression("SET last_event_id = :last")
        .expression_attribute_values(":last", AttributeValue::S(event_id.clone()))
        .send()
        .await
        .unwrap();
    event_id
}

/// A session of `caller` with one event after its opening message, and that event's id.
async fn session_at_its_end(app: &App, caller: &Caller) -> (String, String) {
    let id = session_with_events(app, caller, 1).await;
    let who = As { token: Some(&caller.token), origin: None };
    let (_, page) = transcript_as(app, who, &[("sessionId", &id)]).await;
    let last = event_ids(&page).last().unwrap().clone();
    (id, last)
}

fn event_ids(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pages_are_bounded_ordered_and_continue_from_the_cursor() {
    let app = app().await;
    let caller = new_caller().await;
    let id = session_with_events(&app, &caller, PAGE_SIZE + 30).await;
    let who = As { token: Some(&caller.token), origin: None };

    let (status, first) = transcript_as(&app, who.clone(), &[("sessionId", &id)]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["title"], "A long conversation");
    assert_eq!(first["backfillFailed"], false);
    assert!(first["workflowRunId"].is_string(), "the run is live until its timeout");
    assert_eq!(first["hasMore"], true);
    let events = first["events"].as_array().unwrap();
    assert_eq!(events.len(), PAGE_SIZE);
    assert_eq!(events[0]["type"], "user_message");
    assert_eq!(events[0]["payload"], json!({ "text": "A long conversation" }));
    assert_eq!(events[1]["payload"], json!({ "text": "part 0" }));
    for event in events {
        let keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "type", "occurredAt", "payload"]);
    }
    let first_ids = event_ids(&first);
    let mut sorted = first_ids.clone();
    sorted.sort();
    assert_eq!(first_ids, sorted, "ascending");

    let cursor = first_ids.last().unwrap();
    let (status, second) =
        transcript_as(&app, who.clone(), &[("sessionId", &id), ("sinceEventId", cursor)]).await;
    assert_eq!(status, 200);
    assert_eq!(second["hasMore"], false);
    let second_ids = event_ids(&second);
    assert_eq!(second_ids.len(), 31);
    assert!(second_ids.iter().all(|later| later > cursor), "only events after the cursor");

    let last = second_ids.last().unwrap();
    let (_, empty) =
        transcript_as(&app, who.clone(), &[("sessionId", &id), ("sinceEventId", last)]).await;
    assert_eq!((empty["events"].as_array().unwrap().len(), &empty["hasMore"]), (0, &json!(false)));
    let (_, from_first) =
        transcript_as(&app, who, &[("sessionId", &id), ("sinceEventId", &first_ids[0])]).await;
    assert_eq!(event_ids(&from_first)[..PAGE_SIZE - 1], first_ids[1..], "cursor excluded");
}

#[tokio::test]
async fn a_page_of_large_events_stays_within_a_lambda_response_and_says_more_follow() {
    let app = app().await;
    let caller = new_caller().await;
    // 80 events of 64,000 bytes: 5 MB, more than one Lambda response (6 MB) may carry with
    // the JSON around it once a page nears 100 such events, and many 1 MB queries.
    let id =
        session_with_texts(&app, &caller, 80, |i| format!("{i:02}{}", "\u{1D11E}".repeat(15_999)))
            .await;
    let who = As { token: Some(&caller.token), origin: None };
    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        let mut query = vec![("sessionId", id.as_str())];
        let cursor = seen.last().cloned();
        if let Some(cursor) = &cursor {
            query.push(("sinceEventId", cursor.as_str()));
        }
        let (status, page) = transcript_as(&app, who.clone(), &query).await;
        assert_eq!(status, 200);
        assert!(page.to_string().len() < 5 * 1024 * 1024, "a page stays well under 6 MB");
        pages += 1;
        seen.extend(event_ids(&page));
        if page["hasMore"] == false {
            break;
        }
    }
    assert_eq!(pages, 2, "the byte budget splits 81 large events into two pages");
    let stored: Vec<String> = event_items(&id)
        .await
        .iter()
        .map(|item| attr(item, "event_id").unwrap().to_owned())
        .collect();
    assert_eq!((seen.len(), &seen), (81, &stored), "every event once, in order");
}

#[tokio::test]
async fn events_past_the_sessions_last_event_wait_for_the_next_read() {
    // An event whose session item does not name it yet is one whose append has not
    // committed from the reader's point of view: the page stops at the session's last event.
    let app = app().await;
    let caller = new_caller().await;
    let id = session_with_events(&app, &caller, 1).await;
    dynamodb()
        .await
        .put_item()
        .table_name(&app.config.tables.events)
        .item("session_id", AttributeValue::S(id.clone()))
        .item("event_id", AttributeValue::S(EventId::new().as_str().to_owned()))
        .item("type", AttributeValue::S("agent_message".into()))
        .item("occurred_at", AttributeValue::S(Timestamp::now().rfc3339()))
        .item("payload", AttributeValue::S("{}".into()))
        .send()
        .await
        .unwrap();
    let who = As { token: Some(&caller.token), origin: None };
    let (status, body) = transcript_as(&app, who, &[("sessionId", &id)]).await;
    assert_eq!(status, 200);
    assert_eq!(body["events"].as_array().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn bad_queries_are_400_naming_the_parameter() {
    let app = app().await;
    let caller = new_caller().await;
    let id = session_with_events(&app, &caller, 0).await;
    let who = As { token: Some(&caller.token), origin: None };
    let wait_message = "waitSeconds must be a whole number of seconds from 0 to 20";
    let cases: [(&[(&str, &str)], &str); 12] = [
        (&[], "sessionId is required"),
        (&[("sessionId", "")], "sessionId must not be empty"),
        (&[("sessionId", "not-a-uuid")], "sessionId must be a UUID"),
        (&[("sessionId", &id), ("sessionId", &id)], "sessionId must be given once"),
        (
            &[("sessionId", &id), ("sinceEventId", "last-time")],
            "sinceEventId must be an event id (a UUID)",
        ),
        (&[("sessionId", &id), ("sinceEventId", "")], "sinceEventId must be an event id (a UUID)"),
        (&[("sessionId", &id), ("waitSeconds", "21")], wait_message),
        (&[("sessionId", &id), ("waitSeconds", "-1")], wait_message),
        (&[("sessionId", &id), ("waitSeconds", "1.5")], wait_message),
        (&[("sessionId", &id), ("waitSeconds", "+5")], wait_message),
        (&[("sessionId", &id), ("waitSeconds", "")], wait_message),
        (
            &[("sessionId", &id), ("waitSeconds", "1"), ("waitSeconds", "2")],
            "waitSeconds must be given once",
        ),
    ];
    for (query, message) in cases {
        let (status, body) = transcript_as(&app, who.clone(), query).await;
        assert_eq!((status, body), (400, json!({ "error": message })), "{query:?}");
    }
}

#[tokio::test]
async fn other_tenants_and_unknown_sessions_are_404_and_cookies_are_required() {
    let app = app().await;
    let owner = new_caller().await;
    let id = session_with_events(&app, &owner, 0).await;
    let query = [("sessionId", id.as_str())];
    let not_found = (404, json!({ "error": "session not found" }));
    for stranger in [
        caller_in(&unique("user"), &owner.org_id).await,
        caller_in(&owner.user_id, &unique("org")).await,
    ] {
        let who = As { token: Some(&stranger.token), origin: None };
        assert_eq!(transcript_as(&app, who, &query).await, not_found);
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    let who = As { token: Some(&owner.token), origin: None };
    assert_eq!(transcript_as(&app, who, &[("sessionId", &unknown)]).await, not_found);

    let (status, _) = transcript_as(&app, As::default(), &query).await;
    assert_eq!(status, 401);
    let expired = issue_token(&owner.user_id, &owner.org_id, -60).await;
    let (status, body) =
        transcript_as(&app, As { token: Some(&expired), origin: None }, &query).await;
    assert_eq!((status, body), (401, json!({ "error": "session cookie has expired" })));
}

#[tokio::test]
async fn a_waiting_read_answers_as_soon_as_an_event_is_written_after_its_cursor() {
    let app = app().await;
    let caller = new_caller().await;
    let (id, last) = session_at_its_end(&app, &caller).await;
    let who = As { token: Some(&caller.token), origin: None };
    let started = std::time::Instant::now();
    let query =
        [("sessionId", id.as_str()), ("sinceEventId", last.as_str()), ("waitSeconds", "15")];
    let reader = transcript_as(&app, who, &query);
    let writer = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        add_event(&app, &id, "news").await
    };
    let ((status, page), written) = tokio::join!(reader, writer);
    assert_eq!(status, 200, "{page}");
    assert_eq!(event_ids(&page), [written], "exactly the new event: {page}");
    assert_eq!(page["events"][0]["payload"], json!({ "text": "news" }));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(700), "it waited for the event: {waited:?}");
    assert!(
        waited < Duration::from_secs(10),
        "it answered with the event, not at its end: {waited:?}"
    );
}

#[tokio::test]
async fn a_waiting_read_with_nothing_new_answers_an_empty_page_when_its_wait_ends() {
    let app = app().await;
    let caller = new_caller().await;
    let (id, last) = session_at_its_end(&app, &caller).await;
    let who = As { token: Some(&caller.token), origin: None };
    let started = std::time::Instant::now();
    let query = [("sessionId", id.as_str()), ("sinceEventId", last.as_str()), ("waitSeconds", "1")];
    let (status, page) = transcript_as(&app, who, &query).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["hasMore"], false);
    assert_eq!(page["title"], "A long conversation");
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_waiting_read_with_events_to_show_or_no_cursor_answers_at_once() {
    let app = app().await;
    let caller = new_caller().await;
    let id = session_with_events(&app, &caller, 2).await;
    let who = As { token: Some(&caller.token), origin: None };
    let (_, page) = transcript_as(&app, who.clone(), &[("sessionId", &id)]).await;
    let ids = event_ids(&page);
    for query in [
        vec![("sessionId", id.as_str()), ("waitSeconds", "20")],
        vec![("sessionId", id.as_str()), ("sinceEventId", ids[0].as_str()), ("waitSeconds", "20")],
    ] {
        let started = std::time::Instant::now();
        let (status, page) = transcript_as(&app, who.clone(), &query).await;
        assert_eq!(status, 200, "{page}");
        assert!(!page["events"].as_array().unwrap().is_empty(), "{query:?}: {page}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{query:?} waited {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_session_deleted_while_a_read_waits_ends_the_wait_with_404() {
    let app = app().await;
    let caller = new_caller().await;
    let (id, last) = session_at_its_end(&app, &caller).await;
    let scope = scope_of(&app, &caller).await;
    let who = As { token: Some(&caller.token), origin: None };
    let started = std::time::Instant::now();
    let query =
        [("sessionId", id.as_str()), ("sinceEventId", last.as_str()), ("waitSeconds", "20")];
    let reader = transcript_as(&app, who, &query);
    let deleter = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let session = SessionId::parse(&id).unwrap();
        app.sessions.mark_deleted(&scope, &session, "a-delete", Timestamp::now()).await.unwrap();
    };
    let ((status, body), ()) = tokio::join!(reader, deleter);
    assert_eq!((status, body), (404, json!({ "error": "session not found" })));
    assert!(started.elapsed() < Duration::from_secs(15), "cut short: {:?}", started.elapsed());
}

//! `POST /api/managed-agents/cancel` through its handler, against the emulator: every row of
//! the contract's table, tenant isolation, bad input that changes nothing, and races.

use futures::future::join_all;
use knoq_shared::App;
use knoq_shared::clock::Timestamp;
use knoq_shared::domain::SessionId;
use knoq_shared::routes::{cancel, create_session};
use knoq_shared::store::sessions::CancelOutcome;
use knoq_tests::*;
use serde_json::{Value, json};

/// Creates a session owned by `caller` through the create-session handler; returns its id.
async fn create(app: &App, caller: &Caller) -> String {
    let origin = app.config.allowed_origin.clone();
    let request = post(
        "/api/managed-agents/session",
        caller.with_origin(&origin),
        r#"{"text":"plan a trip"}"#,
    );
    let (status, _, body) = read(create_session::handle(app, request).await);
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn cancel_as(
    app: &App,
    who: As<'_>,
    body: impl Into<String>,
) -> (u16, Option<String>, Value) {
    read(cancel::handle(app, post("/api/managed-agents/cancel", who, body)).await)
}

/// A fresh owner with one session of theirs, and the allowed origin.
struct Fixture {
    app: App,
    caller: Caller,
    id: String,
    origin: String,
}

async fn fixture() -> Fixture {
    let app = app().await;
    let caller = new_caller().await;
    let id = create(&app, &caller).await;
    let origin = app.config.allowed_origin.clone();
    Fixture { app, caller, id, origin }
}

fn body_for(id: &str) -> String {
    json!({ "sessionId": id }).to_string()
}

#[tokio::test]
async fn first_cancel_answers_exactly_ok_and_stamps_the_session() {
    let Fixture { app, caller, id, origin } = fixture().await;

    let (status, _, body) = cancel_as(&app, caller.with_origin(&origin), body_for(&id)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "ok": true }), "no alreadyCancelled field on a first cancel");

    let item = session_item(&id).await.unwrap();
    let cancelled_at = attr(&item, "cancelled_at").expect("cancelled_at stamped");
    assert!(cancelled_at.ends_with('Z') && cancelled_at.len() == 24, "{cancelled_at}");
    // The woken run may already have written its status_terminated after the stamp.
    assert!(attr(&item, "updated_at").unwrap() >= cancelled_at, "{item:?}");
    let events = event_items(&id).await;
    assert_eq!(attr(&events[0], "type"), Some("user_message"), "cancelling deletes nothing");
    assert!(events[1..].iter().all(|e| attr(e, "type") == Some("status_terminated")));
}

/// Waits until the run, woken by the cancel, has written the session's termination.
async fn terminated(id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while attr(&session_item(id).await.unwrap(), "terminated_at").is_none() {
        assert!(std::time::Instant::now() < deadline, "session {id} was not terminated");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn second_cancel_reports_already_cancelled_and_keeps_the_timestamp() {
    let Fixture { app, caller, id, origin } = fixture().await;
    cancel_as(&app, caller.with_origin(&origin), body_for(&id)).await;
    terminated(&id).await;
    let first = session_item(&id).await.unwrap();

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, _, body) = cancel_as(&app, caller.with_origin(&origin), body_for(&id)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "ok": true, "alreadyCancelled": true }));
    let second = session_item(&id).await.unwrap();
    assert_eq!(attr(&first, "cancelled_at"), attr(&second, "cancelled_at"));
    assert_eq!(attr(&first, "updated_at"), attr(&second, "updated_at"), "nothing rewritten");
}

#[tokio::test]
async fn missing_unknown_and_expired_cookies_are_401_and_change_nothing() {
    let Fixture { app, caller, id, origin } = fixture().await;
    let expired = issue_token(&caller.user_id, &caller.org_id, -1).await;
    let unknown = knoq_shared::auth::new_token();
    let cases = [
        (As { token: None, origin: Some(&origin) }, "sign in required: no session cookie"),
        (As { token: Some(&unknown), origin: Some(&origin) }, "session cookie is not valid"),
        (As { token: Some(&expired), origin: Some(&origin) }, "session cookie has expired"),
    ];
    let counters_before = counters_of(&caller.user_id).await.len();
    for (who, message) in cases {
        let (status, _, body) = cancel_as(&app, who, body_for(&id)).await;
        assert_eq!((status, body), (401, json!({ "error": message })));
    }
    assert!(attr(&session_item(&id).await.unwrap(), "cancelled_at").is_none());
    assert_eq!(counters_of(&caller.user_id).await.len(), counters_before, "401s are not counted");
}

#[tokio::test]
async fn foreign_or_missing_origin_is_403_and_changes_nothing() {
    let Fixture { app, caller, id, .. } = fixture().await;
    for origin in [None, Some("https://evil.example"), Some("null")] {
        let who = As { token: Some(&caller.token), origin };
        let (status, _, body) = cancel_as(&app, who, body_for(&id)).await;
        assert_eq!(status, 403);
        assert!(body["error"].as_str().unwrap().contains("Origin"), "{body}");
    }
    assert!(attr(&session_item(&id).await.unwrap(), "cancelled_at").is_none());
    let cancel_counters = counters_of(&caller.user_id).await.into_iter();
    let counted =
        cancel_counters.filter(|c| attr(c, "pk").is_some_and(|pk| pk.starts_with("cancel#")));
    assert_eq!(counted.count(), 0, "403s are not counted");
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_problem_and_change_nothing() {
    let Fixture { app, caller, id, origin } = fixture().await;
    let cases = [
        ("", "request body is required (a JSON object)"),
        ("{\"sessionId\":", "request body is not valid JSON"),
        ("sessionId=abc", "request body is not valid JSON"),
        ("[]", "request body must be a JSON object"),
        ("{}", "sessionId is required"),
        ("{\"sessionId\":null}", "sessionId is required"),
        ("{\"sessionId\":\"\"}", "sessionId must not be empty"),
        ("{\"sessionId\":42}", "sessionId must be a string"),
        ("{\"sessionId\":[\"x\"]}", "sessionId must be a string"),
        ("{\"sessionId\":\"not-a-uuid\"}", "sessionId must be a UUID"),
    ];
    for (raw, message) in cases {
        let (status, _, body) = cancel_as(&app, caller.with_origin(&origin), raw).await;
        assert_eq!((status, body), (400, json!({ "error": message })), "body {raw:?}");
    }
    assert!(attr(&session_item(&id).await.unwrap(), "cancelled_at").is_none());
}

#[tokio::test]
async fn two_megabyte_body_is_413_and_changes_nothing() {
    let Fixture { app, caller, id, origin } = fixture().await;
    let huge = format!("{{\"sessionId\":\"{id}\",\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (status, _, body) = cancel_as(&app, caller.with_origin(&origin), huge).await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap().contains("larger than"));
    assert!(attr(&session_item(&id).await.unwrap(), "cancelled_at").is_none());
}

#[tokio::test]
async fn other_tenants_get_404_for_a_session_that_exists() {
    let Fixture { app, caller: owner, id, origin } = fixture().await;
    let same_user_other_org = caller_in(&owner.user_id, &unique("org")).await;
    let other_user_same_org = caller_in(&unique("user"), &owner.org_id).await;
    for intruder in [&same_user_other_org, &other_user_same_org] {
        let (status, _, body) = cancel_as(&app, intruder.with_origin(&origin), body_for(&id)).await;
        assert_eq!((status, body), (404, json!({ "error": "session not found" })));
    }
    assert!(attr(&session_item(&id).await.unwrap(), "cancelled_at").is_none());

    // The owner can still cancel, and then an intruder still sees 404, not "already cancelled".
    let (status, _, body) = cancel_as(&app, owner.with_origin(&origin), body_for(&id)).await;
    assert_eq!((status, body), (200, json!({ "ok": true })));
    let (status, _, _) =
        cancel_as(&app, other_user_same_org.with_origin(&origin), body_for(&id)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_session_is_404_and_creates_no_item() {
    let app = app().await;
    let caller = new_caller().await;
    let origin = app.config.allowed_origin.clone();
    let id = uuid::Uuid::new_v4().to_string();
    let (status, _, body) = cancel_as(&app, caller.with_origin(&origin), body_for(&id)).await;
    assert_eq!((status, body), (404, json!({ "error": "session not found" })));
    assert!(session_item(&id).await.is_none(), "a failed condition must not create the item");
}

#[tokio::test]
async fn uppercase_session_id_names_the_same_session() {
    let Fixture { app, caller, id, origin } = fixture().await;
    let (status, _, body) =
        cancel_as(&app, caller.with_origin(&origin), body_for(&id.to_uppercase())).await;
    assert_eq!((status, body), (200, json!({ "ok": true })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_cancels_of_one_session_make_exactly_one_first_cancel() {
    let Fixture { app, caller, id, .. } = fixture().await;
    let session_id = SessionId::parse(&id).unwrap();
    let scope = scope_of(&app, &caller).await;
    let outcomes =
        join_all((0..120).map(|i| {
            let (app, scope, session_id) = (&app, &scope, &session_id);
            let request = format!("request-{i}");
            async move {
                app.sessions.cancel(scope, session_id, &request, Timestamp::now()).await.unwrap()
            }
        }))
        .await;
    let firsts = outcomes.iter().filter(|o| matches!(o, CancelOutcome::Cancelled { .. })).count();
    let already =
        outcomes.iter().filter(|o| matches!(o, CancelOutcome::AlreadyCancelled(_))).count();
    assert_eq!((firsts, already), (1, 119));

    let stored = session_item(&id).await.unwrap();
    let stamped = attr(&stored, "cancelled_at").unwrap().to_string();
    let winner = outcomes.iter().position(|o| matches!(o, CancelOutcome::Cancelled { .. }));
    let stamp_request = attr(&stored, "cancel_request_id").unwrap().to_string();
    assert_eq!(
        stamp_request,
        format!("request-{}", winner.unwrap()),
        "the stamp names its request"
    );
    assert_eq!(attr(&stored, "cancelled_by"), Some(scope.user_id()));
    for outcome in &outcomes {
        if let CancelOutcome::AlreadyCancelled(session) = outcome {
            let seen = session.cancelled_at.as_deref();
            assert_eq!(seen, Some(stamped.as_str()), "every loser saw the winner's timestamp");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cancel_requests_through_the_handler_make_exactly_one_first_cancel() {
    with_window_room(20).await;
    let Fixture { app, caller, id, origin } = fixture().await;
    let answers =
        join_all((0..30).map(|_| cancel_as(&app, caller.with_origin(&origin), body_for(&id))))
            .await;
    let firsts =
        answers.iter().filter(|(s, _, b)| *s == 200 && *b == json!({ "ok": true })).count();
    let already = answers
        .iter()
        .filter(|(s, _, b)| *s == 200 && *b == json!({ "ok": true, "alreadyCancelled": true }))
        .count();
    assert_eq!((firsts, already), (1, 29));
}

#[tokio::test]
async fn unknown_or_malformed_cookies_cost_no_read_once_known() {
    let sdk = knoq_shared::app::load_sdk_config().await;
    let trips = knoq_shared::store::Attempts::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        knoq_shared::store::dynamodb_config(&sdk).interceptor(trips.clone()).build(),
    );
    let app = App::with_dynamodb(config(), &sdk, client);
    let origin = app.config.allowed_origin.clone();
    let id = SessionId::new().as_string();
    let unknown = knoq_shared::auth::new_token();
    let not_valid = json!({ "error": "session cookie is not valid" });
    let mut reads = Vec::new();
    for token in [unknown.as_str(), unknown.as_str(), "tok", &format!("{unknown}=")] {
        let who = As { token: Some(token), origin: Some(&origin) };
        let (status, _, body) = cancel_as(&app, who, body_for(&id)).await;
        assert_eq!((status, &body), (401, &not_valid));
        reads.push(trips.take());
    }
    // Two reads for the first unknown token (the eventually consistent one, then the strongly
    // consistent one a miss gets: a cookie issued a moment ago may not have reached the first),
    // none after.
    assert_eq!(reads, [2, 0, 0, 0], "two reads for the first unknown token, none after");
}

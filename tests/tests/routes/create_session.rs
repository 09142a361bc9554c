//! `POST /api/managed-agents/session` through its handler, against the emulator.

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use knoq_shared::clock::Timestamp;
use knoq_shared::domain::{MessageText, RunId, SessionId};
use knoq_shared::routes::create_session;
use knoq_shared::workflow::TURN_TIMEOUT;
use knoq_tests::*;
use serde_json::{Value, json};

async fn create_as(
    app: &knoq_shared::App,
    who: As<'_>,
    body: impl Into<String>,
) -> (u16, Option<String>, Value) {
    read(create_session::handle(app, post("/api/managed-agents/session", who, body)).await)
}

async fn put_organisation(org_id: &str, attributes: &[(&str, AttributeValue)]) {
    let mut request = dynamodb()
        .await
        .put_item()
        .table_name(config().tables.organisations)
        .item("org_id", AttributeValue::S(org_id.into()));
    for (name, value) in attributes {
        request = request.item(*name, value.clone());
    }
    request.send().await.unwrap();
}

#[tokio::test]
async fn creates_the_session_and_its_opening_event() {
    let app = app().await;
    let caller = new_caller().await;
    let origin = app.config.allowed_origin.clone();
    let text = format!("  {}", "Plan a three-day trip to Lisbon with a budget. ".repeat(3));
    let (status, _, body) =
        create_as(&app, caller.with_origin(&origin), json!({ "text": text }).to_string()).await;
    assert_eq!(status, 200, "{body}");
    let run_id = body["runId"].as_str().expect("a run was started");
    assert!(uuid::Uuid::try_parse(run_id).is_ok(), "{run_id}");
    assert_eq!(body["noConnectors"], true);
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    let id = body["id"].as_str().unwrap();
    assert!(SessionId::parse(id).is_some());

    let session = session_item(id).await.expect("session stored");
    assert_eq!(attr(&session, "user_id"), Some(caller.user_id.as_str()));
    assert_eq!(attr(&session, "org_id"), Some(caller.org_id.as_str()));
    assert_eq!(attr(&session, "title").unwrap(), text.trim().chars().take(60).collect::<String>());
    assert_eq!(attr(&session, "status"), Some("running"));
    assert_eq!(attr(&session, "active_run"), Some(run_id), "the session names its run");
    assert_eq!(attr(&session, "created_at"), attr(&session, "updated_at"));
    assert!(attr(&session, "cancelled_at").is_none());

    let events = event_items(id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(attr(&events[0], "type"), Some("user_message"));
    assert_eq!(attr(&events[0], "occurred_at"), attr(&session, "created_at"));
    let payload: Value = serde_json::from_str(attr(&events[0], "payload").unwrap()).unwrap();
    assert_eq!(payload, json!({ "text": text }));
    assert_eq!(sessions_owned(&caller.user_id, &caller.org_id).await, 1);
}

#[tokio::test]
async fn no_connectors_is_false_when_the_organisation_has_some() {
    let app = app().await;
    let caller = new_caller().await;
    put_organisation(&caller.org_id, &[("connectors", AttributeValue::Ss(vec!["github".into()]))])
        .await;
    let origin = app.config.allowed_origin.clone();
    let (status, _, body) = create_as(&app, caller.with_origin(&origin), r#"{"text":"hi"}"#).await;
    assert_eq!((status, &body["noConnectors"]), (200, &json!(false)));
}

#[tokio::test]
async fn a_plan_without_new_sessions_is_403_and_writes_nothing() {
    let app = app().await;
    let caller = new_caller().await;
    put_organisation(
        &caller.org_id,
        &[
            ("plan", AttributeValue::S("lapsed".into())),
            ("allows_new_sessions", AttributeValue::Bool(false)),
        ],
    )
    .await;
    let origin = app.config.allowed_origin.clone();
    let (status, _, body) = create_as(&app, caller.with_origin(&origin), r#"{"text":"hi"}"#).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("plan"), "{body}");
    assert_eq!(sessions_owned(&caller.user_id, &caller.org_id).await, 0);
}

#[tokio::test]
async fn bad_text_is_400_naming_the_field_and_writes_nothing() {
    let app = app().await;
    let caller = new_caller().await;
    let origin = app.config.allowed_origin.clone();
    let too_long = json!({ "text": "a".repeat(16_001) }).to_string();
    let cases = [
        ("{}".to_string(), "text is required"),
        (r#"{"text":null}"#.to_string(), "text is required"),
        (r#"{"text":""}"#.to_string(), "text must not be empty"),
        (r#"{"text":" \n\t "}"#.to_string(), "text must not be empty"),
        (r#"{"text":7}"#.to_string(), "text must be a string"),
        (r#"{"text":{"a":1}}"#.to_string(), "text must be a string"),
        (too_long, "text must be at most 16000 characters"),
        ("text=hello".to_string(), "request body is not valid JSON"),
    ];
    for (raw, message) in cases {
        let (status, _, body) = create_as(&app, caller.with_origin(&origin), raw.clone()).await;
        assert_eq!((status, body), (400, json!({ "error": message })), "body {raw:.40}");
    }
    assert_eq!(sessions_owned(&caller.user_id, &caller.org_id).await, 0);
}

#[tokio::test]
async fn oversized_body_is_413_and_writes_nothing() {
    let app = app().await;
    let caller = new_caller().await;
    let origin = app.config.allowed_origin.clone();
    let huge = json!({ "text": "x".repeat(2 * 1024 * 1024) }).to_string();
    let (status, _, _) = create_as(&app, caller.with_origin(&origin), huge).await;
    assert_eq!(status, 413);
    assert_eq!(sessions_owned(&caller.user_id, &caller.org_id).await, 0);
}

#[tokio::test]
async fn unauthenticated_or_cross_origin_is_refused_before_anything_is_written() {
    let app = app().await;
    let caller = new_caller().await;
    let origin = app.config.allowed_origin.clone();
    let (status, _, _) =
        create_as(&app, As { token: None, origin: Some(&origin) }, r#"{"text":"hi"}"#).await;
    assert_eq!(status, 401);
    let (status, _, _) = create_as(
        &app,
        As { token: Some(&caller.token), origin: Some("https://evil.example") },
        r#"{"text":"hi"}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(sessions_owned(&caller.user_id, &caller.org_id).await, 0);
}

#[tokio::test]
async fn session_and_first_event_are_written_both_or_neither() {
    let app = app().await;
    let caller = new_caller().await;
    let scope = scope_of(&app, &caller).await;
    let id = SessionId::new();
    let text = MessageText::parse("first".into()).unwrap();
    let create = |text| {
        let (app, scope, id) = (&app, &scope, &id);
        async move {
            app.sessions
                .create(scope, id, &text, &RunId::new(), TURN_TIMEOUT, Timestamp::now())
                .await
        }
    };
    create(text).await.unwrap();
    // A second create with the same id fails on the session's condition; its event must not
    // be written either.
    let again = MessageText::parse("second".into()).unwrap();
    assert!(create(again).await.is_err());
    let events = event_items(&id.as_string()).await;
    assert_eq!(events.len(), 1, "the failed transaction wrote no event");
    assert!(attr(&events[0], "payload").unwrap().contains("first"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_ten_sessions_a_minute_per_user() {
    with_window_room(20).await;
    let app = app().await;
    let caller = new_caller().await;
    let origin = app.config.allowed_origin.clone();
    let answers =
        join_all((0..14).map(|_| create_as(&app, caller.with_origin(&origin), r#"{"text":"go"}"#)))
            .await;
    assert_eq!(answers.iter().filter(|(s, _, _)| *s == 200).count(), 10);
    let limited: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(limited.len(), 4);
    for (_, retry_after, _) in limited {
        let secs: u64 = retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs));
    }
    assert_eq!(sessions_owned(&caller.user_id, &caller.org_id).await, 10);
}

#[tokio::test]
async fn a_run_that_cannot_start_is_502_and_leaves_the_session_idle_with_an_error_event() {
    let mut config = config();
    config.workflow.state_machine_arn =
        Some("arn:aws:states:us-east-1:123456789012:stateMachine:no-such-machine".into());
    let app = knoq_shared::App::new(config, &knoq_shared::app::load_sdk_config().await);
    let caller = new_caller().await;
    let origin = app.config.allowed_origin.clone();
    let (status, _, body) = create_as(&app, caller.with_origin(&origin), r#"{"text":"hi"}"#).await;
    assert_eq!(
        (status, body),
        (502, json!({ "error": "the agent could not be started; try again" }))
    );

    let owned = sessions_of(&caller.user_id, &caller.org_id).await;
    assert_eq!(owned.len(), 1, "the session and its opening message stay");
    let id = attr(&owned[0], "id").unwrap();
    let session = session_item(id).await.unwrap();
    assert_eq!(attr(&session, "status"), Some("idle"));
    assert!(attr(&session, "active_run").is_none(), "no run holds the session");
    let types: Vec<_> =
        event_items(id).await.iter().map(|e| attr(e, "type").unwrap().to_owned()).collect();
    assert_eq!(types, ["user_message", "error"]);
}

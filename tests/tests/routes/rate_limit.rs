//! The DynamoDB-backed rate limiter under concurrency, and the cancel, transcript and list
//! routes' use of it.

use futures::future::join_all;
use knoq_shared::App;
use knoq_shared::clock::Timestamp;
use knoq_shared::error::ApiError;
use knoq_shared::rate_limit::{Limit, Maxima, RateLimits, RouteLimits};
use knoq_shared::routes::{cancel, list_sessions, transcript};
use knoq_tests::*;
use serde_json::json;

/// 2030-01-01T00:00:05Z: five seconds into a minute and into an hour.
const START_OF_HOUR_MS: i64 = 1_893_456_005_000;

fn retry_after(error: &ApiError) -> u64 {
    match error {
        ApiError::RateLimited { retry_after_secs, .. } => *retry_after_secs,
        other => panic!("expected 429, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_requests_admit_exactly_thirty() {
    let app = app().await;
    let scope = scope_of(&app, &new_caller().await).await;
    let now = Timestamp::from_epoch_millis(START_OF_HOUR_MS);
    let results =
        join_all((0..100).map(|_| app.limiter.admit(&scope, &app.config.rate_limits.cancel, now)))
            .await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 30);
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.status(), 429);
        assert_eq!(retry_after(refused), 55, "window ends 55 s after :05");
    }
    // The next window starts from zero.
    let next = Timestamp::from_epoch_millis(START_OF_HOUR_MS + 60_000);
    assert!(app.limiter.admit(&scope, &app.config.rate_limits.cancel, next).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_are_per_user() {
    let app = app().await;
    let now = Timestamp::from_epoch_millis(START_OF_HOUR_MS);
    let busy = scope_of(&app, &new_caller().await).await;
    let other = scope_of(&app, &new_caller().await).await;
    for _ in 0..30 {
        app.limiter.admit(&busy, &app.config.rate_limits.cancel, now).await.unwrap();
    }
    assert!(app.limiter.admit(&busy, &app.config.rate_limits.cancel, now).await.is_err());
    assert!(app.limiter.admit(&other, &app.config.rate_limits.cancel, now).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_limits_hold_together_and_a_refusal_consumes_none() {
    let app = app().await;
    let scope = scope_of(&app, &new_caller().await).await;
    let route = &app.config.rate_limits.create_session; // 10 a minute AND 20 an hour
    let minute = |m: i64| Timestamp::from_epoch_millis(START_OF_HOUR_MS + m * 60_000);
    let (app, scope_ref) = (&app, &scope);
    let burst = |now| join_all((0..15).map(move |_| app.limiter.admit(scope_ref, route, now)));

    let first = burst(minute(0)).await;
    assert_eq!(first.iter().filter(|r| r.is_ok()).count(), 10, "minute limit");
    let second = burst(minute(1)).await;
    assert_eq!(second.iter().filter(|r| r.is_ok()).count(), 10, "minute limit again");
    let third = burst(minute(2)).await;
    assert_eq!(third.iter().filter(|r| r.is_ok()).count(), 0, "hour limit: 20 used");
    let refused = third[0].as_ref().unwrap_err();
    assert_eq!(retry_after(refused), 3600 - 5 - 120, "told to wait for the hour window");
    assert!(refused.to_string().contains("per hour"), "{refused}");

    // The refused third burst did not consume minute-2 capacity: with a fresh hour it is full.
    let minute_counter = counters_of(scope.user_id())
        .await
        .into_iter()
        .filter(|item| attr(item, "pk").is_some_and(|pk| pk.contains("#60#")))
        .map(|item| item["hits"].as_n().unwrap().parse::<u32>().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(minute_counter.len(), 2, "only the two admitted minutes have counters");
    assert!(minute_counter.iter().all(|hits| *hits == 10));
}

#[tokio::test]
async fn counters_carry_a_ttl_past_their_window() {
    let app = app().await;
    let scope = scope_of(&app, &new_caller().await).await;
    let now = Timestamp::from_epoch_millis(START_OF_HOUR_MS);
    let tiny = RouteLimits {
        route: "probe",
        what: "probes",
        limits: vec![Limit { max: 1, window_secs: 60 }],
    };
    app.limiter.admit(&scope, &tiny, now).await.unwrap();
    let items = counters_of(scope.user_id()).await;
    assert_eq!(items.len(), 1);
    let expires_at: i64 = items[0]["expires_at"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires_at, (START_OF_HOUR_MS / 60_000 + 1) * 60 + 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_counts_every_authenticated_request_including_400_and_404() {
    with_window_room(20).await;
    let app = app().await;
    let caller = new_caller().await;
    let origin = app.config.allowed_origin.clone();
    let probe = json!({ "sessionId": uuid::Uuid::new_v4().to_string() }).to_string();
    let answers = join_all((0..100).map(|i| {
        let body = if i % 2 == 0 { probe.clone() } else { "not json".to_string() };
        let request = post("/api/managed-agents/cancel", caller.with_origin(&origin), body);
        let app = &app;
        async move { read(cancel::handle(app, request).await) }
    }))
    .await;
    let limited: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
    assert_eq!(answers.len() - limited.len(), 30, "exactly 30 got past the limiter");
    assert!(answers.iter().all(|(status, _, _)| [400, 404, 429].contains(status)));
    for (_, retry_after, body) in limited {
        let secs: u64 = retry_after.as_deref().expect("Retry-After header").parse().unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
        assert!(body["error"].as_str().unwrap().starts_with("rate limit exceeded"));
    }
}

/// An app against the emulator that allows `max` reads a minute: the test stack's own limit
/// is raised for the tests that poll transcripts (infra/local/run.sh).
async fn app_with_read_limit(max: u32) -> App {
    let mut config = config();
    config.rate_limits = RateLimits::new(Maxima { reads_per_minute: max, ..Maxima::default() });
    App::new(config, &knoq_shared::app::load_sdk_config().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transcript_and_list_share_one_read_limit_per_user_that_only_authenticated_reads_use() {
    with_window_room(20).await;
    let app = app_with_read_limit(3).await;
    let caller = new_caller().await;
    let session = quiet_session(&app, &caller, "Read me").await;
    let expired = issue_token(&caller.user_id, &caller.org_id, -60).await;
    let as_caller = As { token: Some(&caller.token), origin: None };
    let transcript_of = |who: As<'_>, id: &str| {
        let request = get("/api/managed-agents/transcript", who, &[("sessionId", id)]);
        let app = &app;
        async move { read(transcript::handle(app, request).await) }
    };
    let list = |who: As<'_>| {
        let request = get("/api/managed-agents/sessions", who, &[]);
        let app = &app;
        async move { read(list_sessions::handle(app, request).await) }
    };
    let unauthenticated = || async {
        for token in [None, Some(expired.as_str())] {
            let who = As { token, origin: None };
            assert_eq!(transcript_of(who.clone(), &session).await.0, 401);
            assert_eq!(list(who).await.0, 401);
        }
    };

    // Refused at the cookie (none, or this very user's expired one): no counter is touched.
    unauthenticated().await;
    assert!(counters_of(&caller.user_id).await.is_empty(), "a 401 counted");

    // Three reads of either route, a 404 among them (every authenticated request counts) ...
    assert_eq!(transcript_of(as_caller.clone(), &session).await.0, 200);
    assert_eq!(list(as_caller.clone()).await.0, 200);
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(transcript_of(as_caller.clone(), &unknown).await.0, 404);
    // ... and the fourth, of either route, is refused.
    let refused = [list(as_caller.clone()).await, transcript_of(as_caller.clone(), &session).await];
    for (status, retry_after, body) in refused {
        assert_eq!(status, 429, "{body}");
        let secs: u64 = retry_after.as_deref().expect("Retry-After header").parse().unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
        let error = body["error"].as_str().expect("{\"error\": ...}");
        assert!(error.starts_with("rate limit exceeded: at most 3 "), "{error}");
        assert!(error.contains("per minute"), "{error}");
    }

    // One counter for both routes, holding exactly the admitted reads.
    let counters = counters_of(&caller.user_id).await;
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert!(attr(&counters[0], "pk").unwrap().starts_with("reads#"), "{counters:?}");
    assert_eq!(number(&counters[0], "hits"), Some(3));

    // Still 401, not 429, without a valid cookie, and still nothing counted for it.
    unauthenticated().await;
    assert_eq!(number(&counters_of(&caller.user_id).await[0], "hits"), Some(3));

    // Another user, even in the same organisation, reads on.
    let other = caller_in(&unique("user"), &caller.org_id).await;
    let as_other = As { token: Some(&other.token), origin: None };
    assert_eq!(list(as_other.clone()).await.0, 200);
    assert_eq!(transcript_of(as_other, &session).await.0, 404, "not theirs, but not limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_transcript_read_counts_once_against_the_read_limit() {
    with_window_room(20).await;
    let app = app_with_read_limit(2).await;
    let caller = new_caller().await;
    let session = quiet_session(&app, &caller, "Wait for me").await;
    let who = As { token: Some(&caller.token), origin: None };
    let read_with = |query: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let request = get("/api/managed-agents/transcript", who.clone(), &pairs);
        let app = &app;
        async move { read(transcript::handle(app, request).await) }
    };
    let (status, _, page) = read_with(vec![("sessionId", session.clone())]).await;
    assert_eq!(status, 200, "{page}");
    let last = page["events"][0]["id"].as_str().unwrap().to_owned();
    // Two seconds of waiting: about ten reads of the session, one admission.
    let waiting =
        vec![("sessionId", session.clone()), ("sinceEventId", last), ("waitSeconds", "2".into())];
    let (status, _, page) = read_with(waiting).await;
    assert_eq!((status, &page["events"]), (200, &json!([])), "{page}");
    assert_eq!(number(&counters_of(&caller.user_id).await[0], "hits"), Some(2));
    let (status, _, body) = read_with(vec![("sessionId", session)]).await;
    assert_eq!(status, 429, "the third read is over the limit of 2: {body}");
}

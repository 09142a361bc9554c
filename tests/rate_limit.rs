//! The DynamoDB-backed rate limiter under concurrency, and the cancel route's use of it.

use futures::future::join_all;
use knoq_shared::clock::Instant;
use knoq_shared::error::ApiError;
use knoq_shared::rate_limit::{Limit, RouteLimits};
use knoq_shared::routes::cancel;
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
    let now = Instant::from_epoch_millis(START_OF_HOUR_MS);
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
    let next = Instant::from_epoch_millis(START_OF_HOUR_MS + 60_000);
    assert!(app.limiter.admit(&scope, &app.config.rate_limits.cancel, next).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_are_per_user() {
    let app = app().await;
    let now = Instant::from_epoch_millis(START_OF_HOUR_MS);
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
    let minute = |m: i64| Instant::from_epoch_millis(START_OF_HOUR_MS + m * 60_000);
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
    let now = Instant::from_epoch_millis(START_OF_HOUR_MS);
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

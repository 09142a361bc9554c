//! The functions over real HTTP: `cargo lambda watch` serving the real API paths (started by
//! `make test`), with cookies from the operator command, exactly as a user drives them.

use knoq_tests::*;
use reqwest::StatusCode;
use serde_json::json;

fn cancel_body(id: &str) -> String {
    json!({ "sessionId": id }).to_string()
}

#[tokio::test]
async fn walk_through_token_create_cancel_cancel_again() {
    let (user, org) = (unique("user"), unique("org"));
    let client = ApiClient::new(Some(&operator_token(&user, &org)));
    let (status, _, body) = client.post("session", r#"{"text":"Summarise my inbox"}"#).await;
    assert_eq!(status, 200);
    assert!(body["runId"].is_string(), "{body}");
    let id = body["id"].as_str().unwrap();

    let (status, _, body) = client.post("cancel", cancel_body(id)).await;
    assert_eq!((status, body.to_string()), (StatusCode::OK, r#"{"ok":true}"#.to_string()));
    let (status, _, body) = client.post("cancel", cancel_body(id)).await;
    assert_eq!(
        (status, body.to_string()),
        (StatusCode::OK, r#"{"ok":true,"alreadyCancelled":true}"#.to_string())
    );
    assert!(attr(&session_item(id).await.unwrap(), "cancelled_at").is_some());
}

#[tokio::test]
async fn every_error_of_the_cancel_contract_over_http() {
    let owner = new_caller().await;
    let client = ApiClient::new(Some(&owner.token));
    let (id, _) = client.create("something to cancel").await;

    let (status, _, body) = client.post("cancel", "{oops").await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({ "error": "request body is not valid JSON" }))
    );
    let (status, _, body) = client.post("cancel", r#"{"sessionId":"nope"}"#).await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({ "error": "sessionId must be a UUID" }))
    );

    let (status, _, _) = ApiClient::new(None).post("cancel", cancel_body(&id)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let expired = issue_token(&owner.user_id, &owner.org_id, -60).await;
    let (status, _, body) = ApiClient::new(Some(&expired)).post("cancel", cancel_body(&id)).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({ "error": "session cookie has expired" }))
    );

    let mut cross_site = ApiClient::new(Some(&owner.token));
    cross_site.origin = Some("https://evil.example".into());
    let (status, _, _) = cross_site.post("cancel", cancel_body(&id)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    cross_site.origin = None;
    let (status, _, _) = cross_site.post("cancel", cancel_body(&id)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let other_org = caller_in(&owner.user_id, &unique("org")).await;
    let (status, _, body) =
        ApiClient::new(Some(&other_org.token)).post("cancel", cancel_body(&id)).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({ "error": "session not found" })));

    let huge = format!("{{\"sessionId\":\"{id}\",\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (status, _, _) = client.post("cancel", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    assert!(
        attr(&session_item(&id).await.unwrap(), "cancelled_at").is_none(),
        "no error changed anything"
    );
}

#[tokio::test]
async fn the_thirty_first_cancel_in_a_minute_is_429_with_retry_after() {
    with_window_room(30).await;
    let client = ApiClient::new(Some(&new_caller().await.token));
    let probe = cancel_body(&uuid::Uuid::new_v4().to_string());
    for _ in 0..30 {
        let (status, _, _) = client.post("cancel", probe.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, retry_after, body) = client.post("cancel", probe).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs));
    assert!(body["error"].as_str().unwrap().contains("30 cancel requests per minute"), "{body}");
}

//! SPEC §8, the robustness promises, over real HTTP against the local stack: transcript
//! paging whatever the event sizes.

use std::time::Duration;

use knoq_tests::*;
use serde_json::Value;

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

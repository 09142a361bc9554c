//! Deletes that cannot finish their purge in the request (out of time, DynamoDB failing
//! half-way), over HTTP on the local stack, and the purge sweeper that finishes them
//! (invoked as its schedule invokes it). SPEC §8: delete removes every event of the session,
//! however long the transcript, even when the request that started it is interrupted.

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use knoq_shared::App;
use knoq_shared::clock::Timestamp;
use knoq_shared::domain::{EventId, SessionId};
use knoq_shared::test_hooks::PURGE_BUDGET_FAULT_HEADER;
use knoq_tests::*;
use serde_json::{Value, json};

/// A caller's quiet session (no execution behind its run) holding its opening message and
/// `extra` more events.
async fn session_with_events(extra: usize) -> (ApiClient, String) {
    let app = app().await;
    let caller = new_caller().await;
    let id = quiet_session(&app, &caller, "A long conversation").await;
    add_events(&app, &id, extra).await;
    assert_eq!(event_items(&id).await.len(), extra + 1);
    (ApiClient::new(Some(&caller.token)), id)
}

async fn add_events(app: &App, session_id: &str, count: usize) {
    let db = dynamodb().await;
    let events: Vec<WriteRequest> = (0..count)
        .map(|i| {
            let put = PutRequest::builder()
                .item("session_id", AttributeValue::S(session_id.into()))
                .item("event_id", AttributeValue::S(EventId::new().as_str().to_owned()))
                .item("type", AttributeValue::S("agent_message".into()))
                .item("occurred_at", AttributeValue::S(Timestamp::now().rfc3339()))
                .item(
                    "payload",
                    AttributeValue::S(json!({ "text": format!("part {i}") }).to_string()),
                )
                .build()
                .unwrap();
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for batch in events.chunks(25) {
        let output = db
            .batch_write_item()
            .request_items(&app.config.tables.events, batch.to_vec())
            .send()
            .await
            .unwrap();
        assert!(output.unprocessed_items.unwrap_or_default().is_empty());
    }
}

/// One run of the purge sweeper taking over every purge, however recent: its report.
async fn sweep_now() -> Value {
    invoke("purge-sweeper", json!({ "graceSeconds": 0 })).await
}

/// What a delete that returned has left of the session: gone for its owner, the tombstone
/// still in the purge queue.
async fn assert_deleted_for_the_owner_with_tombstone(client: &ApiClient, id: &str) {
    let (status, _, _) = client.get("transcript", &[("sessionId", id)]).await;
    assert_eq!(status.as_u16(), 404, "the transcript is gone from the delete's answer on");
    assert!(client.sessions().await.iter().all(|s| s["id"] != id), "never listed");
    let tombstone = session_item(id).await.expect("the marked session stays until its purge ends");
    assert!(attr(&tombstone, "deleted_at").is_some());
    assert_eq!(attr(&tombstone, "purge_queue"), Some("pending"));
    assert!(!tombstone.contains_key("expires_at"), "no TTL: it outlives its events");
}

#[tokio::test]
async fn a_delete_out_of_time_answers_ok_and_the_sweeper_removes_the_rest() {
    let (client, id) = session_with_events(99).await;

    // A budget of 0 ms: one batch of 25 goes, then the delete's time is up.
    let (status, _, answer) = client
        .delete_with("session", &[("sessionId", &id)], &[(PURGE_BUDGET_FAULT_HEADER, "0")])
        .await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })));
    assert_eq!(event_items(&id).await.len(), 75, "one batch removed, the rest left");
    assert_deleted_for_the_owner_with_tombstone(&client, &id).await;

    let report = sweep_now().await;
    assert!(report["finished"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["eventsDeleted"].as_u64().unwrap() >= 75, "{report}");
    assert!(event_items(&id).await.is_empty(), "every event is gone");
    assert!(session_item(&id).await.is_none(), "and the tombstone after them");
    let (status, _, _) = client.delete("session", &[("sessionId", &id)]).await;
    assert_eq!(status.as_u16(), 404, "a second delete is 404");
}

#[tokio::test]
async fn a_delete_whose_purge_fails_half_way_is_finished_by_the_sweeper_once_dynamodb_recovers() {
    let (client, id) = session_with_events(99).await;
    // The first two batches are removed, then every BatchWriteItem of this session fails.
    let failing = Fault::new("BatchWriteItem", "EventsTable", "InternalServerError")
        .after(2)
        .containing(&id)
        .plant()
        .await;

    let (status, _, answer) = client.delete("session", &[("sessionId", &id)]).await;
    assert_eq!((status.as_u16(), &answer), (200, &json!({ "ok": true })), "the mark is the delete");
    assert!(failing.hits().await >= 1);
    assert_eq!(event_items(&id).await.len(), 50, "two batches removed before the failure");
    assert_deleted_for_the_owner_with_tombstone(&client, &id).await;

    // While DynamoDB still fails, a sweep fails this purge and keeps it queued.
    let report = sweep_now().await;
    assert!(report["failed"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(event_items(&id).await.len(), 50);
    assert!(session_item(&id).await.is_some(), "still queued");

    failing.clear().await;
    let report = sweep_now().await;
    assert!(report["finished"].as_u64().unwrap() >= 1, "{report}");
    assert!(event_items(&id).await.is_empty());
    assert!(session_item(&id).await.is_none());
}

#[tokio::test]
async fn a_purge_resumed_with_no_time_left_still_gets_on_a_batch_at_a_time() {
    let app = app().await;
    let caller = new_caller().await;
    let scope = scope_of(&app, &caller).await;
    let id = quiet_session(&app, &caller, "Long").await;
    add_events(&app, &id, 59).await;
    let session = SessionId::parse(&id).unwrap();
    app.sessions.mark_deleted(&scope, &session, &unique("delete"), Timestamp::now()).await.unwrap();

    let mut rounds = Vec::new();
    loop {
        let progress = app.purger.purge_session(&session, std::time::Instant::now()).await.unwrap();
        rounds.push(progress.deleted);
        if progress.finished {
            break;
        }
        assert!(rounds.len() < 10, "{rounds:?}");
    }
    assert_eq!(rounds, vec![25, 25, 10], "each call removed one batch, whatever its deadline");
    assert!(session_item(&id).await.is_none(), "the tombstone goes with the last batch");
    // The queue no longer names it (the index is eventually consistent: give it a moment).
    let mut queued = true;
    for _ in 0..20 {
        let page = app.sessions.pending_purges(Timestamp::now(), 1000, None).await.unwrap();
        queued = page.sessions.iter().any(|(queued, _)| *queued == session);
        if !queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!queued);
}

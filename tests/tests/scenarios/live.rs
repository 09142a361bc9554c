//! Live turns (issue 16) end to end: waiting transcript reads against a running turn, and the
//! text flush that lets a reader see the model's text while it is written.

use std::time::Duration;

use knoq_tests::*;
use serde_json::Value;

/// The id of the last event of the session's first transcript page.
async fn last_event_id(client: &ApiClient, id: &str) -> String {
    let transcript = client.transcript(id).await;
    transcript["events"].as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_waiting_read_is_woken_by_the_cancel_of_a_silent_turn() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("woken");
    let (id, _) = client.create(&format!("Wait [[emu tag={tag} notool=1 silent_ms=30000]]")).await;
    provider_calls_until(&tag, Duration::from_secs(20), |calls| {
        calls.first().is_some_and(|call| !call["firstByteAtMs"].is_null())
    })
    .await;
    // The model is silent: nothing follows the opening message until the cancel.
    let cursor = last_event_id(&client, &id).await;
    let reader = {
        let client = client.clone();
        let (id, cursor) = (id.clone(), cursor.clone());
        tokio::spawn(async move {
            let answer = client.wait_for_events(&id, &cursor, 20).await;
            (answer, epoch_ms())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    if reader.is_finished() {
        let ((status, _, page), _) = reader.await.unwrap();
        panic!("the read should wait while the model is silent, but answered {status}: {page}");
    }
    let asked = epoch_ms();
    assert_eq!(client.cancel(&id).await["ok"], true);
    let ((status, _, page), answered_at) = reader.await.unwrap();
    assert_eq!(status, 200, "{page}");
    let types: Vec<&str> =
        page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["status_terminated"], "{page}");
    assert!(page["events"][0]["payload"]["cancelledBy"].is_string(), "{page}");
    let after_cancel = answered_at - asked;
    assert!(
        after_cancel < 15_000,
        "woken by the cancel, not at the end of its wait: {after_cancel} ms"
    );
}

#[tokio::test]
async fn a_follower_sees_streamed_text_in_half_second_pieces_that_add_up_to_the_answer() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("flush");
    // About 6 s of streaming, a word every 100 ms.
    let (id, _) =
        client.create(&format!("Tell me [[emu tag={tag} notool=1 words=60 delay_ms=100]]")).await;
    let first = client.transcript(&id).await;
    let cursor = first["events"][0]["id"].as_str().unwrap().to_owned();
    let seen = client.follow_until(&id, &cursor, "status_idle", Duration::from_secs(60)).await;
    let pieces: Vec<&Value> =
        seen.iter().map(|(_, e)| e).filter(|e| e["type"] == "agent_message").collect();
    let text: String = pieces.iter().map(|e| e["payload"]["text"].as_str().unwrap()).collect();
    let calls = provider_calls(&tag).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(text, calls[0]["textSent"].as_str().unwrap(), "the pieces are the model's text");
    // Flushed every 0.5 s over ~6 s: about 12 pieces. Every 2 s (the old pace) makes 4 at most.
    assert!(pieces.len() >= 6, "{} pieces: {pieces:?}", pieces.len());
    // The follower held them as they were written, not all at the end.
    let arrivals: std::collections::BTreeSet<i64> = seen.iter().map(|(at, _)| *at).collect();
    assert!(arrivals.len() >= 4, "answers arrived at {arrivals:?}");
}

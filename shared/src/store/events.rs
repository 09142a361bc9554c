//! Reading a session's transcript from the events table (`session_id`, `event_id`).
//!
//! Event ids are time-ordered (UUID v7) and every append is guarded so that a new id sorts
//! after the session's last one, so "the events after X" is a key condition
//! (`event_id > :since`) on one partition, never a scan or a filter.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
use serde_json::Value;

use super::{StoreError, UNPROCESSED_RETRIES, get_s, pause_before_resend, require_s, s};
use crate::domain::EventId;

/// One transcript event as answered.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The event id (the transcript cursor).
    pub id: String,
    /// The event type, e.g. `agent_message`.
    pub kind: String,
    /// When it was written (RFC 3339, UTC, milliseconds).
    pub occurred_at: String,
    /// The event's JSON payload.
    pub payload: Value,
    /// The turn it belongs to, where recorded (internal: never answered).
    pub turn: Option<u64>,
}

/// Most items one `BatchWriteItem` may carry (a DynamoDB limit).
const BATCH_WRITE_MAX: usize = 25;

/// About the most bytes one transcript page's events take in the function's answer, as
/// Lambda counts them. A synchronous Lambda answer may not exceed 6 MB, and for API Gateway
/// that answer is a JSON document whose `body` is the HTTP body escaped as a JSON string:
/// every `"` and `\` of the body doubled, control characters six bytes. So an event is
/// counted by its escaped size ([`event_bytes`]), not its stored one: 100 messages of 16,000
/// `"` each are 3.2 MB stored and 6.4 MB escaped. 4 MiB leaves room for one more event of
/// the largest item DynamoDB holds (400 KB stored, at most twice that escaped) and the JSON
/// around the events.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// What one [`EventStore::purge`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeProgress {
    /// Events it deleted.
    pub deleted: usize,
    /// Whether the session has no event left (false: its deadline came first).
    pub finished: bool,
}

/// One page of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<StoredEvent>,
    /// True when more events follow the last one of this page.
    pub has_more: bool,
}

/// An event item as answered.
fn stored_event(item: &super::Item) -> Result<StoredEvent, StoreError> {
    let payload = get_s(item, "payload").unwrap_or("null");
    Ok(StoredEvent {
        id: require_s(item, "event_id")?,
        kind: require_s(item, "type")?,
        occurred_at: require_s(item, "occurred_at")?,
        payload: serde_json::from_str(payload)
            .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
        turn: super::get_i64(item, "turn_seq").map(|turn| turn.max(0) as u64),
    })
}

/// About how many bytes an event item takes in a transcript page's Lambda answer: its stored
/// payload (JSON text, which the body carries as it is) and the fields around it, each byte
/// counted as it is once the body is escaped into the API Gateway answer's `body` string.
fn event_bytes(item: &super::Item) -> usize {
    const ENVELOPE: usize = 200; // field names, id, type, timestamp, escaped
    ENVELOPE + get_s(item, "payload").map_or(0, escaped_in_body)
}

/// How many bytes `text`, part of an HTTP body, takes once the body is a JSON string.
pub fn escaped_in_body(text: &str) -> usize {
    text.bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            byte if byte < 0x20 => 6,
            _ => 1,
        })
        .sum()
}

/// Reads transcript events.
#[derive(Debug, Clone)]
pub struct EventStore {
    client: Client,
    table: String,
}

impl EventStore {
    /// A store over the events table.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// At most `limit` events of `session_id` after `since` (from the start without it) and
    /// up to `upto` included, oldest first, and at most about [`PAGE_BYTES`] of them. With
    /// `upto` the session's `last_event_id` as read just before, the page and that session
    /// read are one consistent snapshot: an event appended in between (which also moved
    /// `last_event_id`) is left for the next call.
    ///
    /// One `Query` reads at most 1 MB, so a page of large events takes several: each goes on
    /// from the last one's `LastEvaluatedKey` until the page holds one event more than
    /// `limit` (which says, without another request, that another page waits), the byte
    /// budget is spent, or the range is exhausted. So `has_more` is true exactly when events
    /// follow the page, whatever their sizes.
    pub async fn page(
        &self,
        session_id: &str,
        since: Option<&EventId>,
        upto: &EventId,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        if since.is_some_and(|since| since >= upto) {
            return Ok(EventPage { events: Vec::new(), has_more: false });
        }
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut start = None;
        loop {
            // BETWEEN includes `since`: the first request asks for one more and drops it.
            let wanted = limit + 1 - events.len() + usize::from(start.is_none() && since.is_some());
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":id", s(session_id))
                .expression_attribute_values(":upto", s(upto.as_str()))
                .limit(i32::try_from(wanted).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            let query = match since {
                Some(since) => query
                    .key_condition_expression(
                        "session_id = :id AND event_id BETWEEN :since AND :upto",
                    )
                    .expression_attribute_values(":since", s(since.as_str())),
                None => query.key_condition_expression("session_id = :id AND event_id <= :upto"),
            };
            let output = query.send().await.map_err(|e| StoreError::sdk("Query", e))?;
            for item in output.items() {
                if since.is_some_and(|since| get_s(item, "event_id") == Some(since.as_str())) {
                    continue;
                }
                bytes += event_bytes(item);
                if !events.is_empty() && bytes > PAGE_BYTES {
                    return Ok(EventPage { events, has_more: true });
                }
                events.push(stored_event(item)?);
                if events.len() > limit {
                    events.truncate(limit);
                    return Ok(EventPage { events, has_more: true });
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(EventPage { events, has_more: false }),
            }
        }
    }

    /// The latest events of `session_id` up to `upto` included, oldest first: read newest
    /// first, a page at a time, until `enough` says the events read so far (newest first)
    /// suffice or the transcript is exhausted. How a worker reads the conversation it sends
    /// without loading a long transcript whole.
    pub async fn latest(
        &self,
        session_id: &str,
        upto: &EventId,
        mut enough: impl FnMut(&[StoredEvent]) -> bool,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("session_id = :id AND event_id <= :upto")
                .expression_attribute_values(":id", s(session_id))
                .expression_attribute_values(":upto", s(upto.as_str()))
                .scan_index_forward(false)
                .limit(100)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::sdk("Query", e))?;
            for item in output.items() {
                events.push(stored_event(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() && !enough(&events) => start = Some(key),
                _ => break,
            }
        }
        events.reverse();
        Ok(events)
    }

    /// Deletes the events of `session_id` until none is left or `deadline` has passed:
    /// pages of keys from a strongly consistent `Query`, removed with `BatchWriteItem` in
    /// batches of 25, unprocessed items sent again with a growing wait. The deadline is
    /// looked at after each batch, so every call removes at least one batch (a purge resumed
    /// again and again always gets on). The session must already refuse new events (marked
    /// deleted), so the pages see them all.
    pub async fn purge(
        &self,
        session_id: &str,
        deadline: std::time::Instant,
    ) -> Result<PurgeProgress, StoreError> {
        let mut deleted = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("session_id = :id")
                .expression_attribute_values(":id", s(session_id))
                .projection_expression("session_id, event_id")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::sdk("Query", e))?;
            let keys = page.items.unwrap_or_default();
            let last_page = page.last_evaluated_key.as_ref().is_none_or(|key| key.is_empty());
            let batches = keys.len().div_ceil(BATCH_WRITE_MAX);
            for (index, chunk) in keys.chunks(BATCH_WRITE_MAX).enumerate() {
                let requests = chunk
                    .iter()
                    .map(|key| {
                        let delete = DeleteRequest::builder()
                            .set_key(Some(key.clone()))
                            .build()
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        Ok(WriteRequest::builder().delete_request(delete).build())
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                self.write_all(requests).await?;
                deleted += chunk.len();
                let done = last_page && index + 1 == batches;
                if !done && std::time::Instant::now() >= deadline {
                    return Ok(PurgeProgress { deleted, finished: false });
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(PurgeProgress { deleted, finished: true }),
            }
        }
    }

    /// Sends one batch, then what DynamoDB left unprocessed, until none is left.
    async fn write_all(&self, mut requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for attempt in 0..=UNPROCESSED_RETRIES {
            if attempt > 0 {
                pause_before_resend(attempt).await;
            }
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| StoreError::sdk("BatchWriteItem", e))?;
            requests = output
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
        }
        Err(StoreError::Unfinished(format!(
            "{} event deletes still unprocessed after {UNPROCESSED_RETRIES} retries",
            requests.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_counts_as_its_payload_escaped_into_the_answer() {
        assert_eq!(escaped_in_body("abc"), 3);
        assert_eq!(escaped_in_body("\"\\"), 4);
        assert_eq!(escaped_in_body("\u{1}\n"), 8);
        // The largest message of quotes: stored as JSON text (each quote escaped once), then
        // escaped again in the answer.
        let payload = serde_json::json!({ "text": "\"".repeat(16_000) }).to_string();
        assert!(escaped_in_body(&payload) >= 4 * 16_000);
        // 100 of them no longer fit one page.
        let item = super::super::Item::from([("payload".to_owned(), s(&payload))]);
        assert!(100 * event_bytes(&item) > PAGE_BYTES);
        const { assert!(PAGE_BYTES + 2 * 400_000 + 64 * 1024 < 6_000_000, "a page fits") };
    }
}

//! Reading a session's transcript from the events table (`session_id`, `event_id`).
//!
//! Event ids are time-ordered (UUID v7) and every append is guarded so that a new id sorts
//! after the session's last one, so "the events after X" is a key condition
//! (`event_id > :since`) on one partition, never a scan or a filter.

use aws_sdk_dynamodb::Client;
use serde_json::Value;

use super::{StoreError, get_s, require_s, s};
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
}

/// One page of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<StoredEvent>,
    /// True when more events follow the last one of this page.
    pub has_more: bool,
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
    /// up to `upto` included, oldest first. With `upto` the session's `last_event_id` as read
    /// just before, the page and that session read are one consistent snapshot: an event
    /// appended in between (which also moved `last_event_id`) is left for the next call.
    /// It asks for one more than `limit` to know, without a second request, whether
    /// another page waits.
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
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .expression_attribute_values(":id", s(session_id))
            .expression_attribute_values(":upto", s(upto.as_str()));
        // BETWEEN includes `since`: ask for one more and drop it below.
        let (query, extra) = match since {
            Some(since) => (
                query
                    .key_condition_expression(
                        "session_id = :id AND event_id BETWEEN :since AND :upto",
                    )
                    .expression_attribute_values(":since", s(since.as_str())),
                2,
            ),
            None => (query.key_condition_expression("session_id = :id AND event_id <= :upto"), 1),
        };
        let query = query.limit(i32::try_from(limit + extra).unwrap_or(i32::MAX));
        let output = query.send().await.map_err(|e| StoreError::sdk("Query", e))?;
        let mut events = output
            .items
            .unwrap_or_default()
            .iter()
            .filter(|item| {
                since.is_none_or(|since| get_s(item, "event_id") != Some(since.as_str()))
            })
            .map(|item| {
                let payload = get_s(item, "payload").unwrap_or("null");
                Ok(StoredEvent {
                    id: require_s(item, "event_id")?,
                    kind: require_s(item, "type")?,
                    occurred_at: require_s(item, "occurred_at")?,
                    payload: serde_json::from_str(payload)
                        .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let has_more = events.len() > limit;
        events.truncate(limit);
        Ok(EventPage { events, has_more })
    }
}

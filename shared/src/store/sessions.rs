//! The sessions table (`id`) and the events table (`session_id`, `event_id`).
//!
//! A session item: `id, owner (org#user), user_id, org_id, title, status, created_at,
//! updated_at` and, once cancelled, `cancelled_at, cancelled_by, cancel_request_id`.
//! An event item: `session_id, event_id (UUID v7, time-ordered), type, occurred_at,
//! payload (JSON text)`.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem};

use super::{Item, StoreError, get_s, s};
use crate::clock::Instant;
use crate::domain::{EventId, EventType, MessageText, SessionId, UserScope};

/// Status of a session that has no turn running.
pub const STATUS_IDLE: &str = "idle";

/// What one cancel request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// This request stamped `cancelled_at`: it is the first cancel.
    Cancelled,
    /// The session was already cancelled; the stored timestamp is left as it was.
    AlreadyCancelled {
        /// The timestamp the first cancel stored.
        cancelled_at: String,
    },
    /// No such session for this user and organisation.
    NotFound,
}

/// Reads and writes sessions and their transcript events.
#[derive(Debug, Clone)]
pub struct SessionStore {
    client: Client,
    sessions_table: String,
    events_table: String,
}

impl SessionStore {
    /// A store over the two tables.
    pub fn new(client: Client, sessions_table: String, events_table: String) -> Self {
        Self { client, sessions_table, events_table }
    }

    /// Writes a new session and its opening `user_message` event in one transaction: both
    /// or neither. Returns the event's id.
    pub async fn create(
        &self,
        scope: &UserScope,
        id: &SessionId,
        text: &MessageText,
        now: Instant,
    ) -> Result<EventId, StoreError> {
        let at = now.rfc3339();
        let event_id = EventId::new();
        let session = Put::builder()
            .table_name(&self.sessions_table)
            .item("id", s(id.as_string()))
            .item("owner", s(scope.owner_key()))
            .item("user_id", s(scope.user_id()))
            .item("org_id", s(scope.org_id()))
            .item("title", s(text.title()))
            .item("status", s(STATUS_IDLE))
            .item("created_at", s(&at))
            .item("updated_at", s(&at))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let payload = serde_json::json!({ "text": text.as_str() }).to_string();
        let event = Put::builder()
            .table_name(&self.events_table)
            .item("session_id", s(id.as_string()))
            .item("event_id", s(event_id.as_str()))
            .item("type", s(EventType::UserMessage.as_str()))
            .item("occurred_at", s(&at))
            .item("payload", s(payload))
            .condition_expression("attribute_not_exists(event_id)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(session).build())
            .transact_items(TransactWriteItem::builder().put(event).build())
            .send()
            .await
            .map_err(|e| StoreError::sdk("TransactWriteItems", e))?;
        Ok(event_id)
    }

    /// Cancels a session with ONE conditional `UpdateItem`: it stamps `cancelled_at` only if
    /// the session exists, belongs to `scope` (user AND organisation) and is not cancelled
    /// yet. When the condition fails, DynamoDB returns the old item
    /// (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), which tells "already cancelled" from
    /// "not found or not yours" without a read before the write.
    pub async fn cancel(
        &self,
        scope: &UserScope,
        id: &SessionId,
        request_id: &str,
        now: Instant,
    ) -> Result<CancelOutcome, StoreError> {
        let at = now.rfc3339();
        let result = self
            .client
            .update_item()
            .table_name(&self.sessions_table)
            .key("id", s(id.as_string()))
            .update_expression(
                "SET cancelled_at = :now, cancelled_by = :user, cancel_request_id = :rid, \
                 updated_at = :now",
            )
            .condition_expression(
                "attribute_exists(id) AND user_id = :user AND org_id = :org \
                 AND attribute_not_exists(cancelled_at)",
            )
            .expression_attribute_values(":now", s(&at))
            .expression_attribute_values(":user", s(scope.user_id()))
            .expression_attribute_values(":org", s(scope.org_id()))
            .expression_attribute_values(":rid", s(request_id))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(CancelOutcome::Cancelled),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(classify_failed_cancel(scope, failed.item()))
                }
                _ => Err(StoreError::sdk("UpdateItem", error)),
            },
        }
    }
}

/// Reads the old item a failed cancel condition returned: the caller's own, already
/// cancelled session is "already cancelled"; anything else (no item, another user's or
/// another organisation's) is "not found", so ids cannot be probed across tenants.
fn classify_failed_cancel(scope: &UserScope, old: Option<&Item>) -> CancelOutcome {
    let Some(old) = old else {
        return CancelOutcome::NotFound;
    };
    let owned = get_s(old, "user_id") == Some(scope.user_id())
        && get_s(old, "org_id") == Some(scope.org_id());
    match (owned, get_s(old, "cancelled_at")) {
        (true, Some(cancelled_at)) => {
            CancelOutcome::AlreadyCancelled { cancelled_at: cancelled_at.to_owned() }
        }
        _ => CancelOutcome::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> UserScope {
        UserScope::from_auth_record("u1".into(), "o1".into())
    }

    fn item(user: &str, org: &str, cancelled_at: Option<&str>) -> Item {
        let mut item =
            Item::from([("user_id".to_string(), s(user)), ("org_id".to_string(), s(org))]);
        if let Some(at) = cancelled_at {
            item.insert("cancelled_at".into(), s(at));
        }
        item
    }

    #[test]
    fn own_cancelled_session_is_already_cancelled() {
        let old = item("u1", "o1", Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(
            classify_failed_cancel(&scope(), Some(&old)),
            CancelOutcome::AlreadyCancelled { cancelled_at: "2026-01-01T00:00:00.000Z".into() }
        );
    }

    #[test]
    fn missing_or_foreign_sessions_are_not_found() {
        let at = Some("2026-01-01T00:00:00.000Z");
        assert_eq!(classify_failed_cancel(&scope(), None), CancelOutcome::NotFound);
        for old in [item("u2", "o1", at), item("u1", "o2", at), item("u2", "o1", None)] {
            assert_eq!(classify_failed_cancel(&scope(), Some(&old)), CancelOutcome::NotFound);
        }
    }
}

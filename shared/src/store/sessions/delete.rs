//! A delete's mark (naming its request), and the purge queue the sweeper reads.

use super::*;

impl SessionStore {
    /// Marks the caller's session deleted, cancelling it if it was not (so a run in flight
    /// exits at its next poll, writing nothing), with one conditional `UpdateItem`. From
    /// then on every route answers 404 for it and no event can be appended. The mark also
    /// puts the session in the [`PURGE_QUEUE_INDEX`], so that a purge interrupted at any
    /// point is finished by the sweeper; the item has no TTL, it outlives its events. The mark
    /// names its request (`delete_request_id`), so that a write the SDK sent again after a lost
    /// answer recognises its own mark, and never another request's of the same millisecond.
    pub async fn mark_deleted(
        &self,
        scope: &UserScope,
        id: &SessionId,
        request_id: &str,
        now: Timestamp,
    ) -> Result<DeleteMark, StoreError> {
        let at = now.rfc3339();
        let result = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.sessions_table)
                .key("id", s(id.as_string()))
                .update_expression(
                    "SET deleted_at = :now, cancelled_at = if_not_exists(cancelled_at, :now), \
                 updated_at = :now, purge_queue = :pending, delete_request_id = :request",
                )
                .condition_expression(
                    "attribute_exists(id) AND user_id = :user AND org_id = :org \
                 AND attribute_not_exists(deleted_at)",
                )
                .expression_attribute_values(":now", s(&at))
                .expression_attribute_values(":pending", s(PURGE_PENDING))
                .expression_attribute_values(":user", s(scope.user_id()))
                .expression_attribute_values(":org", s(scope.org_id()))
                .expression_attribute_values(":request", s(request_id))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(DeleteMark::Marked),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(classify_failed_delete(scope, failed.item(), request_id))
                }
                _ => Err(StoreError::sdk("UpdateItem", error)),
            },
        }
    }

    /// One page of up to `limit` sessions marked deleted at or before `marked_before` whose
    /// purge is not known to be finished, oldest mark first (one `Query` of the
    /// [`PURGE_QUEUE_INDEX`]), each with when it was marked; `after` is the previous page's
    /// `next`.
    pub async fn pending_purges(
        &self,
        marked_before: Timestamp,
        limit: usize,
        after: Option<Item>,
    ) -> Result<PurgeQueuePage, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.sessions_table)
            .index_name(PURGE_QUEUE_INDEX)
            .key_condition_expression("purge_queue = :pending AND deleted_at <= :before")
            .expression_attribute_values(":pending", s(PURGE_PENDING))
            .expression_attribute_values(":before", s(marked_before.rfc3339()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(after)
            .send()
            .await
            .map_err(|e| StoreError::sdk("Query", e))?;
        let sessions = output
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                let id = SessionId::parse(&require_s(item, "id")?)
                    .ok_or_else(|| StoreError::Corrupt("purge queue: a malformed id".into()))?;
                let marked =
                    Timestamp::parse_rfc3339(&require_s(item, "deleted_at")?).ok_or_else(|| {
                        StoreError::Corrupt("purge queue: a malformed deleted_at".into())
                    })?;
                Ok((id, marked))
            })
            .collect::<Result<_, StoreError>>()?;
        let next = output.last_evaluated_key.filter(|key| !key.is_empty());
        Ok(PurgeQueuePage { sessions, next })
    }

    /// Removes a session item marked deleted (the last step of a delete).
    pub async fn remove_deleted(&self, id: &SessionId) -> Result<(), StoreError> {
        let result = retry_conflicts(|| {
            self.client
                .delete_item()
                .table_name(&self.sessions_table)
                .key("id", s(id.as_string()))
                .condition_expression("attribute_exists(deleted_at)")
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match error.as_service_error() {
                // Already removed by a concurrent delete: the outcome is the same.
                Some(aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(StoreError::sdk("DeleteItem", error)),
            },
        }
    }
}

/// What a refused delete mark found in the session as it was (`old`): this request's own
/// mark (its answer was lost and the SDK sent the write again), another request's, or no
/// session of the caller's.
pub(super) fn classify_failed_delete(
    scope: &UserScope,
    old: Option<&Item>,
    request_id: &str,
) -> DeleteMark {
    let Some(old) = old.filter(|old| {
        get_s(old, "user_id") == Some(scope.user_id())
            && get_s(old, "org_id") == Some(scope.org_id())
    }) else {
        return DeleteMark::NotFound;
    };
    match get_s(old, "deleted_at") {
        Some(_) if get_s(old, "delete_request_id") == Some(request_id) => DeleteMark::Marked,
        Some(_) => DeleteMark::AlreadyDeleting,
        None => DeleteMark::NotFound,
    }
}

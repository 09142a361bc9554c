//! The cancel's stamp (one conditional write naming its caller and request) and the
//! session's one `status_terminated`.

use super::*;

impl SessionStore {
    /// Cancels a session with ONE conditional `UpdateItem`: it stamps `cancelled_at` only if
    /// the session belongs to `scope` (user AND organisation; a missing item has no owner,
    /// so this also requires that it exists) and is not cancelled or being deleted. When the
    /// condition fails, DynamoDB returns the old item
    /// (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), which tells "already cancelled" from
    /// "not found or not yours" without a read before the write.
    ///
    /// The same write says whether a live run holds the session, without returning the whole
    /// item: it copies the active run's expiry (0 when there is none) into
    /// `cancel_saw_run_until`, a new attribute, so it comes back with the other updated ones
    /// (`UPDATED_NEW`; an emulator that returns only changed attributes returns it too). A run
    /// is live when that expiry is still ahead.
    ///
    /// The stamp names its caller and `request_id` (`cancelled_by`, `cancel_request_id`).
    /// When the condition fails on a stamp that names this very request, an earlier attempt
    /// of this write committed and its answer was lost: this is the first cancel after all.
    /// The request id, not the timestamp, decides: two clients' cancels in the same
    /// millisecond carry the same timestamp.
    pub async fn cancel(
        &self,
        scope: &UserScope,
        id: &SessionId,
        request_id: &str,
        now: Timestamp,
    ) -> Result<CancelOutcome, StoreError> {
        let at = now.rfc3339();
        let result = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.sessions_table)
                .key("id", s(id.as_string()))
                .update_expression(
                    "SET cancelled_at = :now, updated_at = :now, cancelled_by = :user, \
                     cancel_request_id = :request, cancel_saw_run_until = if_not_exists(run_expires_at, :no_run), \
                     cancel_saw_poll_token = if_not_exists(poll_token, :no_token)",
                )
                .condition_expression(
                    "user_id = :user AND org_id = :org \
                 AND attribute_not_exists(cancelled_at) AND attribute_not_exists(deleted_at)",
                )
                .expression_attribute_values(":now", s(&at))
                .expression_attribute_values(":no_run", n(0))
                .expression_attribute_values(":no_token", s(""))
                .expression_attribute_values(":request", s(request_id))
                .expression_attribute_values(":user", s(scope.user_id()))
                .expression_attribute_values(":org", s(scope.org_id()))
                .return_values(ReturnValue::UpdatedNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
        })
        .await;
        match result {
            Ok(output) => {
                let updated = output.attributes.unwrap_or_default();
                let run_until = get_i64(&updated, "cancel_saw_run_until").ok_or_else(|| {
                    StoreError::Corrupt("cancel did not return cancel_saw_run_until".into())
                })?;
                let poll_token = get_s(&updated, "cancel_saw_poll_token")
                    .filter(|token| !token.is_empty())
                    .map(str::to_owned);
                Ok(CancelOutcome::Cancelled {
                    run_is_live: run_until > now.epoch_millis(),
                    poll_token,
                })
            }
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    classify_failed_cancel(scope, failed.item(), request_id, now)
                }
                _ => Err(StoreError::sdk("UpdateItem", error)),
            },
        }
    }

    /// Writes the session's one `status_terminated` event, if the session is cancelled and
    /// no one has written it yet; ends any active run with it. Its payload names the reason
    /// and, from the stamp, who cancelled (`cancelledBy`) and with which request
    /// (`cancelRequestId`).
    pub async fn terminate(
        &self,
        session: &SessionRecord,
        reason: &str,
        now: Timestamp,
    ) -> Result<Termination, StoreError> {
        let mut payload = serde_json::json!({ "reason": reason });
        if let Some(by) = &session.cancelled_by {
            payload["cancelledBy"] = by.as_str().into();
        }
        if let Some(request) = &session.cancel_request_id {
            payload["cancelRequestId"] = request.as_str().into();
        }
        let event = NewEvent::new(EventType::StatusTerminated, payload);
        let mut session = session.clone();
        for _ in 0..APPEND_ATTEMPTS {
            if session.terminated_at.is_some() || session.deleted_at.is_some() {
                return Ok(Termination::NotNeeded);
            }
            let append = Append {
                set: ", terminated_at = :now, #status = :terminated",
                remove: Some(RUN_ATTRIBUTES),
                condition: "attribute_exists(cancelled_at) AND attribute_not_exists(terminated_at)",
                values: vec![(":terminated", s(SessionStatus::Terminated.as_str()))],
            };
            if self.append(&session, &event, append, now).await? {
                return Ok(Termination::Written);
            }
            match self.get(&session.id).await? {
                Some(current) => session = current,
                None => return Ok(Termination::NotNeeded),
            }
        }
        Err(StoreError::Corrupt(format!(
            "session {}: events kept racing the termination",
            session.id
        )))
    }
}

/// Reads the old item a failed cancel condition returned: the caller's own, already
/// cancelled session is "already cancelled"; anything else (no item, another user's or
/// another organisation's) is "not found", so ids cannot be probed across tenants.
/// A stamp that names `request_id` is this request's own (an earlier attempt committed, its
/// response was lost), so this is the first cancel after all.
pub(super) fn classify_failed_cancel(
    scope: &UserScope,
    old: Option<&Item>,
    request_id: &str,
    now: Timestamp,
) -> Result<CancelOutcome, StoreError> {
    let Some(old) = old else {
        return Ok(CancelOutcome::NotFound);
    };
    let owned = get_s(old, "user_id") == Some(scope.user_id())
        && get_s(old, "org_id") == Some(scope.org_id());
    let deleted = get_s(old, "deleted_at").is_some();
    match get_s(old, "cancelled_at") {
        Some(_) if owned && !deleted && get_s(old, "cancel_request_id") == Some(request_id) => {
            let run_until = get_i64(old, "cancel_saw_run_until").unwrap_or(0);
            let poll_token = get_s(old, "cancel_saw_poll_token")
                .filter(|token| !token.is_empty())
                .map(str::to_owned);
            Ok(CancelOutcome::Cancelled { run_is_live: run_until > now.epoch_millis(), poll_token })
        }
        Some(_) if owned && !deleted => {
            Ok(CancelOutcome::AlreadyCancelled(Box::new(SessionRecord::from_item(old)?)))
        }
        _ => Ok(CancelOutcome::NotFound),
    }
}

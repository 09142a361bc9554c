//! The caller's sessions, newest first: the owner index, then strongly consistent reads.

use super::*;

impl SessionStore {
    /// The caller's `limit` most recently updated live sessions, newest `updated_at` first:
    /// pages of a `Query` of the `by_owner` index (never a scan), each followed by one
    /// strongly consistent `BatchGetItem` of its ids, because an index is eventually
    /// consistent: a session deleted (or changed) a moment ago must not be listed as it was.
    /// Entries that turn out deleted (a delete under way, or one interrupted) or gone are
    /// skipped and the index read on, so they never make the list short; the work is bounded
    /// by [`LIST_INDEX_BUDGET`] entries per listed session.
    pub async fn list_owned(
        &self,
        scope: &UserScope,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let budget = limit.saturating_mul(LIST_INDEX_BUDGET);
        let mut sessions: Vec<SessionRecord> = Vec::with_capacity(limit);
        let mut seen = std::collections::HashSet::new();
        let mut examined = 0;
        let mut start = None;
        while sessions.len() < limit && examined < budget {
            // What is still missing, plus a little for entries that turn out deleted; a
            // BatchGetItem takes at most 100 keys.
            let wanted = (limit - sessions.len() + LIST_SLACK).min(100);
            let page = self
                .client
                .query()
                .table_name(&self.sessions_table)
                .index_name(OWNER_INDEX)
                .key_condition_expression("#owner = :owner")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":owner", s(scope.owner_key()))
                .projection_expression("id")
                .scan_index_forward(false)
                .limit(i32::try_from(wanted).unwrap_or(100))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::sdk("Query", e))?;
            examined += page.items().len();
            // An entry whose `updated_at` moved between two pages can appear in both.
            let ids: Vec<String> = page
                .items()
                .iter()
                .filter_map(|item| get_s(item, "id"))
                .filter(|id| seen.insert(id.to_string()))
                .map(str::to_owned)
                .collect();
            sessions.extend(self.read_live(scope, &ids).await?);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        sessions.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| b.id.cmp(&a.id)));
        sessions.truncate(limit);
        Ok(sessions)
    }

    /// The sessions `ids` of `scope` that are live (not being deleted), read with one
    /// strongly consistent `BatchGetItem` (keys it leaves unprocessed sent again).
    async fn read_live(
        &self,
        scope: &UserScope,
        ids: &[String],
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut sessions = Vec::with_capacity(ids.len());
        let mut keys: Vec<Item> =
            ids.iter().map(|id| Item::from([("id".to_owned(), s(id))])).collect();
        for attempt in 0..=UNPROCESSED_RETRIES {
            if keys.is_empty() {
                break;
            }
            if attempt > 0 {
                pause_before_resend(attempt).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.sessions_table, request)
                .send()
                .await
                .map_err(|e| StoreError::sdk("BatchGetItem", e))?;
            for item in output
                .responses
                .unwrap_or_default()
                .remove(&self.sessions_table)
                .unwrap_or_default()
            {
                let session = SessionRecord::from_item(&item)?;
                if session.is_owned_by(scope) && session.deleted_at.is_none() {
                    sessions.push(session);
                }
            }
            keys = output
                .unprocessed_keys
                .and_then(|mut left| left.remove(&self.sessions_table))
                .map(|left| left.keys)
                .unwrap_or_default();
        }
        if !keys.is_empty() {
            return Err(StoreError::Unfinished(format!("{} sessions left unread", keys.len())));
        }
        Ok(sessions)
    }
}

//! The auth-sessions table: `token_hash` → user, organisation, expiry (also the TTL attribute).

use aws_sdk_dynamodb::Client;

use super::{StoreError, get_i64, n, require_s, s};
use crate::clock::Timestamp;

/// What a stored auth session says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRecord {
    /// The signed-in user.
    pub user_id: String,
    /// The user's active organisation.
    pub org_id: String,
    /// When the session stops being valid, in epoch seconds (also the TTL).
    pub expires_at_secs: i64,
}

/// Reads and writes auth sessions.
#[derive(Debug, Clone)]
pub struct AuthSessionStore {
    client: Client,
    table: String,
}

impl AuthSessionStore {
    /// A store over `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// The record stored under `token_hash`, if any (expired or not: the caller decides).
    /// An eventually consistent read (half the cost) finds every cookie issued more than a
    /// moment ago; a miss is read again strongly consistently before it counts, because a
    /// cookie used right after sign-in may not have reached the replica the first read
    /// asked, and a miss is remembered (the auth cache) for seconds.
    pub async fn get(&self, token_hash: &str) -> Result<Option<AuthRecord>, StoreError> {
        match self.read(token_hash, false).await? {
            Some(record) => Ok(Some(record)),
            None => self.read(token_hash, true).await,
        }
    }

    async fn read(
        &self,
        token_hash: &str,
        consistent: bool,
    ) -> Result<Option<AuthRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("token_hash", s(token_hash))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| StoreError::sdk("GetItem", e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        Ok(Some(AuthRecord {
            user_id: require_s(&item, "user_id")?,
            org_id: require_s(&item, "org_id")?,
            expires_at_secs: get_i64(&item, "expires_at")
                .ok_or_else(|| StoreError::Corrupt("auth session without expires_at".into()))?,
        }))
    }

    /// Stores a new auth session under `token_hash` (never overwriting an existing one).
    pub async fn put(&self, token_hash: &str, record: &AuthRecord) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("token_hash", s(token_hash))
            .item("user_id", s(&record.user_id))
            .item("org_id", s(&record.org_id))
            .item("expires_at", n(record.expires_at_secs))
            .item("created_at", s(Timestamp::now().rfc3339()))
            .condition_expression("attribute_not_exists(token_hash)")
            .send()
            .await
            .map_err(|e| StoreError::sdk("PutItem", e))?;
        Ok(())
    }
}

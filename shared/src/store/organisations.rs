//! The organisations table: what an organisation's plan allows and which connectors it has.
//!
//! An organisation record is `{org_id, plan?, allows_new_sessions?, connectors?}`. No record,
//! or no `allows_new_sessions` attribute, means new sessions are allowed; `connectors` is a
//! list (or string set) of connected integration names, and none means `noConnectors`.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{StoreError, s};

/// What the organisation's record decides for a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgPolicy {
    /// False when the plan disallows new sessions.
    pub allows_new_sessions: bool,
    /// True when at least one connector (integration) is set up.
    pub has_connectors: bool,
}

/// Reads organisation records.
#[derive(Debug, Clone)]
pub struct OrganisationStore {
    client: Client,
    table: String,
}

impl OrganisationStore {
    /// A store over `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// The policy of `org_id`; an organisation without a record gets the defaults.
    pub async fn policy(&self, org_id: &str) -> Result<OrgPolicy, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .projection_expression("allows_new_sessions, connectors")
            .send()
            .await
            .map_err(|e| StoreError::sdk("GetItem", e))?;
        let item = output.item.unwrap_or_default();
        let allows_new_sessions = match item.get("allows_new_sessions") {
            None => true,
            Some(AttributeValue::Bool(allowed)) => *allowed,
            Some(_) => {
                return Err(StoreError::Corrupt("allows_new_sessions is not a boolean".into()));
            }
        };
        let has_connectors = match item.get("connectors") {
            Some(AttributeValue::L(list)) => !list.is_empty(),
            Some(AttributeValue::Ss(set)) => !set.is_empty(),
            _ => false,
        };
        Ok(OrgPolicy { allows_new_sessions, has_connectors })
    }
}

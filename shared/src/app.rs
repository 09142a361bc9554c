//! The per-container state every handler gets: configuration and the stores, built once.

use aws_config::BehaviorVersion;

pub use aws_config::SdkConfig;
/// The DynamoDB client type, re-exported so tools need no direct SDK dependency.
pub use aws_sdk_dynamodb::Client as DynamoDbClient;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::purge::Purger;
use crate::rate_limit::RateLimiter;
use crate::store::auth_sessions::AuthSessionStore;
use crate::store::events::EventStore;
use crate::store::organisations::OrganisationStore;
use crate::store::sessions::SessionStore;
use crate::workflow::WorkflowStarter;

/// Configuration and clients, built once per Lambda container and shared by every request.
#[derive(Debug)]
pub struct App {
    /// The configuration read at start.
    pub config: Config,
    /// Session cookie → caller, and the Origin check.
    pub auth: Authenticator,
    /// Per-user request counters.
    pub limiter: RateLimiter,
    /// Sessions, and every append to their transcripts.
    pub sessions: SessionStore,
    /// Transcript reads.
    pub events: EventStore,
    /// Starts runs of the turn workflow.
    pub workflow: WorkflowStarter,
    /// Organisation plans and connectors.
    pub organisations: OrganisationStore,
    /// Removes deleted sessions' events (the delete route and the purge sweeper).
    pub purger: Purger,
}

/// Loads the AWS SDK configuration the standard way: region, credentials and endpoint
/// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, ...) from the environment.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

impl App {
    /// Reads the configuration from the environment and builds every client.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        let config = Config::from_env()?;
        Ok(Self::new(config, &load_sdk_config().await))
    }

    /// Builds the state from a configuration and an SDK configuration; the DynamoDB client
    /// retries as [`crate::store::dynamodb_retry_config`] says.
    pub fn new(config: Config, sdk: &SdkConfig) -> Self {
        let dynamodb = DynamoDbClient::from_conf(crate::store::dynamodb_config(sdk).build());
        Self::with_dynamodb(config, sdk, dynamodb)
    }

    /// Builds the state around an existing DynamoDB client (benchmarks pass one that
    /// counts its requests); the other clients come from `sdk`.
    pub fn with_dynamodb(config: Config, sdk: &SdkConfig, dynamodb: DynamoDbClient) -> Self {
        let tables = &config.tables;
        let events = EventStore::new(dynamodb.clone(), tables.events.clone());
        let sessions =
            SessionStore::new(dynamodb.clone(), tables.sessions.clone(), tables.events.clone());
        Self {
            purger: Purger::new(sessions.clone(), events.clone()),
            events,
            sessions,
            workflow: WorkflowStarter::new(aws_sdk_sfn::Client::new(sdk), config.workflow.clone()),
            auth: Authenticator::new(
                AuthSessionStore::new(dynamodb.clone(), tables.auth_sessions.clone()),
                &config,
            ),
            limiter: RateLimiter::new(dynamodb.clone(), tables.rate_limits.clone()),
            organisations: OrganisationStore::new(dynamodb, tables.organisations.clone()),
            config,
        }
    }
}

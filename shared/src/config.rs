//! Configuration read once per container from the environment.

use std::time::Duration;

use crate::rate_limit::{Maxima, RateLimits};

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    /// A variable is set but its value cannot be used.
    #[error("environment variable {name} has an invalid value {value:?}: {reason}")]
    Invalid {
        /// The variable's name.
        name: &'static str,
        /// The value found.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Names of the DynamoDB tables, as the template passes them to every function.
#[derive(Debug, Clone)]
pub struct Tables {
    /// One item per agent session (`id`).
    pub sessions: String,
    /// Transcript events (`session_id`, `event_id`).
    pub events: String,
    /// Hashed session-cookie tokens (`token_hash`), with a TTL.
    pub auth_sessions: String,
    /// Rate-limit counters (`pk`), with a TTL.
    pub rate_limits: String,
    /// Organisation records (`org_id`): plan and connectors.
    pub organisations: String,
}

/// Everything a function needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct Config {
    /// DynamoDB table names.
    pub tables: Tables,
    /// The one `Origin` that mutating requests may carry (CSRF guard), e.g. `https://knoq.one`.
    pub allowed_origin: String,
    /// Name of the session cookie issued at sign-in.
    pub cookie_name: String,
    /// How long a looked-up cookie stays cached in the container (zero disables the cache).
    pub auth_cache_ttl: Duration,
    /// Per-user request limits of each route.
    pub rate_limits: RateLimits,
    /// How turns run in the background.
    pub workflow: WorkflowConfig,
}

/// How the turn workflow runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowConfig {
    /// The turn state machine (`TURN_STATE_MACHINE_ARN`). Only the functions that start
    /// runs have it: the state machine invokes the checker, so the checker cannot also
    /// refer to the state machine without a dependency cycle in the template.
    pub state_machine_arn: Option<String>,
    /// Seconds between two polls of a run (`POLL_INTERVAL_SECS`, 1 to 5): the longest a
    /// cancel waits to be seen.
    pub poll_interval_secs: u64,
    /// How long a turn's worker may take to start (`WORKER_START_GRACE_SECS`): a turn with no
    /// worker after this is ended as lost.
    pub worker_start_grace: Duration,
    /// Whether the checker honours faults a test plants on a session
    /// (`KNOQ_FAULT_INJECTION=enabled`). Never set by the template.
    pub fault_injection: bool,
}

/// Default poll interval in seconds (`POLL_INTERVAL_SECS` overrides it).
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 2;
/// Default time a turn's worker has to start, in seconds (`WORKER_START_GRACE_SECS`).
pub const DEFAULT_WORKER_START_GRACE_SECS: u64 = 60;

/// Default session cookie name (`SESSION_COOKIE_NAME` overrides it).
pub const DEFAULT_COOKIE_NAME: &str = "knoq_session";
/// Default auth cache lifetime in seconds (`AUTH_CACHE_TTL_SECS` overrides it).
pub const DEFAULT_AUTH_CACHE_TTL_SECS: u64 = 5;

/// How the worker talks to the model provider. Only the worker reads it (the other
/// functions never call the provider), so its variables are required there only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The Messages API's base URL (`ANTHROPIC_BASE_URL`); `http://` is allowed for a
    /// local endpoint.
    pub base_url: String,
    /// The Secrets Manager secret holding the API key (`ANTHROPIC_API_KEY_SECRET_ARN`): its
    /// `SecretString` is the key.
    pub api_key_secret: String,
    /// The model (`KNOQ_MODEL`).
    pub model: String,
    /// Output tokens a model call may use (`KNOQ_MAX_TOKENS`, 1 to 128000).
    pub max_tokens: u32,
    /// The system prompt of every call (`KNOQ_SYSTEM_PROMPT`; empty for none).
    pub system_prompt: String,
    /// The most model calls one turn makes (`KNOQ_MAX_STEPS`, 1 to 50).
    pub max_steps: u32,
    /// How often, in ms, the worker's stop watch reads its session while it waits on the
    /// model or a tool (`KNOQ_STOP_WATCH_MS`, 1 to 5000; default 100).
    pub stop_watch_ms: u32,
    /// The longest, in ms, streamed text waits before the worker writes it
    /// (`KNOQ_TEXT_FLUSH_MS`, 1 to 10000; default 500).
    pub text_flush_ms: u32,
}

/// The provider's public endpoint (`ANTHROPIC_BASE_URL` overrides it).
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// Default model (`KNOQ_MODEL` overrides it).
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// Default output tokens per model call.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// Default step cap of a turn.
pub const DEFAULT_MAX_STEPS: u32 = 8;
/// Default stop watch interval in ms (`crate::agent::worker::STOP_WATCH_EVERY`).
pub const DEFAULT_STOP_WATCH_MS: u32 = 100;
/// Default text flush interval in ms (`crate::agent::worker::FLUSH_EVERY`).
pub const DEFAULT_TEXT_FLUSH_MS: u32 = 500;

impl AgentConfig {
    /// Reads the worker's provider settings through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = |name: &'static str| {
            lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
        };
        let number = |name: &'static str, default: u32, max: u32| match lookup(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse::<u32>().ok().filter(|v| (1..=max).contains(v)).ok_or(
                ConfigError::Invalid {
                    name,
                    value: raw,
                    reason: "must be a whole number in the allowed range",
                },
            ),
        };
        let base_url =
            text("ANTHROPIC_BASE_URL").unwrap_or_else(|| DEFAULT_ANTHROPIC_BASE_URL.into());
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                name: "ANTHROPIC_BASE_URL",
                value: base_url,
                reason: "must start with https:// or http://",
            });
        }
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key_secret: text("ANTHROPIC_API_KEY_SECRET_ARN")
                .ok_or(ConfigError::Missing("ANTHROPIC_API_KEY_SECRET_ARN"))?,
            model: text("KNOQ_MODEL").unwrap_or_else(|| DEFAULT_MODEL.into()),
            max_tokens: number("KNOQ_MAX_TOKENS", DEFAULT_MAX_TOKENS, 128_000)?,
            system_prompt: lookup("KNOQ_SYSTEM_PROMPT").unwrap_or_default(),
            max_steps: number("KNOQ_MAX_STEPS", DEFAULT_MAX_STEPS, 50)?,
            stop_watch_ms: number("KNOQ_STOP_WATCH_MS", DEFAULT_STOP_WATCH_MS, 5000)?,
            text_flush_ms: number("KNOQ_TEXT_FLUSH_MS", DEFAULT_TEXT_FLUSH_MS, 10_000)?,
        })
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name).filter(|value| !value.trim().is_empty()).ok_or(ConfigError::Missing(name))
        };
        let allowed_origin = required("ALLOWED_ORIGIN")?;
        if !(allowed_origin.starts_with("https://") || allowed_origin.starts_with("http://"))
            || allowed_origin.ends_with('/')
        {
            return Err(ConfigError::Invalid {
                name: "ALLOWED_ORIGIN",
                value: allowed_origin,
                reason: "must be scheme://host[:port] with no trailing slash",
            });
        }
        let auth_cache_ttl = match lookup("AUTH_CACHE_TTL_SECS") {
            None => Duration::from_secs(DEFAULT_AUTH_CACHE_TTL_SECS),
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|secs| *secs <= 300)
                .map(Duration::from_secs)
                .ok_or(ConfigError::Invalid {
                    name: "AUTH_CACHE_TTL_SECS",
                    value: raw,
                    reason: "must be a whole number of seconds from 0 to 300",
                })?,
        };
        let limit = |name: &'static str, default: u32| match lookup(name) {
            None => Ok(default),
            Some(raw) => {
                raw.trim().parse::<u32>().ok().filter(|max| *max >= 1).ok_or(ConfigError::Invalid {
                    name,
                    value: raw,
                    reason: "must be a whole number of at least 1",
                })
            }
        };
        let seconds =
            |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| match lookup(
                name,
            ) {
                None => Ok(default),
                Some(raw) => {
                    raw.trim().parse::<u64>().ok().filter(|secs| range.contains(secs)).ok_or(
                        ConfigError::Invalid {
                            name,
                            value: raw,
                            reason: "must be a whole number of seconds within the allowed range",
                        },
                    )
                }
            };
        let workflow = WorkflowConfig {
            state_machine_arn: lookup("TURN_STATE_MACHINE_ARN")
                .filter(|arn| !arn.trim().is_empty()),
            poll_interval_secs: seconds("POLL_INTERVAL_SECS", DEFAULT_POLL_INTERVAL_SECS, 1..=5)?,
            worker_start_grace: Duration::from_secs(seconds(
                "WORKER_START_GRACE_SECS",
                DEFAULT_WORKER_START_GRACE_SECS,
                5..=600,
            )?),
            fault_injection: lookup("KNOQ_FAULT_INJECTION").as_deref() == Some("enabled"),
        };
        let defaults = Maxima::default();
        let rate_limits = RateLimits::new(Maxima {
            cancel_per_minute: limit("RATE_LIMIT_CANCEL_PER_MINUTE", defaults.cancel_per_minute)?,
            sessions_per_minute: limit(
                "RATE_LIMIT_SESSIONS_PER_MINUTE",
                defaults.sessions_per_minute,
            )?,
            sessions_per_hour: limit("RATE_LIMIT_SESSIONS_PER_HOUR", defaults.sessions_per_hour)?,
            messages_per_minute: limit(
                "RATE_LIMIT_MESSAGES_PER_MINUTE",
                defaults.messages_per_minute,
            )?,
            reads_per_minute: limit("RATE_LIMIT_READS_PER_MINUTE", defaults.reads_per_minute)?,
        });
        Ok(Self {
            tables: Tables {
                sessions: required("SESSIONS_TABLE")?,
                events: required("EVENTS_TABLE")?,
                auth_sessions: required("AUTH_SESSIONS_TABLE")?,
                rate_limits: required("RATE_LIMITS_TABLE")?,
                organisations: required("ORGANISATIONS_TABLE")?,
            },
            allowed_origin,
            cookie_name: lookup("SESSION_COOKIE_NAME")
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string()),
            auth_cache_ttl,
            rate_limits,
            workflow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::Limit;
    use std::collections::HashMap;

    fn complete() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("SESSIONS_TABLE", "s"),
            ("EVENTS_TABLE", "e"),
            ("AUTH_SESSIONS_TABLE", "a"),
            ("RATE_LIMITS_TABLE", "r"),
            ("ORGANISATIONS_TABLE", "o"),
            ("ALLOWED_ORIGIN", "https://knoq.one"),
        ])
    }

    fn read(vars: &HashMap<&'static str, &'static str>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn complete_environment_reads_with_defaults() {
        let config = read(&complete()).unwrap();
        assert_eq!(config.tables.sessions, "s");
        assert_eq!(config.cookie_name, DEFAULT_COOKIE_NAME);
        assert_eq!(config.auth_cache_ttl, Duration::from_secs(5));
        assert_eq!(config.rate_limits, RateLimits::default());
    }

    #[test]
    fn rate_limits_can_be_configured_but_not_to_zero() {
        let mut vars = complete();
        vars.insert("RATE_LIMIT_SESSIONS_PER_HOUR", "50");
        let limits = read(&vars).unwrap().rate_limits;
        assert_eq!(limits, RateLimits::new(Maxima { sessions_per_hour: 50, ..Maxima::default() }));
        vars.insert("RATE_LIMIT_CANCEL_PER_MINUTE", "0");
        let err = read(&vars).unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_CANCEL_PER_MINUTE"), "{err}");
    }

    #[test]
    fn the_read_limit_defaults_to_300_and_is_configurable_but_not_to_zero_or_garbage() {
        let mut vars = complete();
        assert_eq!(read(&vars).unwrap().rate_limits.reads.limits, [Limit::per_minute(300)]);
        vars.insert("RATE_LIMIT_READS_PER_MINUTE", " 100000 ");
        let limits = read(&vars).unwrap().rate_limits;
        assert_eq!(limits.reads.limits, [Limit::per_minute(100_000)]);
        assert_eq!(limits.cancel, RateLimits::default().cancel, "the other limits keep theirs");
        for bad in ["0", "-1", "3.5", "lots", "", "4294967296"] {
            vars.insert("RATE_LIMIT_READS_PER_MINUTE", bad);
            let err = read(&vars).unwrap_err().to_string();
            assert!(err.contains("RATE_LIMIT_READS_PER_MINUTE"), "{bad:?}: {err}");
            assert!(err.contains("at least 1"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn poll_interval_is_one_to_five_seconds() {
        let mut vars = complete();
        let workflow = read(&vars).unwrap().workflow;
        assert_eq!(workflow.poll_interval_secs, DEFAULT_POLL_INTERVAL_SECS);
        assert_eq!(workflow.state_machine_arn, None);
        assert!(!workflow.fault_injection);
        vars.insert("POLL_INTERVAL_SECS", "1");
        assert_eq!(read(&vars).unwrap().workflow.poll_interval_secs, 1);
        for bad in ["0", "6", "1.5"] {
            vars.insert("POLL_INTERVAL_SECS", bad);
            let err = read(&vars).unwrap_err();
            assert!(err.to_string().contains("POLL_INTERVAL_SECS"), "{err}");
        }
    }

    #[test]
    fn the_agent_needs_its_secret_and_bounded_numbers() {
        let mut vars = HashMap::from([("ANTHROPIC_API_KEY_SECRET_ARN", "arn:secret")]);
        let read = |vars: &HashMap<&str, &str>| {
            AgentConfig::from_lookup(|name| vars.get(name).map(|v| v.to_string()))
        };
        let config = read(&vars).unwrap();
        assert_eq!(config.base_url, DEFAULT_ANTHROPIC_BASE_URL);
        assert_eq!((config.max_tokens, config.max_steps), (DEFAULT_MAX_TOKENS, DEFAULT_MAX_STEPS));
        vars.insert("ANTHROPIC_BASE_URL", "http://127.0.0.1:8787/");
        assert_eq!(read(&vars).unwrap().base_url, "http://127.0.0.1:8787");
        vars.insert("KNOQ_MAX_STEPS", "0");
        assert!(read(&vars).unwrap_err().to_string().contains("KNOQ_MAX_STEPS"));
        vars.remove("KNOQ_MAX_STEPS");
        vars.insert("ANTHROPIC_BASE_URL", "ftp://x");
        assert!(read(&vars).is_err());
        vars.remove("ANTHROPIC_API_KEY_SECRET_ARN");
        vars.remove("ANTHROPIC_BASE_URL");
        let err = read(&vars).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable ANTHROPIC_API_KEY_SECRET_ARN is required but not set"
        );
    }

    #[test]
    fn missing_table_is_named_in_the_error() {
        let mut vars = complete();
        vars.remove("EVENTS_TABLE");
        let err = read(&vars).unwrap_err();
        assert_eq!(err.to_string(), "environment variable EVENTS_TABLE is required but not set");
    }

    #[test]
    fn origin_with_trailing_slash_is_rejected() {
        let mut vars = complete();
        vars.insert("ALLOWED_ORIGIN", "https://knoq.one/");
        assert!(matches!(read(&vars), Err(ConfigError::Invalid { name: "ALLOWED_ORIGIN", .. })));
    }

    #[test]
    fn auth_cache_ttl_must_be_small_whole_seconds() {
        let mut vars = complete();
        vars.insert("AUTH_CACHE_TTL_SECS", "0");
        assert_eq!(read(&vars).unwrap().auth_cache_ttl, Duration::ZERO);
        vars.insert("AUTH_CACHE_TTL_SECS", "9999");
        assert!(read(&vars).is_err());
        vars.insert("AUTH_CACHE_TTL_SECS", "five");
        assert!(read(&vars).is_err());
    }
}

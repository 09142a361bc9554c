//! The Anthropic Messages API adapter: one streamed model call, with retries, as events.
//!
//! Client choice: there is no official Anthropic SDK for Rust; the community crates are
//! unofficial wrappers that pick their own retry policy and TLS stack, while this adapter must
//! own retries, cancellation and key hygiene itself. So it speaks HTTP with
//! `reqwest` (already a workspace dependency; rustls, no OpenSSL; a streamed body whose drop
//! closes the HTTP/1.1 connection) and frames SSE with `sse-stream` (maintained, released in
//! 2026, used by the official MCP Rust SDK) rather than `eventsource-stream` (last release 2022).
//!
//! [`Provider::open`] sends the request and retries until a stream opens; [`ModelStream`]
//! yields the decoded events ([`super::sse`] checks them against the protocol); and
//! [`Assembler`] turns events into what the turn loop acts on: text, whole tool calls, the end.

use std::fmt;
use std::time::Duration;

/// The `anthropic-version` header every request carries.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// An Anthropic API key. Debug prints `ApiKey(<redacted>)`; no Display; never logged.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key read from the environment or a secret store.
    pub fn new(key: String) -> Self {
        Self(key)
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where and how to call the model.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// E.g. `https://api.anthropic.com` or `http://127.0.0.1:8787`; a trailing slash is fine.
    pub base_url: String,
    /// The key sent as `x-api-key`.
    pub api_key: ApiKey,
    /// The model id.
    pub model: String,
    /// The answer's token budget.
    pub max_tokens: u32,
    /// The system prompt; empty sends no `system` field.
    pub system_prompt: String,
    /// Attempts per call including the first (0 counts as 1).
    pub max_attempts: u32,
    /// The first backoff; it doubles per retry, with jitter.
    pub retry_base: Duration,
    /// The longest single wait between attempts, `retry-after` included.
    pub max_retry_wait: Duration,
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long an answer may send nothing at all (no byte, not even a `ping`) before the
    /// call counts as failed: the provider pings every few seconds, so a silence this long
    /// is a stalled connection, not a model thinking. Bounds the wait for the answer's
    /// headers too.
    pub stall_timeout: Duration,
}

impl ProviderConfig {
    /// The production policy for calling `model` at `base_url` with `api_key`: 4 attempts a
    /// call, backoff from 0.5 s (doubling, with jitter), at most 30 s between attempts
    /// (`retry-after` included), 10 s to connect, [`STALL_TIMEOUT`] of silence.
    pub fn with_production_policy(
        base_url: String,
        api_key: ApiKey,
        model: String,
        max_tokens: u32,
        system_prompt: String,
    ) -> Self {
        Self {
            base_url,
            api_key,
            model,
            max_tokens,
            system_prompt,
            max_attempts: 4,
            retry_base: Duration::from_millis(500),
            max_retry_wait: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: STALL_TIMEOUT,
        }
    }
}

/// The default [`ProviderConfig::stall_timeout`]: a minute without a byte.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The most bytes of an error answer's body that are read: enough for any JSON error the
/// API sends; a proxy's endless page is not read to its end.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The most characters of a provider's error message that are kept (it reaches the user's
/// `error` event and the session item).
const ERROR_MESSAGE_LIMIT: usize = 300;

/// The most bytes one tool call's input may take while it streams in: far above what any
/// tool of ours takes, well below what a worker's memory or an event item can hold.
pub const TOOL_INPUT_LIMIT: usize = 64 * 1024;

mod assembler;
mod client;
mod stream;
mod wire;

pub use assembler::{Assembler, Output};
pub use client::{OpenFailure, Provider};
pub use stream::ModelStream;
pub use wire::*;

/// Why a model call failed. No variant ever holds the API key.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered an error status (after retries when retryable).
    #[error("model provider answered {status} {error_type}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The API's error type, e.g. `overloaded_error`.
        error_type: String,
        /// The API's message.
        message: String,
    },
    /// Could not connect / connection broken.
    #[error("model provider connection failed: {0}")]
    Connection(String),
    /// The stream was not valid SSE/JSON or broke the protocol (unknown shape, delta for
    /// unknown block...).
    #[error("model provider stream is malformed: {0}")]
    Malformed(String),
    /// An `error` event arrived mid-stream.
    #[error("model provider stream failed with {error_type}: {message}")]
    Stream {
        /// The API's error type.
        error_type: String,
        /// The API's message.
        message: String,
    },
    /// The configuration cannot make a client (bad base URL, key with control characters).
    #[error("model provider configuration is invalid: {0}")]
    Config(String),
}

impl ProviderError {
    /// The `errorType` for the transcript's error event, e.g. "overloaded_error",
    /// "rate_limit_error", "api_error", "authentication_error", "connection_error",
    /// "malformed_stream".
    pub fn error_type(&self) -> &str {
        match self {
            Self::Status { error_type, .. } | Self::Stream { error_type, .. } => error_type,
            Self::Connection(_) => "connection_error",
            Self::Malformed(_) => "malformed_stream",
            Self::Config(_) => "configuration_error",
        }
    }

    /// Whether a fresh attempt of the same call may succeed (429, 529, 5xx, connection
    /// errors, mid-stream overloaded/api/rate-limit errors). 4xx other than 429 are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Connection(_) => true,
            Self::Stream { error_type, .. } => {
                matches!(error_type.as_str(), "overloaded_error" | "api_error" | "rate_limit_error")
            }
            Self::Malformed(_) | Self::Config(_) => false,
        }
    }
}

#[cfg(test)]
mod tests;

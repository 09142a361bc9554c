//! The HTTP client of `POST /v1/messages`: the request, its headers, and the retry policy
//! (retryable statuses, `retry-after`, backoff with jitter) until a stream opens.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Response, Url};
use serde::Serialize;

use crate::agent::sse::ApiErrorBody;

use super::*;
use super::{stream::*, wire::*};

/// The request body of `POST /v1/messages`.
#[derive(Serialize)]
pub(super) struct Request<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "<[ToolSpec]>::is_empty")]
    tools: &'a [ToolSpec],
    stream: bool,
}

/// A failed attempt: the error, and the wait the provider asked for.
pub(super) struct Failure {
    error: ProviderError,
    retry_after: Option<Duration>,
}

/// Why one attempt to open a stream failed ([`Provider::open_attempt`]).
#[derive(Debug)]
pub struct OpenFailure {
    /// What failed.
    pub error: ProviderError,
    /// How long to wait before the next attempt; `None` when there is no next attempt (the
    /// error is not retryable, or it was the last attempt the policy allows).
    pub retry_in: Option<Duration>,
}

impl OpenFailure {
    fn last(error: ProviderError) -> Self {
        Self { error, retry_in: None }
    }
}

/// The Messages API client: one HTTP client per container, and the call's configuration.
#[derive(Debug, Clone)]
pub struct Provider {
    client: reqwest::Client,
    config: ProviderConfig,
    url: Url,
    headers: HeaderMap,
}

impl Provider {
    /// Builds the HTTP client (rustls, no redirects, `connect_timeout`) and the headers.
    pub fn new(config: ProviderConfig) -> Result<Self, ProviderError> {
        let url = messages_url(&config.base_url)?;
        let headers = request_headers(&config.api_key)?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ProviderError::Config(error_chain(&error)))?;
        Ok(Self { client, config, url, headers })
    }

    /// The configuration this provider calls with.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// Sends `POST {base}/v1/messages` with `x-api-key`, `anthropic-version`,
    /// `content-type: application/json`, body {model, max_tokens, system (if non-empty),
    /// messages, tools (if non-empty), stream: true}.
    ///
    /// Retries, before any byte of a 200 body is read, on 429/529/5xx/connection errors: at
    /// most `max_attempts` attempts, waiting `retry-after` (or `retry-after-ms`) when the
    /// answer has it, else `retry_base * 2^n` with jitter, each wait capped by
    /// `max_retry_wait`. Each retry is a `tracing::warn!` line with status and wait — never
    /// the key.
    pub async fn open(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<ModelStream, ProviderError> {
        let mut attempt = 1;
        loop {
            match self.open_attempt(messages, tools, attempt).await {
                Ok(stream) => return Ok(stream),
                Err(OpenFailure { retry_in: Some(wait), .. }) => {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(OpenFailure { error, retry_in: None }) => return Err(error),
            }
        }
    }

    /// Attempt number `attempt` (from 1) of [`Provider::open`], alone: for a caller that must
    /// check something before each attempt. The worker renews its lease first, so that no
    /// retry opens a model call for a turn cancelled while it waited (a cancel's answer
    /// promises that no model call of the session starts after it). A failure says how
    /// long to wait before the next attempt, or that there is none.
    pub async fn open_attempt(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        attempt: u32,
    ) -> Result<ModelStream, OpenFailure> {
        let body = self.request_body(messages, tools).map_err(OpenFailure::last)?;
        let failure = match self.attempt(body).await {
            Ok(response) => {
                return Ok(ModelStream::from_response(response, self.config.stall_timeout));
            }
            Err(failure) => failure,
        };
        let attempts = self.config.max_attempts.max(1);
        if attempt >= attempts || !failure.error.is_retryable() {
            return Err(OpenFailure::last(failure.error));
        }
        let wait = backoff(&self.config, attempt, failure.retry_after, random_unit());
        tracing::warn!(
            attempt,
            max_attempts = attempts,
            status = status_of(&failure.error),
            error_type = failure.error.error_type(),
            wait_ms = wait.as_millis() as u64,
            error = %failure.error,
            "model provider call failed, retrying"
        );
        Err(OpenFailure { error: failure.error, retry_in: Some(wait) })
    }

    fn request_body(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<Vec<u8>, ProviderError> {
        let request = Request {
            model: &self.config.model,
            max_tokens: self.config.max_tokens,
            system: &self.config.system_prompt,
            messages,
            tools,
            stream: true,
        };
        serde_json::to_vec(&request)
            .map_err(|error| ProviderError::Config(format!("request cannot be encoded: {error}")))
    }

    /// One request: the response when it opened a stream, else why not.
    async fn attempt(&self, body: Vec<u8>) -> Result<Response, Failure> {
        let sent = self.client.post(self.url.clone()).headers(self.headers.clone()).body(body);
        let stall = self.config.stall_timeout;
        let response = match tokio::time::timeout(stall, sent.send()).await {
            Ok(sent) => sent.map_err(|error| Failure {
                error: ProviderError::Connection(self.redact(error_chain(&error))),
                retry_after: None,
            })?,
            Err(_) => {
                let error = format!("no answer within {} s", stall.as_secs());
                return Err(Failure { error: ProviderError::Connection(error), retry_after: None });
            }
        };
        let status = response.status();
        if status.is_success() {
            return expect_event_stream(response)
                .map_err(|error| Failure { error, retry_after: None });
        }
        let retry_after = retry_after(response.headers());
        let text = bounded_body(response, ERROR_BODY_LIMIT, stall).await;
        let error = self.status_error(status.as_u16(), &text);
        Err(Failure { error, retry_after })
    }

    fn status_error(&self, status: u16, body: &str) -> ProviderError {
        let (error_type, message) = match serde_json::from_str::<ApiErrorBody>(body) {
            Ok(parsed) => {
                (excerpt(&parsed.error.kind, status), excerpt(&parsed.error.message, status))
            }
            Err(_) => (default_error_type(status).to_owned(), excerpt(body, status)),
        };
        ProviderError::Status { status, error_type, message: self.redact(message) }
    }

    /// `error` as it may be shown and stored: the API key replaced wherever a server echoed
    /// it (a stream's `error` event too), and its texts cut to a few hundred characters.
    pub fn redacted(&self, error: ProviderError) -> ProviderError {
        let clean = |text: String| self.redact(excerpt(&text, 0));
        match error {
            ProviderError::Status { status, error_type, message } => ProviderError::Status {
                status,
                error_type: clean(error_type),
                message: clean(message),
            },
            ProviderError::Stream { error_type, message } => {
                ProviderError::Stream { error_type: clean(error_type), message: clean(message) }
            }
            ProviderError::Connection(text) => ProviderError::Connection(clean(text)),
            ProviderError::Malformed(text) => ProviderError::Malformed(clean(text)),
            ProviderError::Config(text) => ProviderError::Config(clean(text)),
        }
    }

    /// `text` with every occurrence of the API key replaced, should a server echo it.
    fn redact(&self, text: String) -> String {
        let key = self.config.api_key.expose();
        if key.is_empty() || !text.contains(key) { text } else { text.replace(key, "<redacted>") }
    }
}

pub(super) fn messages_url(base_url: &str) -> Result<Url, ProviderError> {
    let joined = format!("{}/v1/messages", base_url.trim_end_matches('/'));
    let url = Url::parse(&joined)
        .map_err(|error| ProviderError::Config(format!("base URL {base_url:?}: {error}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(ProviderError::Config(format!("base URL scheme {other:?} is not http(s)"))),
    }
}

pub(super) fn request_headers(api_key: &ApiKey) -> Result<HeaderMap, ProviderError> {
    let mut key = HeaderValue::from_str(api_key.expose())
        .map_err(|_| ProviderError::Config("the API key is not a valid header value".into()))?;
    key.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", key);
    headers.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("accept", HeaderValue::from_static("text/event-stream"));
    Ok(headers)
}

/// A 2xx answer that is not an event stream (a proxy's page, a non-streamed answer) is not
/// something to parse as one.
pub(super) fn expect_event_stream(response: Response) -> Result<Response, ProviderError> {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.trim_start().starts_with("text/event-stream") {
        Ok(response)
    } else {
        Err(ProviderError::Malformed(format!(
            "expected a text/event-stream answer, got content-type {content_type:?}"
        )))
    }
}

/// The error type Anthropic uses for `status`, for an error body that does not say.
pub(super) fn default_error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "http_error",
    }
}

/// The start of an unparsable error body, or the status when it is empty.
pub(super) fn excerpt(body: &str, status: u16) -> String {
    const LIMIT: usize = ERROR_MESSAGE_LIMIT;
    let body = body.trim();
    if body.is_empty() {
        return format!("HTTP {status}");
    }
    match body.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}...", &body[..end]),
        None => body.to_owned(),
    }
}

/// At most `limit` bytes of `response`'s body as text (lossy), waiting at most `stall` for
/// each chunk: an error answer is read only as far as anyone would read it.
pub(super) async fn bounded_body(mut response: Response, limit: usize, stall: Duration) -> String {
    let mut body = Vec::new();
    while body.len() < limit {
        match tokio::time::timeout(stall, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

pub(super) fn status_of(error: &ProviderError) -> Option<u16> {
    match error {
        ProviderError::Status { status, .. } => Some(*status),
        _ => None,
    }
}

/// An error and its sources, joined: reqwest's own text hides the cause (refused, timed out).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The wait the provider asked for: `retry-after-ms`, else `retry-after` in seconds (an
/// HTTP date is not honoured; the backoff applies then).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        let text = headers.get(name)?.to_str().ok()?;
        text.trim().parse::<f64>().ok().filter(|value| value.is_finite() && *value >= 0.0)
    };
    let seconds = match number("retry-after-ms") {
        Some(millis) => millis / 1000.0,
        None => number("retry-after")?,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// The wait before attempt `attempt + 1`: the provider's `retry_after` when given, else
/// `retry_base * 2^(attempt-1)` scaled into its upper half by `unit` (in `[0, 1)`), capped
/// by `max_retry_wait`.
pub(super) fn backoff(
    config: &ProviderConfig,
    attempt: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let wait = retry_after.unwrap_or_else(|| {
        let full = config.retry_base.saturating_mul(1 << attempt.saturating_sub(1).min(20));
        full / 2 + (full / 2).mul_f64(unit.clamp(0.0, 1.0))
    });
    wait.min(config.max_retry_wait)
}

/// A uniform number in `[0, 1)` for jitter (1.0 if the system has no randomness to give).
pub(super) fn random_unit() -> f64 {
    getrandom::u64().map_or(1.0, |bits| (bits >> 11) as f64 / (1u64 << 53) as f64)
}

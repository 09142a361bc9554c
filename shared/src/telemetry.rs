//! What a function tells its operators: JSON log lines through `tracing`, and CloudWatch
//! metrics in the embedded metric format (EMF), both on stdout, which Lambda sends to
//! CloudWatch Logs.
//!
//! Every HTTP request ends with one log line `request` carrying the Lambda request id, the
//! route, the status, the outcome, the latency and a hash of the user id (never a cookie, a
//! token or message text), and one EMF line with the route's counters.

use std::io::Write;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Knoq/ManagedAgents";

/// Installs the global `tracing` subscriber: JSON lines (no ANSI colours, no timestamps:
/// Lambda adds its own; the fields of the request span on every line), or, where a person
/// reads the output (`KNOQ_LOG_FORMAT=text`, which the local stack sets), one compact plain
/// line per event. Calling it twice is harmless.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if for_people() {
        let _ = tracing_subscriber::fmt()
            .compact()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_target(false)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_current_span(true)
        .with_span_list(false)
        .try_init();
}

/// Whether logs are for a person (`KNOQ_LOG_FORMAT=text`): plain lines and no metric lines.
fn for_people() -> bool {
    static TEXT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TEXT.get_or_init(|| std::env::var("KNOQ_LOG_FORMAT").as_deref() == Ok("text"))
}

/// A pseudonymous, stable tag for a user in logs: the first 16 hex digits of SHA-256 of
/// the id. Enough to follow one user's requests; not the id itself.
pub fn user_hash(user_id: &str) -> String {
    let digest = Sha256::digest(format!("knoq-user:{user_id}").as_bytes());
    digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

/// Records the caller's [`user_hash`] on the current request span, if there is one.
pub fn record_user(user_id: &str) {
    tracing::Span::current().record("user", user_hash(user_id).as_str());
}

/// The unit of a metric, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count of things.
    Count,
    /// A duration in milliseconds.
    Milliseconds,
    /// A duration in seconds.
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::Seconds => "Seconds",
        }
    }
}

/// One EMF line: metrics with one dimension, `Route`.
pub fn emf_line(route: &str, metrics: &[(&str, f64, Unit)], timestamp_ms: i64) -> Value {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, _, unit)| json!({ "Name": name, "Unit": unit.as_str() }))
        .collect();
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Route"]],
                "Metrics": definitions,
            }],
        }),
    );
    line.insert("Route".into(), json!(route));
    for (name, value, _) in metrics {
        line.insert((*name).into(), json!(value));
    }
    Value::Object(line)
}

/// Writes one EMF line for `route` to stdout (CloudWatch turns it into metrics), when
/// running as a Lambda function (`AWS_LAMBDA_FUNCTION_NAME` set, as Lambda and `cargo lambda
/// watch` do); handlers called in-process (tests, benchmarks) write none.
pub fn emit(route: &str, metrics: &[(&str, f64, Unit)]) {
    static IN_LAMBDA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*IN_LAMBDA.get_or_init(|| std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some())
        || for_people()
    {
        return;
    }
    let line = emf_line(route, metrics, crate::clock::Timestamp::now().epoch_millis());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// The counters every HTTP request adds to: one request, and whether it was a client
/// error, a server error, or refused by a rate limit, with its latency.
pub fn request_metrics(status: u16, latency_ms: f64) -> Vec<(&'static str, f64, Unit)> {
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    vec![
        ("Requests", 1.0, Unit::Count),
        ("4xx", flag((400..500).contains(&status)), Unit::Count),
        ("5xx", flag(status >= 500), Unit::Count),
        ("RateLimited", flag(status == 429), Unit::Count),
        ("LatencyMs", latency_ms, Unit::Milliseconds),
    ]
}

/// When this call wrote a session's `status_terminated`, emits how long after the cancel
/// it was written (`CancelToTerminatedMs`): the latency the poll interval bounds.
pub fn record_termination(
    route: &str,
    session: &crate::store::sessions::SessionRecord,
    termination: crate::store::sessions::Termination,
    now: crate::clock::Timestamp,
) {
    use crate::store::sessions::Termination;
    let cancelled_at = session
        .cancelled_at
        .as_deref()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.timestamp_millis());
    if let (Termination::Written, Some(cancelled_at)) = (termination, cancelled_at) {
        let millis = (now.epoch_millis() - cancelled_at).max(0) as f64;
        tracing::info!(session_id = %session.id, cancel_to_terminated_ms = millis, "session terminated");
        emit(route, &[("CancelToTerminatedMs", millis, Unit::Milliseconds)]);
    }
}

/// How a status reads in the logs.
pub fn outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        429 => "rate_limited",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_declares_each_metric_under_the_route_dimension() {
        let line = emf_line(
            "cancel",
            &[("Cancels", 1.0, Unit::Count), ("LatencyMs", 7.5, Unit::Milliseconds)],
            1_700_000_000_000,
        );
        assert_eq!(line["Route"], "cancel");
        assert_eq!(line["Cancels"], 1.0);
        assert_eq!(line["LatencyMs"], 7.5);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Route"]]));
        assert_eq!(directive["Metrics"][1], json!({ "Name": "LatencyMs", "Unit": "Milliseconds" }));
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000_i64);
    }

    #[test]
    fn request_metrics_classify_the_status() {
        let value = |status, name| {
            request_metrics(status, 1.0).into_iter().find(|(n, _, _)| *n == name).unwrap().1
        };
        assert_eq!((value(200, "4xx"), value(200, "5xx")), (0.0, 0.0));
        assert_eq!((value(404, "4xx"), value(404, "RateLimited")), (1.0, 0.0));
        assert_eq!((value(429, "4xx"), value(429, "RateLimited")), (1.0, 1.0));
        assert_eq!(value(502, "5xx"), 1.0);
        assert_eq!(
            [outcome(200), outcome(429), outcome(404), outcome(500)],
            ["ok", "rate_limited", "client_error", "server_error"]
        );
    }

    #[test]
    fn user_hash_is_stable_short_and_not_the_id() {
        let hash = user_hash("alice");
        assert_eq!(hash, user_hash("alice"));
        assert_ne!(hash, user_hash("bob"));
        assert_eq!(hash.len(), 16);
        assert!(!hash.contains("alice"));
    }
}

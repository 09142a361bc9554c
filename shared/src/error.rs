//! The one error type of the HTTP layer and the one place that maps it to a response.

use lambda_http::{Body, Response, http::StatusCode};

use crate::store::StoreError;

/// The `Retry-After` of a 503: DynamoDB stayed busy (throttling, conflicts) or failing
/// through every retry of the request. Two seconds lets a burst that throttled a partition
/// pass instead of meeting the client's immediate retry, and stays within a poll interval
/// (1-5 s), the time a cancel is expected to take anyway.
pub const STORE_RETRY_AFTER_SECS: u64 = 2;

/// Every way a request can fail, each with exactly one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No session cookie, an unknown one, or an expired one.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A mutating request whose `Origin` is absent or not the application's own.
    #[error("cross-origin request refused: Origin must be {allowed}")]
    ForeignOrigin {
        /// The configured application origin.
        allowed: String,
    },
    /// The organisation's plan does not allow what was asked.
    #[error("{0}")]
    PlanForbids(&'static str),
    /// The request is malformed; the text names the field or the problem.
    #[error("{0}")]
    BadRequest(String),
    /// No such session for this user and organisation (also another tenant's session).
    #[error("session not found")]
    SessionNotFound,
    /// The session was cancelled: it takes no new turn.
    #[error("session was cancelled; it accepts no new messages")]
    SessionCancelled,
    /// The body is larger than the route accepts.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Too many requests in the current window.
    #[error(
        "rate limit exceeded: at most {limit} {what} per {window}; retry in {retry_after_secs} s"
    )]
    RateLimited {
        /// The limit that was hit.
        limit: u32,
        /// What is being counted, e.g. "cancel requests".
        what: &'static str,
        /// The window, in words ("minute", "hour").
        window: &'static str,
        /// Whole seconds until the window ends, at least 1.
        retry_after_secs: u64,
    },
    /// The turn workflow could not be started (Step Functions refused or is unreachable).
    #[error("the agent could not be started; try again")]
    WorkflowUnavailable,
    /// Storage failed; the detail is logged, never answered. DynamoDB busy or failing
    /// after every retry ([`StoreError::is_transient`]) is 503 with `Retry-After`; anything
    /// else is 500.
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::ForeignOrigin { .. } | Self::PlanForbids(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::SessionNotFound => StatusCode::NOT_FOUND,
            Self::SessionCancelled => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::WorkflowUnavailable => StatusCode::BAD_GATEWAY,
            Self::Store(error) if error.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` this error's response carries, if any: a 429's rest of the window,
    /// a 503's [`STORE_RETRY_AFTER_SECS`].
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs, .. } => Some((*retry_after_secs).max(1)),
            Self::Store(error) if error.is_transient() => Some(STORE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// The response: the status, `{"error": "<message>"}`, and `Retry-After` on 429 and 503.
    pub fn into_response(self) -> Response<Body> {
        if let Self::Store(source) = &self {
            tracing::error!(error = %source, detail = ?source, "storage failure");
        }
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = crate::http::json_response(status, &body);
        if let Some(secs) = self.retry_after_secs() {
            response.headers_mut().insert(lambda_http::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// What a client is told about a storage failure: never its detail.
fn store_message(error: &StoreError) -> String {
    if error.is_transient() {
        format!("the service is busy; retry in {STORE_RETRY_AFTER_SECS} s")
    } else {
        "internal error".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn each_error_has_its_status_and_a_json_error_body() {
        let cases = [
            (ApiError::Unauthenticated("no session cookie"), 401),
            (ApiError::ForeignOrigin { allowed: "https://knoq.one".into() }, 403),
            (ApiError::PlanForbids("plan"), 403),
            (ApiError::BadRequest("sessionId is required".into()), 400),
            (ApiError::SessionNotFound, 404),
            (ApiError::SessionCancelled, 409),
            (ApiError::PayloadTooLarge { limit: 10 }, 413),
            (ApiError::WorkflowUnavailable, 502),
            (ApiError::Store(StoreError::Corrupt("x".into())), 500),
            (
                ApiError::Store(StoreError::Unavailable {
                    operation: "UpdateItem",
                    message: "throttled".into(),
                }),
                503,
            ),
        ];
        for (error, status) in cases {
            let message = error.to_string();
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(body_json(&response), serde_json::json!({ "error": message }));
        }
    }

    #[test]
    fn internal_errors_do_not_leak_detail() {
        let response =
            ApiError::Store(StoreError::Corrupt("secret table name".into())).into_response();
        assert_eq!(body_json(&response)["error"], "internal error");
    }

    #[test]
    fn a_busy_store_is_503_with_retry_after_and_no_detail() {
        let response = ApiError::Store(StoreError::Unavailable {
            operation: "UpdateItem",
            message: "ThrottlingException on table knoq-sessions".into(),
        })
        .into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], STORE_RETRY_AFTER_SECS.to_string().as_str());
        assert_eq!(body_json(&response)["error"], "the service is busy; retry in 2 s");
        let failed = ApiError::Store(StoreError::Corrupt("x".into())).into_response();
        assert!(failed.headers().get("retry-after").is_none(), "a 500 says nothing of when");
    }

    #[test]
    fn rate_limited_carries_retry_after_of_at_least_one_second() {
        let limited = |secs| ApiError::RateLimited {
            limit: 30,
            what: "cancel requests",
            window: "minute",
            retry_after_secs: secs,
        };
        let response = limited(17).into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "17");
        assert_eq!(limited(0).into_response().headers()["retry-after"], "1");
    }
}

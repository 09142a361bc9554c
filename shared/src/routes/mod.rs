//! One module per HTTP route. Each exposes `handle(&App, Request) -> Response<Body>`, which
//! the route's function serves and the tests call in-process.

pub mod cancel;
pub mod create_session;

use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};

use crate::error::ApiError;
use crate::http::json_response;

/// The Lambda request id of this invocation, or a fresh UUID when called outside Lambda.
pub fn request_id(request: &Request) -> String {
    request
        .lambda_context_ref()
        .map(|context| context.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Turns a route's result into its response: 200 with the JSON value, or the error's.
pub fn respond(result: Result<serde_json::Value, ApiError>) -> Response<Body> {
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(error) => error.into_response(),
    }
}

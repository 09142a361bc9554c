//! One module per HTTP route. Each exposes `handle(&App, Request) -> Response<Body>`, which
//! the route's function serves and the tests call in-process.

pub mod cancel;
pub mod create_session;
pub mod delete_session;
pub mod list_sessions;
pub mod message;
pub mod transcript;

use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};

use crate::app::App;
use crate::checker::error_event;
use crate::clock::Timestamp;
use crate::domain::{RunId, SessionId};
use crate::error::ApiError;
use crate::http::json_response;
use crate::store::sessions::FailureGuard;

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

/// Starts the execution of `run`, which the session already names as its active run. When
/// Step Functions cannot start it, the run is ended at once through the failure path (an
/// `error` event, the session idle again) and the caller gets 502.
pub async fn start_run(app: &App, session: &SessionId, run: &RunId) -> Result<(), ApiError> {
    let Err(error) = app.workflow.start(session, run).await else {
        return Ok(());
    };
    tracing::error!(session_id = %session, run_id = %run, %error, "run not started");
    if let Some(stored) = app.sessions.get(&session.as_string()).await? {
        let event = error_event("Knoq.StartExecutionFailed");
        app.sessions
            .fail_turn(&stored, run, &event, FailureGuard::RunActive, Timestamp::now())
            .await?;
    }
    Err(ApiError::WorkflowUnavailable)
}

/// A raw `sessionId` (from a body field or the query string) as a [`SessionId`]; the
/// errors name the field.
pub fn session_id_from(raw: &str) -> Result<SessionId, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::BadRequest("sessionId must not be empty".into()));
    }
    SessionId::parse(raw).ok_or_else(|| ApiError::BadRequest("sessionId must be a UUID".into()))
}

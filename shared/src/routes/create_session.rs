//! `POST /api/managed-agents/session` `{"text"}`: create a session with its opening message.
//!
//! Order of checks: session cookie (401) → Origin (403) → rate limits, 10 a minute and 20 an
//! hour (429) → body (413/400) → organisation plan (403) → one transaction writing the
//! session, already naming its first run as active, and its first `user_message` event →
//! the run's execution, whose name is the `runId` answered. If Step Functions cannot start
//! it, the run is ended with an `error` event and the answer is 502: the session stays, idle.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{respond, start_run};
use crate::app::App;
use crate::clock::Timestamp;
use crate::domain::{MessageText, RunId, SessionId, TextError};
use crate::error::ApiError;
use crate::http::JsonObject;
use crate::workflow::RUN_LEASE;

/// Handles one create-session request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    respond(create(app, &request).await)
}

async fn create(app: &App, request: &Request) -> Result<Value, ApiError> {
    let scope = app.auth.authenticate(request).await?;
    app.auth.require_same_origin(request)?;
    let now = Timestamp::now();
    app.limiter.admit(&scope, &app.config.rate_limits.create_session, now).await?;
    let text = parse_text(&JsonObject::from_request(request)?)?;
    let policy = app.organisations.policy(scope.org_id()).await?;
    if !policy.allows_new_sessions {
        return Err(ApiError::PlanForbids("your organisation's plan does not allow new sessions"));
    }
    let id = SessionId::new();
    let run = RunId::new();
    app.sessions.create(&scope, &id, &text, &run, RUN_LEASE, now).await?;
    tracing::info!(session_id = %id, run_id = %run, "session created");
    start_run(app, &id, &run).await?;
    Ok(json!({
        "id": id.as_string(),
        "runId": run.as_str(),
        "noConnectors": !policy.has_connectors,
    }))
}

/// The `text` field as a [`MessageText`], with an error that names the field.
pub fn parse_text(body: &JsonObject) -> Result<MessageText, ApiError> {
    MessageText::parse(body.required_string("text")?).map_err(|error| {
        ApiError::BadRequest(match error {
            TextError::Blank => "text must not be empty".into(),
            TextError::TooLong => {
                format!("text must be at most {} characters", crate::domain::MAX_TEXT_CHARS)
            }
        })
    })
}

//! `POST /api/managed-agents/session` `{"text"}`: create a session with its opening message.
//!
//! Order of checks: session cookie (401) → Origin (403) → rate limits, 10 a minute and 20 an
//! hour (429) → body (413/400) → organisation plan (403) → one transaction writing the
//! session and its first `user_message` event. Until the turn workflow exists, no run is
//! started: `runId` is `null` and the session is `idle`.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::respond;
use crate::app::App;
use crate::clock::Instant;
use crate::domain::{MessageText, SessionId, TextError};
use crate::error::ApiError;
use crate::http::JsonObject;

/// Handles one create-session request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    respond(create(app, &request).await)
}

async fn create(app: &App, request: &Request) -> Result<Value, ApiError> {
    let scope = app.auth.authenticate(request).await?;
    app.auth.require_same_origin(request)?;
    let now = Instant::now();
    app.limiter.admit(&scope, &app.config.rate_limits.create_session, now).await?;
    let text = parse_text(&JsonObject::from_request(request)?)?;
    let policy = app.organisations.policy(scope.org_id()).await?;
    if !policy.allows_new_sessions {
        return Err(ApiError::PlanForbids("your organisation's plan does not allow new sessions"));
    }
    let id = SessionId::new();
    app.sessions.create(&scope, &id, &text, now).await?;
    tracing::info!(session_id = %id, "session created");
    Ok(json!({ "id": id.as_string(), "runId": null, "noConnectors": !policy.has_connectors }))
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

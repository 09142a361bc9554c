//! `POST /api/managed-agents/cancel` `{"sessionId"}`: stamp `cancelled_at` once, atomically.
//!
//! Order of checks: session cookie (401) → Origin (403) → rate limit (429; every
//! authenticated request counts, including those that end in 400 or 404, so the limit also
//! caps id probing) → body (413/400) → one conditional `UpdateItem` (404 or 200).

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{request_id, respond};
use crate::app::App;
use crate::clock::Instant;
use crate::domain::SessionId;
use crate::error::ApiError;
use crate::http::JsonObject;
use crate::store::sessions::CancelOutcome;

/// Handles one cancel request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    respond(cancel(app, &request).await)
}

async fn cancel(app: &App, request: &Request) -> Result<Value, ApiError> {
    let scope = app.auth.authenticate(request).await?;
    app.auth.require_same_origin(request)?;
    let now = Instant::now();
    app.limiter.admit(&scope, &app.config.rate_limits.cancel, now).await?;
    let body = JsonObject::from_request(request)?;
    let session_id = parse_session_id(&body)?;
    match app.sessions.cancel(&scope, &session_id, &request_id(request), now).await? {
        CancelOutcome::Cancelled => {
            tracing::info!(session_id = %session_id, "session cancelled");
            Ok(json!({ "ok": true }))
        }
        CancelOutcome::AlreadyCancelled { .. } => {
            Ok(json!({ "ok": true, "alreadyCancelled": true }))
        }
        CancelOutcome::NotFound => Err(ApiError::SessionNotFound),
    }
}

/// The `sessionId` field as a [`SessionId`], with an error that names the field.
pub fn parse_session_id(body: &JsonObject) -> Result<SessionId, ApiError> {
    let raw = body.required_string("sessionId")?;
    if raw.is_empty() {
        return Err(ApiError::BadRequest("sessionId must not be empty".into()));
    }
    SessionId::parse(&raw).ok_or_else(|| ApiError::BadRequest("sessionId must be a UUID".into()))
}

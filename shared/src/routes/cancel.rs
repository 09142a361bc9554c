//! `POST /api/managed-agents/cancel` `{"sessionId"}`: stamp `cancelled_at` once, atomically.
//!
//! Order of checks: session cookie (401) → Origin (403) → rate limit (429; every
//! authenticated request counts, including those that end in 400 or 404, so the limit also
//! caps id probing) → body (413/400) → one conditional `UpdateItem` (404 or 200).
//!
//! Who writes the session's one `status_terminated` event: the run, at its next poll, when
//! one is in flight; this function when none is (idle, never started, or dead past its
//! timeout), right after the stamp. The store's guard makes a second one impossible, so
//! a cancel racing the end of a turn ends with exactly one either way. An
//! `alreadyCancelled` answer also finishes a termination an earlier failed request left out.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{respond, session_id_from};
use crate::app::App;
use crate::clock::Instant;
use crate::domain::SessionId;
use crate::error::ApiError;
use crate::http::JsonObject;
use crate::store::sessions::{CancelOutcome, SessionRecord};
use crate::telemetry::{self, Unit};

/// The route, as API Gateway names it and as the metrics' `Route` dimension reads.
pub const ROUTE: &str = "POST /api/managed-agents/cancel";

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
    match app.sessions.cancel(&scope, &session_id, now).await? {
        CancelOutcome::Cancelled { run_is_live } => {
            tracing::info!(session_id = %session_id, run_is_live, "session cancelled");
            telemetry::emit(ROUTE, &[("Cancels", 1.0, Unit::Count)]);
            if !run_is_live {
                // One strongly consistent read, only on this path: the termination needs the
                // session's last event id.
                if let Some(session) = app.sessions.get(&session_id.as_string()).await? {
                    end_unless_a_run_will(app, &session, now).await?;
                }
            }
            Ok(json!({ "ok": true }))
        }
        CancelOutcome::AlreadyCancelled(session) => {
            telemetry::emit(ROUTE, &[("AlreadyCancelled", 1.0, Unit::Count)]);
            end_unless_a_run_will(app, &session, now).await?;
            Ok(json!({ "ok": true, "alreadyCancelled": true }))
        }
        CancelOutcome::NotFound => Err(ApiError::SessionNotFound),
    }
}

/// Writes `status_terminated` for a cancelled session that no live run will end.
async fn end_unless_a_run_will(
    app: &App,
    session: &SessionRecord,
    now: Instant,
) -> Result<(), ApiError> {
    if session.terminated_at.is_none() && session.live_run(now).is_none() {
        let termination = app.sessions.terminate(session, "cancelled", now).await?;
        telemetry::record_termination(ROUTE, session, termination, Instant::now());
    }
    Ok(())
}

/// The `sessionId` field as a [`SessionId`], with an error that names the field.
pub fn parse_session_id(body: &JsonObject) -> Result<SessionId, ApiError> {
    session_id_from(&body.required_string("sessionId")?)
}

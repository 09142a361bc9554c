//! `POST /api/managed-agents/cancel` `{"sessionId"}`: stamp `cancelled_at` once, atomically.
//!
//! Order of checks: session cookie (401) → Origin (403) → rate limit (429; every
//! authenticated request counts, including those that end in 400 or 404, so the limit also
//! caps id probing) → body (413/400) → one conditional `UpdateItem` (404 or 200).
//!
//! Who writes the session's one `status_terminated` event: the run, when one is in flight;
//! this function when none is (idle, never started, or dead past its timeout), right after
//! the stamp. A run in flight is woken at once: the stamp's own write returns the task token
//! its poll step waits on, and answering it (`SendTaskSuccess`) makes the run poll now
//! instead of at the end of its interval. The answer never depends on the wake-up: a failed
//! one is a log line and a `WakeUpFailed` metric, and the run's next poll still ends it. When
//! Step Functions answers that no step waits on the token (the run's execution died while its
//! lease on the session was still on, or a poll had just timed out), this function writes
//! `status_terminated` itself: one read and one transaction more, on that path only. The
//! store's guard makes a second one impossible, so a cancel racing the end of a turn ends
//! with exactly one either way. An `alreadyCancelled` answer also finishes a termination an
//! earlier failed request left out.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{respond, session_id_from};
use crate::app::App;
use crate::clock::Timestamp;
use crate::domain::SessionId;
use crate::error::ApiError;
use crate::http::JsonObject;
use crate::store::sessions::{CancelOutcome, SessionRecord};
use crate::telemetry::{self, Unit};
use crate::test_hooks::{TestHooks, WakeUpFault};
use crate::workflow::TokenError;

/// The route, as API Gateway names it and as the metrics' `Route` dimension reads.
pub const ROUTE: &str = "POST /api/managed-agents/cancel";

/// Handles one cancel request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    respond(cancel(app, &request).await)
}

async fn cancel(app: &App, request: &Request) -> Result<Value, ApiError> {
    let scope = app.auth.authenticate(request).await?;
    app.auth.require_same_origin(request)?;
    let now = Timestamp::now();
    app.limiter.admit(&scope, &app.config.rate_limits.cancel, now).await?;
    let body = JsonObject::from_request(request)?;
    let session_id = parse_session_id(&body)?;
    let request_id = super::request_id(request);
    match app.sessions.cancel(&scope, &session_id, &request_id, now).await? {
        CancelOutcome::Cancelled { run_is_live, poll_token } => {
            tracing::info!(session_id = %session_id, run_is_live, "session cancelled");
            telemetry::emit(ROUTE, &[("Cancels", 1.0, Unit::Count)]);
            let woken = match poll_token {
                Some(token) if run_is_live => wake_the_run(app, request, &token).await,
                _ => Wake::NotTried,
            };
            if woken == Wake::NoRunWaiting
                && let Some(session) = app.sessions.get(&session_id.as_string()).await?
            {
                // The run's lease is still on, but no poll step waits on its token: it died
                // (or is between two polls). End the session now rather than when the lease
                // runs out; a run that is alive finds the termination written at its next poll.
                let termination = app.sessions.terminate(&session, "cancelled", now).await?;
                telemetry::record_termination(ROUTE, &session, termination, Timestamp::now());
            }
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

/// What a wake-up found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// No wake-up was sent (no live run, or none of its tokens stored yet).
    NotTried,
    /// The run's poll step was answered, or the answer failed for another reason (the run's
    /// next poll ends it).
    Sent,
    /// Step Functions says no step waits on the token: the task ended (a poll had just timed
    /// out), or the run's execution is gone.
    NoRunWaiting,
}

/// Answers the poll step's token so the run sees the cancel now; never fails the request.
async fn wake_the_run(app: &App, request: &Request, token: &str) -> Wake {
    let woken = match TestHooks::new(app.config.workflow.fault_injection).wake_up_fault(request) {
        Some(WakeUpFault::Skip) => return Wake::NotTried,
        Some(WakeUpFault::Refuse) => app.workflow.wake("not-a-task-token").await,
        None => app.workflow.wake(token).await,
    };
    match woken {
        Ok(()) => Wake::Sent,
        Err(error @ TokenError::NotCurrent(_)) => {
            tracing::info!(%error, "no poll step waits on the run's token");
            Wake::NoRunWaiting
        }
        Err(error) => {
            // The run's next poll ends it: at most one poll interval later.
            tracing::warn!(%error, "the run could not be woken");
            telemetry::emit(ROUTE, &[("WakeUpFailed", 1.0, Unit::Count)]);
            Wake::Sent
        }
    }
}

/// Writes `status_terminated` for a cancelled session that no live run will end.
async fn end_unless_a_run_will(
    app: &App,
    session: &SessionRecord,
    now: Timestamp,
) -> Result<(), ApiError> {
    if session.terminated_at.is_none() && session.live_run(now).is_none() {
        let termination = app.sessions.terminate(session, "cancelled", now).await?;
        telemetry::record_termination(ROUTE, session, termination, Timestamp::now());
    }
    Ok(())
}

/// The `sessionId` field as a [`SessionId`], with an error that names the field.
pub fn parse_session_id(body: &JsonObject) -> Result<SessionId, ApiError> {
    session_id_from(&body.required_string("sessionId")?)
}

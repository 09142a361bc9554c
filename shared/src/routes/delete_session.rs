//! `DELETE /api/managed-agents/session?sessionId=`: remove a session and its transcript.
//!
//! Session cookie (401) → Origin (403) → query (400) → one conditional `UpdateItem` that
//! marks the session deleted and cancelled (404 when it is not the caller's, or already
//! deleted) → its events removed for up to [`DELETE_PURGE_BUDGET`] (paged `BatchWriteItem`,
//! unprocessed items retried) → the session item removed → `{"ok":true}`.
//!
//! From the mark on, the session is 404 on every route and never listed, no event can be
//! appended to it, and a run in flight exits at its next poll writing nothing (the execution
//! succeeds). The mark is the delete: once it is written the answer is `{"ok":true}` even if
//! the purge could not finish here (a transcript too long for the budget, DynamoDB failing,
//! this function dying half-way). The marked item stays in the purge queue until its last
//! event is gone, and the purge sweeper (`crate::purge`) finishes what was left, within a
//! minute or so. A later delete of the same id, while it still answers 404, also goes on
//! with the purge.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{respond, session_id_from};
use crate::app::App;
use crate::clock::Timestamp;
use crate::domain::SessionId;
use crate::error::ApiError;
use crate::http::query_param;
use crate::purge::DELETE_PURGE_BUDGET;
use crate::store::sessions::DeleteMark;
use crate::telemetry::{self, Unit};
use crate::test_hooks::TestHooks;

const ROUTE: &str = "DELETE /api/managed-agents/session";

/// Handles one delete request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    respond(delete(app, &request).await)
}

async fn delete(app: &App, request: &Request) -> Result<Value, ApiError> {
    let scope = app.auth.authenticate(request).await?;
    app.auth.require_same_origin(request)?;
    let raw_id = query_param(request, "sessionId")?
        .ok_or_else(|| ApiError::BadRequest("sessionId is required".into()))?;
    let session_id = session_id_from(&raw_id)?;
    let request_id = super::request_id(request);
    match app.sessions.mark_deleted(&scope, &session_id, &request_id, Timestamp::now()).await? {
        DeleteMark::Marked => {
            purge_within_budget(app, request, &session_id).await;
            Ok(json!({ "ok": true }))
        }
        DeleteMark::AlreadyDeleting => {
            // Gone for the caller already; go on with what an interrupted delete left.
            purge_within_budget(app, request, &session_id).await;
            Err(ApiError::SessionNotFound)
        }
        DeleteMark::NotFound => Err(ApiError::SessionNotFound),
    }
}

/// Purges the marked session for up to the budget; whatever is left, the sweeper finishes.
/// Never fails the request: the session is already gone for its owner.
async fn purge_within_budget(app: &App, request: &Request, session_id: &SessionId) {
    let budget = TestHooks::new(app.config.workflow.fault_injection)
        .purge_budget(request)
        .unwrap_or(DELETE_PURGE_BUDGET);
    let deadline = std::time::Instant::now() + budget;
    let left = match app.purger.purge_session(session_id, deadline).await {
        Ok(progress) if progress.finished => {
            tracing::info!(session_id = %session_id, events = progress.deleted, "session deleted");
            return;
        }
        Ok(progress) => format!("out of time after {} events", progress.deleted),
        Err(error) => format!("the purge failed: {error}"),
    };
    tracing::warn!(
        session_id = %session_id,
        reason = %left,
        "session deleted; the purge sweeper removes the rest of its events"
    );
    telemetry::emit(ROUTE, &[("PurgeLeftToSweeper", 1.0, Unit::Count)]);
}

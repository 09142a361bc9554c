//! `DELETE /api/managed-agents/session?sessionId=`: remove a session and its transcript.
//!
//! Session cookie (401) → Origin (403) → query (400) → one conditional `UpdateItem` that
//! marks the session deleted and cancelled (404 when it is not the caller's, or already
//! deleted) → every event removed (paged `BatchWriteItem`, unprocessed items retried) → the
//! session item removed → `{"ok":true}`.
//!
//! From the mark on, the session is 404 on every route and never listed, no event can be
//! appended to it, and a run in flight exits at its next poll writing nothing (the execution
//! succeeds). If the purge is interrupted, the marked item's TTL (a day) removes the session
//! anyway, and a later delete of the same id, while it still answers 404, finishes the purge.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{respond, session_id_from};
use crate::app::App;
use crate::clock::Instant;
use crate::domain::SessionId;
use crate::error::ApiError;
use crate::http::query_param;
use crate::store::sessions::DeleteMark;

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
    match app.sessions.mark_deleted(&scope, &session_id, Instant::now()).await? {
        DeleteMark::Marked => {
            let events = purge(app, &session_id).await?;
            tracing::info!(session_id = %session_id, events, "session deleted");
            Ok(json!({ "ok": true }))
        }
        DeleteMark::AlreadyDeleting => {
            // Gone for the caller already; finish what an interrupted delete left.
            purge(app, &session_id).await?;
            Err(ApiError::SessionNotFound)
        }
        DeleteMark::NotFound => Err(ApiError::SessionNotFound),
    }
}

async fn purge(app: &App, session_id: &SessionId) -> Result<usize, ApiError> {
    let events = app.events.purge(&session_id.as_string()).await?;
    app.sessions.remove_deleted(session_id).await?;
    Ok(events)
}

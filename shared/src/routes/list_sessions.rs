//! `GET /api/managed-agents/sessions`: the caller's sessions, newest first.
//!
//! Session cookie (401) → the read limit (429), one counter shared with `GET /transcript`
//! (see `routes/transcript.rs`: every authenticated request counts) → at most
//! [`LIST_LIMIT`] sessions of this user in this organisation, newest `updatedAt` first
//! (`updatedAt` moves whenever an event is written), from a query of the `by_owner` index
//! checked against the table (see `SessionStore::list_owned`).
//! Each summary: `id, title, status (running | idle | terminated), createdAt, updatedAt`,
//! and `cancelledAt` with `cancelledBy` (the user whose cancel stamped it) when set. A GET changes nothing: no Origin needed.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::respond;
use crate::app::App;
use crate::clock::Timestamp;
use crate::error::ApiError;

/// Most sessions one list answers.
pub const LIST_LIMIT: usize = 50;

/// Handles one list request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    respond(list(app, &request).await)
}

async fn list(app: &App, request: &Request) -> Result<Value, ApiError> {
    let scope = app.auth.authenticate(request).await?;
    let now = Timestamp::now();
    app.limiter.admit(&scope, &app.config.rate_limits.reads, now).await?;
    let sessions: Vec<Value> = app
        .sessions
        .list_owned(&scope, LIST_LIMIT)
        .await?
        .into_iter()
        .map(|session| {
            let mut summary = json!({
                "id": session.id,
                "title": session.title,
                "status": session.visible_status(now).as_str(),
                "createdAt": session.created_at,
                "updatedAt": session.updated_at,
            });
            if let Some(cancelled_by) = &session.cancelled_by {
                summary["cancelledBy"] = json!(cancelled_by);
            }
            if let Some(cancelled_at) = session.cancelled_at {
                summary["cancelledAt"] = json!(cancelled_at);
            }
            summary
        })
        .collect();
    Ok(json!({ "sessions": sessions }))
}

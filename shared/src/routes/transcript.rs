//! `GET /api/managed-agents/transcript?sessionId=&sinceEventId=`: a page of a session's events.
//!
//! Order of checks: session cookie (401) → the read limit (429), one counter shared with
//! `GET /sessions` → query (400: `sessionId` missing or not a UUID, `sinceEventId` not a
//! UUID) → the session, read strongly consistently and scoped to the caller's user and
//! organisation (404 otherwise) → one `Query` of the events after the cursor, at most
//! [`PAGE_SIZE`], with `hasMore` when another page waits. A GET changes nothing, so it needs
//! no `Origin`.
//!
//! The read limit counts every authenticated request, as cancel's does, including those
//! that end in 400 or 404: each still costs the auth read and the counter, a 404 also the
//! session read, and counting them caps id probing too. Clients poll this route, which is
//! why the default (300 a minute, transcript and list together) is ten times cancel's. A
//! request refused at the cookie (401) never reaches the counter.
//!
//! The next page is asked for with `sinceEventId` = the last event id of this one.
//! `workflowRunId` is the live run's id, or null when no turn is in flight. The events are
//! read up to the session's `last_event_id` as read, so the run id and the events are one
//! snapshot: a transcript never shows `status_terminated` with a run still active, nor a
//! null run without the event that ended it.
//! `backfillFailed` is always false: every event is written to the one events table as it
//! happens, so there is no older store to backfill from that could fail.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{respond, session_id_from};
use crate::app::App;
use crate::clock::Timestamp;
use crate::domain::EventId;
use crate::error::ApiError;
use crate::http::query_param;

/// Most events one transcript response carries.
pub const PAGE_SIZE: usize = 100;

/// Handles one transcript request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    respond(transcript(app, &request).await)
}

async fn transcript(app: &App, request: &Request) -> Result<Value, ApiError> {
    let scope = app.auth.authenticate(request).await?;
    app.limiter.admit(&scope, &app.config.rate_limits.reads, Timestamp::now()).await?;
    let raw_id = query_param(request, "sessionId")?
        .ok_or_else(|| ApiError::BadRequest("sessionId is required".into()))?;
    let session_id = session_id_from(&raw_id)?;
    let since = match query_param(request, "sinceEventId")? {
        None => None,
        Some(raw) => Some(EventId::parse(&raw).ok_or_else(|| {
            ApiError::BadRequest("sinceEventId must be an event id (a UUID)".into())
        })?),
    };
    let session =
        app.sessions.get_owned(&scope, &session_id).await?.ok_or(ApiError::SessionNotFound)?;
    let page =
        app.events.page(&session.id, since.as_ref(), &session.last_event_id, PAGE_SIZE).await?;
    let events: Vec<Value> = page
        .events
        .into_iter()
        .map(|event| {
            json!({
                "id": event.id,
                "type": event.kind,
                "occurredAt": event.occurred_at,
                "payload": event.payload,
            })
        })
        .collect();
    let run = session.live_run(Timestamp::now()).map(|run| run.id.as_str().to_owned());
    Ok(json!({
        "title": session.title,
        "workflowRunId": run,
        "events": events,
        "hasMore": page.has_more,
        "backfillFailed": false,
    }))
}

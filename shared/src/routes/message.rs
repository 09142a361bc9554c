//! `POST /api/managed-agents/message` `{"sessionId","text"}`: a user message for a session.
//!
//! Order of checks: session cookie (401) → Origin (403) → rate limit, 60 a minute (429) →
//! body (413/400) → the session, scoped to the caller (404) → cancelled (409) → one
//! transaction appending the `user_message` event with a guard on the stored active run:
//! - no live run: the same write makes a new run active (guarded by "no live run"), then its
//!   execution starts, as create does (502 if it cannot);
//! - a live run: the same write queues the message on that run (guarded by "this run is
//!   still active"); the run takes it up in a new turn right after the current one, before
//!   going idle, because its final `status_idle` is refused while a message is queued.
//!
//! When a guard refuses (the run ended, or another message started one, a moment ago), the
//! session is read again and the other branch is taken: no message is lost, and a session
//! never has two runs.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{respond, session_id_from, start_run};
use crate::app::App;
use crate::clock::Timestamp;
use crate::domain::{EventType, RunId};
use crate::error::ApiError;
use crate::http::JsonObject;
use crate::routes::create_session::parse_text;
use crate::store::StoreError;
use crate::store::sessions::NewEvent;
use crate::workflow::RUN_LEASE;

/// How many times a message is re-tried when the run it saw changes under it.
const ATTEMPTS: u32 = 5;

/// Handles one message request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    respond(message(app, &request).await)
}

async fn message(app: &App, request: &Request) -> Result<Value, ApiError> {
    let scope = app.auth.authenticate(request).await?;
    app.auth.require_same_origin(request)?;
    app.limiter.admit(&scope, &app.config.rate_limits.message, Timestamp::now()).await?;
    let body = JsonObject::from_request(request)?;
    let session_id = session_id_from(&body.required_string("sessionId")?)?;
    let text = parse_text(&body)?;
    let event = NewEvent::new(EventType::UserMessage, json!({ "text": text.as_str() }));
    for _ in 0..ATTEMPTS {
        let session =
            app.sessions.get_owned(&scope, &session_id).await?.ok_or(ApiError::SessionNotFound)?;
        if session.cancelled_at.is_some() {
            return Err(ApiError::SessionCancelled);
        }
        let now = Timestamp::now();
        match session.live_run(now) {
            Some(run) => {
                if app.sessions.append_message_queued(&session, &event, &run.id, now).await? {
                    tracing::info!(session_id = %session_id, run_id = %run.id, "message queued");
                    return Ok(json!({ "ok": true }));
                }
            }
            None => {
                let run = RunId::new();
                let appended = app
                    .sessions
                    .append_message_starting_run(&session, &event, &run, RUN_LEASE, now)
                    .await?;
                if appended {
                    tracing::info!(session_id = %session_id, run_id = %run, "message starts a run");
                    start_run(app, &session_id, &run).await?;
                    return Ok(json!({ "ok": true }));
                }
            }
        }
    }
    Err(StoreError::Unfinished(format!("session {session_id}: message kept racing other writes"))
        .into())
}

//! `GET /api/managed-agents/transcript?sessionId=&sinceEventId=&waitSeconds=`: a page of a
//! session's events.
//!
//! Order of checks: session cookie (401) → the read limit (429), one counter shared with
//! `GET /sessions` → query (400: `sessionId` missing or not a UUID, `sinceEventId` not a
//! UUID, `waitSeconds` not a whole number from 0 to [`MAX_WAIT_SECONDS`]) → the session, read
//! strongly consistently and scoped to the caller's user and organisation (404 otherwise) →
//! one `Query` of the events after the cursor, at most [`PAGE_SIZE`], with `hasMore` when
//! another page waits. A GET changes nothing, so it needs no `Origin`.
//!
//! A waiting read (`waitSeconds` > 0, with a `sinceEventId` at the session's end) holds the
//! request until an event is written after the cursor, then answers it as above; after
//! `waitSeconds` with nothing new, it answers an empty page. While it waits it reads the
//! session item every [`WAIT_READ_EVERY`], eventually consistently, for a `last_event_id`
//! past the cursor (every append moves it): it sleeps between reads and never spins, and the
//! answer itself is read strongly as always. A session deleted meanwhile ends the wait with
//! 404. The wait is cut to the Lambda invocation's time left minus [`ANSWER_RESERVE`] (the
//! function's timeout is 28 s, inside HTTP API's 30 s integration timeout), and counts once
//! against the read limit, like any read. Without a cursor there is always an event to
//! answer (the opening message), so the read never waits.
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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};

use super::{respond, session_id_from};
use crate::app::App;
use crate::clock::Timestamp;
use crate::domain::{EventId, SessionId, UserScope};
use crate::error::ApiError;
use crate::http::query_param;
use crate::store::sessions::SessionRecord;

/// Most events one transcript response carries.
pub const PAGE_SIZE: usize = 100;

/// The longest `waitSeconds` a read may ask for.
pub const MAX_WAIT_SECONDS: u64 = 20;

/// How often a waiting read looks at the session for a new event: a reader holds a new event
/// about half this long after it is written, on average, and a waiting minute costs 300
/// eventually consistent reads of the session item (150 read units; `docs/scale.md`).
pub const WAIT_READ_EVERY: Duration = Duration::from_millis(200);

/// The time a waiting read keeps in hand before its invocation's deadline, for the reads
/// that make its answer.
pub const ANSWER_RESERVE: Duration = Duration::from_secs(2);

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
    let wait = wait_seconds(request)?;
    let mut session =
        app.sessions.get_owned(&scope, &session_id).await?.ok_or(ApiError::SessionNotFound)?;
    if !wait.is_zero() && !has_events_after(&session, since.as_ref()) {
        let budget = wait.min(time_left(request).saturating_sub(ANSWER_RESERVE));
        session = wait_for_event(app, &scope, &session_id, since.as_ref(), budget).await?;
    }
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

/// The `waitSeconds` query parameter: absent is no wait.
fn wait_seconds(request: &Request) -> Result<Duration, ApiError> {
    let Some(raw) = query_param(request, "waitSeconds")? else {
        return Ok(Duration::ZERO);
    };
    raw.parse::<u64>()
        .ok()
        .filter(|seconds| raw.bytes().all(|b| b.is_ascii_digit()) && *seconds <= MAX_WAIT_SECONDS)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "waitSeconds must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}"
            ))
        })
}

/// Whether the session holds an event after `since` (any event, without a cursor).
fn has_events_after(session: &SessionRecord, since: Option<&EventId>) -> bool {
    since.is_none_or(|since| session.last_event_id > *since)
}

/// How long this invocation may still run (its Lambda deadline), or [`Duration::MAX`] when
/// it knows no deadline: outside Lambda (in-process tests), or under `cargo lambda watch`,
/// which sends every invocation the same `Lambda-Runtime-Deadline-Ms: 600000` (1970). A
/// deadline already past when the request is read is taken as unknown: on AWS an invocation
/// past its deadline is no longer running.
fn time_left(request: &Request) -> Duration {
    let Some(deadline_ms) = request.lambda_context_ref().map(|context| context.deadline) else {
        return Duration::MAX;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    match deadline_ms.checked_sub(now_ms) {
        Some(left) if left > 0 => Duration::from_millis(left),
        _ => Duration::MAX,
    }
}

/// Waits up to `budget` for an event after `since`, reading the session every
/// [`WAIT_READ_EVERY`]; answers the session read strongly at the end (with the new event, or
/// as it is when the time ran out). 404 when the session is deleted meanwhile.
async fn wait_for_event(
    app: &App,
    scope: &UserScope,
    session_id: &SessionId,
    since: Option<&EventId>,
    budget: Duration,
) -> Result<SessionRecord, ApiError> {
    // `budget` is at most MAX_WAIT_SECONDS.
    let deadline = tokio::time::Instant::now() + budget;
    let id = session_id.as_string();
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep_until((now + WAIT_READ_EVERY).min(deadline)).await;
        let seen = app.sessions.get_eventually(&id).await?;
        match seen.filter(|seen| seen.is_owned_by(scope) && seen.deleted_at.is_none()) {
            Some(seen) if has_events_after(&seen, since) => break,
            Some(_) => {}
            // Gone or being deleted, as far as a possibly stale read shows: a strong read
            // decides, so a lagging replica never turns a live session into a 404.
            None => match app.sessions.get_owned(scope, session_id).await? {
                None => return Err(ApiError::SessionNotFound),
                Some(current) if has_events_after(&current, since) => return Ok(current),
                Some(_) => {}
            },
        }
    }
    app.sessions.get_owned(scope, session_id).await?.ok_or(ApiError::SessionNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::lambda_runtime::Context;

    fn request_with_deadline(deadline_ms: u64) -> Request {
        let mut context = Context::default();
        context.deadline = deadline_ms;
        lambda_http::http::Request::builder()
            .body(Body::Empty)
            .unwrap()
            .with_lambda_context(context)
    }

    #[test]
    fn the_wait_is_cut_to_the_invocations_deadline_when_it_has_a_real_one() {
        let now_ms =
            u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis())
                .unwrap();
        let left = time_left(&request_with_deadline(now_ms + 10_000));
        assert!(left <= Duration::from_secs(10) && left > Duration::from_secs(8), "{left:?}");
        // cargo lambda watch's fixed deadline (epoch ms 600000), and none at all: unknown.
        assert_eq!(time_left(&request_with_deadline(600_000)), Duration::MAX);
        let outside = lambda_http::http::Request::builder().body(Body::Empty).unwrap();
        assert_eq!(time_left(&outside), Duration::MAX);
    }
}

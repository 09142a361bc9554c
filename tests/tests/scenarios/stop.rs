//! Issue 16: the worker stops at once. A cancel or a delete closes the model call, or drops
//! the tool call, at the stop watch (a read of the session every 100 ms), not at the
//! heartbeat: the emulator holds every lease renewal of the session meanwhile, so a worker
//! that learnt of the cancel from its heartbeat would stop seconds later.
//!
//! Over HTTP at the test stack's 1 s poll interval, while the model streams, while it is
//! silent and while a tool runs; and with a worker in this process built as the worker
//! function builds it for a 5 s interval (heartbeat 2.5 s), the same three, to show that the
//! watch's pace does not follow the interval. While the model streams over HTTP, the next
//! text write (every 0.5 s) is refused after the cancel and may stop the worker first; the
//! worker in this process writes text every 10 s, so there only the watch can.

use std::time::{Duration, Instant};

use knoq_shared::agent::provider::ApiKey;
use knoq_shared::agent::worker::{Worker, WorkerOutcome, WorkerRequest};
use knoq_shared::app::App;
use knoq_shared::clock::Timestamp;
use knoq_shared::config::AgentConfig;
use knoq_shared::domain::{MessageText, RunId, SessionId};
use knoq_shared::store::sessions::CancelOutcome;
use knoq_shared::workflow::TURN_TIMEOUT;
use knoq_tests::*;
use serde_json::json;

/// How long the emulator holds each lease renewal once the test is about to cancel: longer
/// than any stop the tests accept, so only the stop watch can stop the worker in time.
const RENEWALS_HELD: Duration = Duration::from_secs(8);
/// How long the emulator holds the tool's first read (`search_sessions` lists the caller's
/// sessions): a tool call still awaited past this would have its result written.
const TOOL_HELD: Duration = Duration::from_secs(5);
/// The longest a stop may take after the cancel's answer: well past the watch's 100 ms pace
/// on a loaded machine, well short of a held renewal's answer.
const STOP_WITHIN: Duration = Duration::from_millis(1_500);
/// How long the test waits after the turn is under way before it cancels.
const BEFORE_THE_CANCEL: Duration = Duration::from_millis(300);

/// What the worker is waiting on when the cancel comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The model streams 400 words, one every 40 ms.
    Streaming,
    /// The model has sent its first bytes and then nothing for 30 s.
    Silent,
    /// The `search_sessions` tool, whose first read the emulator holds [`TOOL_HELD`].
    Tool,
}

impl Waiting {
    /// The provider emulator's directive for it.
    fn directive(self) -> &'static str {
        match self {
            Self::Streaming => "notool=1 words=400 delay_ms=40",
            Self::Silent => "notool=1 silent_ms=30000",
            Self::Tool => "delay_ms=20",
        }
    }
}

/// The tool's read of the sessions of `owner` (`org#user`), held [`TOOL_HELD`] once.
async fn hold_the_tool_read(owner: &str) -> PlantedFault {
    Fault::slow("Query", "SessionsTable", TOOL_HELD).containing(owner).times(1).plant().await
}

/// Every lease renewal of `session_id` from now on, held [`RENEWALS_HELD`].
async fn hold_the_renewals(session_id: &str) -> PlantedFault {
    Fault::slow("UpdateItem", "SessionsTable", RENEWALS_HELD)
        .containing(session_id)
        .containing("SET worker_renewed_until")
        .plant()
        .await
}

/// Waits until the worker waits on `waiting`: the model's first bytes arrived (tagged
/// `tag`), or the tool's held read arrived at the emulator. Answers when that was seen.
async fn under_way(waiting: Waiting, tag: &str, tool_read: &PlantedFault) -> Instant {
    if waiting != Waiting::Tool {
        provider_calls_until(tag, Duration::from_secs(20), |calls| {
            calls.first().is_some_and(|call| !call["firstByteAtMs"].is_null())
        })
        .await;
        return Instant::now();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while tool_read.hits().await == 0 {
        assert!(Instant::now() < deadline, "the tool never read the sessions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

/// Over HTTP at the stack's interval: the worker stops within [`STOP_WITHIN`] of the answer
/// of a cancel (or, with `delete`, a delete) while it waits on `waiting`. While the model
/// waits, the provider emulator records the worker hanging up; while a tool runs, its
/// result is never written, even after the held read answers (the call was dropped; how soon
/// is timed by the in-process test below, as nothing over HTTP shows when a dropped read
/// was given up).
async fn the_stop_watch_stops_the_worker(waiting: Waiting, delete: bool) {
    let caller = new_caller().await;
    let client = ApiClient::new(Some(&caller.token));
    let tag = unique("watch");
    let owner = format!("{}#{}", caller.org_id, caller.user_id);
    let tool_read = hold_the_tool_read(&owner).await;
    let text = format!("Find my Lisbon plans [[emu tag={tag} {}]]", waiting.directive());
    let (id, _) = client.create(&text).await;
    let seen = under_way(waiting, &tag, &tool_read).await;
    let renewals = hold_the_renewals(&id).await;
    let result_written = Fault::slow("TransactWriteItems", "EventsTable", Duration::from_millis(1))
        .containing(&id)
        .containing("tool_result")
        .plant()
        .await;
    tokio::time::sleep(BEFORE_THE_CANCEL).await;
    if delete {
        let (status, _, body) = client.delete("session", &[("sessionId", &id)]).await;
        assert_eq!((status.as_u16(), body), (200, json!({ "ok": true })));
    } else {
        assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    }
    let answered = epoch_ms();
    if waiting == Waiting::Tool {
        // Past the moment the held read answers, and a little more for the result's write.
        tokio::time::sleep_until((seen + TOOL_HELD + Duration::from_secs(1)).into()).await;
        assert_eq!(result_written.hits().await, 0, "the tool call was dropped, never answered");
    } else {
        let calls = provider_calls_until(&tag, Duration::from_secs(10), |calls| {
            !calls[0]["closedAtMs"].is_null()
        })
        .await;
        assert_eq!(calls[0]["closedBy"], "client", "the worker hung up: {}", calls[0]);
        let closed_after = calls[0]["closedAtMs"].as_i64().unwrap() - answered;
        assert!(
            closed_after < STOP_WITHIN.as_millis() as i64,
            "closed {closed_after} ms after the answer: a heartbeat's pace, not the watch's"
        );
    }
    for fault in [renewals, result_written, tool_read] {
        fault.clear().await;
    }
    if delete {
        let (status, _, _) = client.get("transcript", &[("sessionId", &id)]).await;
        assert_eq!(status.as_u16(), 404);
        return;
    }
    let ended = client
        .transcript_until(&id, Duration::from_millis(50), Duration::from_secs(15), |t| {
            count_of(t, "status_terminated") > 0
        })
        .await;
    assert_eq!(event_types(&ended).last().unwrap(), "status_terminated");
    assert_eq!(count_of(&ended, "tool_result"), 0, "{:?}", event_types(&ended));
}

#[tokio::test]
async fn a_cancel_while_the_model_streams_closes_the_call_at_the_stop_watch_not_the_heartbeat() {
    the_stop_watch_stops_the_worker(Waiting::Streaming, false).await;
}

#[tokio::test]
async fn a_cancel_while_the_model_is_silent_closes_the_call_at_the_stop_watch_not_the_heartbeat() {
    the_stop_watch_stops_the_worker(Waiting::Silent, false).await;
}

#[tokio::test]
async fn a_cancel_while_a_tool_runs_drops_the_tool_call_at_the_stop_watch_not_the_heartbeat() {
    the_stop_watch_stops_the_worker(Waiting::Tool, false).await;
}

#[tokio::test]
async fn a_delete_while_the_model_streams_closes_the_call_at_the_stop_watch_not_the_heartbeat() {
    the_stop_watch_stops_the_worker(Waiting::Streaming, true).await;
}

/// A model call whose first attempt was answered 529 waits 3 s (`retry-after`) before the
/// provider client tries again. A cancel answered during that wait ends it without the retry:
/// the worker renews its lease before every attempt, and the guard refuses it. The stop watch's
/// reads and the heartbeat's renewals are held by the emulator meanwhile, as a loaded store
/// would answer them late: before the fix, the retry then opened a model call after the
/// cancel's answer (chaos seeds 608 and 609, `no_provider_call_after_cancel`).
#[tokio::test]
async fn a_cancel_while_a_model_call_waits_to_be_retried_stops_it_before_the_retry() {
    let client = ApiClient::for_new_caller().await;
    let tag = unique("retry");
    let directive = "notool=1 words=5 fail=529:1 retry_after=3";
    let (id, _) = client.create(&format!("Go on [[emu tag={tag} {directive}]]")).await;
    let refused = provider_calls_until(&tag, Duration::from_secs(20), |calls| {
        calls.first().is_some_and(|call| call["status"] == 529)
    })
    .await;
    let refused_at = refused[0]["startedAtMs"].as_i64().unwrap();
    let renewals = hold_the_renewals(&id).await;
    let watch = Fault::slow("GetItem", "SessionsTable", RENEWALS_HELD)
        .containing(&id)
        .containing("cancelled_at, deleted_at, active_run, worker_id")
        .plant()
        .await;
    assert_eq!(client.cancel(&id).await, json!({ "ok": true }));
    let answered = epoch_ms();
    assert!(answered < refused_at + 2_500, "the cancel came well before the retry was due");
    // Past the retry's due time (3 s after the 529), with a margin for a loaded machine.
    let due = refused_at + 3_000 + 2_000;
    tokio::time::sleep(Duration::from_millis((due - epoch_ms()).max(0) as u64)).await;
    let calls = provider_calls(&tag).await;
    for fault in [renewals, watch] {
        fault.clear().await;
    }
    let late: Vec<_> =
        calls.iter().filter(|call| call["startedAtMs"].as_i64().unwrap() > answered).collect();
    assert!(late.is_empty(), "a model call opened after the cancel's answer: {late:?}");
    assert_eq!(calls.len(), 1, "the retry never opened: {calls:?}");
    let ended = client
        .transcript_until(&id, Duration::from_millis(50), Duration::from_secs(20), |t| {
            count_of(t, "status_terminated") > 0
        })
        .await;
    assert_eq!(event_types(&ended).last().unwrap(), "status_terminated");
}

/// A worker in this process, built as the worker function builds it, for runs that poll
/// every 5 s: its heartbeat comes every 2.5 s, its stop watch every 100 ms as at any interval.
/// Its text is written every 10 s, not 0.5 s: a text write after the cancel is refused and
/// stops the worker too, and here only the watch may.
fn worker_polling_every_five_seconds(app: &App) -> Worker {
    let agent = AgentConfig::from_lookup(|name| match name {
        "ANTHROPIC_BASE_URL" => Some(provider_url()),
        "ANTHROPIC_API_KEY_SECRET_ARN" => Some("unread: the key is given below".into()),
        "KNOQ_TEXT_FLUSH_MS" => Some("10000".into()),
        _ => None,
    })
    .expect("the worker's settings");
    let key = std::env::var("KNOQ_PROVIDER_API_KEY").expect("KNOQ_PROVIDER_API_KEY: `make test`");
    Worker::for_app(app, &agent, ApiKey::new(key), Duration::from_secs(5)).expect("a worker")
}

/// With a worker in this process polling every 5 s: the session is created with its run as
/// the create route writes it (no execution behind it, so no other worker claims the turn),
/// the worker plays the turn, and a cancel while it waits on `waiting` ends its invocation
/// `Stopped` within [`STOP_WITHIN`] of the cancel's write: before the held tool read could
/// answer, and a heartbeat (every 2.5 s, its renewals held) could not have done it.
async fn at_five_second_polls_the_stop_watch_stops_the_worker(waiting: Waiting) {
    let app = app().await;
    let caller = new_caller().await;
    let scope = scope_of(&app, &caller).await;
    let tool_read = hold_the_tool_read(&scope.owner_key()).await;
    let tag = unique("watch5");
    let (id, run) = (SessionId::new(), RunId::new());
    let text = format!("Find my Lisbon plans [[emu tag={tag} {}]]", waiting.directive());
    let text = MessageText::parse(text).expect("a valid message");
    app.sessions.create(&scope, &id, &text, &run, TURN_TIMEOUT, Timestamp::now()).await.unwrap();
    let worker = worker_polling_every_five_seconds(&app);
    let request = WorkerRequest { session_id: id.as_string(), run_id: run.as_str().to_owned() };
    let play = async { (worker.handle(request).await, Instant::now()) };
    let cancel = async {
        let seen = under_way(waiting, &tag, &tool_read).await;
        let renewals = hold_the_renewals(&id.as_string()).await;
        tokio::time::sleep(BEFORE_THE_CANCEL).await;
        let outcome = app.sessions.cancel(&scope, &id, "stop-test", Timestamp::now()).await;
        (seen, renewals, outcome, Instant::now())
    };
    let ((answer, stopped_at), (seen, renewals, cancelled, answered)) = tokio::join!(play, cancel);
    renewals.clear().await;
    tool_read.clear().await;
    assert!(matches!(cancelled, Ok(CancelOutcome::Cancelled { .. })), "{cancelled:?}");
    let answer = answer.expect("the worker ends without a store error");
    assert_eq!(answer.outcome, WorkerOutcome::Stopped, "{waiting:?}");
    let took = stopped_at.saturating_duration_since(answered);
    assert!(took < STOP_WITHIN, "{waiting:?}: stopped {took:?} after the cancel");
    if waiting == Waiting::Tool {
        assert!(stopped_at < seen + TOOL_HELD, "the tool call was dropped, not awaited");
    } else {
        let calls = provider_calls_until(&tag, Duration::from_secs(10), |calls| {
            !calls[0]["closedAtMs"].is_null()
        })
        .await;
        assert_eq!(calls[0]["closedBy"], "client", "the worker hung up: {}", calls[0]);
    }
}

#[tokio::test]
async fn at_five_second_polls_a_cancel_while_the_model_streams_stops_the_worker_at_the_watch() {
    at_five_second_polls_the_stop_watch_stops_the_worker(Waiting::Streaming).await;
}

#[tokio::test]
async fn at_five_second_polls_a_cancel_while_the_model_is_silent_stops_the_worker_at_the_watch() {
    at_five_second_polls_the_stop_watch_stops_the_worker(Waiting::Silent).await;
}

#[tokio::test]
async fn at_five_second_polls_a_cancel_while_a_tool_runs_stops_the_worker_at_the_watch() {
    at_five_second_polls_the_stop_watch_stops_the_worker(Waiting::Tool).await;
}

//! The sessions table (`id`) and every write that appends to a session's transcript.
//!
//! A session item: `id, owner (org#user), user_id, org_id, title, status, created_at,
//! updated_at, last_event_id`; while a turn runs, `active_run, run_started_at,
//! run_expires_at, turn_step`; once cancelled, `cancelled_at, cancel_saw_run_until` (the
//! live run's expiry then; 0 for none), `cancelled_by` and `cancel_request_id` (who cancelled,
//! and which request); once ended for good, `terminated_at`; `queued_messages` (user messages waiting for the next turn
//! of the active run) and `runs_started`; while being deleted (a tombstone), `deleted_at`
//! and `purge_queue`, its key in the [`PURGE_QUEUE_INDEX`] that the purge sweeper reads:
//! the item stays until its last event is gone, however long that takes.
//!
//! Every event is appended in one transaction with an update of its session item, and that
//! update carries the guard that decides whether the event may be written at all:
//! - `last_event_id < :new_id` on every append, so the transcript's key order is the order of
//!   the writes, whichever container or clock made them;
//! - agent events only while their run is the session's active run, at the step the run
//!   expects, and the session is not cancelled: so no agent event can follow a cancel, and a
//!   retried step cannot write twice;
//! - `status_terminated` only once: `attribute_not_exists(terminated_at)`, set in the same
//!   write. Whoever tries second (the cancel function or the run) finds it set;
//! - nothing at all once the session is being deleted (`attribute_not_exists(deleted_at)`), so
//!   the purge, which reads the events after marking the session, sees every one of them.
//!
//! This file holds the records and the append every writer shares; the writers live beside
//! it by concern: `cancel.rs` (the stamp, `status_terminated`), `messages.rs` (a user's
//! message), `run.rs` (the checker's writes of a run), `delete.rs` (the mark, the purge
//! queue), `list.rs` (the caller's sessions); the worker's writes are in
//! [`super::turn_worker`].

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use serde_json::Value;

use super::{
    Attempts, Item, StoreError, Transaction, UNPROCESSED_RETRIES, get_i64, get_s, n,
    pause_before_resend, require_s, retry_conflicts, s, transact, updated,
};
use crate::clock::Timestamp;
use crate::domain::{EventId, EventType, MessageText, RunId, SessionId, SessionStatus, UserScope};

mod cancel;
mod delete;
mod list;
mod messages;
mod run;

/// How many times an append whose only obstacle was a newer event is retried.
const APPEND_ATTEMPTS: u32 = 5;

/// The attributes that describe the active run; removed together when it ends.
/// (`poll_token` and the cancel's copy of it are large, about 700 bytes each: they go too.)
pub(super) const RUN_ATTRIBUTES: &str = "active_run, run_started_at, run_expires_at, turn_step, \
     queued_messages, turn_messages, poll_token, poll_token_at, cancel_saw_poll_token, worker_id, \
     worker_lease_until, worker_renewed_until, worker_restarted_at, turn_result, turn_error_type, \
     turn_error_message, turn_input_tokens, turn_output_tokens";

/// The attributes of one turn's worker; removed when the next turn of the same run starts.
pub(super) const TURN_WORKER_ATTRIBUTES: &str = "worker_id, worker_lease_until, \
     worker_renewed_until, worker_restarted_at, turn_result, turn_error_type, turn_error_message, turn_input_tokens, \
     turn_output_tokens";

/// What a new run removes from the session: whatever a run that died (its execution gone,
/// its lease run out) left of its poll and its worker, so the new run's worker can claim its
/// turn and its checker does not read the dead worker's result as the new turn's.
const DEAD_RUN_LEFTOVERS: &str = "poll_token, poll_token_at, worker_id, worker_lease_until, \
     worker_renewed_until, worker_restarted_at, turn_result, turn_error_type, turn_error_message, turn_input_tokens, \
     turn_output_tokens";

/// The sessions table's index of a user's sessions in an organisation by `updated_at`.
pub const OWNER_INDEX: &str = "by_owner";

/// How many owner-index entries one list may read per session it lists (500 for 50): the
/// bound on the work a user with many deleted-but-not-yet-removed sessions can cause.
pub const LIST_INDEX_BUDGET: usize = 10;

/// How many index entries beyond those still missing a list page asks for, so that a few
/// deleted ones among them cost no extra page.
const LIST_SLACK: usize = 10;

/// The sparse index of sessions marked deleted whose events may not all be gone yet:
/// `purge_queue` (always [`PURGE_PENDING`]) and `deleted_at`, oldest first. Only tombstones
/// carry `purge_queue`, so the index holds just the purges still to finish; removing the
/// tombstone (the last step of a purge) takes it out. One partition takes about 1,000 marks
/// a second; well above any delete rate this service sees (shard the value if that changes).
pub const PURGE_QUEUE_INDEX: &str = "purge_queue";

/// The one `purge_queue` value.
const PURGE_PENDING: &str = "pending";

/// One page of the purge queue ([`SessionStore::pending_purges`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeQueuePage {
    /// Sessions marked deleted, oldest mark first, each with when it was marked.
    pub sessions: Vec<(SessionId, Timestamp)>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<Item>,
}

/// The run a session has in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRun {
    /// The run's id (the workflow execution's name).
    pub id: RunId,
    /// When the run started.
    pub started_at: Timestamp,
    /// When the run's execution times out at the latest: past this, the run is dead.
    pub expires_at: Timestamp,
    /// How many agent steps the run has written.
    pub step: u32,
    /// What the worker of the current turn reported, as far as it got.
    pub worker: TurnWorker,
}

/// The worker of a run's current turn, as the session item records it (see
/// [`crate::agent::worker`]): who claimed the turn, until when its lease runs, and how
/// the turn ended once it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnWorker {
    /// The invocation that claimed the turn; `None` until a worker starts.
    pub worker_id: Option<String>,
    /// The worker's lease: past this without a result, the worker is taken for dead.
    pub lease_until: Option<Timestamp>,
    /// How the turn ended (`end_turn`, `max_tokens`, `max_steps`, or `failed`), once the
    /// worker has written its last event.
    pub result: Option<String>,
    /// For a failed turn, the `errorType` of its `error` event.
    pub error_type: Option<String>,
    /// For a failed turn, the `message` of its `error` event.
    pub error_message: Option<String>,
    /// Input tokens the turn's model calls used, as far as known.
    pub input_tokens: u64,
    /// Output tokens the turn's model calls used, as far as known.
    pub output_tokens: u64,
}

/// What must still hold, beyond the run being active, for [`SessionStore::fail_turn`] to end
/// a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureGuard {
    /// Nothing more: the turn failed of itself (the worker reported it, the run reached its
    /// time limit, the workflow failed).
    RunActive,
    /// No worker lease (a claim's, an append's or a renewal's) runs past the failure's
    /// `now`: the caller read a lease that had run out. A worker that claimed the turn or
    /// renewed its lease since (one stalled past its lease, then woke) keeps the turn, and
    /// the caller reads again; otherwise the worker's next renewal is refused, before any
    /// model call it would open. Without it both wrote: chaos seed 618, where a renewal came
    /// between the checker's read and its write, a model call opened, and its answer was
    /// refused and lost.
    LeaseRunOut,
}

/// A session item as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session id.
    pub id: String,
    /// The owning user.
    pub user_id: String,
    /// The owning organisation.
    pub org_id: String,
    /// The first 60 characters of the opening message.
    pub title: String,
    /// `running`, `idle` or `terminated`.
    pub status: String,
    /// When the session was created (RFC 3339).
    pub created_at: String,
    /// When anything was last written to it (RFC 3339).
    pub updated_at: String,
    /// The id of the last event appended.
    pub last_event_id: EventId,
    /// The run in flight, if any (possibly dead: see [`SessionRecord::live_run`]).
    pub active_run: Option<ActiveRun>,
    /// When the session was cancelled, if it was.
    pub cancelled_at: Option<String>,
    /// Who cancelled it: the caller's user id, written with the stamp.
    pub cancelled_by: Option<String>,
    /// The request that cancelled it (its Lambda request id), written with the stamp: tells
    /// which of several clients' cancels was the first, and lets a resent write recognise
    /// its own stamp.
    pub cancel_request_id: Option<String>,
    /// When `status_terminated` was written, if it was.
    pub terminated_at: Option<String>,
    /// User messages queued for the active run's next turn.
    pub queued_messages: u32,
    /// How many user messages the current turn answers (`turn_messages`): the one that
    /// started the run, or those queued during the turn before it.
    pub turn_messages: u32,
    /// The number of the session's latest turn (`turn_seq`): 1 for the opening message's,
    /// one more for every turn after it. Each event carries the turn it belongs to, so a
    /// message queued during turn N is read back after all of turn N (see
    /// [`crate::agent::history`]).
    pub turn_seq: u64,
    /// When a delete began, if one did: the session is then gone for every route.
    pub deleted_at: Option<String>,
    /// A fault a test asked the checker to raise (`inject_fault`); honoured only where
    /// fault injection is enabled.
    pub injected_fault: Option<String>,
}

impl SessionRecord {
    /// Reads an item written by this module.
    pub fn from_item(item: &Item) -> Result<Self, StoreError> {
        let active_run = match get_s(item, "active_run") {
            None => None,
            Some(run) => Some(ActiveRun {
                id: RunId::from_stored(run.to_owned()),
                started_at: Timestamp::from_epoch_millis(millis(item, "run_started_at")?),
                expires_at: Timestamp::from_epoch_millis(millis(item, "run_expires_at")?),
                step: u32::try_from(millis(item, "turn_step")?)
                    .map_err(|_| StoreError::Corrupt("turn_step out of range".into()))?,
                worker: TurnWorker {
                    worker_id: get_s(item, "worker_id").map(str::to_owned),
                    // The later of the appends' lease and the renewals' (see turn_worker).
                    lease_until: get_i64(item, "worker_lease_until")
                        .max(get_i64(item, "worker_renewed_until"))
                        .map(Timestamp::from_epoch_millis),
                    result: get_s(item, "turn_result").map(str::to_owned),
                    error_type: get_s(item, "turn_error_type").map(str::to_owned),
                    error_message: get_s(item, "turn_error_message").map(str::to_owned),
                    input_tokens: get_i64(item, "turn_input_tokens").unwrap_or(0).max(0) as u64,
                    output_tokens: get_i64(item, "turn_output_tokens").unwrap_or(0).max(0) as u64,
                },
            }),
        };
        Ok(Self {
            id: require_s(item, "id")?,
            user_id: require_s(item, "user_id")?,
            org_id: require_s(item, "org_id")?,
            title: require_s(item, "title")?,
            status: require_s(item, "status")?,
            created_at: require_s(item, "created_at")?,
            updated_at: require_s(item, "updated_at")?,
            last_event_id: EventId::from_stored(require_s(item, "last_event_id")?),
            active_run,
            cancelled_at: get_s(item, "cancelled_at").map(str::to_owned),
            cancelled_by: get_s(item, "cancelled_by").map(str::to_owned),
            cancel_request_id: get_s(item, "cancel_request_id").map(str::to_owned),
            terminated_at: get_s(item, "terminated_at").map(str::to_owned),
            turn_seq: get_i64(item, "turn_seq").unwrap_or(0).max(0) as u64,
            queued_messages: get_i64(item, "queued_messages")
                .map_or(Ok(0), u32::try_from)
                .map_err(|_| StoreError::Corrupt("queued_messages out of range".into()))?,
            turn_messages: get_i64(item, "turn_messages")
                .map_or(Ok(0), u32::try_from)
                .map_err(|_| StoreError::Corrupt("turn_messages out of range".into()))?,
            deleted_at: get_s(item, "deleted_at").map(str::to_owned),
            injected_fault: get_s(item, "inject_fault").map(str::to_owned),
        })
    }

    /// The status a client sees: `terminated` once cancelled (the run, if any, ends within
    /// one poll), `running` while a live run holds the session, `idle` otherwise.
    pub fn visible_status(&self, now: Timestamp) -> SessionStatus {
        if self.cancelled_at.is_some() {
            SessionStatus::Terminated
        } else if self.live_run(now).is_some() {
            SessionStatus::Running
        } else {
            SessionStatus::Idle
        }
    }

    /// Whether the session belongs to this user in this organisation.
    pub fn is_owned_by(&self, scope: &UserScope) -> bool {
        self.user_id == scope.user_id() && self.org_id == scope.org_id()
    }

    /// The active run, unless its execution must have timed out by `now` (a run that died
    /// without recording its end does not hold the session forever).
    pub fn live_run(&self, now: Timestamp) -> Option<&ActiveRun> {
        self.active_run.as_ref().filter(|run| run.expires_at > now)
    }
}

fn millis(item: &Item, name: &str) -> Result<i64, StoreError> {
    get_i64(item, name)
        .ok_or_else(|| StoreError::Corrupt(format!("{name} missing or not a number")))
}

/// An event about to be appended to a transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What kind of event.
    pub kind: EventType,
    /// Its JSON payload.
    pub payload: Value,
    /// The turn it belongs to (stored as `turn_seq`, never answered); `None` for the
    /// session's current turn.
    pub turn: Option<u64>,
}

impl NewEvent {
    /// An event of `kind` with `payload`, in the session's current turn.
    pub fn new(kind: EventType, payload: Value) -> Self {
        Self { kind, payload, turn: None }
    }

    /// The same event, in turn `turn`.
    pub fn in_turn(mut self, turn: u64) -> Self {
        self.turn = Some(turn);
        self
    }
}

/// What a poll's write read ([`SessionStore::note_poll`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollRead {
    /// The session as it is after the poll (or as it was, when the run is not its active run
    /// any more).
    Current(Box<SessionRecord>),
    /// A later poll step of the same run already stored its token: this poll is late, its
    /// token has timed out, and the later one decides.
    Stale,
}

/// What one cancel request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// This request stamped `cancelled_at`: it is the first cancel.
    Cancelled {
        /// Whether a live run holds the session (it will write `status_terminated` at its
        /// next poll); when not, the caller must end the session itself.
        run_is_live: bool,
        /// The task token the run's poll step waits on, if one was stored: answering it
        /// wakes the run at once instead of at the end of its poll interval.
        poll_token: Option<String>,
    },
    /// The session was already cancelled; the stored timestamp is left as it was. The
    /// session as it was, so the caller can finish a termination a failed request left out.
    AlreadyCancelled(Box<SessionRecord>),
    /// No such session for this user and organisation.
    NotFound,
}

/// What a delete request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteMark {
    /// This request marked the session deleted: purge it.
    Marked,
    /// A delete began before (its purge may have been interrupted): the session is already
    /// gone for the caller, but its purge can be finished.
    AlreadyDeleting,
    /// No such session for this user and organisation.
    NotFound,
}

/// What an attempt to write `status_terminated` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// This call wrote it.
    Written,
    /// It was already written (by the other party), or the session is gone or being deleted.
    NotNeeded,
}

/// Reads and writes sessions and appends their transcript events.
#[derive(Debug, Clone)]
pub struct SessionStore {
    pub(super) client: Client,
    pub(super) sessions_table: String,
    events_table: String,
}

impl SessionStore {
    /// A store over the two tables.
    pub fn new(client: Client, sessions_table: String, events_table: String) -> Self {
        Self { client, sessions_table, events_table }
    }

    /// Writes a new session, running `run`, and its opening `user_message` event in one
    /// transaction: both or neither. The run counts as dead after `run_timeout`.
    pub async fn create(
        &self,
        scope: &UserScope,
        id: &SessionId,
        text: &MessageText,
        run: &RunId,
        run_timeout: std::time::Duration,
        now: Timestamp,
    ) -> Result<EventId, StoreError> {
        let at = now.rfc3339();
        let event_id = EventId::new();
        let expires_at = now.epoch_millis() + run_timeout.as_millis() as i64;
        let session = Put::builder()
            .table_name(&self.sessions_table)
            .item("id", s(id.as_string()))
            .item("owner", s(scope.owner_key()))
            .item("user_id", s(scope.user_id()))
            .item("org_id", s(scope.org_id()))
            .item("title", s(text.title()))
            .item("status", s(SessionStatus::Running.as_str()))
            .item("created_at", s(&at))
            .item("updated_at", s(&at))
            .item("last_event_id", s(event_id.as_str()))
            .item("active_run", s(run.as_str()))
            .item("run_started_at", n(now.epoch_millis()))
            .item("run_expires_at", n(expires_at))
            .item("turn_step", n(0))
            .item("queued_messages", n(0))
            .item("runs_started", n(1))
            .item("turn_seq", n(1))
            .item("turn_messages", n(1))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let event =
            NewEvent::new(EventType::UserMessage, serde_json::json!({ "text": text.as_str() }))
                .in_turn(1);
        let items = vec![
            TransactWriteItem::builder().put(session).build(),
            self.event_put(&id.as_string(), &event_id, &event, &at)?,
        ];
        match transact(&self.client, items).await? {
            Transaction::Committed => Ok(event_id),
            // A lost response of this very write, sent again by the SDK, is refused by its own
            // condition: the fresh event id tells it from anything else.
            Transaction::ConditionFailed(_)
                if self.event_written(&id.as_string(), &event_id).await? =>
            {
                Ok(event_id)
            }
            Transaction::ConditionFailed(_) => {
                Err(StoreError::Corrupt(format!("session {id} or its first event exists")))
            }
        }
    }

    /// The session, read strongly consistently, whoever owns it.
    pub async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.read(id, true).await
    }

    /// [`Self::get`], eventually consistent (half the read units; it may show the item as it
    /// was a moment ago): for a reader that only watches for a change and reads strongly once
    /// it sees one, as a waiting transcript read does.
    pub async fn get_eventually(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.read(id, false).await
    }

    async fn read(&self, id: &str, consistent: bool) -> Result<Option<SessionRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.sessions_table)
            .key("id", s(id))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| StoreError::sdk("GetItem", e))?;
        output.item.as_ref().map(SessionRecord::from_item).transpose()
    }

    /// The session if it belongs to `scope`; another tenant's session is `None`, exactly
    /// like a missing one, so ids cannot be probed.
    pub async fn get_owned(
        &self,
        scope: &UserScope,
        id: &SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .get(&id.as_string())
            .await?
            .filter(|session| session.is_owned_by(scope) && session.deleted_at.is_none()))
    }

    /// One transaction: the guarded update of the session item (which also records the new
    /// last event and `updated_at`) and the event's put. `false` when a condition refused.
    pub(super) async fn append(
        &self,
        session: &SessionRecord,
        event: &NewEvent,
        append: Append<'_>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let event = match event.turn {
            Some(_) => event.clone(),
            None => event.clone().in_turn(session.turn_seq),
        };
        Ok(self
            .append_after(&session.id, &session.last_event_id, &event, append, now)
            .await?
            .is_some())
    }

    /// [`Self::append`] for a writer that keeps its own view of the session's last event:
    /// the new event's id sorts after `last_event_id`, and the id is answered when written.
    pub(super) async fn append_after(
        &self,
        session_id: &str,
        last_event_id: &EventId,
        event: &NewEvent,
        append: Append<'_>,
        now: Timestamp,
    ) -> Result<Option<EventId>, StoreError> {
        let at = now.rfc3339();
        let event_id = EventId::after(last_event_id);
        let remove = append.remove.map(|names| format!(" REMOVE {names}")).unwrap_or_default();
        let mut update = Update::builder()
            .table_name(&self.sessions_table)
            .key("id", s(session_id))
            .update_expression(format!(
                "SET last_event_id = :event, updated_at = :now{}{remove}",
                append.set
            ))
            .condition_expression(format!(
                "attribute_exists(id) AND attribute_not_exists(deleted_at) \
                 AND last_event_id < :event AND ({})",
                append.condition
            ))
            .expression_attribute_values(":event", s(event_id.as_str()))
            .expression_attribute_values(":now", s(&at));
        if append.set.contains("#status") {
            update = update.expression_attribute_names("#status", "status");
        }
        for (name, value) in append.values {
            update = update.expression_attribute_values(name, value);
        }
        let update = update.build().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            self.event_put(session_id, &event_id, event, &at)?,
        ];
        let committed = match transact(&self.client, items).await? {
            Transaction::Committed => true,
            // Refused, or this very write committed and its lost response was sent again by
            // the SDK, to be refused by its own condition (on an emulator that ignores the
            // transaction's token): the event id, fresh for this call, tells which.
            Transaction::ConditionFailed(_) => self.event_written(session_id, &event_id).await?,
        };
        Ok(committed.then_some(event_id))
    }

    /// Whether the event `event_id` of `session_id` is stored (one consistent read). Event ids
    /// are made fresh for each append (UUID v7, 74 random bits), so an event with the id an
    /// append made was written by that append.
    async fn event_written(
        &self,
        session_id: &str,
        event_id: &EventId,
    ) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.events_table)
            .key("session_id", s(session_id))
            .key("event_id", s(event_id.as_str()))
            .projection_expression("event_id")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::sdk("GetItem", e))?;
        Ok(output.item.is_some())
    }

    fn event_put(
        &self,
        session_id: &str,
        event_id: &EventId,
        event: &NewEvent,
        at: &str,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.events_table)
            .item("session_id", s(session_id))
            .item("event_id", s(event_id.as_str()))
            .item("type", s(event.kind.as_str()))
            .item("occurred_at", s(at))
            .item("payload", s(event.payload.to_string()));
        if let Some(turn) = event.turn {
            put = put.item("turn_seq", n(turn));
        }
        let put = put
            .condition_expression("attribute_not_exists(event_id)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

/// The parts of an append that differ between writers.
pub(super) struct Append<'a> {
    /// More `SET` clauses, each starting with ", ".
    pub(super) set: &'a str,
    /// Attributes to remove, if any.
    pub(super) remove: Option<&'a str>,
    /// The writer's own guard, ANDed with the common one.
    pub(super) condition: &'a str,
    /// Values the clauses and the guard use.
    pub(super) values: Vec<(&'a str, AttributeValue)>,
}

#[cfg(test)]
mod tests {
    use super::cancel::classify_failed_cancel;
    use super::delete::classify_failed_delete;
    use super::*;

    /// Two deletes of one session in the same millisecond, one of them sent again by the SDK
    /// (its first attempt throttled): the resend finds the other's mark, with its own
    /// timestamp, and is the second delete (404), never a second first one. Its own mark, a
    /// lost answer, is its own.
    #[test]
    fn a_resent_delete_that_finds_another_requests_mark_of_the_same_millisecond_is_already_deleting()
     {
        let mut old = item("u1", "o1", None);
        old.insert("deleted_at".into(), s("2026-01-01T00:00:00.000Z"));
        old.insert("delete_request_id".into(), s("req-1"));
        assert_eq!(
            classify_failed_delete(&scope(), Some(&old), "req-2"),
            DeleteMark::AlreadyDeleting
        );
        assert_eq!(classify_failed_delete(&scope(), Some(&old), "req-1"), DeleteMark::Marked);
        let foreign = UserScope::from_auth_record("u2".into(), "o1".into());
        assert_eq!(classify_failed_delete(&foreign, Some(&old), "req-1"), DeleteMark::NotFound);
        old.remove("deleted_at");
        assert_eq!(classify_failed_delete(&scope(), Some(&old), "req-2"), DeleteMark::NotFound);
        assert_eq!(classify_failed_delete(&scope(), None, "req-2"), DeleteMark::NotFound);
    }

    fn scope() -> UserScope {
        UserScope::from_auth_record("u1".into(), "o1".into())
    }

    /// A stored session of `user` in `org`, cancelled by request `REQUEST` at `cancelled_at`.
    fn item(user: &str, org: &str, cancelled_at: Option<&str>) -> Item {
        let mut item = stored_session(None);
        item.insert("user_id".into(), s(user));
        item.insert("org_id".into(), s(org));
        if let Some(at) = cancelled_at {
            item.insert("cancelled_at".into(), s(at));
            item.insert("cancelled_by".into(), s(user));
            item.insert("cancel_request_id".into(), s(REQUEST));
        }
        item
    }

    const REQUEST: &str = "req-1";

    #[test]
    fn own_cancelled_session_is_already_cancelled() {
        let old = item("u1", "o1", Some("2026-01-01T00:00:00.000Z"));
        let Ok(CancelOutcome::AlreadyCancelled(session)) =
            classify_failed_cancel(&scope(), Some(&old), "req-2", now())
        else {
            panic!("expected already cancelled");
        };
        assert_eq!(session.cancelled_at.as_deref(), Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(session.cancelled_by.as_deref(), Some("u1"));
        assert_eq!(session.cancel_request_id.as_deref(), Some(REQUEST));
    }

    #[test]
    fn missing_or_foreign_sessions_are_not_found() {
        let at = Some("2026-01-01T00:00:00.000Z");
        let mine = REQUEST;
        let none = classify_failed_cancel(&scope(), None, mine, now()).unwrap();
        assert_eq!(none, CancelOutcome::NotFound);
        for old in [item("u2", "o1", at), item("u1", "o2", at), item("u2", "o1", None)] {
            let outcome = classify_failed_cancel(&scope(), Some(&old), mine, now()).unwrap();
            assert_eq!(outcome, CancelOutcome::NotFound);
        }
    }

    #[test]
    fn a_retried_cancel_that_finds_its_own_stamp_is_the_first_cancel() {
        let at = "2026-01-01T00:00:00.000Z";
        let mut old = item("u1", "o1", Some(at));
        old.insert("cancel_saw_run_until".into(), n(now().epoch_millis() + 1_000));
        let outcome = classify_failed_cancel(&scope(), Some(&old), REQUEST, now()).unwrap();
        assert_eq!(outcome, CancelOutcome::Cancelled { run_is_live: true, poll_token: None });
        old.insert("cancel_saw_run_until".into(), n(0));
        let outcome = classify_failed_cancel(&scope(), Some(&old), REQUEST, now()).unwrap();
        assert_eq!(outcome, CancelOutcome::Cancelled { run_is_live: false, poll_token: None });
        let foreign = item("u2", "o1", Some(at));
        let outcome = classify_failed_cancel(&scope(), Some(&foreign), REQUEST, now()).unwrap();
        assert_eq!(outcome, CancelOutcome::NotFound, "another tenant's stamp is never ours");
    }

    /// Chaos seed 684395140: two clients' cancels stamped in the same millisecond; the one the
    /// SDK resent (its first attempt throttled) found the other's stamp, equal to its own
    /// timestamp, and answered as the first cancel too.
    #[test]
    fn a_resent_cancel_that_finds_another_requests_stamp_of_the_same_millisecond_is_already_cancelled()
     {
        let at = "2026-01-01T00:00:00.000Z";
        let old = item("u1", "o1", Some(at));
        let outcome = classify_failed_cancel(&scope(), Some(&old), "req-2", now()).unwrap();
        assert!(matches!(outcome, CancelOutcome::AlreadyCancelled(_)), "{outcome:?}");
    }

    fn now() -> Timestamp {
        Timestamp::from_epoch_millis(1_767_225_600_000)
    }

    fn stored_session(run: Option<(i64, i64)>) -> Item {
        let mut item = Item::new();
        for (name, value) in [
            ("user_id", "u1"),
            ("org_id", "o1"),
            ("id", "s1"),
            ("title", "t"),
            ("status", "running"),
            ("created_at", "2026-01-01T00:00:00.000Z"),
            ("updated_at", "2026-01-01T00:00:00.000Z"),
            ("last_event_id", "0193a7c2-5e1f-7abc-8def-0123456789ab"),
        ] {
            item.insert(name.into(), s(value));
        }
        if let Some((started, expires)) = run {
            item.insert("active_run".into(), s("r1"));
            item.insert("run_started_at".into(), n(started));
            item.insert("run_expires_at".into(), n(expires));
            item.insert("turn_step".into(), n(3));
        }
        item
    }

    #[test]
    fn a_run_past_its_execution_timeout_is_not_live() {
        let record = SessionRecord::from_item(&stored_session(Some((1_000, 5_000)))).unwrap();
        let run = record.active_run.as_ref().unwrap();
        assert_eq!((run.id.as_str(), run.step), ("r1", 3));
        assert!(record.live_run(Timestamp::from_epoch_millis(4_999)).is_some());
        assert!(record.live_run(Timestamp::from_epoch_millis(5_000)).is_none());
        let idle = SessionRecord::from_item(&stored_session(None)).unwrap();
        assert!(idle.live_run(Timestamp::from_epoch_millis(0)).is_none());
    }

    #[test]
    fn a_session_item_without_its_required_attributes_is_corrupt() {
        let mut broken = stored_session(None);
        broken.remove("last_event_id");
        assert!(matches!(SessionRecord::from_item(&broken), Err(StoreError::Corrupt(_))));
    }
}

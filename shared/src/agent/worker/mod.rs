//! The worker: plays one turn of a run against the model provider, writing its events.
//!
//! The state machine starts one worker per turn (an asynchronous Lambda invoke beside its poll
//! loop). The worker:
//! 1. claims the turn ([`SessionStore::claim_turn`]); a second delivery of the same start
//!    finds it claimed and does nothing, so at-least-once delivery never doubles a turn;
//! 2. rebuilds the conversation from the transcript ([`history::conversation`]);
//! 3. loops: one streamed model call; text is written as `agent_message` events, flushed at
//!    least every [`WorkerSettings::flush_every`] while it streams (also while the model is
//!    silent after some text), so their texts in order are exactly the
//!    model's text; each `tool_use` is written, run through [`Tools`], and its `tool_result`
//!    written and sent back with the next call; until the model stops for another reason
//!    than a tool call, or the step cap (calls per turn) is reached;
//! 4. records how the turn ended and its token usage; the checker then writes `status_idle`
//!    (or the `error` of a failed turn) and ends the run.
//!
//! While it waits on anything (the provider, a retry's backoff, a tool), the worker renews its
//! lease every heartbeat. The renewal is refused once the session is cancelled, deleted or the
//! run ended: the worker then drops what it was waiting on, which closes the provider
//! connection at once, also while the model is silent. Every event it writes is guarded the
//! same way, so nothing the model sends after a cancel reaches the transcript. While one of its
//! own store calls is slow, renewals go beside it, and the lease is sized to the store's pace
//! ([`super::lease`]), so a slow store never makes a live worker look dead.

use std::future::Future;
use std::time::Duration;

use futures_util::future::OptionFuture;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::history::{self, HISTORY_CHAR_BUDGET};
use super::lease::LeaseClock;
use super::provider::{
    ApiKey, Assembler, ContentBlock, Message, ModelStream, OpenFailure, Output, Provider,
    ProviderConfig, ProviderError, Role, ToolSpec, Usage,
};
use super::tools::{SearchSessions, Tools};
use crate::clock::Timestamp;
use crate::config::AgentConfig;
use crate::domain::{EventId, EventType, RunId, UserScope};
use crate::store::StoreError;
use crate::store::events::{EventStore, StoredEvent};
use crate::store::sessions::{NewEvent, SessionStore};
use crate::store::turn_worker::{ClaimedTurn, TokenUsage, TurnEnd};
use crate::test_hooks::TestHooks;

mod model_call;
mod pieces;
mod waits;

pub use pieces::{PIECE_BYTES, escaped_size, piece_end};

/// The longest streamed text waits, by default (`KNOQ_TEXT_FLUSH_MS`, the template's
/// `TextFlushMilliseconds`), before it is written as an `agent_message`: a reader waiting on
/// the transcript sees new text about this often while the model streams. Each flush is one
/// append (a transaction of the event and the session item): 120 a turn-minute at 500 ms
/// while text streams (`docs/scale.md`).
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// How often, by default (`KNOQ_STOP_WATCH_MS`, the template's `StopWatchMilliseconds`), the
/// worker reads whether its turn is still its own while it waits on the model or a tool (the
/// stop watch, [`SessionStore::turn_is_still_ours`]): a cancel or a delete closes the
/// provider connection about this long after it is written, whatever the poll interval. Ten
/// strongly consistent reads a second of one session item: 600 read units per turn-minute
/// (`docs/scale.md`).
pub const STOP_WATCH_EVERY: Duration = Duration::from_millis(100);

/// How a worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// The most model calls a turn makes (the tool loop's step cap).
    pub max_steps: u32,
    /// How often the lease is renewed while the worker waits: also how soon it sees a cancel.
    pub heartbeat: Duration,
    /// How long a renewal holds while the store answers promptly (stretched while it is slow,
    /// [`LeaseClock`]): past this without one, the checker takes the worker for dead.
    pub lease: Duration,
    /// How often the stop watch reads the session while the worker waits ([`STOP_WATCH_EVERY`]
    /// by default).
    pub stop_watch_every: Duration,
    /// The longest streamed text waits before it is written ([`FLUSH_EVERY`] by default).
    pub flush_every: Duration,
    /// Whether tests may plant faults ([`crate::test_hooks`]).
    pub fault_injection: bool,
}

impl WorkerSettings {
    /// The settings of a worker whose run polls every `poll_interval`: a heartbeat every
    /// half interval, the [`super::lease::base_lease`] for that interval, the step cap, stop
    /// watch and text flush of `agent`.
    pub fn for_poll_interval(
        poll_interval: Duration,
        agent: &AgentConfig,
        fault_injection: bool,
    ) -> Self {
        Self {
            max_steps: agent.max_steps,
            heartbeat: poll_interval / 2,
            lease: super::lease::base_lease(poll_interval),
            stop_watch_every: Duration::from_millis(agent.stop_watch_ms.into()),
            flush_every: Duration::from_millis(agent.text_flush_ms.into()),
            fault_injection,
        }
    }
}

/// What the state machine sends the worker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRequest {
    /// The session.
    pub session_id: String,
    /// The run whose current turn to play.
    pub run_id: String,
}

/// How a worker invocation ended (its answer, for the logs; the state machine does not wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkerOutcome {
    /// The turn was already claimed, or is over: nothing done.
    NotClaimed,
    /// The model finished; the checker ends the turn.
    Finished,
    /// The turn failed; the checker writes its `error` event.
    Failed,
    /// The turn stopped being this worker's (cancelled, deleted, ended): it let go at once.
    Stopped,
}

/// The worker's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResponse {
    /// How it ended.
    pub outcome: WorkerOutcome,
    /// Input tokens this invocation's model calls used.
    pub input_tokens: u64,
    /// Output tokens this invocation's model calls used.
    pub output_tokens: u64,
}

/// Why a worker could not go on: storage failed. (Provider failures end the turn with an
/// `error` event instead.)
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// DynamoDB failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WorkerError> for lambda_runtime::Diagnostic {
    fn from(error: WorkerError) -> Self {
        Self { error_type: "Knoq.StoreError".into(), error_message: error.to_string() }
    }
}

/// How playing the turn ended.
enum Played {
    Ended(TurnEnd),
    Stopped,
}

/// Plays turns: the stores, the provider, the tools.
#[derive(Debug)]
pub struct Worker {
    sessions: SessionStore,
    events: EventStore,
    provider: Provider,
    tools: Tools,
    settings: WorkerSettings,
    lease: LeaseClock,
}

/// One invocation's moving parts.
/// A store call of the worker in flight beside what it waits on: a stop watch read
/// ([`STOP_WATCH_EVERY`]) or a heartbeat's lease renewal. `true` while the turn is its own.
type Beside<'a> = std::pin::Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send + 'a>>;

struct Play<'a> {
    worker: &'a Worker,
    turn: ClaimedTurn,
    scope: UserScope,
    next_heartbeat: tokio::time::Instant,
    /// When the stop watch reads next, and its read in flight (kept across waits: a stream's
    /// events come faster than a read answers).
    next_watch: tokio::time::Instant,
    watch: Option<Beside<'a>>,
    /// A heartbeat's renewal in flight (kept across waits for the same reason).
    renewal: Option<Beside<'a>>,
    usage: TokenUsage,
    hang_after_first_event: bool,
}

impl Worker {
    /// A worker over the stores, calling `provider`, offering `tools`.
    pub fn new(
        sessions: SessionStore,
        events: EventStore,
        provider: Provider,
        tools: Tools,
        settings: WorkerSettings,
    ) -> Self {
        let lease = LeaseClock::new(settings.lease);
        Self { sessions, events, provider, tools, settings, lease }
    }

    /// The worker a function built around `app` runs: the model of `agent` called with
    /// `api_key`, the `search_sessions` tool over `app`'s tables, and the settings of a run
    /// that polls every `poll_interval` ([`WorkerSettings::for_poll_interval`]).
    pub fn for_app(
        app: &crate::app::App,
        agent: &AgentConfig,
        api_key: ApiKey,
        poll_interval: Duration,
    ) -> Result<Self, ProviderError> {
        let provider = Provider::new(ProviderConfig::with_production_policy(
            agent.base_url.clone(),
            api_key,
            agent.model.clone(),
            agent.max_tokens,
            agent.system_prompt.clone(),
        ))?;
        let tools = Tools::new(vec![Box::new(SearchSessions::new(
            app.sessions.clone(),
            app.events.clone(),
        ))]);
        let fault_injection = app.config.workflow.fault_injection;
        let settings = WorkerSettings::for_poll_interval(poll_interval, agent, fault_injection);
        Ok(Self::new(app.sessions.clone(), app.events.clone(), provider, tools, settings))
    }

    fn lease_until(&self) -> Timestamp {
        self.lease.until(Duration::ZERO)
    }

    /// Plays the current turn of `request`'s run, if it is this invocation's to play.
    pub async fn handle(&self, request: WorkerRequest) -> Result<WorkerResponse, WorkerError> {
        let worker_id = uuid::Uuid::new_v4().to_string();
        let run = RunId::from_stored(request.run_id.clone());
        let claimed = self
            .sessions
            .claim_turn(&request.session_id, &run, &worker_id, self.lease_until())
            .await?;
        let Some(turn) = claimed.as_ref().and_then(|s| ClaimedTurn::from_claim(s, &worker_id))
        else {
            tracing::info!(?request, "turn not claimed: already played or over");
            return Ok(response(WorkerOutcome::NotClaimed, TokenUsage::default()));
        };
        let read = self.transcript(&turn.session_id, &turn.last_event_id);
        let events = self.kept_alive(&turn, read).await?;
        // This turn's conversation: later turns' messages (sent before this worker started)
        // are theirs to answer.
        let messages = history::conversation(&events, turn.turn_seq, HISTORY_CHAR_BUDGET);
        let latest_user_text =
            messages.iter().rev().find(|message| message.role == Role::User).and_then(|message| {
                message.content.iter().find_map(|block| match block {
                    ContentBlock::Text { text } => Some(text.as_str()),
                    _ => None,
                })
            });
        let hang = TestHooks::new(self.settings.fault_injection).worker_hangs(latest_user_text);
        let mut play = Play {
            worker: self,
            scope: UserScope::from_auth_record(turn.user_id.clone(), turn.org_id.clone()),
            turn,
            next_heartbeat: tokio::time::Instant::now() + self.settings.heartbeat,
            next_watch: tokio::time::Instant::now() + self.settings.stop_watch_every,
            watch: None,
            renewal: None,
            usage: TokenUsage::default(),
            hang_after_first_event: hang,
        };
        let played = match play.run(messages).await {
            Ok(played) => played,
            Err(error) => {
                tracing::error!(%error, "worker failed; ending the turn");
                Played::Ended(TurnEnd::Failed {
                    error_type: "store_error".into(),
                    message: "The agent could not save its work and stopped. Send a message to \
                              try again."
                        .into(),
                })
            }
        };
        let outcome = match played {
            Played::Stopped => WorkerOutcome::Stopped,
            Played::Ended(end) => {
                let finish = self.sessions.finish_turn(&play.turn, &end, play.usage);
                if !self.kept_alive(&play.turn, finish).await? {
                    WorkerOutcome::Stopped
                } else if matches!(end, TurnEnd::Failed { .. }) {
                    WorkerOutcome::Failed
                } else {
                    WorkerOutcome::Finished
                }
            }
        };
        let answer = response(outcome, play.usage);
        tracing::info!(?request, ?answer, "worker");
        Ok(answer)
    }

    /// The latest events of the session up to `upto`, oldest first: read from the end until
    /// they hold more than a conversation's [`HISTORY_CHAR_BUDGET`], so a long transcript is
    /// never loaded whole.
    async fn transcript(
        &self,
        session_id: &str,
        upto: &EventId,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.events
            .latest(session_id, upto, |newest_first| {
                newest_first.iter().map(history::event_size).sum::<usize>() > HISTORY_CHAR_BUDGET
            })
            .await
    }
}

fn response(outcome: WorkerOutcome, usage: TokenUsage) -> WorkerResponse {
    WorkerResponse { outcome, input_tokens: usage.input, output_tokens: usage.output }
}

/// What the provider's failure tells the user (`error` as [`Provider::redacted`] made it).
fn failure(error: &ProviderError) -> TurnEnd {
    TurnEnd::Failed {
        error_type: error.error_type().to_owned(),
        message: format!(
            "The model provider failed ({error}). The turn was stopped; send a message to try \
             again."
        ),
    }
}

impl<'a> Play<'a> {
    /// The model loop.
    async fn run(&mut self, mut messages: Vec<Message>) -> Result<Played, WorkerError> {
        let specs = self.worker.tools.specs();
        for _ in 0..self.worker.settings.max_steps {
            let Some(call) = self.call(&messages, &specs).await? else {
                return Ok(Played::Stopped);
            };
            let (stop_reason, assistant, tool_calls) = match call {
                Ok(answer) => answer,
                Err(end) => return Ok(Played::Ended(end)),
            };
            messages.push(Message { role: Role::Assistant, content: assistant });
            if stop_reason != "tool_use" || tool_calls.is_empty() {
                return Ok(Played::Ended(TurnEnd::Finished(stop_reason)));
            }
            let mut results = Vec::new();
            let worker = self.worker;
            let scope = self.scope.clone();
            for (id, name, input) in tool_calls {
                let Some(output) = self.watched(worker.tools.run(&scope, &name, &input)).await?
                else {
                    return Ok(Played::Stopped);
                };
                let event = NewEvent::new(
                    EventType::ToolResult,
                    json!({ "toolUseId": id, "content": output.content, "isError": output.is_error }),
                );
                if !self.write(&event).await? {
                    return Ok(Played::Stopped);
                }
                results.push(ContentBlock::ToolResult {
                    tool_use_id: id,
                    content: output.content,
                    is_error: output.is_error,
                });
            }
            messages.push(Message { role: Role::User, content: results });
        }
        Ok(Played::Ended(TurnEnd::Finished("max_steps".into())))
    }

    /// Appends one event of the turn (renewing the lease). `false` when the turn is no
    /// longer this worker's.
    async fn write(&mut self, event: &NewEvent) -> Result<bool, WorkerError> {
        let worker = self.worker;
        let lease = worker.lease_until();
        let renewals = self.turn.clone();
        let append =
            worker.sessions.append_worker_event(&mut self.turn, event, lease, Timestamp::now());
        let written = worker.kept_alive(&renewals, append).await?;
        self.next_heartbeat = tokio::time::Instant::now() + self.worker.settings.heartbeat;
        if written && self.hang_after_first_event {
            // Test fault: behave as a worker that died, writing and renewing nothing more.
            tracing::warn!(session_id = %self.turn.session_id, "injected fault: worker hangs");
            tokio::time::sleep(self.worker.settings.lease * 2).await;
            return Ok(false);
        }
        Ok(written)
    }

    async fn add_usage(&mut self, usage: Usage) -> Result<(), WorkerError> {
        let usage = TokenUsage { input: usage.input_tokens, output: usage.output_tokens };
        self.usage.input += usage.input;
        self.usage.output += usage.output;
        if usage != TokenUsage::default() {
            // One id per model call: a lost answer that the SDK resends counts it once.
            let call_id = uuid::Uuid::new_v4().to_string();
            let sessions = &self.worker.sessions;
            let add = sessions.add_token_usage(&self.turn.session_id, &call_id, usage);
            self.worker.kept_alive(&self.turn, add).await?;
        }
        Ok(())
    }

    /// Renews the lease now (and restarts the heartbeat); `false` when the turn is no longer
    /// this worker's.
    async fn renew_lease(&mut self) -> Result<bool, WorkerError> {
        let lease = self.worker.lease_until();
        let renewal = self.worker.sessions.renew_lease(&self.turn, lease);
        let renewed = self.worker.kept_alive(&self.turn, renewal).await?;
        self.next_heartbeat = tokio::time::Instant::now() + self.worker.settings.heartbeat;
        Ok(renewed)
    }
}

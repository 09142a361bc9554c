//! The agent runtime seam: what the turn workflow asks of an agent on each poll cycle.
//!
//! An [`Agent`] advances a turn by at most one step per call and hands back the event that
//! step produced; it never writes to storage itself. The turn driver ([`crate::turn`])
//! persists the event under the run's guard (active run, expected step, not cancelled), so
//! no agent, however written, can add to a transcript after a cancel or write a step twice.
//! A model-provider adapter implements this same trait (streaming into its own state
//! between calls, or making one provider call per step); the workflow does not change.

use std::future::Future;
use std::time::Duration;

use serde_json::json;

use crate::clock::Instant;
use crate::domain::EventType;
use crate::store::sessions::NewEvent;

pub mod provider;
pub mod sse;

/// The turn an agent is asked to advance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The session's id.
    pub session_id: String,
    /// The session's title (the opening message's first 60 characters).
    pub title: String,
    /// How many steps of this turn are already written.
    pub step: u32,
    /// When the turn's run started.
    pub started_at: Instant,
}

/// What one call to [`Agent::advance`] produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing new yet (the model is still thinking): poll again.
    Pending,
    /// One event for the transcript; the turn goes on.
    Emit(NewEvent),
    /// The turn is complete.
    Finished,
}

/// Why an agent could not advance (a provider outage, say). The run retries, then fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent failed: {0}")]
pub struct AgentError(pub String);

/// Advances a turn by one bounded step.
pub trait Agent: Send + Sync {
    /// The next step of `turn` at `now`. Must return quickly (well inside one poll
    /// interval), so that a cancel is always seen at the next cycle.
    fn advance(
        &self,
        turn: &Turn,
        now: Instant,
    ) -> impl Future<Output = Result<Step, AgentError>> + Send;
}

/// A deterministic, offline agent: every turn is a `tool_use`, its `tool_result`, then the
/// answer as several `agent_message`s, spread evenly over at least `min_turn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptedAgent {
    /// The shortest a turn lasts.
    pub min_turn: Duration,
}

impl ScriptedAgent {
    /// The events of a turn about `title`, in order.
    pub fn script(title: &str) -> Vec<NewEvent> {
        let tool_use_id = "toolu_scripted_search";
        vec![
            NewEvent::new(
                EventType::ToolUse,
                json!({ "toolUseId": tool_use_id, "name": "search_workspace",
                        "input": { "query": title } }),
            ),
            NewEvent::new(
                EventType::ToolResult,
                json!({ "toolUseId": tool_use_id, "isError": false,
                        "content": format!("3 documents mention \"{title}\".") }),
            ),
            agent_message(format!("I looked into \"{title}\".")),
            agent_message("Three documents in the workspace are relevant.".into()),
            agent_message("The most recent one was updated this week.".into()),
            agent_message("Tell me if you want a summary of any of them.".into()),
        ]
    }

    /// When step `step` of a turn that started at `started_at` is due: the script's events
    /// and the finish are spread evenly, the finish landing at `min_turn`.
    fn due(&self, started_at: Instant, step: u32, steps: u32) -> Instant {
        let offset = self.min_turn.as_millis() as i64 * i64::from(step + 1) / i64::from(steps);
        Instant::from_epoch_millis(started_at.epoch_millis() + offset)
    }
}

fn agent_message(text: String) -> NewEvent {
    NewEvent::new(EventType::AgentMessage, json!({ "text": text }))
}

impl Agent for ScriptedAgent {
    async fn advance(&self, turn: &Turn, now: Instant) -> Result<Step, AgentError> {
        let script = Self::script(&turn.title);
        let steps = script.len() as u32 + 1;
        if now < self.due(turn.started_at, turn.step, steps) {
            return Ok(Step::Pending);
        }
        Ok(match script.into_iter().nth(turn.step as usize) {
            Some(event) => Step::Emit(event),
            None => Step::Finished,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(step: u32) -> Turn {
        Turn {
            session_id: "s".into(),
            title: "quarterly report".into(),
            step,
            started_at: Instant::from_epoch_millis(0),
        }
    }

    async fn run_at(agent: &ScriptedAgent, step: u32, millis: i64) -> Step {
        agent.advance(&turn(step), Instant::from_epoch_millis(millis)).await.unwrap()
    }

    #[tokio::test]
    async fn scripted_turn_uses_a_tool_then_answers_in_several_messages() {
        let kinds: Vec<&str> =
            ScriptedAgent::script("x").iter().map(|event| event.kind.as_str()).collect();
        assert_eq!(kinds[..2], ["tool_use", "tool_result"]);
        assert!(kinds[2..].iter().all(|kind| *kind == "agent_message") && kinds.len() >= 4);
    }

    #[tokio::test]
    async fn scripted_turn_finishes_no_sooner_than_its_minimum_length() {
        let agent = ScriptedAgent { min_turn: Duration::from_secs(8) };
        let last = ScriptedAgent::script("x").len() as u32;
        assert_eq!(run_at(&agent, 0, 0).await, Step::Pending);
        assert!(matches!(run_at(&agent, 0, 1_200).await, Step::Emit(_)));
        assert!(matches!(run_at(&agent, last - 1, 7_999).await, Step::Emit(_)));
        assert_eq!(run_at(&agent, last, 7_999).await, Step::Pending);
        assert_eq!(run_at(&agent, last, 8_000).await, Step::Finished);
    }

    #[tokio::test]
    async fn scripted_turn_is_deterministic() {
        let agent = ScriptedAgent { min_turn: Duration::ZERO };
        assert_eq!(run_at(&agent, 2, 0).await, run_at(&agent, 2, 0).await);
        let Step::Emit(first) = run_at(&agent, 0, 0).await else { panic!("expected an event") };
        assert_eq!(first.payload["input"]["query"], "quarterly report");
    }
}

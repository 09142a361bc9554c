//! The tools a model may call during a turn: a small registry, and `search_sessions`.
//!
//! A [`Tool`] describes itself to the model ([`ToolSpec`]) and runs with the turn's
//! [`UserScope`], so whatever it reads is the calling user's own, in their organisation. A
//! tool that fails, or a name the registry does not know, answers an error result
//! (`isError: true`) that the model reads; it never fails the turn.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{Value, json};

use super::provider::ToolSpec;
use crate::domain::UserScope;
use crate::store::events::EventStore;
use crate::store::sessions::SessionStore;

/// What a tool answered: the `tool_result`'s content and whether it is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// The result text the model reads.
    pub content: String,
    /// Whether the call failed.
    pub is_error: bool,
}

impl ToolOutput {
    fn error(message: impl Into<String>) -> Self {
        Self { content: message.into(), is_error: true }
    }
}

/// A future a tool returns.
pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// One tool the model may call.
pub trait Tool: Send + Sync {
    /// Its name, description and input schema, as sent to the model.
    fn spec(&self) -> ToolSpec;
    /// Runs it for `scope` with the model's `input`: the result text, or what went wrong.
    fn run<'a>(&'a self, scope: &'a UserScope, input: &'a Value) -> ToolFuture<'a>;
}

/// The longest a tool may run before its call is answered as failed.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// The tools of a turn, by name.
pub struct Tools {
    tools: Vec<Box<dyn Tool>>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.iter().map(|tool| tool.spec().name)).finish()
    }
}

impl Tools {
    /// A registry of `tools`.
    pub fn new(tools: Vec<Box<dyn Tool>>) -> Self {
        Self { tools }
    }

    /// Every tool's spec, for the model call.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|tool| tool.spec()).collect()
    }

    /// Runs the tool `name` for `scope`: an unknown name, a failure or a timeout is an error
    /// result, never an error of the turn.
    pub async fn run(&self, scope: &UserScope, name: &str, input: &Value) -> ToolOutput {
        let Some(tool) = self.tools.iter().find(|tool| tool.spec().name == name) else {
            return ToolOutput::error(format!("There is no tool named {name:?}."));
        };
        match tokio::time::timeout(TOOL_TIMEOUT, tool.run(scope, input)).await {
            Ok(Ok(content)) => ToolOutput { content, is_error: false },
            Ok(Err(message)) => ToolOutput::error(message),
            Err(_) => ToolOutput::error(format!("{name} did not answer within {TOOL_TIMEOUT:?}.")),
        }
    }
}

/// `search_sessions`: finds the caller's own sessions whose title or messages contain every
/// word of a query. Bounded: the caller's [`SEARCH_SESSIONS_SCANNED`] most recently updated
/// sessions, the first [`SEARCH_EVENTS_PER_SESSION`] events of each, at most
/// [`SEARCH_RESULTS_MAX`] results of a few snippets each.
#[derive(Debug, Clone)]
pub struct SearchSessions {
    sessions: SessionStore,
    events: EventStore,
}

/// How many of the caller's most recent sessions a search looks at.
pub const SEARCH_SESSIONS_SCANNED: usize = 20;
/// How many events of each session a search reads.
pub const SEARCH_EVENTS_PER_SESSION: usize = 200;
/// The most sessions a search answers.
pub const SEARCH_RESULTS_MAX: usize = 10;
/// The longest snippet of a matching message, in characters.
const SNIPPET_CHARS: usize = 160;

impl SearchSessions {
    /// The tool over the sessions and events tables.
    pub fn new(sessions: SessionStore, events: EventStore) -> Self {
        Self { sessions, events }
    }

    async fn search(&self, scope: &UserScope, query: &str) -> Result<String, String> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        if words.is_empty() {
            return Err("query must contain at least one word".into());
        }
        let matches = |text: &str| {
            let text = text.to_lowercase();
            words.iter().all(|word| text.contains(word.as_str()))
        };
        let sessions = self
            .sessions
            .list_owned(scope, SEARCH_SESSIONS_SCANNED)
            .await
            .map_err(|_| "the sessions could not be read; try again".to_string())?;
        let mut results = Vec::new();
        for session in sessions {
            if results.len() == SEARCH_RESULTS_MAX {
                break;
            }
            let page = self
                .events
                .page(&session.id, None, &session.last_event_id, SEARCH_EVENTS_PER_SESSION)
                .await
                .map_err(|_| "the transcripts could not be read; try again".to_string())?;
            let snippets: Vec<String> = page
                .events
                .iter()
                .filter(|event| matches!(event.kind.as_str(), "user_message" | "agent_message"))
                .filter_map(|event| event.payload.get("text").and_then(Value::as_str))
                .filter(|text| matches(text))
                .take(3)
                .map(|text| text.chars().take(SNIPPET_CHARS).collect())
                .collect();
            if matches(&session.title) || !snippets.is_empty() {
                results.push(json!({
                    "sessionId": session.id,
                    "title": session.title,
                    "updatedAt": session.updated_at,
                    "matches": snippets,
                }));
            }
        }
        Ok(json!({ "query": query, "count": results.len(), "sessions": results }).to_string())
    }
}

impl Tool for SearchSessions {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "search_sessions".into(),
            description: "Search the user's own earlier agent sessions (titles and messages) \
                          for every word of a query. Answers up to 10 sessions, most recently \
                          updated first, with matching snippets."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "query": { "type": "string", "description": "Words to look for." }
                },
                "required": ["query"]
            }),
        }
    }

    fn run<'a>(&'a self, scope: &'a UserScope, input: &'a Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let query = input
                .get("query")
                .and_then(Value::as_str)
                .ok_or_else(|| "input must be {\"query\": \"<words>\"}".to_string())?;
            self.search(scope, query).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Tool for Echo {
        fn spec(&self) -> ToolSpec {
            ToolSpec { name: "echo".into(), description: "d".into(), input_schema: json!({}) }
        }
        fn run<'a>(&'a self, _: &'a UserScope, input: &'a Value) -> ToolFuture<'a> {
            Box::pin(async move {
                match input.get("fail") {
                    Some(_) => Err("asked to fail".into()),
                    None => Ok(input.to_string()),
                }
            })
        }
    }

    fn scope() -> UserScope {
        UserScope::from_auth_record("u".into(), "o".into())
    }

    #[tokio::test]
    async fn unknown_tools_and_failures_are_error_results() {
        let tools = Tools::new(vec![Box::new(Echo)]);
        assert_eq!(tools.specs()[0].name, "echo");
        let ok = tools.run(&scope(), "echo", &json!({ "a": 1 })).await;
        assert_eq!(ok, ToolOutput { content: r#"{"a":1}"#.into(), is_error: false });
        let failed = tools.run(&scope(), "echo", &json!({ "fail": true })).await;
        assert!(failed.is_error && failed.content == "asked to fail");
        let unknown = tools.run(&scope(), "rm_rf", &json!({})).await;
        assert!(unknown.is_error && unknown.content.contains("rm_rf"), "{unknown:?}");
    }
}

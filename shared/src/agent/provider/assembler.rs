//! Turns [`StreamEvent`]s into what the turn loop acts on: text in order, whole tool calls,
//! the end with its usage.

use std::collections::HashMap;

use super::wire::*;
use super::*;

/// What the turn loop acts on, assembled from [`StreamEvent`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A piece of model text, in order (the concatenation of all Text outputs equals the
    /// model's text).
    Text(String),
    /// A completed tool call (input JSON assembled from the deltas and parsed; `{}` when no
    /// delta came; unparsable = Malformed).
    ToolUse {
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
        /// The tool's input.
        input: serde_json::Value,
    },
    /// The message ended.
    Done {
        /// Why the model stopped.
        stop_reason: String,
        /// The answer's token counts.
        usage: Usage,
    },
}

/// A content block being assembled.
#[derive(Debug)]
pub(super) enum Building {
    Text,
    ToolUse { id: String, name: String, json: String },
}

/// Turns events into what the turn loop acts on.
#[derive(Debug, Default)]
pub struct Assembler {
    blocks: HashMap<usize, Building>,
    usage: Usage,
    stop_reason: Option<String>,
    done: bool,
}

impl Assembler {
    /// An assembler for one answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one event; returns outputs in order.
    pub fn push(&mut self, event: StreamEvent) -> Result<Vec<Output>, ProviderError> {
        if self.done {
            return Err(ProviderError::Malformed("an event arrived after message_stop".into()));
        }
        match event {
            StreamEvent::MessageStart { usage } => self.usage = usage,
            StreamEvent::BlockStart { index, block } => self.start(index, block)?,
            StreamEvent::TextDelta { index, text } => return self.text(index, text),
            StreamEvent::InputJsonDelta { index, partial_json } => {
                self.input(index, &partial_json)?
            }
            StreamEvent::BlockStop { index } => return self.stop(index),
            StreamEvent::MessageDelta { stop_reason, output_tokens } => {
                self.stop_reason = stop_reason.or(self.stop_reason.take());
                self.usage.output_tokens = output_tokens.unwrap_or(self.usage.output_tokens);
            }
            StreamEvent::MessageStop => return self.finish(),
            StreamEvent::Ping => {}
        }
        Ok(Vec::new())
    }

    fn start(&mut self, index: usize, block: StartedBlock) -> Result<(), ProviderError> {
        let building = match block {
            StartedBlock::Text => Building::Text,
            StartedBlock::ToolUse { id, name } => {
                Building::ToolUse { id, name, json: String::new() }
            }
        };
        match self.blocks.insert(index, building) {
            None => Ok(()),
            Some(_) => {
                Err(ProviderError::Malformed(format!("content block {index} started twice")))
            }
        }
    }

    fn text(&mut self, index: usize, text: String) -> Result<Vec<Output>, ProviderError> {
        match self.blocks.get(&index) {
            Some(Building::Text) if text.is_empty() => Ok(Vec::new()),
            Some(Building::Text) => Ok(vec![Output::Text(text)]),
            _ => Err(not_open(index, "text")),
        }
    }

    fn input(&mut self, index: usize, partial_json: &str) -> Result<(), ProviderError> {
        match self.blocks.get_mut(&index) {
            Some(Building::ToolUse { json, .. }) => {
                if json.len() + partial_json.len() > TOOL_INPUT_LIMIT {
                    return Err(ProviderError::Malformed(format!(
                        "a tool call's input is over {TOOL_INPUT_LIMIT} bytes"
                    )));
                }
                json.push_str(partial_json);
                Ok(())
            }
            _ => Err(not_open(index, "tool_use")),
        }
    }

    fn stop(&mut self, index: usize) -> Result<Vec<Output>, ProviderError> {
        match self.blocks.remove(&index) {
            Some(Building::Text) => Ok(Vec::new()),
            Some(Building::ToolUse { id, name, json }) => {
                Ok(vec![Output::ToolUse { input: tool_input(&id, &json)?, id, name }])
            }
            None => Err(not_open(index, "any")),
        }
    }

    fn finish(&mut self) -> Result<Vec<Output>, ProviderError> {
        if let Some(index) = self.blocks.keys().next() {
            return Err(ProviderError::Malformed(format!("message ended in open block {index}")));
        }
        let Some(stop_reason) = self.stop_reason.take() else {
            return Err(ProviderError::Malformed("message ended without a stop_reason".into()));
        };
        self.done = true;
        Ok(vec![Output::Done { stop_reason, usage: self.usage }])
    }
}

pub(super) fn not_open(index: usize, kind: &str) -> ProviderError {
    ProviderError::Malformed(format!("no open {kind} content block {index}"))
}

/// A tool call's input from its concatenated deltas: `{}` when none came.
pub(super) fn tool_input(id: &str, json: &str) -> Result<serde_json::Value, ProviderError> {
    if json.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_json::from_str(json).map_err(|error| {
        ProviderError::Malformed(format!("tool call {id} has unparsable input: {error}"))
    })
}

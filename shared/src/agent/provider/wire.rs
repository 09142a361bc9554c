//! The Messages API's wire types: a conversation's messages and content blocks, the tools
//! offered, token usage, and the streamed events an answer arrives as.

use serde::{Deserialize, Serialize};

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user (also the bearer of tool results).
    User,
    /// The model.
    Assistant,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What it says.
    pub content: Vec<ContentBlock>,
}

/// A piece of a message, in the API's own JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call the model made.
    ToolUse {
        /// The call's id, echoed by its result.
        id: String,
        /// The tool's name.
        name: String,
        /// The tool's input.
        input: serde_json::Value,
    },
    /// The result of a tool call, sent back in a user message.
    ToolResult {
        /// The id of the call this answers.
        tool_use_id: String,
        /// The result as text.
        content: String,
        /// Whether the tool failed.
        #[serde(default)]
        is_error: bool,
    },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// The JSON schema of the tool's input.
    pub input_schema: serde_json::Value,
}

/// Token counts as far as known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens read.
    pub input_tokens: u64,
    /// Tokens written.
    pub output_tokens: u64,
}

/// The kind of a content block that started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartedBlock {
    /// A text block; its text comes as [`StreamEvent::TextDelta`]s.
    Text,
    /// A tool call; its input comes as [`StreamEvent::InputJsonDelta`]s.
    ToolUse {
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
}

/// One decoded streaming event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer began.
    MessageStart {
        /// Usage as `message_start` reports it.
        usage: Usage,
    },
    /// A content block began.
    BlockStart {
        /// The block's index in the answer.
        index: usize,
        /// What kind of block.
        block: StartedBlock,
    },
    /// More text for a text block.
    TextDelta {
        /// The block's index.
        index: usize,
        /// The text piece.
        text: String,
    },
    /// More of a tool call's input JSON.
    InputJsonDelta {
        /// The block's index.
        index: usize,
        /// A piece of JSON text, not valid JSON on its own.
        partial_json: String,
    },
    /// A content block ended.
    BlockStop {
        /// The block's index.
        index: usize,
    },
    /// The answer's final facts.
    MessageDelta {
        /// Why the model stopped (`end_turn`, `tool_use`, `max_tokens`, ...).
        stop_reason: Option<String>,
        /// Output tokens so far.
        output_tokens: Option<u64>,
    },
    /// The answer ended.
    MessageStop,
    /// A keep-alive.
    Ping,
}

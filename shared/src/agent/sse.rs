//! The Anthropic Messages event stream, decoded and checked one server-sent event at a time.
//!
//! The SSE framing (fields, CRLF or LF line ends, events split across reads) is the
//! `sse-stream` crate's work; this module judges what each event's JSON `data` says and
//! whether it comes in the protocol's order: a content block starts before its deltas, a
//! delta matches its block's kind, every block stops before `message_stop`, and nothing
//! follows `message_stop` or an `error` event. Event types this code does not know are
//! skipped, as the API's versioning policy asks of clients; known events of an unknown
//! shape are [`ProviderError::Malformed`].

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sse_stream::Sse;

use super::provider::{ProviderError, StartedBlock, StreamEvent, Usage};

/// The body of an Anthropic error, as an error status and an `error` event carry it.
#[derive(Debug, Deserialize)]
pub(crate) struct ApiErrorBody {
    /// The error itself.
    pub error: ApiError,
}

/// An Anthropic error's type (e.g. `overloaded_error`) and message.
#[derive(Debug, Deserialize)]
pub(crate) struct ApiError {
    /// The error type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The human-readable message.
    pub message: String,
}

#[derive(Deserialize)]
struct MessageStart {
    message: StartedMessage,
}

#[derive(Deserialize)]
struct StartedMessage {
    usage: WireUsage,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct BlockStart {
    index: usize,
    content_block: WireBlock,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
}

#[derive(Deserialize)]
struct BlockDelta {
    index: usize,
    delta: WireDelta,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta { text: String },
    InputJsonDelta { partial_json: String },
}

#[derive(Deserialize)]
struct BlockStop {
    index: usize,
}

#[derive(Deserialize)]
struct MessageDelta {
    delta: MessageDeltaBody,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

/// The kind of a content block, so that a delta of the other kind is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    ToolUse,
}

/// Whether a block that started is still receiving deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockState {
    Open(BlockKind),
    Stopped,
}

/// Decodes the events of one streamed answer in order, keeping the usage known so far.
#[derive(Debug, Default)]
pub struct EventDecoder {
    blocks: HashMap<usize, BlockState>,
    usage: Usage,
    finished: bool,
}

impl EventDecoder {
    /// A decoder for a new answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Token counts from `message_start` and `message_delta` so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether `message_stop` or an `error` event has been decoded: nothing may follow.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The events one server-sent event stands for (none for a keep-alive or an unknown
    /// event type; two when a block starts with content already in it). An `error` event is
    /// [`ProviderError::Stream`]; anything out of protocol is [`ProviderError::Malformed`].
    pub fn decode(&mut self, sse: &Sse) -> Result<Vec<StreamEvent>, ProviderError> {
        let Some(data) = sse.data.as_deref().filter(|data| !data.trim().is_empty()) else {
            return Ok(Vec::new());
        };
        if self.finished {
            return Err(malformed("an event arrived after the message ended"));
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|error| malformed(format!("event data is not JSON: {error}")))?;
        let kind = value.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(name) = sse.event.as_deref().filter(|name| *name != kind) {
            return Err(malformed(format!("event `{name}` carries data of type `{kind}`")));
        }
        self.dispatch(&kind, value)
    }

    fn dispatch(&mut self, kind: &str, value: Value) -> Result<Vec<StreamEvent>, ProviderError> {
        match kind {
            "ping" => Ok(vec![StreamEvent::Ping]),
            "message_start" => Ok(vec![self.message_start(parse(kind, value)?)]),
            "content_block_start" => self.block_start(parse(kind, value)?),
            "content_block_delta" => Ok(vec![self.block_delta(parse(kind, value)?)?]),
            "content_block_stop" => Ok(vec![self.block_stop(parse(kind, value)?)?]),
            "message_delta" => Ok(vec![self.message_delta(parse(kind, value)?)]),
            "message_stop" => Ok(vec![self.message_stop()?]),
            "error" => Err(self.error_event(parse(kind, value)?)),
            "" => Err(malformed("event data has no `type`")),
            other => {
                tracing::debug!(event_type = other, "skipping an unknown provider event type");
                Ok(Vec::new())
            }
        }
    }

    fn message_start(&mut self, start: MessageStart) -> StreamEvent {
        let usage = start.message.usage;
        self.usage = Usage {
            input_tokens: usage.input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens.unwrap_or(0),
        };
        StreamEvent::MessageStart { usage: self.usage }
    }

    fn block_start(&mut self, start: BlockStart) -> Result<Vec<StreamEvent>, ProviderError> {
        let index = start.index;
        if self.blocks.contains_key(&index) {
            return Err(malformed(format!("content block {index} started twice")));
        }
        let (kind, block, initial) = match start.content_block {
            WireBlock::Text { text } => {
                let initial = (!text.is_empty()).then_some(StreamEvent::TextDelta { index, text });
                (BlockKind::Text, StartedBlock::Text, initial)
            }
            WireBlock::ToolUse { id, name, input } => {
                let initial = initial_input(&input)
                    .map(|partial_json| StreamEvent::InputJsonDelta { index, partial_json });
                (BlockKind::ToolUse, StartedBlock::ToolUse { id, name }, initial)
            }
        };
        self.blocks.insert(index, BlockState::Open(kind));
        Ok(std::iter::once(StreamEvent::BlockStart { index, block }).chain(initial).collect())
    }

    fn block_delta(&mut self, delta: BlockDelta) -> Result<StreamEvent, ProviderError> {
        let index = delta.index;
        let kind = self.open_block(index)?;
        match (kind, delta.delta) {
            (BlockKind::Text, WireDelta::TextDelta { text }) => {
                Ok(StreamEvent::TextDelta { index, text })
            }
            (BlockKind::ToolUse, WireDelta::InputJsonDelta { partial_json }) => {
                Ok(StreamEvent::InputJsonDelta { index, partial_json })
            }
            _ => Err(malformed(format!("content block {index} got a delta of the wrong kind"))),
        }
    }

    fn block_stop(&mut self, stop: BlockStop) -> Result<StreamEvent, ProviderError> {
        self.open_block(stop.index)?;
        self.blocks.insert(stop.index, BlockState::Stopped);
        Ok(StreamEvent::BlockStop { index: stop.index })
    }

    fn open_block(&self, index: usize) -> Result<BlockKind, ProviderError> {
        match self.blocks.get(&index) {
            Some(BlockState::Open(kind)) => Ok(*kind),
            Some(BlockState::Stopped) => Err(malformed(format!("content block {index} stopped"))),
            None => Err(malformed(format!("content block {index} never started"))),
        }
    }

    fn message_delta(&mut self, delta: MessageDelta) -> StreamEvent {
        if let Some(input_tokens) = delta.usage.input_tokens {
            self.usage.input_tokens = input_tokens;
        }
        if let Some(output_tokens) = delta.usage.output_tokens {
            self.usage.output_tokens = output_tokens;
        }
        StreamEvent::MessageDelta {
            stop_reason: delta.delta.stop_reason,
            output_tokens: delta.usage.output_tokens,
        }
    }

    fn message_stop(&mut self) -> Result<StreamEvent, ProviderError> {
        if let Some(index) =
            self.blocks.iter().find(|(_, state)| **state != BlockState::Stopped).map(|(i, _)| i)
        {
            return Err(malformed(format!("the message ended with content block {index} open")));
        }
        self.finished = true;
        Ok(StreamEvent::MessageStop)
    }

    fn error_event(&mut self, body: ApiErrorBody) -> ProviderError {
        self.finished = true;
        ProviderError::Stream { error_type: body.error.kind, message: body.error.message }
    }
}

/// A tool's input given whole in its `content_block_start` (the API sends `{}` there and
/// streams the input as deltas), as JSON text to prepend to the deltas.
fn initial_input(input: &Value) -> Option<String> {
    match input {
        Value::Null => None,
        Value::Object(fields) if fields.is_empty() => None,
        other => Some(other.to_string()),
    }
}

fn parse<T: DeserializeOwned>(kind: &str, value: Value) -> Result<T, ProviderError> {
    serde_json::from_value(value)
        .map_err(|error| malformed(format!("`{kind}` event has an unexpected shape: {error}")))
}

fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::Malformed(message.into())
}

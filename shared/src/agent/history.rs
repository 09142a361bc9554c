//! The conversation a model call carries, rebuilt from the session's transcript.
//!
//! Every model call sends the whole conversation so far, so a follow-up message continues
//! it: `user_message` events become user text, `agent_message` events (the streamed answer,
//! in pieces) become assistant text again, `tool_use` and `tool_result` events become the
//! blocks the model sent and received. Status and `error` events are not part of the
//! conversation. A tool call left without a result (its turn failed or was cut off) is
//! answered with an error result, as the API requires a result after every tool call.
//! Consecutive pieces of one role become one message, so roles alternate.
//!
//! Events are taken in turn order, then transcript order: a message the user sent while a
//! turn was streaming is written in the middle of that turn's events, but belongs to the
//! next turn (the model of the turn in flight never saw it), so it follows the whole turn.
//!
//! **A long history is cut to fit** [`HISTORY_CHAR_BUDGET`] characters (about 100k tokens at
//! four characters a token): whole messages are dropped from the oldest end, then more until
//! the conversation opens with a user message that is not a tool result (whose tool call
//! would be gone). If even the last user message is over the budget, its text keeps its end.

use serde_json::Value;

use super::provider::{ContentBlock, Message, Role};
use crate::store::events::StoredEvent;

/// The most characters of conversation a model call carries.
pub const HISTORY_CHAR_BUDGET: usize = 400_000;

/// The result given to a tool call whose turn ended before its result was written.
pub const INTERRUPTED_TOOL_RESULT: &str = "The tool call was interrupted before it returned.";

/// The conversation of turn `upto_turn` as `events` (oldest first) hold it, cut to `budget`
/// characters. Events of later turns are left out: a message sent before this turn's worker
/// started (queued for the next turn) is the next turn's to answer, not this one's.
pub fn conversation(events: &[StoredEvent], upto_turn: u64, budget: usize) -> Vec<Message> {
    let mut turn = 0;
    let mut ordered: Vec<(u64, &StoredEvent)> = events
        .iter()
        .map(|event| {
            turn = event.turn.unwrap_or(turn);
            (turn, event)
        })
        .filter(|(turn, _)| *turn <= upto_turn)
        .collect();
    ordered.sort_by_key(|(turn, _)| *turn);
    let mut messages: Vec<Message> = Vec::new();
    let mut open_tool_calls: Vec<String> = Vec::new();
    for (_, event) in ordered {
        let text = |name: &str| event.payload.get(name).and_then(Value::as_str).unwrap_or("");
        let block = match event.kind.as_str() {
            "user_message" => {
                close_tool_calls(&mut messages, &mut open_tool_calls);
                Some((Role::User, ContentBlock::Text { text: text("text").to_owned() }))
            }
            "agent_message" => {
                Some((Role::Assistant, ContentBlock::Text { text: text("text").to_owned() }))
            }
            "tool_use" => {
                let id = text("toolUseId").to_owned();
                open_tool_calls.push(id.clone());
                let input = event.payload.get("input").cloned().unwrap_or(Value::Null);
                let input = if input.is_object() { input } else { serde_json::json!({}) };
                Some((
                    Role::Assistant,
                    ContentBlock::ToolUse { id, name: text("name").into(), input },
                ))
            }
            "tool_result" => {
                let id = text("toolUseId").to_owned();
                open_tool_calls.retain(|open| *open != id);
                let is_error = event.payload.get("isError").and_then(Value::as_bool) == Some(true);
                let content = match event.payload.get("content") {
                    Some(Value::String(content)) => content.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                Some((Role::User, ContentBlock::ToolResult { tool_use_id: id, content, is_error }))
            }
            _ => {
                close_tool_calls(&mut messages, &mut open_tool_calls);
                None
            }
        };
        if let Some((role, block)) = block {
            push(&mut messages, role, block);
        }
    }
    close_tool_calls(&mut messages, &mut open_tool_calls);
    cut_to_budget(messages, budget)
}

/// Adds `block` to the last message when it has `role` (text after text of the assistant
/// joins it: the answer was streamed in pieces), else opens a message.
fn push(messages: &mut Vec<Message>, role: Role, block: ContentBlock) {
    if let ContentBlock::Text { text } = &block
        && text.is_empty()
    {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => {
            if let (Some(ContentBlock::Text { text: before }), ContentBlock::Text { text }) =
                (last.content.last_mut(), &block)
                && role == Role::Assistant
            {
                before.push_str(text);
                return;
            }
            last.content.push(block);
        }
        _ => messages.push(Message { role, content: vec![block] }),
    }
}

fn close_tool_calls(messages: &mut Vec<Message>, open: &mut Vec<String>) {
    for id in open.drain(..) {
        let result = ContentBlock::ToolResult {
            tool_use_id: id,
            content: INTERRUPTED_TOOL_RESULT.into(),
            is_error: true,
        };
        push(messages, Role::User, result);
    }
}

/// About how many characters `event` adds to a conversation: how much of a transcript, read
/// from its end, is enough for [`HISTORY_CHAR_BUDGET`].
pub fn event_size(event: &StoredEvent) -> usize {
    ["text", "content", "input", "name"]
        .iter()
        .filter_map(|field| event.payload.get(*field))
        .map(|value| value.as_str().map_or_else(|| value.to_string().len(), str::len))
        .sum()
}

fn size(message: &Message) -> usize {
    message
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text { text } => text.len(),
            ContentBlock::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
            ContentBlock::ToolResult { content, .. } => content.len(),
        })
        .sum()
}

fn opens_conversation(message: &Message) -> bool {
    message.role == Role::User
        && !message.content.iter().any(|block| matches!(block, ContentBlock::ToolResult { .. }))
}

fn cut_to_budget(mut messages: Vec<Message>, budget: usize) -> Vec<Message> {
    let mut total: usize = messages.iter().map(size).sum();
    let mut first = 0;
    while first < messages.len() && (total > budget || !opens_conversation(&messages[first])) {
        if first + 1 == messages.len() {
            break;
        }
        total -= size(&messages[first]);
        first += 1;
    }
    let mut kept = messages.split_off(first);
    if total > budget
        && let Some(Message { content, .. }) = kept.first_mut()
    {
        for block in content.iter_mut() {
            if let ContentBlock::Text { text } = block
                && text.len() > budget
            {
                let mut start = text.len() - budget;
                while !text.is_char_boundary(start) {
                    start += 1;
                }
                *text = text[start..].to_owned();
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            id: String::new(),
            kind: kind.into(),
            occurred_at: String::new(),
            payload,
            turn: None,
        }
    }

    fn in_turn(turn: u64, mut event: StoredEvent) -> StoredEvent {
        event.turn = Some(turn);
        event
    }

    #[test]
    fn a_message_queued_mid_turn_follows_the_whole_turn() {
        let events = vec![
            in_turn(1, event("user_message", json!({ "text": "Write a poem" }))),
            in_turn(1, event("agent_message", json!({ "text": "Roses " }))),
            in_turn(2, event("user_message", json!({ "text": "Make it rhyme" }))),
            in_turn(1, event("agent_message", json!({ "text": "are red." }))),
            in_turn(2, event("agent_message", json!({ "text": "Rhyming now." }))),
        ];
        let messages = conversation(&events, u64::MAX, HISTORY_CHAR_BUDGET);
        assert_eq!(
            messages,
            vec![
                text(Role::User, "Write a poem"),
                text(Role::Assistant, "Roses are red."),
                text(Role::User, "Make it rhyme"),
                text(Role::Assistant, "Rhyming now."),
            ]
        );
    }

    #[test]
    fn a_message_queued_for_a_later_turn_is_not_part_of_this_turns_conversation() {
        // Sent before turn 1's worker read the transcript: queued for turn 2.
        let events = vec![
            in_turn(1, event("user_message", json!({ "text": "Write a poem" }))),
            in_turn(2, event("user_message", json!({ "text": "Make it rhyme" }))),
        ];
        assert_eq!(
            conversation(&events, 1, HISTORY_CHAR_BUDGET),
            vec![text(Role::User, "Write a poem")]
        );
        assert_eq!(conversation(&events, 2, HISTORY_CHAR_BUDGET).len(), 1, "one user message");
        let both = conversation(&events, 2, HISTORY_CHAR_BUDGET);
        assert_eq!(both[0].content.len(), 2, "turn 2 sees both messages");
    }

    #[test]
    fn event_sizes_count_what_the_conversation_carries() {
        assert_eq!(event_size(&event("user_message", json!({ "text": "hello" }))), 5);
        let tool =
            event("tool_use", json!({ "toolUseId": "t", "name": "ab", "input": { "q": 1 } }));
        assert_eq!(event_size(&tool), 2 + r#"{"q":1}"#.len());
        assert_eq!(event_size(&event("status_idle", json!({ "stopReason": "end_turn" }))), 0);
    }

    fn text(role: Role, text: &str) -> Message {
        Message { role, content: vec![ContentBlock::Text { text: text.into() }] }
    }

    #[test]
    fn a_turn_with_a_tool_call_and_a_streamed_answer_is_rebuilt() {
        let events = vec![
            event("user_message", json!({ "text": "Find my notes" })),
            event("agent_message", json!({ "text": "Let me look." })),
            event(
                "tool_use",
                json!({ "toolUseId": "t1", "name": "search_sessions", "input": { "query": "notes" } }),
            ),
            event(
                "tool_result",
                json!({ "toolUseId": "t1", "content": "2 sessions", "isError": false }),
            ),
            event("agent_message", json!({ "text": "You have " })),
            event("agent_message", json!({ "text": "two." })),
            event("status_idle", json!({ "stopReason": "end_turn" })),
            event("user_message", json!({ "text": "Thanks" })),
        ];
        let messages = conversation(&events, u64::MAX, HISTORY_CHAR_BUDGET);
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[0], text(Role::User, "Find my notes"));
        assert_eq!(messages[1].role, Role::Assistant);
        assert_eq!(messages[1].content[0], ContentBlock::Text { text: "Let me look.".into() });
        assert!(matches!(&messages[1].content[1], ContentBlock::ToolUse { id, .. } if id == "t1"));
        assert!(
            matches!(&messages[2].content[0], ContentBlock::ToolResult { tool_use_id, is_error: false, .. } if tool_use_id == "t1")
        );
        assert_eq!(messages[3], text(Role::Assistant, "You have two."));
        assert_eq!(messages[4], text(Role::User, "Thanks"));
    }

    #[test]
    fn a_tool_call_without_result_is_answered_as_interrupted() {
        let events = vec![
            event("user_message", json!({ "text": "Go" })),
            event("tool_use", json!({ "toolUseId": "t9", "name": "search_sessions", "input": {} })),
            event("error", json!({ "message": "failed", "errorType": "worker_lost" })),
            event("user_message", json!({ "text": "Again" })),
        ];
        let messages = conversation(&events, u64::MAX, HISTORY_CHAR_BUDGET);
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[2].content[0],
            ContentBlock::ToolResult {
                tool_use_id: "t9".into(),
                content: INTERRUPTED_TOOL_RESULT.into(),
                is_error: true
            }
        );
        assert_eq!(messages[2].content[1], ContentBlock::Text { text: "Again".into() });
    }

    #[test]
    fn a_long_history_drops_its_oldest_exchanges_and_opens_with_user_text() {
        let events = vec![
            event("user_message", json!({ "text": "a".repeat(50) })),
            event("tool_use", json!({ "toolUseId": "t1", "name": "n", "input": {} })),
            event("tool_result", json!({ "toolUseId": "t1", "content": "r".repeat(50) })),
            event("agent_message", json!({ "text": "b".repeat(50) })),
            event("user_message", json!({ "text": "latest" })),
        ];
        let messages = conversation(&events, u64::MAX, 70);
        assert_eq!(messages, vec![text(Role::User, "latest")]);
        let messages = conversation(&events, u64::MAX, 10_000);
        assert_eq!(messages.len(), 5);
    }

    #[test]
    fn an_oversized_last_message_keeps_its_end() {
        let events =
            vec![event("user_message", json!({ "text": format!("{}end", "é".repeat(20)) }))];
        let messages = conversation(&events, u64::MAX, 7);
        let ContentBlock::Text { text } = &messages[0].content[0] else { panic!() };
        assert!(text.ends_with("end") && text.len() <= 7, "{text}");
    }
}

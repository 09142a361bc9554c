//! Domain types that can only hold valid values: inner code never sees unchecked input.

use std::fmt;

use uuid::Uuid;

/// A session id: always a UUID, kept in its lowercase hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh random id for a new session.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses the 36-character hyphenated form (any letter case). Other UUID spellings
    /// (braced, URN, no hyphens) are refused so that one session has one spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() != 36 {
            return None;
        }
        Uuid::try_parse(raw).ok().map(Self)
    }

    /// The id as stored and answered: lowercase hyphenated.
    pub fn as_string(&self) -> String {
        self.0.hyphenated().to_string()
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Who is calling: a user acting in their active organisation. Only authentication
/// ([`crate::auth`]) makes one, so holding a `UserScope` proves the caller signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserScope {
    user_id: String,
    org_id: String,
}

impl UserScope {
    /// Built by the auth layer from a stored auth session; not for request input.
    pub(crate) fn from_auth_record(user_id: String, org_id: String) -> Self {
        Self { user_id, org_id }
    }

    /// The authenticated user's id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The user's active organisation id.
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// The key of the sessions-by-owner index: a session belongs to a user *in* an org.
    pub fn owner_key(&self) -> String {
        format!("{}#{}", self.org_id, self.user_id)
    }
}

/// Most characters a message text may have.
pub const MAX_TEXT_CHARS: usize = 16_000;
/// Characters of the opening message that make a session's title.
pub const TITLE_CHARS: usize = 60;

/// The text of a user message: not blank, at most [`MAX_TEXT_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

/// Why a text is not a valid [`MessageText`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    /// Empty or only whitespace.
    Blank,
    /// Longer than [`MAX_TEXT_CHARS`].
    TooLong,
}

impl MessageText {
    /// Checks a raw text; it is kept exactly as sent.
    pub fn parse(raw: String) -> Result<Self, TextError> {
        if raw.trim().is_empty() {
            Err(TextError::Blank)
        } else if raw.chars().count() > MAX_TEXT_CHARS {
            Err(TextError::TooLong)
        } else {
            Ok(Self(raw))
        }
    }

    /// The text as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A session title: the first [`TITLE_CHARS`] characters of the text with surrounding
    /// whitespace removed first (so a title never starts with a blank).
    pub fn title(&self) -> String {
        self.0.trim().chars().take(TITLE_CHARS).collect()
    }
}

/// A transcript event id. Time-ordered (UUID v7), so the events of a session sort by
/// creation time as plain strings and "events after X" is a key condition, not a filter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    /// A fresh id that sorts after every id this process made before.
    pub fn new() -> Self {
        Self(Uuid::now_v7().hyphenated().to_string())
    }

    /// A fresh id that sorts after `previous`, even when `previous` was made on a host whose
    /// clock runs ahead of this one: then the id takes `previous`'s millisecond plus one.
    /// The store refuses an event whose id does not sort after the session's last one, so a
    /// transcript's key order is always the order its events were written in.
    pub fn after(previous: &EventId) -> Self {
        let fresh = Self::new();
        if fresh > *previous {
            return fresh;
        }
        let millis = previous.unix_millis().unwrap_or(0) + 1;
        let timestamp = uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1000,
            ((millis % 1000) * 1_000_000) as u32,
        );
        Self(Uuid::new_v7(timestamp).hyphenated().to_string())
    }

    /// Parses a client-supplied event id (a transcript cursor): the 36-character hyphenated
    /// UUID form, kept lowercase so that it compares with stored ids.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() != 36 {
            return None;
        }
        Uuid::try_parse(raw).ok().map(|uuid| Self(uuid.hyphenated().to_string()))
    }

    /// An id read back from the store, trusted as written.
    pub(crate) fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    /// The Unix milliseconds a v7 id carries.
    fn unix_millis(&self) -> Option<u64> {
        let (secs, nanos) = Uuid::try_parse(&self.0).ok()?.get_timestamp()?.to_unix();
        Some(secs * 1000 + u64::from(nanos) / 1_000_000)
    }

    /// The id as stored and answered.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

/// The id of one run of the turn workflow: the Step Functions execution's name, answered as
/// `runId` / `workflowRunId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunId(String);

impl RunId {
    /// A fresh id for a run about to start.
    pub fn new() -> Self {
        Self(Uuid::new_v4().hyphenated().to_string())
    }

    /// An id read back from the store or from the workflow's input.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    /// The id as stored and answered.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The kinds of transcript events (SPEC section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A message from the user.
    UserMessage,
    /// Text from the agent.
    AgentMessage,
    /// The agent called a tool.
    ToolUse,
    /// A tool's answer.
    ToolResult,
    /// The turn finished.
    StatusIdle,
    /// The session ended permanently.
    StatusTerminated,
    /// The turn failed.
    Error,
}

impl EventType {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserMessage => "user_message",
            Self::AgentMessage => "agent_message",
            Self::ToolUse => "tool_use",
            Self::ToolResult => "tool_result",
            Self::StatusIdle => "status_idle",
            Self::StatusTerminated => "status_terminated",
            Self::Error => "error",
        }
    }
}

/// A session's status, as stored in its `status` attribute and as the list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// A turn is running.
    Running,
    /// No turn is running; a message starts one.
    Idle,
    /// Ended for good (cancelled): no turn will run again.
    Terminated,
}

impl SessionStatus {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Idle => "idle",
            Self::Terminated => "terminated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_statuses_have_the_contracts_names() {
        let names = [SessionStatus::Running, SessionStatus::Idle, SessionStatus::Terminated]
            .map(SessionStatus::as_str);
        assert_eq!(names, ["running", "idle", "terminated"]);
    }

    #[test]
    fn session_id_accepts_hyphenated_uuid_in_any_case_and_normalises() {
        let id = SessionId::parse("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(id.as_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }

    #[test]
    fn session_id_refuses_other_spellings_and_garbage() {
        for raw in [
            "",
            "not-a-uuid",
            "6f9619ff8b86d011b42d00c04fc964ff",
            "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
            "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "6f9619ff-8b86-d011-b42d-00c04fc964fg",
        ] {
            assert!(SessionId::parse(raw).is_none(), "{raw:?} should be refused");
        }
    }

    #[test]
    fn text_must_not_be_blank_or_too_long() {
        assert_eq!(MessageText::parse("".into()), Err(TextError::Blank));
        assert_eq!(MessageText::parse(" \n\t ".into()), Err(TextError::Blank));
        assert_eq!(MessageText::parse("é".repeat(MAX_TEXT_CHARS + 1)), Err(TextError::TooLong));
        assert!(MessageText::parse("é".repeat(MAX_TEXT_CHARS)).is_ok());
    }

    #[test]
    fn title_is_first_sixty_characters_not_bytes() {
        let text = MessageText::parse(format!("  {}", "ü".repeat(100))).unwrap();
        assert_eq!(text.title(), "ü".repeat(60));
        assert_eq!(MessageText::parse("short".into()).unwrap().title(), "short");
    }

    #[test]
    fn event_ids_sort_in_creation_order() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn event_id_after_sorts_after_an_id_from_a_clock_ahead_of_ours() {
        let future = EventId(
            Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 4_000_000_000, 0))
                .hyphenated()
                .to_string(),
        );
        for _ in 0..100 {
            let next = EventId::after(&future);
            assert!(next > future, "{next:?} must sort after {future:?}");
            assert_eq!(next.unix_millis(), Some(4_000_000_000_001));
        }
        let past = EventId::new();
        assert!(EventId::after(&past) > past);
    }

    #[test]
    fn event_id_cursor_parses_only_hyphenated_uuids_and_lowercases() {
        let id = EventId::parse("0193A7C2-5E1F-7ABC-8DEF-0123456789AB").unwrap();
        assert_eq!(id.as_str(), "0193a7c2-5e1f-7abc-8def-0123456789ab");
        for raw in
            ["", "1", "0193a7c25e1f7abc8def0123456789ab", "zz93a7c2-5e1f-7abc-8def-0123456789ab"]
        {
            assert!(EventId::parse(raw).is_none(), "{raw:?}");
        }
    }

    #[test]
    fn owner_key_joins_org_and_user() {
        let scope = UserScope::from_auth_record("u1".into(), "o1".into());
        assert_eq!(scope.owner_key(), "o1#u1");
    }
}

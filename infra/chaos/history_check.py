"""Checks a chaos run's history (infra/chaos/chaos.py) against the contract (SPEC.md).

It reads only what the run recorded: every request with its answer and its start and end times
(`kind: req`), the final state read at rest (`final_transcript`, the `final_list` requests, the
deleted sessions' `final_probe` requests) and the provider emulator's recording of every model
call of the run (`provider`: tag, startedAtMs, closedAtMs, completed, turnUserTexts,
turnToolRounds). Never the system's internals.

Each invariant is a function of the parsed history returning its violations; `check` runs them
all. `python infra/chaos/history_check.py .local/chaos/<seed>.jsonl` checks a recorded run again.

Conventions: a message's unique token (`tok-...`) is the first word of its text; the tags of
its model calls are `<run prefix>-s<session key>-m<message index>`. A request without an answer
(timeout, reset) has status null: its effect is unknown, so it is allowed either way where that
matters (and `requests_answered` names it).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from dataclasses import dataclass, field

#: Answers the contract documents for a route besides 2xx/4xx (openapi.yaml): every route may
#: answer 503 (DynamoDB busy through every retry), create and message also 502 (the agent's
#: workflow could not be started).
DOCUMENTED_5XX = {
    ("POST", "/session"): {502, 503},
    ("POST", "/message"): {502, 503},
    ("POST", "/cancel"): {503},
    ("DELETE", "/session"): {503},
    ("GET", "/transcript"): {503},
    ("GET", "/sessions"): {503},
}
#: A cancel closes the provider call in flight within one poll interval (1-5 s, SPEC §1, §6);
#: the tighter local latency (§7, §9) is the workflow benchmark's business, not this one's.
CANCEL_CLOSE_BOUND_MS = 5000
TOKEN = re.compile(r"\btok-\S+")
TAG = re.compile(r"-s(\d+)-m(\d+)$")
TURN_END = ("status_idle", "error", "status_terminated")


@dataclass
class Violation:
    invariant: str
    detail: str
    key: int | None = None
    session_id: str | None = None
    evidence: list = field(default_factory=list)


@dataclass
class Session:
    key: int
    user: int | None = None
    id: str | None = None
    create: dict | None = None
    messages: list = field(default_factory=list)  # create (first) and message requests
    cancels: list = field(default_factory=list)
    deletes: list = field(default_factory=list)
    requests: list = field(default_factory=list)  # every request naming the session
    final: dict | None = None
    calls: list = field(default_factory=list)  # the provider's entries of this session

    @property
    def events(self) -> list | None:
        return self.final["events"] if self.final and self.final.get("status") == 200 else None

    def accepted(self, reqs) -> list:
        return [r for r in reqs if r.get("status") == 200]

    @property
    def deleted_at(self) -> float | None:
        """When the first delete answered 200 (wall ms), else None."""
        done = [r["w1"] for r in self.deletes if r.get("status") == 200]
        return min(done) if done else None

    @property
    def maybe_deleted(self) -> bool:
        return any(r.get("status") in (200, None) for r in self.deletes)

    @property
    def cancelled_at(self) -> float | None:
        """When the session was known cancelled: the first 200 of a cancel or a delete."""
        done = [r["w1"] for r in self.cancels + self.deletes if r.get("status") == 200]
        return min(done) if done else None

    @property
    def maybe_cancelled(self) -> bool:
        """A cancel answered 200 or not at all (a 503 changed nothing), or any delete sent (one
        marks the session cancelled before it removes anything)."""
        return bool(self.deletes) or any(r.get("status") in (200, None) for r in self.cancels)


class History:
    def __init__(self, records: list[dict]):
        self.records = records
        self.meta = next((r for r in records if r["kind"] == "meta"), {})
        self.prefix = self.meta.get("prefix", "")
        self.reqs = [r for r in records if r["kind"] == "req"]
        self.by_index = {r["i"]: r for r in self.reqs if "i" in r}
        provider = [r for r in records if r["kind"] == "provider"]
        self.calls = provider[-1]["entries"] if provider else []
        self.has_provider = bool(provider)
        self.sessions: dict[int, Session] = {}
        for r in self.reqs:
            if r.get("key") is None:
                continue
            s = self.sessions.setdefault(r["key"], Session(r["key"], r.get("user")))
            if r["op"] == "create":
                s.create = r
                s.messages.insert(0, r)
                if r.get("status") == 200 and isinstance(r.get("response"), dict):
                    s.id = r["response"].get("id")
            elif r["op"] == "message":
                s.messages.append(r)
            elif r["op"] == "cancel":
                s.cancels.append(r)
            elif r["op"] == "delete":
                s.deletes.append(r)
            if r["op"] != "create":
                s.requests.append(r)
        for r in records:
            if r["kind"] == "final_transcript" and r.get("key") in self.sessions:
                self.sessions[r["key"]].final = r
        for e in self.calls:
            m = TAG.search(str(e.get("tag") or ""))
            if m and int(m.group(1)) in self.sessions:
                self.sessions[int(m.group(1))].calls.append(e)
        self.lists = [r for r in self.reqs if r["op"] in ("list", "final_list") and r.get("status") == 200]
        self.final_lists = {r["user"]: r for r in self.reqs if r["op"] == "final_list" and r.get("status") == 200}
        self.at_rest = next((r.get("atRest") for r in records if r["kind"] == "rest"), None)


def token_of(req: dict) -> str | None:
    if req.get("token"):
        return req["token"]
    m = TOKEN.search(str((req.get("body") or {}).get("text", "")))
    return m.group(0) if m else None


def tokens_in(text) -> set[str]:
    return set(TOKEN.findall(str(text or "")))


def brief(event: dict) -> str:
    p = event.get("payload") or {}
    extra = p.get("text") or p.get("message") or p.get("name") or ""
    if "unansweredMessages" in p:
        extra = f"{extra} (unansweredMessages={p['unansweredMessages']})"
    return f"{event.get('id', '?')[:8]} {event.get('type')} {str(extra)[:70]!r}"


def req_brief(r: dict) -> str:
    resp = json.dumps(r.get("response"))[:120] if r.get("response") is not None else r.get("error", "")
    return (f"#{r.get('i')} {r.get('thread')} {r['method']} {r['path']} {json.dumps(r.get('query') or {})} -> "
            f"{r.get('status')} {resp} [w0={r.get('w0', 0):.0f} w1={r.get('w1', 0):.0f}]")


def call_brief(e: dict) -> str:
    return (f"{e.get('id')} tag={e.get('tag')} status={e.get('status')} started={e.get('startedAtMs')} "
            f"closed={e.get('closedAtMs')} by={e.get('closedBy')} completed={e.get('completed')} "
            f"rounds={e.get('turnToolRounds')} texts={[t[:40] for t in e.get('turnUserTexts') or []]}")


# -- the invariants -----------------------------------------------------------------------------


def answers_are_documented(h: History) -> list[Violation]:
    """No 5xx but the documented ones (503 on every route, 502 on create and message)."""
    out = []
    for r in h.reqs:
        status = r.get("status")
        if status is not None and status >= 500 and status not in DOCUMENTED_5XX.get((r["method"], r["path"]), ()):
            s = h.sessions.get(r.get("key"))
            out.append(Violation("answers_are_documented", f"undocumented {status} from {r['method']} {r['path']}",
                                 r.get("key"), s.id if s else r.get("sessionId"), [req_brief(r)]))
    return out


def requests_answered(h: History) -> list[Violation]:
    """Every request got an HTTP answer (the API did not stop answering)."""
    return [Violation("requests_answered", f"no answer: {r.get('error')}", r.get("key"), r.get("sessionId"),
                      [req_brief(r)]) for r in h.reqs if r.get("status") is None]


def final_state_read(h: History) -> list[Violation]:
    """At rest the final transcript of every created session was read (200, or 404 once deleted):
    otherwise the invariants that need it could not look."""
    return [Violation("final_state_read", f"final transcript read answered {(s.final or {}).get('status')}",
                      s.key, s.id) for s in h.sessions.values()
            if s.id and (s.final is None or s.final.get("status") not in (200, 404))]


def accepted_messages_in_transcript_once(h: History) -> list[Violation]:
    """A create or message answered 200 is exactly once a user_message of its transcript (the
    create's text first); one refused (4xx, 503) is not there; one with an unknown outcome (no
    answer) or a 502 (kept, workflow not started) at most once."""
    out = []
    for s in h.sessions.values():
        events = s.events
        if events is None:
            continue
        seen: dict[str, list] = {}
        for e in events:
            if e["type"] == "user_message":
                for t in tokens_in((e.get("payload") or {}).get("text")):
                    seen.setdefault(t, []).append(e)
        for r in s.messages:
            tok = token_of(r)
            n = len(seen.get(tok, []))
            status = r.get("status")
            ok = n == 1 if status == 200 else n <= 1 if status in (None, 502) else n == 0
            if not ok:
                out.append(Violation(
                    "accepted_messages_in_transcript_once",
                    f"{r['op']} {tok} answered {status} appears {n} times as a user_message",
                    s.key, s.id, [req_brief(r)] + [brief(e) for e in seen.get(tok, [])]))
        if s.create and s.create.get("status") == 200 and events:
            first = events[0]
            if first["type"] != "user_message" or token_of(s.create) not in tokens_in(first["payload"].get("text")):
                out.append(Violation("accepted_messages_in_transcript_once",
                                     "the opening message is not the first event", s.key, s.id, [brief(first)]))
    return out


AGENT_EVENTS = ("agent_message", "tool_use", "tool_result")


def named_unanswered(events: list, attempted: set[str]) -> set[str]:
    """The tokens of the messages an `error` event accounts for, as unanswered.

    An error E after message M accounts for it when (a) M is among the last
    `unansweredMessages` user messages before E (the messages queued during the failed turn),
    or (b) a model call tried to answer M (`attempted`: M was in its turn's user message) and
    failed, E being the end of that turn, or (c) no agent event came between the end of the
    turn before M and E (the turn failed before any output: its opener and what was queued
    behind it cannot be told apart). A turn that goes on into the next queued turn writes no
    status_idle between them, so the transcript alone cannot delimit turns: hence (a)-(c)."""
    named: set[str] = set()
    users: list[set[str]] = []  # every user message so far
    segment: list[set[str]] = []  # user messages since the last turn end
    output = False  # an agent event since the last turn end
    for e in events:
        kind = e["type"]
        if kind == "user_message":
            toks = tokens_in((e.get("payload") or {}).get("text"))
            users.append(toks)
            segment.append(toks)
        elif kind in AGENT_EVENTS:
            output = True
        elif kind in TURN_END:
            if kind == "error":
                q = int((e.get("payload") or {}).get("unansweredMessages") or 0)
                for toks in users[len(users) - q:] if q else []:
                    named |= toks
                for toks in users:
                    named |= toks & attempted
                if not output:
                    for toks in segment:
                        named |= toks
            segment, output = [], False
    return named


def messages_answered_once(h: History) -> list[Violation]:
    """Every accepted message is answered by exactly one model call (a completed call that opens
    a turn whose user message holds it), or is accounted for by an `error` event
    (named_unanswered), or its session was cancelled or deleted; none is ever answered twice."""
    if not h.has_provider:
        return [Violation("messages_answered_once", "the provider's recording is missing from the history")]
    out = []
    for s in h.sessions.values():
        for r in s.messages:
            tok = token_of(r)
            answers = [e for e in s.calls if e.get("completed") and e.get("turnToolRounds") == 0
                       and any(tok in tokens_in(t) for t in e.get("turnUserTexts") or [])]
            if len(answers) > 1:
                out.append(Violation("messages_answered_once",
                                     f"{r['op']} {tok} answered by {len(answers)} model calls", s.key, s.id,
                                     [req_brief(r)] + [call_brief(e) for e in answers]
                                     + [brief(e) for e in s.events or []]))
            elif not answers and r.get("status") == 200 and not s.maybe_cancelled and s.events is not None:
                attempted = {t for e in s.calls for text in e.get("turnUserTexts") or [] for t in tokens_in(text)}
                if tok not in named_unanswered(s.events, attempted):
                    out.append(Violation(
                        "messages_answered_once",
                        f"{r['op']} {tok} accepted but never answered nor named unanswered in an error",
                        s.key, s.id, [req_brief(r)] + [call_brief(e) for e in s.calls]
                        + [brief(e) for e in s.events]))
    return out


def answers_reach_transcript_whole(h: History) -> list[Violation]:
    """The text of every model call that answered in full is in its session's transcript, whole
    and in one piece (agent_message texts concatenate to the model's text, SPEC §6), in sessions
    never cancelled or deleted (where a cancel may rightly cut it)."""
    out = []
    for s in h.sessions.values():
        events = s.events
        if events is None or s.maybe_cancelled:
            continue
        said = "".join(str((e.get("payload") or {}).get("text", "")) for e in events if e["type"] == "agent_message")
        lost = [e for e in s.calls if e.get("completed") and e.get("textSent") and e["textSent"] not in said]
        if lost:
            out.append(Violation("answers_reach_transcript_whole",
                                 f"{len(lost)} complete model answer(s) not in the transcript whole", s.key, s.id,
                                 [call_brief(e) + f" text={e['textSent'][:80]!r}" for e in lost]
                                 + [brief(e) for e in events]))
    return out


def one_first_cancel(h: History) -> list[Violation]:
    """Per session at most one first cancel ({"ok":true}, alreadyCancelled absent); exactly one
    when a cancel was answered 200 and no delete or unanswered cancel could have been first."""
    out = []
    for s in h.sessions.values():
        ok = s.accepted(s.cancels)
        firsts = [r for r in ok if "alreadyCancelled" not in (r.get("response") or {})]
        bad = [r for r in ok if (r.get("response") or {}).get("ok") is not True
               or (r.get("response") or {}).get("alreadyCancelled") not in (None, True)]
        may_be_elsewhere = s.deletes or any(r.get("status") is None for r in s.cancels)
        if len(firsts) > 1 or (ok and not firsts and not may_be_elsewhere) or bad:
            out.append(Violation("one_first_cancel",
                                 f"{len(firsts)} first cancel(s) among {len(ok)} cancels answered 200"
                                 + (f"; {len(bad)} malformed answer(s)" if bad else ""),
                                 s.key, s.id, [req_brief(r) for r in s.cancels + s.deletes]))
    return out


def terminated_once_and_last(h: History) -> list[Violation]:
    """A cancelled session's transcript ends with exactly one status_terminated and nothing after
    it; no transcript has more than one, or one that is not last."""
    out = []
    for s in h.sessions.values():
        events = s.events
        if events is None:
            continue
        idx = [i for i, e in enumerate(events) if e["type"] == "status_terminated"]
        cancelled = s.cancelled_at is not None
        if len(idx) > 1 or (idx and idx[-1] != len(events) - 1) or (cancelled and not idx):
            tail = events[idx[0]:] if idx else events[-5:]
            out.append(Violation("terminated_once_and_last",
                                 f"{len(idx)} status_terminated, cancelled={cancelled}, "
                                 f"{len(events) - 1 - idx[0] if idx else 0} event(s) after the first",
                                 s.key, s.id, [req_brief(r) for r in s.accepted(s.cancels)][:2]
                                 + [brief(e) for e in tail]))
    return out


def no_provider_call_after_cancel(h: History) -> list[Violation]:
    """No model call of a session opens after a cancel (or delete) of it was answered 200."""
    out = []
    for s in h.sessions.values():
        at = s.cancelled_at
        if at is None:
            continue
        late = [e for e in s.calls if (e.get("startedAtMs") or 0) > at]
        if late:
            out.append(Violation("no_provider_call_after_cancel",
                                 f"{len(late)} model call(s) opened after the cancel's answer at {at:.0f}",
                                 s.key, s.id, [req_brief(r) for r in s.accepted(s.cancels + s.deletes)][:2]
                                 + [call_brief(e) for e in late]))
    return out


def epoch_ms(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000
    except (AttributeError, ValueError):
        return None


def no_agent_event_after_cancel(h: History) -> list[Violation]:
    """Nothing the model sends after a cancel's (or delete's) answer reaches the transcript: no
    agent_message, tool_use or tool_result stamped later than that answer."""
    out = []
    for s in h.sessions.values():
        at, events = s.cancelled_at, s.events
        if at is None or events is None:
            continue
        late = [e for e in events if e["type"] in ("agent_message", "tool_use", "tool_result")
                and (epoch_ms(e.get("occurredAt")) or 0) > at + 1]
        if late:
            out.append(Violation("no_agent_event_after_cancel",
                                 f"{len(late)} agent event(s) stamped after the cancel's answer at {at:.0f}",
                                 s.key, s.id, [req_brief(r) for r in s.accepted(s.cancels + s.deletes)][:2]
                                 + [f"{brief(e)} at {e.get('occurredAt')}" for e in late]))
    return out


def cancel_closes_open_call(h: History) -> list[Violation]:
    """A model call open when a cancel (or delete) was answered is closed within one poll
    interval's bound of that answer."""
    out = []
    for s in h.sessions.values():
        at = s.cancelled_at
        if at is None:
            continue
        slow = [e for e in s.calls if (e.get("startedAtMs") or 0) <= at
                and (e.get("closedAtMs") is None or e["closedAtMs"] > at + CANCEL_CLOSE_BOUND_MS)]
        if slow:
            out.append(Violation("cancel_closes_open_call",
                                 f"{len(slow)} model call(s) still open {CANCEL_CLOSE_BOUND_MS} ms after the "
                                 f"cancel's answer at {at:.0f}", s.key, s.id,
                                 [req_brief(r) for r in s.accepted(s.cancels + s.deletes)][:2]
                                 + [call_brief(e) for e in slow]))
    return out


def provider_calls_closed(h: History) -> list[Violation]:
    """At rest every model call of the run is closed."""
    return [Violation("provider_calls_closed", "a model call is still open at rest", s.key, s.id, [call_brief(e)])
            for s in h.sessions.values() for e in s.calls if e.get("closedAtMs") is None]


def idle_at_rest(h: History) -> list[Violation]:
    """At rest no run is active; an uncancelled session's last event is status_idle or error and
    the list shows it idle."""
    out = []
    for s in h.sessions.values():
        events = s.events
        if events is None:
            continue
        listed = _listed(h, s)
        status = listed.get("status") if listed else None
        cancelled = s.maybe_cancelled
        last = events[-1]["type"] if events else None
        problems = []
        if s.final.get("workflowRunId") is not None:
            problems.append(f"workflowRunId {s.final['workflowRunId']} still active")
        if not cancelled and last not in ("status_idle", "error"):
            problems.append(f"last event {last}")
        if not cancelled and listed is not None and status != "idle":
            problems.append(f"listed {status}")
        if status == "running":
            problems.append("listed running")
        if problems:
            out.append(Violation("idle_at_rest", "; ".join(sorted(set(problems))), s.key, s.id,
                                 [brief(e) for e in events[-6:]] + ([json.dumps(listed)] if listed else [])))
    return out


def reads_are_slices(h: History) -> list[Violation]:
    """Every incremental read is the slice of the final transcript right after its sinceEventId
    (same ids, order and content, no gap), and each reader's read starts where its previous one
    ended."""
    out = []
    for s in h.sessions.values():
        events = s.events
        if events is None:
            continue
        ids = [e["id"] for e in events]
        pos = {i: n for n, i in enumerate(ids)}
        for r in s.requests:
            if r["op"] not in ("read", "rest_probe") or r.get("status") != 200:
                continue
            page = (r.get("response") or {}).get("events") or []
            since = (r.get("query") or {}).get("sinceEventId")
            prev = h.by_index.get(r.get("prevRead")) if r.get("prevRead") else None
            if prev is not None:
                prev_page = (prev.get("response") or {}).get("events") or []
                expected = prev_page[-1]["id"] if prev_page else (prev.get("query") or {}).get("sinceEventId")
                if since != expected:
                    out.append(Violation("reads_are_slices", f"reader {r.get('reader')} skipped: read from "
                                         f"{since} after a read that ended at {expected}", s.key, s.id,
                                         [req_brief(prev), req_brief(r)]))
            if since is not None and since not in pos:
                out.append(Violation("reads_are_slices", f"sinceEventId {since} is not in the final transcript",
                                     s.key, s.id, [req_brief(r)]))
                continue
            start = pos[since] + 1 if since is not None else 0
            want = events[start:start + len(page)]
            same = [(e["id"], e["type"], e.get("payload")) for e in page] == \
                   [(e["id"], e["type"], e.get("payload")) for e in want]
            more = (r.get("response") or {}).get("hasMore")
            if not same or (more and start + len(page) >= len(events)):
                out.append(Violation(
                    "reads_are_slices",
                    f"read after {since} (reader {r.get('reader')}) is not the final transcript's slice"
                    + (" (hasMore, nothing more)" if same else ""), s.key, s.id,
                    [req_brief(r), "read:  " + " | ".join(brief(e) for e in page),
                     "final: " + " | ".join(brief(e) for e in events[max(0, start - 1):start + len(page) + 2])]))
    return out


def deleted_sessions_gone(h: History) -> list[Violation]:
    """From a delete's 200 on, the session answers 404 on transcript, message, cancel and delete
    (429/503 carry no news) and no list started after it shows it; a session no delete was sent
    to is still readable at rest."""
    out = []
    for s in h.sessions.values():
        if not s.id:
            continue
        at = s.deleted_at
        if s.final and s.final.get("status") == 404 and not s.maybe_deleted:
            out.append(Violation("deleted_sessions_gone", "a session never deleted answers 404 at rest",
                                 s.key, s.id, [req_brief(r) for r in s.requests[-5:]]))
        if at is None:
            continue
        after = [r for r in s.requests if r["w0"] > at and r.get("status") not in (404, 429, 503, None)]
        if s.final and s.final.get("status") != 404:
            out.append(Violation("deleted_sessions_gone", f"final transcript read answered {s.final.get('status')}",
                                 s.key, s.id, [req_brief(r) for r in s.deletes]))
        if after:
            out.append(Violation("deleted_sessions_gone", f"{len(after)} request(s) after the delete's answer "
                                 "were not 404", s.key, s.id, [req_brief(r) for r in s.deletes + after]))
        listed = [r for r in h.lists if r["w0"] > at and any(
            x.get("id") == s.id for x in (r.get("response") or {}).get("sessions") or [])]
        if listed:
            out.append(Violation("deleted_sessions_gone", "listed after the delete's answer", s.key, s.id,
                                 [req_brief(r) for r in s.deletes + listed]))
    return out


def _listed(h: History, s: Session) -> dict | None:
    r = h.final_lists.get(s.user)
    if r is None:
        return None
    return next((x for x in (r.get("response") or {}).get("sessions") or [] if x.get("id") == s.id), None)


def list_agrees_with_transcripts(h: History) -> list[Violation]:
    """At rest the list shows every live session, `terminated` exactly for the transcripts that
    hold status_terminated."""
    out = []
    for s in h.sessions.values():
        events = s.events
        if events is None or s.user not in h.final_lists:
            continue
        listed = _listed(h, s)
        terminated = any(e["type"] == "status_terminated" for e in events)
        if listed is None:
            out.append(Violation("list_agrees_with_transcripts", "a live session is not listed", s.key, s.id,
                                 [req_brief(h.final_lists[s.user])]))
        elif (listed.get("status") == "terminated") != terminated:
            out.append(Violation("list_agrees_with_transcripts",
                                 f"listed {listed.get('status')}, transcript "
                                 f"{'has' if terminated else 'has no'} status_terminated", s.key, s.id,
                                 [json.dumps(listed)] + [brief(e) for e in events[-4:]]))
    return out


def cancelled_session_takes_no_turn(h: History) -> list[Violation]:
    """A message sent after a cancel's answer is refused (409), never accepted."""
    out = []
    for s in h.sessions.values():
        at = s.cancelled_at
        if at is None:
            continue
        taken = [r for r in s.messages if r["op"] == "message" and r["w0"] > at and r.get("status") == 200]
        if taken:
            out.append(Violation("cancelled_session_takes_no_turn", f"{len(taken)} message(s) accepted after the "
                                 "cancel's answer", s.key, s.id,
                                 [req_brief(r) for r in s.accepted(s.cancels + s.deletes)][:1]
                                 + [req_brief(r) for r in taken]))
    return out


INVARIANTS = [
    answers_are_documented,
    requests_answered,
    final_state_read,
    accepted_messages_in_transcript_once,
    messages_answered_once,
    answers_reach_transcript_whole,
    one_first_cancel,
    terminated_once_and_last,
    no_provider_call_after_cancel,
    no_agent_event_after_cancel,
    cancel_closes_open_call,
    provider_calls_closed,
    idle_at_rest,
    reads_are_slices,
    deleted_sessions_gone,
    list_agrees_with_transcripts,
    cancelled_session_takes_no_turn,
]


def check(records: list[dict]) -> list[Violation]:
    h = History(records)
    return [v for inv in INVARIANTS for v in inv(h)]


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def describe(violations: list[Violation], limit: int = 20) -> str:
    lines = []
    by: dict[str, list] = {}
    for v in violations:
        by.setdefault(v.invariant, []).append(v)
    for name, vs in by.items():
        doc = " ".join((globals()[name].__doc__ or "").split("\n\n")[0].split()) if name in globals() else ""
        lines.append(f"VIOLATED {name}: {len(vs)} time(s) -- {doc}")
        for v in vs[:max(1, limit // max(1, len(by)))]:
            lines.append(f"  session key={v.key} id={v.session_id}: {v.detail}")
            lines += [f"    {e}" for e in v.evidence[:40]]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    if len(argv) != 1:
        print("usage: history_check.py HISTORY.jsonl", file=sys.stderr)
        return 2
    violations = check(load(argv[0]))
    if violations:
        print(describe(violations, limit=50))
        return 1
    print("history_check: every invariant holds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

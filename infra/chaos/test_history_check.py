"""Unit tests of the chaos checker (history_check.py): one valid history passes, and a small
synthetic history violating each invariant is named by it (so the checker can fail).

Run by `make test` (python -m unittest discover -s infra/chaos).
"""

import copy
from pathlib import Path
import unittest

import chaos
import history_check as hc

P = "cTEST"
SID = "11111111-1111-4111-8111-111111111111"
SID2 = "22222222-2222-4222-8222-222222222222"


def ev(n, kind, **payload):
    return {"id": f"e{n:07d}-0000-4000-8000-000000000000", "type": kind,
            "occurredAt": f"2025-01-01T00:00:{n:02d}.000Z", "payload": payload}


def tok(key, j):
    return f"tok-{P}-s{key}-m{j}"


def text(key, j):
    return f"{tok(key, j)} words [[emu tag={P}-s{key}-m{j}]]"


class Builder:
    """A history: requests at increasing times, then the final state."""

    def __init__(self):
        self.records = [{"kind": "meta", "prefix": P, "seed": 1, "sessions": 2}]
        self.t = 1748736000000.0  # 2025-06-01, after the events stamped below
        self.i = 0

    def req(self, op, method, path, status, response=None, key=0, sid=SID, user=0, **extra):
        self.i += 1
        self.t += 10
        rec = {"kind": "req", "i": self.i, "op": op, "method": method, "path": path, "status": status,
               "response": response, "key": key, "sessionId": sid, "user": user, "thread": "client_0",
               "query": {}, "body": None, "w0": self.t, "w1": self.t + 5, "t0": self.t / 1000,
               "t1": (self.t + 5) / 1000, **extra}
        self.records.append(rec)
        return rec

    def create(self, key=0, sid=SID, status=200):
        return self.req("create", "POST", "/session", status,
                        {"id": sid, "runId": SID2, "noConnectors": True} if status == 200 else {"error": "x"},
                        key=key, sid=None, body={"text": text(key, 0)}, token=tok(key, 0))

    def message(self, j, status=200, key=0, sid=SID):
        return self.req("message", "POST", "/message", status, {"ok": True} if status == 200 else {"error": "x"},
                        key=key, sid=sid, body={"sessionId": sid, "text": text(key, j)}, token=tok(key, j))

    def cancel(self, response, status=200, key=0, sid=SID):
        return self.req("cancel", "POST", "/cancel", status, response, key=key, sid=sid, body={"sessionId": sid})

    def delete(self, status=200, key=0, sid=SID):
        return self.req("delete", "DELETE", "/session", status, {"ok": True} if status == 200 else {"error": "x"},
                        key=key, sid=sid, query={"sessionId": sid})

    def read(self, events, since=None, reader=1, prev=None, more=False, key=0, sid=SID, status=200):
        return self.req("read", "GET", "/transcript", status,
                        {"title": "t", "workflowRunId": None, "events": events, "hasMore": more,
                         "backfillFailed": False}, key=key, sid=sid,
                        query={"sessionId": sid, **({"sinceEventId": since} if since else {})},
                        reader=reader, prevRead=prev)

    def final(self, events, key=0, sid=SID, status=200, run=None):
        self.records.append({"kind": "final_transcript", "key": key, "sessionId": sid, "status": status,
                             "events": events, "workflowRunId": run, "title": "t"})

    def listing(self, sessions, user=0, op="final_list"):
        return self.req(op, "GET", "/sessions", 200, {"sessions": sessions}, key=None, sid=None, user=user)

    def provider(self, calls):
        self.records.append({"kind": "provider", "prefix": P, "entries": calls})


def call(key, j, started, closed=None, completed=True, rounds=0, texts=None, by="server", said=""):
    return {"textSent": said, "id": f"req_{key}_{j}_{started}", "tag": f"{P}-s{key}-m{j}", "status": 200, "startedAtMs": started,
            "closedAtMs": closed if closed is not None else started + 50, "closedBy": by, "completed": completed,
            "turnToolRounds": rounds, "turnUserTexts": texts if texts is not None else [text(key, j)]}


def summary(sid=SID, status="idle"):
    return {"id": sid, "title": "t", "status": status, "createdAt": "x", "updatedAt": "y"}


def valid() -> Builder:
    """Session 0: create, a follow-up message, one read, answered, idle. Session 1: create, two
    simultaneous cancels (one first), terminated. Session 2: created, then deleted."""
    b = Builder()
    b.create(0)
    e = [ev(1, "user_message", text=text(0, 0)), ev(2, "tool_use", name="search_sessions"),
         ev(3, "tool_result", content="x"), ev(4, "agent_message", text="answer"), ev(5, "status_idle"),
         ev(6, "user_message", text=text(0, 1)), ev(7, "agent_message", text="more"), ev(8, "status_idle")]
    r1 = b.read(e[:3])
    b.message(1)
    b.read(e[3:6], since=e[2]["id"], prev=r1["i"])
    b.create(1, sid=SID2)
    c1 = b.cancel({"ok": True}, key=1, sid=SID2)
    b.cancel({"ok": True, "alreadyCancelled": True}, key=1, sid=SID2)
    b.message(1, status=409, key=1, sid=SID2)
    s3 = "33333333-3333-4333-8333-333333333333"
    b.create(2, sid=s3)
    b.delete(key=2, sid=s3)
    b.req("final_probe", "GET", "/transcript", 404, {"error": "no"}, key=2, sid=s3)
    b.final(e)
    e2 = [ev(20, "user_message", text=text(1, 0)), ev(21, "agent_message", text="par"), ev(22, "status_terminated")]
    b.final(e2, key=1, sid=SID2)
    b.final([], key=2, sid=s3, status=404)
    b.listing([summary(SID), summary(SID2, "terminated")])
    b.provider([call(0, 0, 500), call(0, 0, 560, rounds=1, said="answer"), call(0, 1, 900, said="more"),
                call(1, 0, 1000, closed=c1["w1"] + 100, completed=False, by="client")])
    return b


def named(records):
    return {v.invariant for v in hc.check(records)}


class CheckerTest(unittest.TestCase):
    def test_valid_history_passes(self):
        self.assertEqual(hc.check(valid().records), [])

    def violates(self, b, name):
        found = hc.check(b.records)
        self.assertIn(name, {v.invariant for v in found}, hc.describe(found))
        self.assertTrue(hc.describe(found))
        return found

    def test_undocumented_5xx(self):
        b = valid()
        b.req("read", "GET", "/transcript", 500, {"error": "boom"})
        self.violates(b, "answers_are_documented")
        b = valid()
        b.req("list", "GET", "/sessions", 502, {"error": "x"}, key=None, sid=None)
        self.violates(b, "answers_are_documented")

    def test_documented_503_and_502_pass(self):
        b = valid()
        b.req("list", "GET", "/sessions", 503, {"error": "busy"}, key=None, sid=None)
        b.message(9, status=503, key=0)
        self.assertEqual(named(b.records), set())

    def test_unanswered_request(self):
        b = valid()
        b.req("list", "GET", "/sessions", None, None, key=None, sid=None, error="timeout")
        self.violates(b, "requests_answered")

    def test_final_state_not_read(self):
        b = valid()
        next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 0).update(status=None, events=[])
        self.violates(b, "final_state_read")

    def test_accepted_message_missing_or_twice(self):
        b = valid()
        b.message(2)  # accepted, never in the transcript
        self.violates(b, "accepted_messages_in_transcript_once")
        b = valid()
        b.records[next(i for i, r in enumerate(b.records) if r["kind"] == "final_transcript")]["events"].insert(
            6, ev(9, "user_message", text=text(0, 1)))
        self.violates(b, "accepted_messages_in_transcript_once")

    def test_refused_message_in_transcript(self):
        b = valid()
        final = next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 0)
        final["events"] += [ev(30, "user_message", text=text(0, 7)), ev(31, "agent_message", text="a"),
                            ev(32, "status_idle")]
        b.message(7, status=429)
        self.violates(b, "accepted_messages_in_transcript_once")

    def test_message_answered_twice(self):
        b = valid()
        next(r for r in b.records if r["kind"] == "provider")["entries"].append(call(0, 1, 950))
        self.violates(b, "messages_answered_once")

    def test_queued_message_answered_with_the_next_is_once(self):
        b = valid()
        prov = next(r for r in b.records if r["kind"] == "provider")["entries"]
        prov[2]["turnUserTexts"] = [text(0, 1)]
        self.assertEqual(named(b.records), set())

    def test_message_never_answered(self):
        b = valid()
        prov = next(r for r in b.records if r["kind"] == "provider")["entries"]
        del prov[2]
        self.violates(b, "messages_answered_once")

    def test_message_named_unanswered_in_error_passes(self):
        b = valid()
        final = next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 0)
        final["events"][6:] = [ev(7, "error", message="failed", errorType="overloaded_error")]
        prov = next(r for r in b.records if r["kind"] == "provider")["entries"]
        prov[2]["completed"] = False
        self.assertEqual(named(b.records), set())
        # ... but an error whose unansweredMessages does not reach a queued message does not name it
        final["events"][5:] = [ev(6, "user_message", text=text(0, 1)), ev(7, "agent_message", text="Let"),
                               ev(8, "user_message", text=text(0, 2)),
                               ev(9, "error", message="failed", unansweredMessages=0)]
        b.message(2)
        self.violates(b, "messages_answered_once")
        final["events"][-1]["payload"]["unansweredMessages"] = 1
        self.assertNotIn("messages_answered_once", named(b.records))
        # ... or a model call tried to answer it and its turn failed
        final["events"][-1]["payload"]["unansweredMessages"] = 0
        prov.append(call(0, 2, 990, completed=False))
        self.assertNotIn("messages_answered_once", named(b.records))

    def test_answer_text_lost_or_cut(self):
        b = valid()
        next(r for r in b.records if r["kind"] == "provider")["entries"][2]["textSent"] = "more and more"
        self.violates(b, "answers_reach_transcript_whole")

    def test_two_first_cancels(self):
        b = valid()
        b.cancel({"ok": True}, key=1, sid=SID2)
        self.violates(b, "one_first_cancel")

    def test_no_first_cancel_among_accepted(self):
        b = valid()
        c = next(r for r in b.records if r.get("op") == "cancel" and "alreadyCancelled" not in r["response"])
        c["response"] = {"ok": True, "alreadyCancelled": True}
        self.violates(b, "one_first_cancel")

    def test_already_cancelled_false_is_malformed(self):
        b = valid()
        b.cancel({"ok": True, "alreadyCancelled": False}, key=1, sid=SID2)
        self.violates(b, "one_first_cancel")

    def test_terminated_missing_twice_or_not_last(self):
        for events in ([ev(20, "user_message", text=text(1, 0)), ev(21, "status_idle")],
                       [ev(20, "user_message", text=text(1, 0)), ev(21, "status_terminated"),
                        ev(22, "status_terminated")],
                       [ev(20, "user_message", text=text(1, 0)), ev(21, "status_terminated"),
                        ev(22, "agent_message", text="late")]):
            b = valid()
            next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 1)["events"] = events
            self.violates(b, "terminated_once_and_last")

    def test_provider_call_after_cancel(self):
        b = valid()
        c1 = next(r for r in b.records if r.get("op") == "cancel")
        next(r for r in b.records if r["kind"] == "provider")["entries"].append(
            call(1, 0, int(c1["w1"]) + 20, completed=False))
        self.violates(b, "no_provider_call_after_cancel")

    def test_agent_event_after_cancel(self):
        b = valid()
        final = next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 1)
        self.assertEqual(named(b.records), set())
        final["events"][1]["occurredAt"] = "2100-01-01T00:00:00.000Z"
        self.violates(b, "no_agent_event_after_cancel")

    def test_call_left_open_after_cancel(self):
        b = valid()
        c1 = next(r for r in b.records if r.get("op") == "cancel")
        prov = next(r for r in b.records if r["kind"] == "provider")["entries"]
        prov[3]["closedAtMs"] = c1["w1"] + hc.CANCEL_CLOSE_BOUND_MS + 1000
        self.violates(b, "cancel_closes_open_call")

    def test_call_open_at_rest(self):
        b = valid()
        prov = next(r for r in b.records if r["kind"] == "provider")["entries"]
        prov[1]["closedAtMs"] = None
        self.violates(b, "provider_calls_closed")

    def test_not_idle_at_rest(self):
        b = valid()
        next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 0)["events"].pop()
        self.violates(b, "idle_at_rest")
        b = valid()
        next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 0)["workflowRunId"] = SID2
        self.violates(b, "idle_at_rest")
        b = valid()
        next(r for r in b.records if r.get("op") == "final_list")["response"]["sessions"][0]["status"] = "running"
        self.violates(b, "idle_at_rest")

    def test_read_not_a_slice(self):
        b = valid()
        r = next(r for r in b.records if r.get("op") == "read" and r["query"].get("sinceEventId"))
        r["response"]["events"] = r["response"]["events"][1:]  # a gap
        self.violates(b, "reads_are_slices")
        b = valid()
        r = next(r for r in b.records if r.get("op") == "read" and r["query"].get("sinceEventId"))
        r["response"]["events"] = list(reversed(r["response"]["events"]))
        self.violates(b, "reads_are_slices")
        b = valid()
        r = next(r for r in b.records if r.get("op") == "read" and r["query"].get("sinceEventId"))
        r["response"]["events"][0] = copy.deepcopy(r["response"]["events"][0])
        r["response"]["events"][0]["payload"]["text"] = "changed"
        self.violates(b, "reads_are_slices")

    def test_reader_skipped_events(self):
        b = valid()
        first = next(r for r in b.records if r.get("op") == "read")
        e = next(r for r in b.records if r["kind"] == "final_transcript")["events"]
        b.read(e[4:5], since=e[3]["id"], prev=first["i"])
        self.violates(b, "reads_are_slices")

    def test_deleted_session_still_answers_or_listed(self):
        b = valid()
        s3 = "33333333-3333-4333-8333-333333333333"
        b.req("final_probe", "POST", "/cancel", 200, {"ok": True, "alreadyCancelled": True}, key=2, sid=s3)
        self.violates(b, "deleted_sessions_gone")
        b = valid()
        b.listing([summary(s3)], op="list")
        self.violates(b, "deleted_sessions_gone")
        b = valid()
        next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 2).update(status=200)
        self.violates(b, "deleted_sessions_gone")

    def test_live_session_lost(self):
        b = valid()
        next(r for r in b.records if r["kind"] == "final_transcript" and r["key"] == 0).update(status=404)
        self.violates(b, "deleted_sessions_gone")

    def test_list_disagrees(self):
        b = valid()
        next(r for r in b.records if r.get("op") == "final_list")["response"]["sessions"][1]["status"] = "idle"
        self.violates(b, "list_agrees_with_transcripts")
        b = valid()
        next(r for r in b.records if r.get("op") == "final_list")["response"]["sessions"].pop(0)
        self.violates(b, "list_agrees_with_transcripts")

    def test_message_accepted_after_cancel(self):
        b = valid()
        next(r for r in b.records if r.get("op") == "message" and r["key"] == 1).update(
            status=200, response={"ok": True})
        self.violates(b, "cancelled_session_takes_no_turn")

    def test_every_invariant_has_a_test(self):
        tested = " ".join(Path(__file__).read_text().split("def test_every_invariant_has_a_test")[0].split())
        for inv in hc.INVARIANTS:
            self.assertIn(f'"{inv.__name__}"', tested)


class PlanTest(unittest.TestCase):
    def test_plan_is_a_function_of_the_seed(self):
        self.assertEqual(chaos.plan(42, 30), chaos.plan(42, 30))
        self.assertNotEqual(chaos.plan(42, 30), chaos.plan(43, 30))

    def test_users_have_at_most_three_sessions(self):
        for seed in range(20):
            p = chaos.plan(seed, 60)
            users = [s["user"] for s in p]
            self.assertLessEqual(max(users.count(u) for u in set(users)), 3)
            self.assertGreater(len({s["org"] for s in p}), 1)

    def test_regressions_file_parses(self):
        for line in (Path(__file__).parent / "regressions.txt").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                seed, sessions, clients, what = line.split(None, 3)
                self.assertTrue(seed.isdigit() and sessions.isdigit() and clients.isdigit() and what, line)

    def test_rates_parse(self):
        self.assertEqual(chaos.parse_rates("a=0.1,b=0.2"), {"a": 0.1, "b": 0.2})
        self.assertEqual(chaos.parse_rates('{"a": 0.5}'), {"a": 0.5})
        self.assertEqual(chaos.parse_rates(""), chaos.DEFAULT_RATES)


if __name__ == "__main__":
    unittest.main()

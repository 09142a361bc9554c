"""Tests of infra/chat/chat.py against a fake managed-agents API (stdlib only, no stack needed).

Run: python3 -m unittest discover -s infra/chat -v

`FakeApi` serves the routes chat.py uses from memory, on 127.0.0.1 in a thread: a created
session or a message starts a scripted turn (agent_message pieces, a tool_use and its
tool_result, more text, status_idle), messages sent during a turn are answered after it,
waiting transcript reads are held until an event exists or the wait runs out, and a cancel
ends the running turn with status_terminated. Most tests drive the real script as a subprocess
through pipes (and SIGINT); every wait is bounded.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chat  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "chat.py"
GOOD = "good-token"
USER = "user-1"
TIMEOUT = 15.0
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def script_for(text: str) -> list[tuple[str, dict]]:
    """The events of the fake model's turn answering `text`."""
    if "long" in text:  # about 3 s of words: long enough to cancel or to queue behind
        return [("agent_message", {"text": f"word{i} "}) for i in range(150)]
    tool_failed = "fail tool" in text
    return [
        ("agent_message", {"text": "Hello"}),
        ("agent_message", {"text": ", you said: "}),
        ("agent_message", {"text": text}),
        ("agent_message", {"text": "."}),
        ("tool_use", {"toolUseId": "t1", "name": "search_sessions", "input": {"query": text}}),
        ("tool_result", {"toolUseId": "t1", "content": "no such tool" if tool_failed else "2 sessions found",
                         "isError": tool_failed}),
        ("agent_message", {"text": " Done"}),
        ("agent_message", {"text": "!"}),
    ]


class FakeSession:
    """One session of the fake API: its events, queued texts and state."""

    def __init__(self, owner: str):
        self.id = str(uuid.uuid4())
        self.owner = owner
        self.events: list[dict] = []
        self.queued: list[str] = []
        self.running = False
        self.cancelled = False
        self.deleted = False


class FakeApi(ThreadingHTTPServer):
    """The managed-agents routes in memory, with knobs for the tests."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.origin = self.url
        self.lock = threading.Condition()
        self.sessions: dict[str, FakeSession] = {}
        self.requests: list[dict] = []   # {method, route, query, body, headers, status, answer}
        self.piece_delay = 0.02
        self.terminate_delay = 0.05      # from the cancel to the run's status_terminated
        self.page_size = 100
        self.already_cancelled = False   # cancel answers alreadyCancelled
        self.failures: dict[str, list[tuple[int, dict]]] = {}  # route -> answers to give first
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def handle_error(self, request, client_address):
        """Quiet about clients gone while a waiting read was held (chat.py exits without
        closing them); anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def stop(self):
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()

    def fail_next(self, route: str, status: int, headers: dict | None = None, times: int = 1):
        """Make the next `times` calls of `route` (e.g. 'POST session') answer `status`."""
        self.failures.setdefault(route, []).extend([(status, headers or {})] * times)

    def add_event(self, session: FakeSession, kind: str, payload: dict | None = None):
        """Append an event and wake the waiting reads."""
        with self.lock:
            session.events.append({"id": str(uuid.uuid4()), "type": kind, "payload": payload or {},
                                   "occurredAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            self.lock.notify_all()

    def new_session(self, owner: str = USER, history: int = 0, cancelled: bool = False) -> FakeSession:
        """A session made directly (for --session-id tests): `history` idle turns' events."""
        session = FakeSession(owner)
        with self.lock:
            self.sessions[session.id] = session
        for i in range(history):
            self.add_event(session, "user_message", {"text": f"old question {i}"})
            self.add_event(session, "agent_message", {"text": f"OLD ANSWER {i}"})
            self.add_event(session, "status_idle")
        if cancelled:
            session.cancelled = True
            self.add_event(session, "status_terminated", {"cancelledBy": owner})
        return session

    def start_turn(self, session: FakeSession, text: str):
        """Record the user's message; run a turn, or queue it behind the running one."""
        self.add_event(session, "user_message", {"text": text})
        with self.lock:
            if session.running:
                session.queued.append(text)
                return
            session.running = True
        threading.Thread(target=self.run_turns, args=(session, text), daemon=True).start()

    def run_turns(self, session: FakeSession, text: str):
        """Thread: answer `text`, then each queued text, then go idle (or end when cancelled)."""
        while True:
            for kind, payload in script_for(text):
                if self.sleep_unless_cancelled(session, self.piece_delay):
                    time.sleep(self.terminate_delay)
                    with self.lock:
                        session.running = False
                    self.add_event(session, "status_terminated", {"cancelledBy": session.owner})
                    return
                self.add_event(session, kind, payload)
            with self.lock:
                if not session.queued:
                    session.running = False
                    break
                text = session.queued.pop(0)
        self.add_event(session, "status_idle")

    def sleep_unless_cancelled(self, session: FakeSession, seconds: float) -> bool:
        """Sleep; True as soon as the session is cancelled."""
        end = time.monotonic() + seconds
        with self.lock:
            while not session.cancelled:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
            return True

    def page(self, session: FakeSession, since: str | None, wait: float) -> tuple[int, dict]:
        """A transcript page after `since`, waiting up to `wait` s for an event."""
        deadline = time.monotonic() + wait
        with self.lock:
            ids = [e["id"] for e in session.events]
            if since is not None and since not in ids:
                return 400, {"error": "sinceEventId is not an event of this session"}
            start = ids.index(since) + 1 if since else 0
            while len(session.events) <= start and not session.deleted and time.monotonic() < deadline:
                self.lock.wait(deadline - time.monotonic())
            if session.deleted:
                return 404, {"error": "session not found"}
            events = session.events[start:start + self.page_size]
            return 200, {"title": "fake", "workflowRunId": "run-1" if session.running else None,
                         "events": [dict(e) for e in events],
                         "hasMore": len(session.events) > start + self.page_size, "backfillFailed": False}

    def delete(self, session: FakeSession):
        """Delete a session (its waiting reads answer 404)."""
        with self.lock:
            session.deleted = True
            self.lock.notify_all()

    def calls(self, route: str) -> list[dict]:
        """The recorded requests of `route`, e.g. 'POST message'."""
        with self.lock:
            return [r for r in self.requests if r["route"] == route]


class FakeHandler(BaseHTTPRequestHandler):
    """The HTTP side of `FakeApi`."""

    protocol_version = "HTTP/1.1"
    server: FakeApi

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method: str):
        """Authenticate, check the Origin, apply a planted failure, then answer the route."""
        url = urlsplit(self.path)
        name = url.path.removeprefix("/api/managed-agents/")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.loads(raw) if raw else None
        record = {"method": method, "route": f"{method} {name}", "query": query, "body": body,
                  "headers": dict(self.headers)}
        status, answer, headers = self.answer(method, name, query, body)
        record.update(status=status, answer=answer)
        with self.server.lock:
            self.server.requests.append(record)
        data = json.dumps(answer).encode()
        self.send_response(status)
        for key, value in {"content-type": "application/json", "content-length": str(len(data)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def answer(self, method: str, name: str, query: dict, body) -> tuple[int, dict, dict]:
        """(status, JSON answer, extra headers) of one request."""
        api = self.server
        cookie = self.headers.get("Cookie", "")
        if cookie != f"knoq_session={GOOD}":
            return 401, {"error": "unauthenticated: no session cookie"}, {}
        if method == "POST" and self.headers.get("Origin") != api.origin:
            return 403, {"error": "forbidden: Origin not allowed"}, {}
        with api.lock:
            planted = api.failures.get(f"{method} {name}")
            failure = planted.pop(0) if planted else None
        if failure:
            return failure[0], {"error": f"planted {failure[0]}"}, failure[1]
        if (method, name) == ("POST", "session"):
            session = FakeSession(USER)
            with api.lock:
                api.sessions[session.id] = session
            api.start_turn(session, body["text"])
            return 200, {"id": session.id, "runId": "run-1", "noConnectors": True}, {}
        session = api.sessions.get((body or {}).get("sessionId") or query.get("sessionId"))
        if session is None or session.deleted:
            return 404, {"error": "session not found"}, {}
        if (method, name) == ("POST", "message"):
            if session.cancelled:
                return 409, {"error": "session cancelled"}, {}
            api.start_turn(session, body["text"])
            return 200, {"ok": True}, {}
        if (method, name) == ("POST", "cancel"):
            return 200, self.cancel(session), {}
        if (method, name) == ("GET", "transcript"):
            status, page = api.page(session, query.get("sinceEventId"), float(query.get("waitSeconds", 0)))
            return status, page, {}
        return 404, {"error": f"no route {method} {name}"}, {}

    def cancel(self, session: FakeSession) -> dict:
        """Cancel: the running turn ends itself; an idle session ends here."""
        api = self.server
        with api.lock:
            already = session.cancelled or api.already_cancelled  # the latter: another client's cancel
            session.cancelled = True
            running = session.running
            api.lock.notify_all()
        if already:
            return {"ok": True, "alreadyCancelled": True}
        if not running:
            api.add_event(session, "status_terminated", {"cancelledBy": session.owner})
        return {"ok": True}


class ChatProcess:
    """chat.py run as a subprocess with pipes: type lines, send SIGINT, wait for output."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.out, self.err = "", ""
        self.pos = 0
        self.changed = threading.Condition()
        self.threads = [threading.Thread(target=self.pump, args=(self.proc.stdout, "out"), daemon=True),
                        threading.Thread(target=self.pump, args=(self.proc.stderr, "err"), daemon=True)]
        for thread in self.threads:
            thread.start()

    def pump(self, stream, name: str):
        """Thread: collect one output stream as it comes."""
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                return
            with self.changed:
                setattr(self, name, getattr(self, name) + chunk.decode("utf-8", "replace"))
                self.changed.notify_all()

    def type(self, line: str):
        """Type a line."""
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def close_input(self):
        """End of input (Ctrl-D)."""
        self.proc.stdin.close()

    def interrupt(self):
        """Ctrl-C."""
        self.proc.send_signal(signal.SIGINT)

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """Wait for `pattern` in stdout after what earlier expects matched; the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = regex.search(self.out, self.pos)
                if found:
                    self.pos = found.end()
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{pattern!r} not seen within {timeout} s.\n"
                                         f"stdout: {self.out!r}\nstderr: {self.err!r}")
                self.changed.wait(left)

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        """The exit code (the output fully read), failing after `timeout` s."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"chat.py still running after {timeout} s.\nstdout: {self.out!r}") from None
        for thread in self.threads:
            thread.join(5)
        return code

    def kill(self):
        """Stop the process if it still runs (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


class ChatTestCase(unittest.TestCase):
    """A fake API per test, and helpers to start chat.py against it."""

    def setUp(self):
        self.api = FakeApi()
        self.addCleanup(self.api.stop)

    def start(self, *extra: str, cookie: str = GOOD, env: dict | None = None) -> ChatProcess:
        """chat.py against the fake API, reads waiting 2 s."""
        chat_proc = ChatProcess("--api-url", self.api.url, "--cookie", cookie, "--wait-seconds", "2", *extra,
                                env={"SESSION_COOKIE_NAME": "knoq_session", **(env or {})})
        self.addCleanup(chat_proc.kill)
        return chat_proc

    def assert_clean_exit(self, proc: ChatProcess, code: int = 0):
        """The process ends with `code`, says bye, and printed no traceback."""
        self.assertEqual(proc.wait_exit(), code, proc.out + proc.err)
        self.assertNotIn("Traceback", proc.out + proc.err)
        if code == 0:
            self.assertTrue(proc.out.rstrip().endswith("bye"), proc.out)


class ConversationTest(ChatTestCase):
    def test_a_message_streams_in_order_with_its_tool_lines_then_the_prompt(self):
        proc = self.start()
        proc.expect(r"^you> $")
        proc.type("hello there")
        session_id = proc.expect(rf"session ({UUID})\n").group(1)
        answer = proc.expect(r"agent> (.*)\n").group(1)
        self.assertEqual(answer, "Hello, you said: hello there.")
        proc.expect(r'\[tool\] search_sessions \{"query":"hello there"\}\n')
        proc.expect(r"\[tool result\] 2 sessions found\n")
        proc.expect(r" Done!\nyou> $")
        created = self.api.calls("POST session")
        self.assertEqual([c["body"] for c in created], [{"text": "hello there"}])
        self.assertEqual(created[0]["headers"].get("Origin"), self.api.url)
        self.assertEqual(created[0]["headers"].get("Cookie"), f"knoq_session={GOOD}")
        reads = self.api.calls("GET transcript")
        self.assertTrue(all(r["query"]["sessionId"] == session_id for r in reads))
        self.assertTrue(all(r["query"].get("waitSeconds") == "2" for r in reads), reads)
        self.assertEqual(proc.out.count("agent> "), 1)
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_a_second_turn_uses_post_message_and_a_failed_tool_is_marked(self):
        proc = self.start()
        proc.type("first")
        proc.expect(r"Done!\nyou> $")
        proc.type("please fail tool")
        proc.expect(r"agent> Hello, you said: please fail tool\.\n")
        proc.expect(r"\[tool result, error\] no such tool\n")
        proc.expect(r"Done!\nyou> $")
        self.assertEqual(len(self.api.calls("POST session")), 1)
        sent = self.api.calls("POST message")
        self.assertEqual([c["body"]["text"] for c in sent], ["please fail tool"])
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_a_line_typed_during_a_turn_is_queued_and_answered_after_it(self):
        proc = self.start()
        proc.type("a long answer please")
        proc.expect(r"agent> word0 ")
        proc.type("second question")
        proc.expect(r"\(queued behind the running turn\)\n")
        self.assertEqual(len(self.api.calls("POST message")), 1, "sent at once, not after the turn")
        proc.expect(r"word149 ")
        proc.expect(r"you said: second question\.")
        proc.expect(r"Done!\nyou> $")
        # One turn for the person: one prompt after the queued answer, none in between.
        between = proc.out[proc.out.index("queued behind"):]
        self.assertEqual(between.count("you> "), 1, proc.out)
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_end_of_input_during_a_turn_waits_for_its_end(self):
        proc = self.start()
        proc.type("bye soon")
        proc.close_input()
        self.assert_clean_exit(proc)
        self.assertIn("agent> Hello, you said: bye soon.", proc.out)
        self.assertIn("Done!", proc.out)

    def test_new_starts_another_session(self):
        proc = self.start()
        proc.type("one")
        first = proc.expect(rf"session ({UUID})").group(1)
        proc.expect(r"Done!\nyou> $")
        proc.type("/new")
        proc.expect(r"\(the next line starts a new session\)\nyou> $")
        proc.type("two")
        second = proc.expect(rf"session ({UUID})").group(1)
        proc.expect(r"agent> Hello, you said: two\.\n")
        proc.expect(r"Done!\nyou> $")
        self.assertNotEqual(first, second)
        self.assertEqual(len(self.api.calls("POST session")), 2)
        proc.type("/quit")
        self.assert_clean_exit(proc)


class CtrlCTest(ChatTestCase):
    def test_ctrl_c_during_a_turn_cancels_and_reports_the_timing_then_409_then_quit(self):
        proc = self.start()
        proc.type("write something long")
        proc.expect(r"agent> word0 ")
        proc.interrupt()
        proc.expect(rf"\[session ended: cancelled by {USER}\]\n")
        found = proc.expect(r"cancelled: the cancel answered in (\d+) ms; "
                            r"the run ended (\d+) ms after it \(status_terminated seen\)\nyou> $")
        took, ended = int(found.group(1)), int(found.group(2))
        self.assertLess(took, 5000)
        self.assertGreaterEqual(ended, 0)
        self.assertLess(ended, 5000)
        cancels = self.api.calls("POST cancel")
        self.assertEqual(len(cancels), 1)
        self.assertEqual(cancels[0]["headers"].get("Origin"), self.api.url)
        self.assertNotIn("word149", proc.out, "the turn was cut short")
        proc.type("anything more?")
        proc.expect(r"\nerror 409: this session was cancelled and takes no new message; /new starts another\n"
                    r"you> $")
        proc.interrupt()  # at the prompt: leave
        self.assert_clean_exit(proc)
        self.assertEqual(proc.out.count("error 409"), 1)

    def test_ctrl_c_at_the_prompt_exits_0(self):
        proc = self.start()
        proc.expect(r"^you> $")
        proc.interrupt()
        self.assert_clean_exit(proc)
        self.assertEqual(self.api.requests, [])

    def test_ctrl_c_when_the_session_was_already_cancelled(self):
        self.api.already_cancelled = True
        proc = self.start()
        proc.type("long please")
        proc.expect(r"agent> word0 ")
        proc.interrupt()
        proc.expect(rf"\[session ended: cancelled by {USER}\]\nalready cancelled\nyou> $")
        self.assertNotIn("cancelled: the cancel answered", proc.out)
        proc.interrupt()
        self.assert_clean_exit(proc)


class ErrorLineTest(ChatTestCase):
    def assert_one_line(self, proc: ChatProcess, line: str):
        """`line` printed exactly once, as a line of its own, then the prompt; then a clean quit."""
        proc.expect(re.escape(line) + r"\nyou> $")
        self.assertEqual((proc.out + proc.err).count(line), 1)
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_401_is_one_readable_line(self):
        proc = self.start(cookie="expired")
        proc.type("hello")
        self.assert_one_line(proc, "error 401: the cookie was refused (missing, unknown or expired); "
                                   "get one with make token")

    def test_409_is_one_readable_line(self):
        session = self.api.new_session(cancelled=True)
        proc = self.start("--session-id", session.id)
        proc.expect(r"session .*: 1 earlier events not shown\n")
        proc.type("hello")
        self.assert_one_line(proc, "error 409: this session was cancelled and takes no new message; "
                                   "/new starts another")

    def test_429_is_one_readable_line_with_the_retry_after(self):
        self.api.fail_next("POST session", 429, {"Retry-After": "12"})
        proc = self.start()
        proc.type("hello")
        self.assert_one_line(proc, "error 429: rate limited; retry in 12 s")

    def test_403_names_the_origin(self):
        proc = self.start("--origin", "http://evil.example")
        proc.type("hello")
        proc.expect(r"error 403: forbidden: Origin not allowed \(check --origin, or the organisation's plan\)\n")
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_an_unreachable_api_is_one_line(self):
        self.api.stop()
        proc = ChatProcess("--api-url", self.api.url, "--cookie", GOOD)
        self.addCleanup(proc.kill)
        proc.type("hello")
        proc.expect(re.escape(f"cannot reach {self.api.url}: Connection refused") + r"\nyou> $")
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_bad_arguments_exit_2(self):
        env = {k: v for k, v in os.environ.items() if k not in ("KNOQ_COOKIE", "KNOQ_API_URL")}
        for args, needle in [(["--api-url", self.api.url], "--cookie is required"),
                             (["--cookie", GOOD], "--api-url is required"),
                             (["--api-url", self.api.url, "--cookie", GOOD, "--wait-seconds", "99"], "0 and 20")]:
            done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=TIMEOUT)
            self.assertEqual(done.returncode, 2, args)
            self.assertIn(needle, done.stderr)
            self.assertNotIn("Traceback", done.stderr)

    def test_the_cookie_can_come_from_the_environment(self):
        proc = ChatProcess("--api-url", self.api.url, "--wait-seconds", "2", env={"KNOQ_COOKIE": GOOD})
        self.addCleanup(proc.kill)
        proc.type("hi")
        proc.expect(r"agent> Hello, you said: hi\.")
        proc.close_input()
        self.assert_clean_exit(proc)


class ReaderTest(ChatTestCase):
    def test_a_deleted_session_ends_the_reader_with_a_line(self):
        proc = self.start()
        proc.type("long story")
        session_id = proc.expect(rf"session ({UUID})").group(1)
        proc.expect(r"agent> word0 ")
        self.api.delete(self.api.sessions[session_id])
        proc.expect(r"\nthe session is gone \(deleted\)\n")
        proc.expect(r"you> $")
        self.assertEqual(proc.out.count("the session is gone"), 1)
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_a_rate_limited_read_waits_the_retry_after_then_goes_on(self):
        self.api.fail_next("GET transcript", 429, {"Retry-After": "1"})
        proc = self.start()
        started = time.monotonic()
        proc.type("hello")
        proc.expect(r"rate limited; reading again in 1 s\)\n")
        proc.expect(r"agent> Hello, you said: hello\.\n")
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        proc.expect(r"Done!\nyou> $")
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_has_more_pages_are_read_at_once_from_the_last_id(self):
        self.api.page_size = 2
        self.api.piece_delay = 0  # the whole turn is written before most reads
        proc = self.start()
        proc.type("paged")
        proc.expect(r"agent> Hello, you said: paged\.\n")
        proc.expect(r"\n Done!\nyou> $")
        reads = [r for r in self.api.calls("GET transcript") if r["status"] == 200]
        for before, after in zip(reads, reads[1:]):
            if before["answer"]["events"]:
                self.assertEqual(after["query"].get("sinceEventId"), before["answer"]["events"][-1]["id"])
        self.assertTrue(any(r["answer"]["hasMore"] for r in reads), "the test never paged")
        seen = [e["id"] for r in reads for e in r["answer"]["events"]]
        self.assertEqual(len(seen), len(set(seen)), "an event was read twice")
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_joining_a_session_starts_at_its_end_without_its_history(self):
        self.api.page_size = 4
        session = self.api.new_session(history=3)
        proc = self.start("--session-id", session.id)
        proc.expect(rf"session {session.id}: 9 earlier events not shown\n")
        proc.type("newer")
        proc.expect(r"agent> Hello, you said: newer\.\n")
        proc.expect(r"Done!\nyou> $")
        self.assertNotIn("OLD ANSWER", proc.out)
        self.assertEqual(self.api.calls("POST session"), [])
        self.assertEqual([c["body"] for c in self.api.calls("POST message")],
                         [{"sessionId": session.id, "text": "newer"}])
        catch_up = self.api.calls("GET transcript")[:3]
        self.assertEqual([r["answer"]["hasMore"] for r in catch_up], [True, True, False])
        self.assertTrue(all("waitSeconds" not in r["query"] for r in catch_up))
        proc.close_input()
        self.assert_clean_exit(proc)

    def test_joining_a_missing_session_is_one_line_and_exit_1(self):
        proc = self.start("--session-id", str(uuid.uuid4()))
        proc.expect(r"error 404: session not found \(the session is deleted, or not yours\)\n")
        self.assertEqual(proc.wait_exit(), 1)
        self.assertNotIn("Traceback", proc.out + proc.err)


class FlakyClient:
    """A client whose transcript reads fail as scripted (for the reader alone)."""

    def __init__(self, outcomes: list):
        self.outcomes = outcomes
        self.calls = 0

    def transcript(self, session_id, since=None, wait=0):
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else chat.ApiError(None, "cannot reach x: refused")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


class ReaderUnitTest(unittest.TestCase):
    def read_all(self, client: FlakyClient) -> tuple[list, list]:
        """Run a reader to its end with sleeps recorded; (posted items, sleeps)."""
        posted, sleeps = [], []
        reader = chat.TranscriptReader(client, "s", None, 20, posted.append, 1, sleep=sleeps.append)
        reader.run()
        return posted, sleeps

    def test_connection_errors_are_retried_with_backoff_then_given_up_with_a_line(self):
        event = {"id": "e1", "type": "agent_message", "payload": {"text": "hi"}}
        client = FlakyClient([chat.ApiError(None, "cannot reach x: refused"),
                              {"events": [event], "hasMore": False}])
        posted, sleeps = self.read_all(client)
        self.assertEqual(posted[0][:3], ("event", 1, event))
        self.assertEqual(posted[-1][0], "reader_end")
        self.assertIn("after 6 failed reads: cannot reach x: refused", posted[-1][2])
        self.assertEqual(sleeps, [0.25, 0.25, 0.5, 1.0, 2.0, 4.0])  # the count restarts after a success
        self.assertEqual(client.calls, 8)

    def test_a_terminated_session_ends_the_reader_quietly(self):
        events = [{"id": "e1", "type": "status_terminated", "payload": {}},
                  {"id": "e2", "type": "agent_message", "payload": {"text": "never"}}]
        posted, _ = self.read_all(FlakyClient([{"events": events, "hasMore": False}]))
        self.assertEqual([p[0] for p in posted], ["event", "reader_end"])
        self.assertIsNone(posted[-1][2])


class LineTest(unittest.TestCase):
    def test_error_lines(self):
        cases = {
            (401, "x", None): "error 401: the cookie was refused (missing, unknown or expired); get one with make token",
            (409, "x", None): "error 409: this session was cancelled and takes no new message; /new starts another",
            (429, "x", 3): "error 429: rate limited; retry in 3 s",
            (502, "bad gateway", None): "error 502: the service failed upstream (bad gateway); try again",
            (400, "text must not be blank", None): "error 400: text must not be blank",
            (None, "cannot reach http://h: Connection refused", None): "cannot reach http://h: Connection refused",
        }
        for args, line in cases.items():
            self.assertEqual(chat.ApiError(*args).line(), line)

    def test_one_line_flattens_and_truncates(self):
        self.assertEqual(chat.one_line("a\n  b"), "a b")
        cut = chat.one_line("x" * 500)
        self.assertEqual(len(cut), chat.TRUNCATE_AT)
        self.assertTrue(cut.endswith("..."))

    def test_the_screen_breaks_the_line_before_a_line_of_its_own(self):
        out = io.StringIO()
        screen = chat.Screen(out)
        screen.write("agent> part")
        screen.line("[tool] x {}")
        screen.prompt()
        screen.notice("a note")
        self.assertEqual(out.getvalue(), "agent> part\n[tool] x {}\nyou> \na note\nyou> ")

    def test_fd_lines_splits_lines_and_keeps_the_last_unfinished_one(self):
        read, write = os.pipe()
        os.write(write, "héllo\nworld\nend".encode())
        os.close(write)
        lines = chat.FdLines(read)
        self.assertEqual([lines.readline() for _ in range(4)], ["héllo\n", "world\n", "end", ""])
        os.close(read)


if __name__ == "__main__":
    unittest.main()

"""A terminal chat with a Knoq managed-agents session, over the HTTP API.

Type a line at `you> `: the first one creates a session (`POST session`), later ones are more
messages (`POST message`). The agent's answer streams in as it is written (`agent> ...`), with a
line for each tool call and its result; at the end of the turn the prompt comes back. A line
typed while a turn runs is sent at once: the API queues it and answers it after the running
turn. Ctrl-C during a turn cancels the session (`POST cancel`) and prints how long the cancel
took to answer and how long after it the run ended (its `status_terminated` event); Ctrl-C at
the prompt, end of input (Ctrl-D), or `/quit` leaves; `/new` makes the next line start a new
session. Every HTTP error is one line, never a traceback.

Run it (Python 3.11, standard library only):

    python3 infra/chat/chat.py --api-url http://127.0.0.1:9000 --cookie <token>
        [--cookie-name knoq_session] [--origin http://127.0.0.1:9000]
        [--session-id <uuid>] [--wait-seconds 20]

    make chat USER_ID=<id> ORG_ID=<id>        against the local stack (`make dev` running)
    make chat API_URL=https://... COOKIE=...  against a deployed stack

The cookie may also come from the environment (KNOQ_COOKIE), its name from SESSION_COOKIE_NAME
(default knoq_session) and the API URL from KNOQ_API_URL; --origin defaults to the API URL's
scheme://host:port. With --session-id the chat joins an existing session: it starts reading
from the session's current end, without printing its history.

Exit codes: 0 when the chat ends normally (also after errors the API answered), 1 when the
session given with --session-id cannot be read, 2 on bad arguments.

How it works: the main thread owns all the state and every line printed; it takes its work
from one queue fed by a thread reading the input (lines, end of input), a thread following the
transcript with waiting reads (`GET transcript?waitSeconds=N` from the last event id seen), and
the SIGINT handler, which only puts an `interrupt` in the queue.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import queue
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

API_PREFIX = "/api/managed-agents/"
REQUEST_TIMEOUT_S = 30.0
CANCEL_WAIT_S = 30.0
TRUNCATE_AT = 120
READER_RETRIES = 5
EMPTY_POLL_S = 0.5
HINTS = {
    401: "the cookie was refused (missing, unknown or expired); get one with make token",
    409: "this session was cancelled and takes no new message; /new starts another",
    413: "the message is too long",
}


class ApiError(Exception):
    """An answer of the API that is not a success, or no answer at all (`status` None)."""

    def __init__(self, status: int | None, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after

    def line(self) -> str:
        """The error as the one line a person reads."""
        if self.status is None:
            return self.message
        if self.status in HINTS:
            return f"error {self.status}: {HINTS[self.status]}"
        if self.status == 429:
            wait = f"retry in {self.retry_after} s" if self.retry_after is not None else "retry later"
            return f"error 429: rate limited; {wait}"
        if self.status == 403:
            return f"error 403: {self.message} (check --origin, or the organisation's plan)"
        if self.status == 404:
            return f"error 404: {self.message} (the session is deleted, or not yours)"
        if self.status >= 500:
            return f"error {self.status}: the service failed upstream ({self.message}); try again"
        return f"error {self.status}: {self.message}"


def one_line(text: str, limit: int = TRUNCATE_AT) -> str:
    """`text` on one line, cut to about `limit` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def compact(value) -> str:
    """A JSON value as compact JSON; a string as itself."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine (no proxy is ever used for it)."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def origin_of(url: str) -> str:
    """The scheme://host[:port] of `url`, as a browser sends it in `Origin`."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def retry_after_of(value: str | None) -> int | None:
    """The whole seconds of a `Retry-After` header, or None."""
    try:
        return max(0, int(str(value).strip()))
    except ValueError:
        return None


def error_message(raw: bytes, status: int) -> str:
    """The `error` text of an error body, or a short form of whatever came instead."""
    try:
        body = json.loads(raw.decode("utf-8", "replace"))
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"]
    except ValueError:
        pass
    text = one_line(raw.decode("utf-8", "replace"), 100)
    return text or f"HTTP {status}"


def reason_of(error: BaseException) -> str:
    """A short reason for a failed connection: `Connection refused`, `timed out`, ..."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


class ApiClient:
    """The managed-agents routes, one method each; failures raise `ApiError`."""

    def __init__(self, base_url: str, cookie: str, origin: str | None = None,
                 cookie_name: str = "knoq_session", timeout: float = REQUEST_TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self.cookie, self.cookie_name = cookie, cookie_name
        self.origin = origin or origin_of(self.base_url)
        self.timeout = timeout
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(self.base_url) else []
        self.opener = urllib.request.build_opener(*handlers)

    def create_session(self, text: str) -> dict:
        """`POST session`: a new session holding `text`, its first turn started."""
        return self.request("POST", "session", {"text": text})

    def send_message(self, session_id: str, text: str) -> dict:
        """`POST message`: a message for the session (queued when a turn is running)."""
        return self.request("POST", "message", {"sessionId": session_id, "text": text})

    def cancel(self, session_id: str) -> dict:
        """`POST cancel`: end the session for good (`alreadyCancelled` when it was)."""
        return self.request("POST", "cancel", {"sessionId": session_id})

    def transcript(self, session_id: str, since: str | None = None, wait: int = 0) -> dict:
        """`GET transcript`: the page of events after `since`, waiting up to `wait` s for one."""
        query = {"sessionId": session_id}
        if since:
            query["sinceEventId"] = since
        if wait:
            query["waitSeconds"] = str(wait)
        return self.request("GET", "transcript?" + urllib.parse.urlencode(query),
                            timeout=self.timeout + wait)

    def request(self, method: str, path: str, body: dict | None = None,
                timeout: float | None = None) -> dict:
        """One call: the JSON object answered, or `ApiError`."""
        url = self.base_url + API_PREFIX + path
        headers = {"Cookie": f"{self.cookie_name}={self.cookie}", "Accept": "application/json"}
        data = None
        if method != "GET":
            headers["Origin"] = self.origin
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self.opener.open(req, timeout=timeout or self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read() if error.fp else b""
            raise ApiError(error.code, error_message(raw, error.code),
                           retry_after_of(error.headers.get("Retry-After"))) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise ApiError(None, f"cannot reach {self.base_url}: {reason_of(error)}") from None
        try:
            answer = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except ValueError:
            raise ApiError(None, f"{method} {path.split('?')[0]}: the answer is not JSON") from None
        return answer if isinstance(answer, dict) else {"value": answer}


class FdLines:
    """Lines from a file descriptor, read with `os.read` (no lock a reading thread could hold
    at exit), decoded as UTF-8; '' at end of input."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.ended = False

    def readline(self) -> str:
        """The next line with its newline; the last one without; '' at end of input."""
        while "\n" not in self.pending and not self.ended:
            chunk = os.read(self.fd, 4096)
            self.ended = not chunk
            self.pending += self.decoder.decode(chunk, final=self.ended)
        cut = self.pending.find("\n") + 1 or len(self.pending)
        line, self.pending = self.pending[:cut], self.pending[cut:]
        return line


class Screen:
    """The output stream, knowing whether the cursor is at the start of a line."""

    def __init__(self, out):
        self.out = out
        self.at_line_start = True
        self.prompt_showing = False

    def write(self, text: str):
        """Write `text` as is and flush."""
        if not text:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except (BrokenPipeError, ValueError):  # the reader of our output went away
            pass
        self.at_line_start = text.endswith("\n")
        self.prompt_showing = False

    def line(self, text: str):
        """Write `text` as a line of its own."""
        self.write(("" if self.at_line_start else "\n") + text + "\n")

    def end_line(self):
        """Move to the start of a line, unless already there."""
        if not self.at_line_start:
            self.write("\n")

    def prompt(self):
        """Show `you> ` on a line of its own."""
        self.end_line()
        self.write("you> ")
        self.prompt_showing = True

    def notice(self, text: str):
        """A line of its own, showing the prompt again below it if it was showing."""
        showing = self.prompt_showing
        self.line(text)
        if showing:
            self.prompt()


class TranscriptReader(threading.Thread):
    """Follows one session's transcript from a cursor with waiting reads, putting every
    event (and its arrival time) in the chat's queue, then a `reader_end` when it stops."""

    def __init__(self, client: ApiClient, session_id: str, cursor: str | None, wait: int,
                 post: Callable[[tuple], None], generation: int,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        super().__init__(daemon=True, name="transcript-reader")
        self.client, self.session_id, self.cursor, self.wait = client, session_id, cursor, wait
        self.post, self.generation, self.clock, self.sleep = post, generation, clock, sleep
        self.stopped = threading.Event()

    def stop(self):
        """Ask the reader to stop after its current read."""
        self.stopped.set()

    def run(self):
        """Read pages until told to stop, the session ends, or reading fails for good."""
        failures = 0
        while not self.stopped.is_set():
            started = self.clock()
            try:
                page = self.client.transcript(self.session_id, self.cursor, self.wait)
            except ApiError as error:
                failures += 1
                if not self.after_error(error, failures):
                    return
                continue
            failures = 0
            events = [e for e in page.get("events") or [] if isinstance(e, dict)]
            if self.deliver(events):
                return
            if not events and not page.get("hasMore") and (
                    self.wait == 0 or self.clock() - started < self.wait / 2):
                self.sleep(EMPTY_POLL_S)  # the server did not wait: poll, gently

    def deliver(self, events: list[dict]) -> bool:
        """Post each event and move the cursor; True once the session has ended."""
        for event in events:
            if self.stopped.is_set():
                return True
            self.cursor = event.get("id") or self.cursor
            self.post(("event", self.generation, event, self.clock()))
            if event.get("type") == "status_terminated":
                self.end(None)
                return True
        return False

    def after_error(self, error: ApiError, failures: int) -> bool:
        """React to a failed read: True to read again, False when the reader has ended."""
        if error.status == 429:
            seconds = error.retry_after if error.retry_after is not None else 1
            self.note(f"(reading the transcript: rate limited; reading again in {seconds} s)")
            self.sleep(max(seconds, 0.1))
            return True
        if error.status == 404:
            self.end("the session is gone (deleted)")
            return False
        transient = error.status is None or error.status >= 500
        if transient and failures <= READER_RETRIES:
            self.sleep(min(0.25 * 2 ** (failures - 1), 4.0))
            return True
        if transient:
            self.end(f"stopped reading the transcript after {failures} failed reads: {error.line()}")
        else:
            self.end(f"stopped reading the transcript: {error.line()}")
        return False

    def note(self, text: str):
        """A line for the person, from the reader."""
        if not self.stopped.is_set():
            self.post(("note", self.generation, text))

    def end(self, text: str | None):
        """Tell the chat this reader has stopped (with a line to print, or None)."""
        self.stopped.set()
        self.post(("reader_end", self.generation, text))


class Quit(Exception):
    """Leave the chat with this exit code."""

    def __init__(self, code: int = 0):
        super().__init__(code)
        self.code = code


class Chat:
    """One person's conversation: reads lines, sends them, renders the transcript, cancels."""

    def __init__(self, client: ApiClient, stdin, stdout, clock: Callable[[], float] = time.monotonic,
                 session_id: str | None = None, wait_seconds: int = 20, echo_input: bool = False):
        self.client, self.stdin, self.clock = client, stdin, clock
        self.screen = Screen(stdout)
        self.session_id, self.wait_seconds, self.echo_input = session_id, wait_seconds, echo_input
        self.queue: queue.SimpleQueue = queue.SimpleQueue()  # put() is safe in a signal handler
        self.deferred: list[tuple] = []
        self.reader: TranscriptReader | None = None
        self.generation = 0
        self.running = False        # a turn is in flight (as far as we know)
        self.turn_has_text = False  # `agent> ` printed for this turn
        self.ended = False          # the session's status_terminated was seen
        self.ended_at: float | None = None
        self.eof = False
        self.cancelling = False     # a Ctrl-C's cancel is waiting for the run to end
        self.reader_cursor: str | None = None  # where a stopped reader was

    # -- the loop ------------------------------------------------------------------------------

    def interrupt(self):
        """Ctrl-C: called from the SIGINT handler; only queues the interrupt."""
        self.queue.put(("interrupt",))

    def run(self) -> int:
        """Hold the conversation until the person leaves; the exit code."""
        threading.Thread(target=self.read_input, daemon=True, name="input").start()
        try:
            if self.session_id:
                self.join_session()
            self.screen.prompt()
            while True:
                self.handle(self.next_item())
        except Quit as done:
            if self.reader:
                self.reader.stop()
            return done.code

    def read_input(self):
        """Thread: put each input line in the queue, then `eof`."""
        try:
            while True:
                line = self.stdin.readline()
                if not line:
                    break
                self.queue.put(("line", line.rstrip("\r\n")))
        except (OSError, ValueError) as error:
            self.queue.put(("note", None, f"cannot read the input: {error}"))
        self.queue.put(("eof",))

    def next_item(self, timeout: float | None = None) -> tuple | None:
        """The next thing to handle (a line put aside first); None after `timeout` seconds."""
        if self.deferred:
            return self.deferred.pop(0)
        deadline = None if timeout is None else self.clock() + timeout
        while True:
            left = 0.2 if deadline is None else min(0.2, deadline - self.clock())
            if left <= 0:
                return None
            try:
                return self.queue.get(timeout=left)
            except queue.Empty:
                continue

    def handle(self, item: tuple):
        """Act on one queued item."""
        kind = item[0]
        if kind == "line":
            self.on_line(item[1])
        elif kind == "eof":
            self.on_eof()
        elif kind == "interrupt":
            if not self.running:
                self.goodbye()
            self.cancel_turn()
        elif kind == "event" and item[1] == self.generation:
            self.on_event(item[2], item[3])
        elif kind == "note" and item[1] in (None, self.generation):
            self.screen.notice(item[2])
        elif kind == "reader_end" and item[1] == self.generation:
            self.on_reader_end(item[2])

    def goodbye(self, code: int = 0):
        """Say goodbye and leave."""
        self.screen.line("bye")
        raise Quit(code)

    # -- what the person types -----------------------------------------------------------------

    def on_line(self, text: str):
        """A typed line: a command, or a message to send."""
        self.show_typed(text)
        command = text.strip()
        if command == "/quit":
            self.goodbye()
        if command == "/new":
            self.forget_session()
            self.screen.line("(the next line starts a new session)")
            self.screen.prompt()
            return
        if not command:
            if not self.running:
                self.screen.prompt()
            return
        self.send(text)

    def show_typed(self, text: str):
        """Keep the screen right after a typed line (echoed by us when input is not a terminal)."""
        if self.echo_input:
            if self.screen.prompt_showing:
                self.screen.write(text + "\n")
            else:
                self.screen.line("you> " + text)
        else:  # the terminal echoed the line and its newline
            self.screen.at_line_start, self.screen.prompt_showing = True, False

    def send(self, text: str):
        """Send a message: a new session, a message to the idle session, or one queued."""
        queued = self.running
        try:
            if self.session_id is None:
                answer = self.client.create_session(text)
                if not answer.get("id"):
                    raise ApiError(None, "POST session answered without a session id")
                self.session_id = str(answer["id"])
                self.screen.line(f"session {self.session_id}")
                self.start_reader(None)
            else:
                self.client.send_message(self.session_id, text)
        except ApiError as error:
            self.screen.line(error.line())
            if error.status == 409:
                self.ended = True
            if not self.running:
                self.screen.prompt()
            return
        if queued:
            self.screen.line("(queued behind the running turn)")
        else:
            self.begin_turn()
            if self.reader is None:  # it had stopped (the session ended, or reading failed)
                self.start_reader(self.reader_cursor)

    def on_eof(self):
        """End of input: leave now, or once the running turn is over."""
        self.eof = True
        if not self.running:
            self.goodbye()

    # -- the session and its reader ------------------------------------------------------------

    def join_session(self):
        """Start following an existing session from its current end (its history not shown)."""
        cursor, count, last, page = None, 0, None, {}
        try:
            while True:
                page = self.client.transcript(self.session_id, cursor, 0)
                events = [e for e in page.get("events") or [] if isinstance(e, dict)]
                count += len(events)
                if events:
                    cursor, last = events[-1].get("id", cursor), events[-1].get("type")
                if not page.get("hasMore") or not events:
                    break
        except ApiError as error:
            self.screen.line(error.line())
            raise Quit(1) from None
        self.screen.line(f"session {self.session_id}: {count} earlier events not shown")
        self.running = bool(page.get("workflowRunId"))
        self.ended = last == "status_terminated"
        if self.ended:
            self.screen.line("[this session has ended: it takes no new message; /new starts another]")
        self.start_reader(cursor)

    def start_reader(self, cursor: str | None):
        """Follow the current session's transcript from `cursor` in a new reader thread."""
        self.generation += 1
        self.reader = TranscriptReader(self.client, self.session_id, cursor, self.wait_seconds,
                                       self.queue.put, self.generation, self.clock)
        self.reader.start()

    def forget_session(self):
        """Drop the current session: its reader's output is ignored from now on."""
        if self.reader:
            self.reader.stop()
        self.reader, self.reader_cursor = None, None
        self.generation += 1
        self.session_id, self.running, self.turn_has_text, self.ended = None, False, False, False

    def on_reader_end(self, text: str | None):
        """The reader stopped: say why (if it says), and leave a turn we can no longer follow."""
        self.reader_cursor = self.reader.cursor if self.reader else None
        self.reader = None
        if text:
            self.screen.notice(text)
            if self.running:
                self.end_turn()

    # -- what the agent does -------------------------------------------------------------------

    def begin_turn(self):
        """A turn has started (or is about to)."""
        self.running, self.turn_has_text = True, False

    def on_event(self, event: dict, received_at: float):
        """Render one transcript event."""
        kind = event.get("type")
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        if kind in ("user_message", "agent_message", "tool_use", "tool_result") and not self.running:
            self.begin_turn()  # a turn we did not start here (another client, or a race)
        if kind == "agent_message":
            if not self.turn_has_text:
                self.screen.end_line()
                self.screen.write("agent> ")
                self.turn_has_text = True
            self.screen.write(str(payload.get("text", "")))
        elif kind == "tool_use":
            self.screen.line(one_line(f"[tool] {payload.get('name')} {compact(payload.get('input'))}"))
        elif kind == "tool_result":
            mark = "[tool result, error]" if payload.get("isError") else "[tool result]"
            self.screen.line(one_line(f"{mark} {compact(payload.get('content'))}"))
        elif kind == "error":
            self.screen.line(f"[error] {payload.get('message')} ({payload.get('errorType')})")
        elif kind == "status_idle":
            self.end_turn()
        elif kind == "status_terminated":
            by = payload.get("cancelledBy")
            self.screen.line(f"[session ended: cancelled by {by}]" if by else "[session ended]")
            self.ended, self.ended_at = True, received_at
            self.end_turn()

    def end_turn(self):
        """The turn is over: the prompt again (or leave, after end of input)."""
        self.running, self.turn_has_text = False, False
        self.screen.end_line()
        if self.cancelling:  # the cancel's report comes first
            return
        if self.eof:
            self.goodbye()
        self.screen.prompt()

    # -- Ctrl-C during a turn ------------------------------------------------------------------

    def cancel_turn(self):
        """Cancel the session, wait (bounded) for the run's `status_terminated`, then report how
        long the cancel took to answer and the run to end after it (or `already cancelled`)."""
        self.screen.end_line()
        sent = self.clock()
        try:
            answer = self.client.cancel(self.session_id)
        except ApiError as error:
            self.screen.line(error.line())
            return
        answered = self.clock()
        took = round((answered - sent) * 1000)
        self.cancelling = True
        try:
            seen = self.wait_for_end(answered + CANCEL_WAIT_S)
        finally:
            self.cancelling = False
        if answer.get("alreadyCancelled"):
            self.screen.line("already cancelled" if seen is not None else
                             f"already cancelled; status_terminated not seen within {CANCEL_WAIT_S:.0f} s")
        elif seen is None:
            self.screen.line(f"cancelled: the cancel answered in {took} ms; "
                             f"status_terminated not seen within {CANCEL_WAIT_S:.0f} s")
        else:
            after = round((seen - answered) * 1000)
            when = f"{after} ms after it" if after >= 0 else f"{-after} ms before it"
            self.screen.line(f"cancelled: the cancel answered in {took} ms; "
                             f"the run ended {when} (status_terminated seen)")
        self.running = False
        if self.eof:
            self.goodbye()
        self.screen.prompt()

    def wait_for_end(self, deadline: float) -> float | None:
        """Render events until `status_terminated` (its arrival time) or the deadline (None);
        lines typed meanwhile are put aside, a second Ctrl-C leaves."""
        put_aside: list[tuple] = []
        try:
            while not self.ended and self.reader is not None:
                item = self.next_item(timeout=deadline - self.clock())
                if item is None:
                    break
                if item[0] in ("line", "eof"):
                    put_aside.append(item)
                elif item[0] == "interrupt":
                    self.goodbye()
                else:
                    self.handle(item)
        finally:
            self.deferred.extend(put_aside)
        return self.ended_at if self.ended else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (exit 2 with a usage line when it is wrong)."""
    parser = argparse.ArgumentParser(
        prog="chat.py", description="Chat with a Knoq managed-agents session in the terminal.")
    parser.add_argument("--api-url", default=os.environ.get("KNOQ_API_URL"),
                        help="the API's base URL, e.g. http://127.0.0.1:9000 (env KNOQ_API_URL)")
    parser.add_argument("--cookie", default=os.environ.get("KNOQ_COOKIE"),
                        help="the session cookie's value (env KNOQ_COOKIE); `make token` prints one")
    parser.add_argument("--cookie-name", default=os.environ.get("SESSION_COOKIE_NAME") or "knoq_session",
                        help="the session cookie's name (env SESSION_COOKIE_NAME, default knoq_session)")
    parser.add_argument("--origin", help="the Origin sent with POST (default: the API URL's scheme://host:port)")
    parser.add_argument("--session-id", help="join this existing session instead of creating one")
    parser.add_argument("--wait-seconds", type=int, default=20,
                        help="how long a transcript read waits for an event (0..20, default 20)")
    args = parser.parse_args(argv)
    if not args.api_url:
        parser.error("--api-url is required (or set KNOQ_API_URL)")
    if urllib.parse.urlsplit(args.api_url).scheme not in ("http", "https"):
        parser.error(f"--api-url must be an http(s) URL, not {args.api_url!r}")
    if not args.cookie:
        parser.error("--cookie is required (or set KNOQ_COOKIE); get one with make token")
    if not 0 <= args.wait_seconds <= 20:
        parser.error("--wait-seconds must be between 0 and 20")
    return args


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, route SIGINT to the chat, run it; the exit code."""
    args = parse_args(argv)
    client = ApiClient(args.api_url, args.cookie, args.origin, args.cookie_name)
    chat = Chat(client, FdLines(sys.stdin.fileno()), sys.stdout, session_id=args.session_id,
                wait_seconds=args.wait_seconds, echo_input=not sys.stdin.isatty())
    signal.signal(signal.SIGINT, lambda signum, frame: chat.interrupt())
    return chat.run()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # threads blocked on the input or a waiting read are simply dropped

"""Local provider emulator: a small Anthropic Messages API server for `make dev` and `make test`.

It answers `POST /v1/messages` (headers `x-api-key` -- or `Authorization: Bearer`, which the
official Python SDK 2.x sends -- and `anthropic-version`) like the real provider:
streamed server-sent events with `"stream": true` (message_start, content_block_start/delta/stop,
message_delta, message_stop, ping), the whole message JSON otherwise, and the provider's JSON
errors. Python 3.11 stdlib only; it listens on 127.0.0.1 (unless --host names another address of
this machine: functions running in an emulator's containers on a Linux engine reach the host
only on the Docker bridge) and never prints the API key.
We wrote our own because the PyPI mock-LLM servers (fakellm, llm-katan, llmock, agentbreak, ...)
are young, rarely used projects, and none lets a test learn exactly when the client hung up,
which is what proves that a cancel closes the provider connection (SPEC §6).

Start:  python infra/local/provider_emulator.py --port N --api-key KEY [--word-delay-ms 200] [--words 40]
            [--host 127.0.0.1]
        (prints `provider-emulator: listening on http://127.0.0.1:N`; --port 0 picks a free port;
        SIGTERM/SIGINT stop it), or in-process: `server = start_in_thread(KEY)`; server.port,
        server.url, server.stop().

Default conversation: when the latest message is a user message with tool_result blocks, or no
tool named `search_sessions` is offered, the answer is text: --words words, one `text_delta` per
word every --word-delay-ms (40 x 200 ms = 8 s), quoting the tool result or the question.
Otherwise a short text, then a `tool_use` of `search_sessions` with input {"query": <first 3
words of the latest user text>}, stop_reason tool_use. A text longer than the request's
max_tokens is cut there with stop_reason max_tokens. A `ping` goes out about once a second.

Directives, for tests: the latest user text block of the conversation may hold
`[[emu key=value key=value ...]]` (removed from the text the emulator quotes):
  tag=STR            recorded with each request; the conversation key (else a hash of the first user text)
  words=N delay_ms=M answer length and per-word delay
  notool=1           answer with text, no tool call
  tool=NAME          call this tool (even one that was not offered) instead of search_sessions
  tool_rounds=N      call the tool for N rounds: while fewer than N user messages with tool_result
                     follow the latest user message without one (default 1)
  silent_ms=M        after message_start send nothing at all (no ping) for M ms, then go on
  fail=STATUS:COUNT  first COUNT requests of the conversation (or `always`) answer that error status;
                     retry_after=S sets `retry-after` (default 1 for 429 and 529, none otherwise)
  midstream_error=1  3 text deltas, then `event: error` (overloaded_error) and the end of the stream
  malformed=1        message_start, content_block_start, then a content_block_delta whose data is
                     not JSON, then the connection is closed without ending the body
  max_tokens_stop=1  at most 5 words, then stop_reason max_tokens
(silent_ms, midstream_error and malformed apply to streams; `"stream": false` answers at once.)

Recording: every /v1/messages request gets an entry {id, tag, status, startedAtMs, firstByteAtMs,
closedAtMs, closedBy: "server"|"client", eventsSent, textSent, model, maxTokens, messageCount,
system, toolNames, apiKeyOk, authHeader: "x-api-key"|"authorization"|null, lastUserText, turnUserTexts,
turnToolRounds, completed} (epoch ms). For tracing which call answered which user message (the chaos
test's checker, infra/chaos): lastUserText is the latest user text block as sent (directives
included); turnUserTexts the text blocks of the user message that opened this call's turn (the
conversation with its trailing tool rounds -- an assistant message then a user message of
tool_result blocks only -- taken off: several texts when messages were queued or left unanswered);
turnToolRounds how many such rounds were taken off (0: the turn's first call); completed is true
once a whole answer went out (message_stop sent, or a `"stream": false` answer written). A client
that closes the connection while a stream is open (also while silent) is seen within about 20 ms. `GET /_emulator/requests[?tag=X]` lists the
entries (in-progress ones have closedAtMs null); `POST /_emulator/reset` clears entries and counters.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import select
import signal
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

DIRECTIVE = re.compile(r"\[\[emu\b([^\]]*)\]\]")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               529: "overloaded_error"}
FILLER = ("This answer comes from the local provider emulator, streamed one word at a time so "
          "that a turn lasts long enough to watch it arrive and to cancel it by hand.").split()
POLL_S = 0.02


def now_ms() -> int:
    return int(time.time() * 1000)


class ClientGone(Exception):
    """The client closed the connection while we were streaming."""


def blocks_of(message) -> list:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def user_texts(messages: list) -> list[str]:
    return [str(b.get("text", "")) for m in messages if isinstance(m, dict) and m.get("role") == "user"
            for b in blocks_of(m) if b.get("type") == "text"]


def turn_opening(messages: list) -> tuple[list[str], int]:
    """The text blocks of the user message that opens the turn of a call carrying `messages`, and
    the tool rounds since (an assistant message, then a user message of tool_result blocks only)."""
    msgs = [m for m in messages if isinstance(m, dict)]
    rounds = 0
    while len(msgs) >= 2 and msgs[-1].get("role") == "user" and msgs[-2].get("role") == "assistant":
        blocks = blocks_of(msgs[-1])
        if not blocks or any(b.get("type") != "tool_result" for b in blocks):
            break
        msgs, rounds = msgs[:-2], rounds + 1
    if not msgs or msgs[-1].get("role") != "user":
        return [], rounds
    return [str(b.get("text", "")) for b in blocks_of(msgs[-1]) if b.get("type") == "text"], rounds


def parse_directives(messages: list) -> dict:
    texts = user_texts(messages)
    found = DIRECTIVE.findall(texts[-1]) if texts else []
    return dict(kv.split("=", 1) for part in found for kv in part.split() if "=" in kv)


def d_int(d: dict, key: str, default: int) -> int:
    try:
        return int(d[key])
    except (KeyError, ValueError):
        return default


def with_spaces(words: list[str]) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def build_plan(req: dict, d: dict, server: "EmulatorServer") -> dict:
    """What to answer: a list of content blocks (text deltas / tool_use chunks) and a stop reason."""
    messages = req["messages"]
    texts = user_texts(messages)
    question = DIRECTIVE.sub("", texts[-1]).strip() if texts else ""
    last = messages[-1]
    results = [b for b in blocks_of(last) if b.get("type") == "tool_result"] if last.get("role") == "user" else []
    rounds_done = 0  # tool_result messages since the latest user message without one (this turn's rounds)
    for m in reversed([m for m in messages if m.get("role") == "user"]):
        if not any(b.get("type") == "tool_result" for b in blocks_of(m)):
            break
        rounds_done += 1
    offered = [t.get("name") for t in req.get("tools") or [] if isinstance(t, dict)]
    tool = d.get("tool") or ("search_sessions" if "search_sessions" in offered else None)
    special = d.get("max_tokens_stop") == "1" or d.get("midstream_error") == "1"
    if tool and d.get("notool") != "1" and not special and rounds_done < d_int(d, "tool_rounds", 1):
        lead = "Let me search your sessions." if tool == "search_sessions" else f"Let me call {tool}."
        query = " ".join(question.split()[:3])
        enc = json.dumps(query)
        cut = enc.find(" ")
        chunks = ['{"query": '] + ([enc[:cut], enc[cut:] + "}"] if cut > 0 else [enc + "}"])
        return {"stop": "tool_use", "blocks": [
            {"type": "text", "deltas": with_spaces(lead.split())},
            {"type": "tool_use", "id": "toolu_emu_" + uuid.uuid4().hex[:20], "name": tool,
             "input": {"query": query}, "chunks": chunks}]}
    if results:
        said = "failed" if results[0].get("is_error") else "returned"
        lead = f'The tool {said}: "{text_of(results[0].get("content"))[:60]}".'
    else:
        lead = f'You asked: "{question[:60]}".'
    n, stop = max(1, d_int(d, "words", server.words)), "end_turn"
    if d.get("max_tokens_stop") == "1":
        n, stop = min(n, 5), "max_tokens"
    elif isinstance(req.get("max_tokens"), int) and 0 < req["max_tokens"] < n:
        n, stop = req["max_tokens"], "max_tokens"
    words = lead.split()
    while len(words) < n:
        words += FILLER
    return {"stop": stop, "blocks": [{"type": "text", "deltas": with_spaces(words[:n])}]}


def validate(body) -> str | None:
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: field required (a positive integer)"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        return "messages: a non-empty list of messages is required"
    if msgs[0].get("role") != "user":
        return "messages: the first message must use the user role"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "provider-emulator"
    server: "EmulatorServer"

    def log_message(self, format, *args):  # quiet; requests are in the recording
        pass

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/_emulator/requests":
            self.send_json(200, self.server.list_entries(parse_qs(url.query).get("tag", [None])[0]))
        else:
            self.send_json(404, error_body("not_found_error", f"no route GET {url.path}"))

    def do_POST(self):
        path = urlparse(self.path).path
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if path == "/_emulator/reset":
            self.server.reset()
            self.send_json(200, {"ok": True})
        elif path == "/v1/messages":
            try:
                self.messages(raw)
            except Exception:  # an emulator bug: still close the entry, then let socketserver log it
                entry = getattr(self, "entry", None)
                if entry and entry["closedAtMs"] is None:
                    self.server.update(entry, status=entry["status"] or 500, closedAtMs=now_ms(), closedBy="server")
                raise
        else:
            self.send_json(404, error_body("not_found_error", f"no route POST {path}"))

    def send_json(self, status: int, obj, headers: dict | None = None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        for k, v in {"content-type": "application/json", "content-length": str(len(body)),
                     "connection": "close", **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.close_connection = True
        self.wfile.write(body)

    def fail(self, status: int, message: str, headers: dict | None = None):
        kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        self.server.update(self.entry, status=status, firstByteAtMs=now_ms())
        try:
            self.send_json(status, error_body(kind, message), {"request-id": self.entry["id"], **(headers or {})})
        except OSError:
            pass
        self.server.update(self.entry, closedAtMs=now_ms(), closedBy="server")

    def messages(self, raw: bytes):
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        req = body if isinstance(body, dict) else {}
        msgs = req.get("messages") if isinstance(req.get("messages"), list) else []
        d = parse_directives(msgs)
        tools = req.get("tools") if isinstance(req.get("tools"), list) else []
        sent, auth_header = self.headers.get("x-api-key"), "x-api-key"
        if sent is None:  # the official Python SDK 2.x sends `Authorization: Bearer <api key>`
            bearer = self.headers.get("authorization", "")
            is_bearer = bearer.lower().startswith("bearer ")
            sent, auth_header = (bearer[7:], "authorization") if is_bearer else (None, None)
        key_ok = hmac.compare_digest((sent or "").encode(), self.server.api_key.encode())
        texts = user_texts(msgs)
        opening, rounds = turn_opening(msgs)
        self.entry = self.server.new_entry(
            tag=d.get("tag"), lastUserText=texts[-1] if texts else None, turnUserTexts=opening,
            turnToolRounds=rounds, model=req.get("model"), maxTokens=req.get("max_tokens"),
            messageCount=len(msgs), system=req.get("system"),
            toolNames=[t.get("name") for t in tools if isinstance(t, dict)], apiKeyOk=key_ok,
            authHeader=auth_header)
        if not key_ok:
            return self.fail(401, "invalid x-api-key")
        if not self.headers.get("anthropic-version"):
            return self.fail(400, "anthropic-version: header is required")
        problem = validate(body)
        if problem:
            return self.fail(400, problem)
        conv = d.get("tag") or hashlib.sha256((texts[0] if texts else "").encode()).hexdigest()[:16]
        n = self.server.count(conv)
        status, _, times = d.get("fail", "").partition(":")
        if status.isdigit() and (times == "always" or (times.isdigit() and n <= int(times))):
            status = int(status)
            retry = d.get("retry_after", "1" if status in (429, 529) else None)
            return self.fail(status, f"emulated {status} (request {n} of this conversation)",
                             {"retry-after": retry} if retry else None)
        plan = build_plan(body, d, self.server)
        message = {"id": "msg_emu_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
                   "model": body["model"], "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": max(1, len(json.dumps([msgs, req.get("system")])) // 4),
                             "output_tokens": 1}}
        if body.get("stream"):
            return self.stream(message, plan, d)
        for b in plan["blocks"]:
            if b["type"] == "text":
                message["content"].append({"type": "text", "text": "".join(b["deltas"])})
            else:
                message["content"].append({k: b[k] for k in ("id", "name", "input")} | {"type": "tool_use"})
        message.update(stop_reason=plan["stop"])
        message["usage"]["output_tokens"] = sum(len(b.get("deltas") or b["chunks"]) for b in plan["blocks"])
        text = "".join(c["text"] for c in message["content"] if c["type"] == "text")
        self.server.update(self.entry, status=200, firstByteAtMs=now_ms(), textSent=text)
        self.send_json(200, message, {"request-id": self.entry["id"]})
        self.server.update(self.entry, closedAtMs=now_ms(), closedBy="server", completed=True)

    # -- streaming -------------------------------------------------------------------------------

    def stream(self, message: dict, plan: dict, d: dict):
        self.send_response(200)
        for k, v in {"content-type": "text/event-stream", "cache-control": "no-cache",
                     "transfer-encoding": "chunked", "connection": "close",
                     "request-id": self.entry["id"]}.items():
            self.send_header(k, v)
        self.close_connection = True
        self.server.update(self.entry, status=200)
        self.last_ping = time.monotonic()
        delay = d_int(d, "delay_ms", self.server.word_delay_ms) / 1000
        try:
            self.end_headers()
            self.event("message_start", {"type": "message_start", "message": message})
            if d_int(d, "silent_ms", 0) > 0:
                self.wait(d_int(d, "silent_ms", 0) / 1000, ping=False)
                self.last_ping = time.monotonic()
            if d.get("malformed") == "1":
                self.event("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}})
                self.event("content_block_delta", raw='{"type": "content_block_delta", "index": 0, "delta": {"ty')
                return self.server.update(self.entry, closedAtMs=now_ms(), closedBy="server")
            sent = 0
            for i, b in enumerate(plan["blocks"]):
                start = {"type": "text", "text": ""} if b["type"] == "text" else \
                    {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}
                self.event("content_block_start", {"type": "content_block_start", "index": i, "content_block": start})
                pieces = b.get("deltas") or b["chunks"]
                for k, piece in enumerate(pieces):
                    self.wait(delay)
                    delta = {"type": "text_delta", "text": piece} if b["type"] == "text" else \
                        {"type": "input_json_delta", "partial_json": piece}
                    self.event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta},
                               text=piece if b["type"] == "text" else "")
                    sent += 1
                    if d.get("midstream_error") == "1" and (sent == 3 or k == len(pieces) - 1):
                        self.event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                          "message": "Overloaded"}})
                        return self.finish_stream()
                self.event("content_block_stop", {"type": "content_block_stop", "index": i})
            self.event("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": plan["stop"], "stop_sequence": None},
                                         "usage": {"output_tokens": sent}})
            self.event("message_stop", {"type": "message_stop"})
            self.server.update(self.entry, completed=True)
            self.finish_stream()
        except (ClientGone, OSError):  # OSError: a write to a connection the client reset
            self.server.update(self.entry, closedAtMs=now_ms(), closedBy="client")

    def finish_stream(self):
        self.write(b"0\r\n\r\n")
        self.server.update(self.entry, closedAtMs=now_ms(), closedBy="server")

    def write(self, data: bytes):
        if self.client_gone(0):
            raise ClientGone
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            raise ClientGone from e

    def event(self, kind: str, data=None, raw: str | None = None, text: str = ""):
        payload = f"event: {kind}\ndata: {raw if raw is not None else json.dumps(data)}\n\n".encode()
        self.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        with self.server.lock:
            self.entry["eventsSent"] += 1
            self.entry["textSent"] += text
            self.entry["firstByteAtMs"] = self.entry["firstByteAtMs"] or now_ms()
        if kind == "ping":
            self.last_ping = time.monotonic()

    def wait(self, seconds: float, ping: bool = True):
        """Sleep in small slices, pinging about once a second, and notice a client hang-up."""
        end = time.monotonic() + seconds
        while True:
            if ping and time.monotonic() - self.last_ping >= 1.0:
                self.event("ping", {"type": "ping"})
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.client_gone(min(POLL_S, left)):
                raise ClientGone

    def client_gone(self, timeout: float) -> bool:
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], timeout)
            if not readable:
                return False
            if sock.recv(1, socket.MSG_PEEK) == b"":
                return True
        except (OSError, ValueError):
            return True
        time.sleep(timeout)  # readable with bytes (a pipelined request): not a close; don't spin
        return False


def error_body(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, api_key: str, port: int = 0, word_delay_ms: int = 200, words: int = 40, host: str = "127.0.0.1"
    ):
        super().__init__((host, port), Handler)
        self.api_key, self.word_delay_ms, self.words = api_key, word_delay_ms, words
        self.lock = threading.Lock()
        self.entries: list[dict] = []
        self.counts: dict[str, int] = {}
        self.port = self.server_address[1]
        self.url = f"http://{host}:{self.port}"

    def new_entry(self, **fields) -> dict:
        entry = {"id": "req_emu_" + uuid.uuid4().hex[:20], "tag": None, "status": None,
                 "startedAtMs": now_ms(), "firstByteAtMs": None, "closedAtMs": None, "closedBy": None,
                 "eventsSent": 0, "textSent": "", "completed": False, **fields}
        with self.lock:
            self.entries.append(entry)
        return entry

    def update(self, entry: dict, **fields):
        with self.lock:
            entry.update(fields)

    def list_entries(self, tag: str | None) -> list[dict]:
        with self.lock:
            return [dict(e) for e in self.entries if tag is None or e["tag"] == tag]

    def count(self, conversation: str) -> int:
        with self.lock:
            self.counts[conversation] = self.counts.get(conversation, 0) + 1
            return self.counts[conversation]

    def reset(self):
        with self.lock:
            self.entries.clear()
            self.counts.clear()

    def stop(self):
        self.shutdown()
        self.server_close()


def start_in_thread(api_key: str, port: int = 0, word_delay_ms: int = 200, words: int = 40) -> EmulatorServer:
    """Start an emulator on 127.0.0.1 in a daemon thread; port 0 picks a free port (server.port)."""
    server = EmulatorServer(api_key, port, word_delay_ms, words)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Local Anthropic Messages API emulator.")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--api-key", required=True, help="the x-api-key clients must send")
    parser.add_argument("--word-delay-ms", type=int, default=200, help="delay before each streamed word")
    parser.add_argument("--words", type=int, default=40, help="words in a text answer")
    args = parser.parse_args(argv)
    server = EmulatorServer(args.api_key, args.port, args.word_delay_ms, args.words, args.host)

    def stop(signum, frame):  # shutdown() waits for serve_forever, so not from this (main) thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"provider-emulator: listening on {server.url}", flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

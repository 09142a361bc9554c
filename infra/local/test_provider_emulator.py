"""Tests of the local provider emulator (provider_emulator.py), with the official `anthropic`
Python SDK as the conformance client, plus raw HTTP where the SDK cannot show a detail.

Run by `make test` (python -m unittest discover -s infra/local).
"""

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path

import anthropic

import provider_emulator

KEY = "test-emulator-key"
MODEL = "emulated-model"
SEARCH = {"name": "search_sessions", "description": "Search the caller's sessions.",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}},
                           "required": ["query"]}}


def user(text):
    return [{"role": "user", "content": text}]


def sse_events(body: bytes):
    """(event, data) pairs of a server-sent events body; data parsed as JSON."""
    out = []
    for chunk in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


class EmulatorCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = provider_emulator.start_in_thread(KEY, word_delay_ms=5, words=12)
        cls.host, cls.port = "127.0.0.1", cls.server.port

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def sdk(self, max_retries=0, key=KEY, bearer=False):
        """The SDK as the Rust adapter talks: `x-api-key` (bearer=True: the SDK's own Authorization)."""
        headers = {} if bearer else {"x-api-key": key, "Authorization": anthropic.omit}
        return anthropic.Anthropic(base_url=self.server.url, api_key=key, max_retries=max_retries,
                                   default_headers=headers, timeout=10)

    def raw(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        sent = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
        sent.update(headers or {})
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={k: v for k, v in sent.items() if v is not None})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.headers, data

    def recorded(self, tag):
        status, _, data = self.raw("GET", f"/_emulator/requests?tag={tag}")
        self.assertEqual(status, 200)
        return json.loads(data)

    def wait_closed(self, tag, timeout=3.0):
        end = time.time() + timeout
        while time.time() < end:
            entries = self.recorded(tag)
            if entries and all(e["closedAtMs"] is not None for e in entries):
                return entries
            time.sleep(0.01)
        self.fail(f"requests of {tag} still open: {self.recorded(tag)}")

    def stream(self, client, **kw):
        """Stream one call; return (final message, concatenated text deltas as the SDK reported them)."""
        deltas = []
        with client.messages.stream(model=MODEL, max_tokens=kw.pop("max_tokens", 1024), **kw) as s:
            for ev in s:
                if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                    deltas.append(ev.delta.text)
            return s.get_final_message(), "".join(deltas)


class ConversationTest(EmulatorCase):
    def test_tool_round_then_text_answer(self):
        client = self.sdk()
        messages = user("Plan my week with care [[emu tag=round]]")
        first, text1 = self.stream(client, messages=messages, tools=[SEARCH], system="be brief")
        self.assertEqual(first.stop_reason, "tool_use")
        tool_uses = [b for b in first.content if b.type == "tool_use"]
        self.assertEqual(len(tool_uses), 1)
        self.assertEqual(tool_uses[0].name, "search_sessions")
        self.assertEqual(tool_uses[0].input, {"query": "Plan my week"})
        self.assertEqual(text1, first.content[0].text)

        messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_uses[0].id,
                                                   "content": "2 sessions: Plan my week; Weekly review"}]}]
        second, text2 = self.stream(client, messages=messages, tools=[SEARCH])
        self.assertEqual(second.stop_reason, "end_turn")
        self.assertEqual([b.type for b in second.content], ["text"])
        self.assertEqual(second.content[0].text, text2)
        self.assertIn("2 sessions: Plan my week", text2)
        self.assertEqual(len(text2.split()), 12)
        self.assertEqual(second.usage.output_tokens, 12)

        # the session's next user message starts a new turn: a tool call again, on the new text
        messages += [{"role": "assistant", "content": text2},
                     {"role": "user", "content": "And next month? [[emu tag=round]]"}]
        third, _ = self.stream(client, messages=messages, tools=[SEARCH])
        self.assertEqual(third.stop_reason, "tool_use")
        self.assertEqual(third.content[-1].input, {"query": "And next month?"})

        entries = self.wait_closed("round")
        self.assertEqual([e["status"] for e in entries], [200, 200, 200])
        self.assertEqual([e["closedBy"] for e in entries], ["server"] * 3)
        self.assertEqual([e["textSent"] for e in entries[:2]], [text1, text2])
        self.assertEqual([e["messageCount"] for e in entries], [1, 3, 5])
        self.assertEqual(entries[0]["system"], "be brief")
        self.assertEqual(entries[0]["toolNames"], ["search_sessions"])
        self.assertEqual((entries[0]["model"], entries[0]["maxTokens"]), (MODEL, 1024))
        self.assertTrue(all(e["apiKeyOk"] and e["authHeader"] == "x-api-key" for e in entries))
        # which user message each call answers: the turn's opening text, and the rounds since
        self.assertEqual([e["turnToolRounds"] for e in entries], [0, 1, 0])
        self.assertEqual([e["turnUserTexts"] for e in entries],
                         [["Plan my week with care [[emu tag=round]]"]] * 2 + [["And next month? [[emu tag=round]]"]])
        self.assertEqual(entries[2]["lastUserText"], "And next month? [[emu tag=round]]")
        self.assertEqual([e["completed"] for e in entries], [True, True, True])

    def test_text_answer_without_tools_or_with_notool(self):
        for tools, text in (([], "hello there [[emu tag=plain]]"), ([SEARCH], "hello [[emu tag=plain notool=1]]")):
            msg, streamed = self.stream(self.sdk(), messages=user(text), tools=tools)
            self.assertEqual((msg.stop_reason, [b.type for b in msg.content]), ("end_turn", ["text"]))
            self.assertEqual(msg.content[0].text, streamed)
            self.assertNotIn("[[emu", streamed)

    def test_sdk_default_bearer_authorization_is_accepted(self):
        msg, _ = self.stream(self.sdk(bearer=True), messages=user("hi [[emu tag=bearer]]"))
        self.assertEqual(msg.stop_reason, "end_turn")
        self.assertEqual(self.wait_closed("bearer")[0]["authHeader"], "authorization")

    def test_non_streaming_call(self):
        msg = self.sdk().messages.create(model=MODEL, max_tokens=100, tools=[SEARCH],
                                         messages=user("find my notes please"))
        self.assertEqual(msg.stop_reason, "tool_use")
        self.assertEqual(msg.content[-1].input, {"query": "find my notes"})

    def test_tool_directive_and_rounds(self):
        client = self.sdk()
        messages = user("go [[emu tag=rounds tool=no_such_tool tool_rounds=2 words=6]]")
        for round_ in range(3):
            msg, _ = self.stream(client, messages=messages, tools=[SEARCH])
            if round_ < 2:
                self.assertEqual(msg.stop_reason, "tool_use")
                use = msg.content[-1]
                self.assertEqual(use.name, "no_such_tool")
                messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                           "content": "unknown tool", "is_error": True}]}]
        self.assertEqual(msg.stop_reason, "end_turn")
        self.assertEqual(msg.content[0].text, 'The tool failed: "unknown tool". This')

    def test_max_tokens_stop_and_request_max_tokens(self):
        msg, text = self.stream(self.sdk(), messages=user("x [[emu max_tokens_stop=1 words=30]]"))
        self.assertEqual(msg.stop_reason, "max_tokens")
        self.assertEqual(len(text.split()), 5)
        msg, text = self.stream(self.sdk(), messages=user("x"), max_tokens=3)
        self.assertEqual((msg.stop_reason, len(text.split()), msg.usage.output_tokens), ("max_tokens", 3, 3))

    def test_raw_stream_shape_and_pings(self):
        body = {"model": MODEL, "max_tokens": 50, "stream": True,
                "messages": user("tell me [[emu tag=raw words=6 delay_ms=300]]")}
        status, headers, data = self.raw("POST", "/v1/messages", body)
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        events = sse_events(data)
        kinds = [k for k, _ in events if k != "ping"]
        self.assertEqual(kinds, ["message_start", "content_block_start"] + ["content_block_delta"] * 6 +
                         ["content_block_stop", "message_delta", "message_stop"])
        self.assertGreaterEqual([k for k, _ in events].count("ping"), 1)  # 1.8 s of words
        self.assertTrue(all(d["type"] == k for k, d in events))
        start = events[0][1]["message"]
        self.assertEqual((start["role"], start["content"], start["stop_reason"]), ("assistant", [], None))
        self.assertGreater(start["usage"]["input_tokens"], 0)
        text = "".join(d["delta"]["text"] for k, d in events if k == "content_block_delta")
        entry = self.wait_closed("raw")[0]
        self.assertEqual(entry["textSent"], text)
        self.assertEqual(entry["eventsSent"], len(events))
        self.assertLessEqual(entry["startedAtMs"], entry["firstByteAtMs"])
        self.assertLessEqual(entry["firstByteAtMs"] + 1500, entry["closedAtMs"])

    def test_reset_clears_recording_and_counters(self):
        self.raw("POST", "/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": user("[[emu tag=rst fail=500:1]]")})
        self.assertEqual(len(self.recorded("rst")), 1)
        self.assertEqual(self.raw("POST", "/_emulator/reset", {})[0], 200)
        self.assertEqual(self.recorded("rst"), [])
        status, _, _ = self.raw("POST", "/v1/messages", {"model": MODEL, "max_tokens": 5,
                                                         "messages": user("[[emu tag=rst fail=500:1]]")})
        self.assertEqual(status, 500)  # the counter started again


class TurnOpeningTest(unittest.TestCase):
    def test_queued_texts_and_rounds(self):
        tool_use = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}]}
        result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}
        two = {"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}
        self.assertEqual(provider_emulator.turn_opening([two]), (["A", "B"], 0))
        self.assertEqual(provider_emulator.turn_opening([two, tool_use, result, tool_use, result]), (["A", "B"], 2))
        # an interrupted tool call's result followed by the next message's text opens a turn
        mixed = {"role": "user", "content": result["content"] + [{"type": "text", "text": "C"}]}
        self.assertEqual(provider_emulator.turn_opening([two, tool_use, mixed]), (["C"], 0))
        self.assertEqual(provider_emulator.turn_opening([two, {"role": "assistant", "content": "x"}]), ([], 0))


class ErrorTest(EmulatorCase):
    def test_wrong_or_missing_key_is_authentication_error(self):
        for bearer in (False, True):
            with self.assertRaises(anthropic.AuthenticationError) as cm:
                self.stream(self.sdk(key="wrong-key", bearer=bearer), messages=user("hi [[emu tag=badkey]]"))
            self.assertEqual(cm.exception.body["error"]["type"], "authentication_error")
        status, _, data = self.raw("POST", "/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": user("hi")},
                                   {"x-api-key": None})
        self.assertEqual((status, json.loads(data)["error"]["type"]), (401, "authentication_error"))
        entries = self.recorded("badkey")
        self.assertEqual([(e["status"], e["apiKeyOk"]) for e in entries], [(401, False), (401, False)])
        self.assertNotIn("wrong-key", json.dumps(self.server.list_entries(None)))
        self.assertNotIn(KEY, json.dumps(self.server.list_entries(None)))

    def test_missing_version_or_bad_body_is_invalid_request(self):
        good = {"model": MODEL, "max_tokens": 5, "messages": user("hi")}
        for body, headers in ((good, {"anthropic-version": None}), ({"model": MODEL, "messages": []}, None)):
            status, _, data = self.raw("POST", "/v1/messages", body, headers)
            error = json.loads(data)
            self.assertEqual((status, error["type"], error["error"]["type"]), (400, "error", "invalid_request_error"))
            self.assertIsInstance(error["error"]["message"], str)

    def test_529_twice_then_success_with_retries(self):
        msg, _ = self.stream(self.sdk(max_retries=2), messages=user("hi [[emu tag=ovl fail=529:2 retry_after=0.05]]"))
        self.assertEqual(msg.stop_reason, "end_turn")
        entries = self.wait_closed("ovl")
        self.assertEqual([e["status"] for e in entries], [529, 529, 200])
        self.assertEqual([e["completed"] for e in entries], [False, False, True])

    def test_500_always_is_internal_server_error(self):
        with self.assertRaises(anthropic.InternalServerError):
            self.stream(self.sdk(max_retries=0), messages=user("hi [[emu tag=ise fail=500:always]]"))
        self.assertEqual([e["status"] for e in self.recorded("ise")], [500])
        status, headers, data = self.raw("POST", "/v1/messages", {"model": MODEL, "max_tokens": 5,
                                                                  "messages": user("hi [[emu tag=ise fail=500:always]]")})
        self.assertEqual((status, json.loads(data)["error"]["type"], headers["retry-after"]), (500, "api_error", None))

    def test_429_carries_retry_after(self):
        with self.assertRaises(anthropic.RateLimitError) as cm:
            self.stream(self.sdk(max_retries=0), messages=user("hi [[emu tag=rl fail=429:1]]"))
        self.assertEqual(cm.exception.response.headers["retry-after"], "1")
        self.assertEqual(cm.exception.body["error"]["type"], "rate_limit_error")
        status, headers, _ = self.raw("POST", "/v1/messages", {"model": MODEL, "max_tokens": 5,
                                                               "messages": user("hi [[emu tag=rl2 fail=429:1 retry_after=7]]")})
        self.assertEqual((status, headers["retry-after"]), (429, "7"))

    def test_malformed_event_raises_while_iterating(self):
        with self.assertRaises(Exception) as cm:
            self.stream(self.sdk(), messages=user("hi [[emu tag=bad malformed=1]]"))
        self.assertNotIsInstance(cm.exception, anthropic.APIStatusError)
        self.assertEqual(self.wait_closed("bad")[0]["eventsSent"], 3)
        self.assertFalse(self.wait_closed("bad")[0]["completed"])

    def test_midstream_error_raises_api_error(self):
        with self.assertRaises(anthropic.APIStatusError) as cm:
            self.stream(self.sdk(), messages=user("hi [[emu tag=mid midstream_error=1]]"))
        self.assertIn("overloaded_error", str(cm.exception))
        self.assertEqual(len(self.wait_closed("mid")[0]["textSent"].split()), 3)


class DisconnectTest(EmulatorCase):
    def test_client_close_while_model_is_silent_is_seen_at_once(self):
        body = json.dumps({"model": MODEL, "max_tokens": 100, "stream": True,
                           "messages": user("think [[emu tag=silent silent_ms=5000]]")}).encode()
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: emulator\r\ncontent-type: application/json\r\n"
                     b"x-api-key: " + KEY.encode() + b"\r\nanthropic-version: 2023-06-01\r\n"
                     b"content-length: %d\r\n\r\n" % len(body) + body)
        got = b""
        while b"event: message_start" not in got:
            got += sock.recv(4096)
        time.sleep(0.3)  # silent for a while
        closed_at = time.time() * 1000
        sock.close()
        entry = self.wait_closed("silent")[0]
        self.assertEqual(entry["closedBy"], "client")
        self.assertGreaterEqual(entry["closedAtMs"], closed_at - 2)
        self.assertLess(entry["closedAtMs"] - closed_at, 200)
        self.assertEqual(entry["eventsSent"], 1)  # message_start only: no ping while silent

    def test_client_close_between_words_stops_the_text(self):
        client = self.sdk()
        seen = ""
        with client.messages.stream(model=MODEL, max_tokens=100,
                                    messages=user("long [[emu tag=hangup words=40 delay_ms=50]]")) as s:
            for ev in s:
                if ev.type == "content_block_delta":
                    seen += ev.delta.text
                    if len(seen.split()) == 3:
                        closed_at = time.time() * 1000
                        break
        entry = self.wait_closed("hangup")[0]
        self.assertEqual(entry["closedBy"], "client")
        self.assertLess(entry["closedAtMs"] - closed_at, 200)
        self.assertTrue(entry["textSent"].startswith(seen))
        self.assertLess(len(entry["textSent"].split()), 8)


class CliTest(unittest.TestCase):
    def test_starts_prints_one_line_and_stops_on_sigterm(self):
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("provider_emulator.py")),
                                 "--port", "0", "--api-key", "cli-secret-key"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            m = re.fullmatch(r"provider-emulator: listening on http://127\.0\.0\.1:(\d+)\n", line)
            self.assertIsNotNone(m, line)
            conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=5)
            conn.request("GET", "/_emulator/requests")
            self.assertEqual(json.loads(conn.getresponse().read()), [])
            conn.close()
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=5), 0)
            out, err = proc.communicate()
            self.assertNotIn("cli-secret-key", line + out + err)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    unittest.main()

"""End-to-end test of infra/chat/chat.py against a running local stack (not a unit test).

Run with the stack up (what `make test` sets, infra/local/run.sh):
    KNOQ_API_URL=http://127.0.0.1:<port> KNOQ_ADMIN_BIN=target/debug/knoq-admin \\
    KNOQ_ALLOWED_ORIGIN=http://127.0.0.1:<port> [SESSION_COOKIE_NAME=knoq_session] \\
        python -m unittest discover -s infra/chat -p "live_test_*.py"

It fails (does not skip) when KNOQ_API_URL or KNOQ_ADMIN_BIN is unset. chat.py runs as a
subprocess with pipes, for a fresh user in a fresh organisation, and every wait is bounded.
The messages carry directives for the local provider emulator (infra/local/provider_emulator.py,
`[[emu key=value ...]]` in the latest user text): the first asks for a tool call and a short
answer, the second for a long, slow one (600 words, 30 ms apart: 18 s) so that the Ctrl-C
lands mid-turn.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unittest
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_chat import ChatProcess  # noqa: E402  (the subprocess driver; its tests are not collected here)

API = os.environ.get("KNOQ_API_URL", "")
ORIGIN = os.environ.get("KNOQ_ALLOWED_ORIGIN", "")
ADMIN = os.environ.get("KNOQ_ADMIN_BIN", "")
COOKIE_NAME = os.environ.get("SESSION_COOKIE_NAME") or "knoq_session"
WAIT = 60.0
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SHORT_WITH_TOOL = "hello chat client [[emu tool=search_sessions words=12]]"
LONG_STORY = "please write a long story [[emu words=600 delay_ms=30 notool=1]]"
CANCEL_LINE = (r"cancelled: the cancel answered in (\d+) ms; "
               r"the run ended (\d+) ms (after|before) it \(status_terminated seen\)\n")


def issue_token(user: str, org: str) -> str:
    """A session cookie for `user` in `org`, from the operator command."""
    done = subprocess.run([ADMIN, "issue-token", "--user", user, "--org", org],
                          capture_output=True, text=True, timeout=WAIT)
    if done.returncode != 0 or not done.stdout.strip():
        raise AssertionError(f"{ADMIN} issue-token failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


class LiveChatTest(unittest.TestCase):
    """chat.py end to end: a turn with a tool, a Ctrl-C cancel, the 409 after it, leaving."""

    def setUp(self):
        if not API:
            self.fail("KNOQ_API_URL is not set: start the local stack and export KNOQ_API_URL, "
                      "KNOQ_ADMIN_BIN and KNOQ_ALLOWED_ORIGIN (make test does), then run this again")
        if not ADMIN:
            self.fail("KNOQ_ADMIN_BIN is not set: the knoq-admin binary that issues cookies "
                      "(target/debug/knoq-admin after a build)")

    def start(self, cookie: str) -> ChatProcess:
        """chat.py against the stack with `cookie`."""
        args = ["--api-url", API, "--cookie", cookie, "--cookie-name", COOKIE_NAME]
        if ORIGIN:
            args += ["--origin", ORIGIN]
        proc = ChatProcess(*args)
        self.addCleanup(proc.kill)
        return proc

    def fresh_cookie(self) -> str:
        """A cookie for a new user in a new organisation."""
        tag = uuid.uuid4().hex[:12]
        return issue_token(f"chat-user-{tag}", f"chat-org-{tag}")

    def test_a_conversation_a_cancel_and_leaving(self):
        proc = self.start(self.fresh_cookie())
        proc.expect(r"^you> $", WAIT)

        # A turn: a tool call and a short answer, streamed, then the prompt again.
        proc.type(SHORT_WITH_TOOL)
        proc.expect(rf"session {UUID}\n", WAIT)
        proc.expect(r"agent> \S", WAIT)
        proc.expect(r"\n\[tool\] search_sessions \{", WAIT)
        proc.expect(r"\n\[tool result(, error)?\] ", WAIT)
        proc.expect(r"\nThe tool (returned|failed)", WAIT)
        proc.expect(r"\nyou> $", WAIT)
        self.assertEqual(proc.out.count("agent> "), 1, proc.out)

        # A long turn, cancelled with Ctrl-C while it streams.
        proc.type(LONG_STORY)
        proc.expect(r"agent> You asked", WAIT)
        proc.interrupt()
        proc.expect(r"\[session ended: cancelled by chat-user-", WAIT)
        found = proc.expect(CANCEL_LINE, WAIT)
        took, ended = int(found.group(1)), int(found.group(2))
        self.assertLess(took, 30_000, found.group(0))
        self.assertLess(ended, 30_000, found.group(0))
        proc.expect(r"you> $", WAIT)

        # The cancelled session takes no new message: one line, then the prompt.
        proc.type("are you still there?")
        proc.expect(r"\nerror 409: this session was cancelled and takes no new message; /new starts another\n"
                    r"you> $", WAIT)

        # Ctrl-C at the prompt leaves.
        proc.interrupt()
        self.assertEqual(proc.wait_exit(WAIT), 0, proc.out + proc.err)
        self.assertTrue(proc.out.rstrip().endswith("bye"), proc.out)
        self.assertNotIn("Traceback", proc.out + proc.err)
        self.assertEqual(proc.out.count("error 409"), 1, proc.out)

    def test_an_unknown_cookie_is_one_line(self):
        proc = self.start("not-a-cookie-" + uuid.uuid4().hex)
        proc.type("hello")
        line = "error 401: the cookie was refused (missing, unknown or expired); get one with make token"
        proc.expect(r"\n" + line.replace("(", r"\(").replace(")", r"\)") + r"\nyou> $", WAIT)
        proc.close_input()
        self.assertEqual(proc.wait_exit(WAIT), 0, proc.out + proc.err)
        self.assertNotIn("Traceback", proc.out + proc.err)
        self.assertEqual((proc.out + proc.err).count("error 401"), 1)


if __name__ == "__main__":
    unittest.main()

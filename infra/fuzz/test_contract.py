"""Holds real responses of the local stack to openapi.yaml: every route, every status the
document lists that can be provoked over HTTP, each response validated against the document
(status documented, body matching its schema, declared headers present).

Run by `make test` (infra/local/run.sh) with the stack up: KNOQ_API_URL, KNOQ_ADMIN_BIN,
KNOQ_ALLOWED_ORIGIN and the functions' environment are set there.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import unittest
import uuid
from pathlib import Path

import requests
import schemathesis

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(str(ROOT / "openapi.yaml"))
API = os.environ.get("KNOQ_API_URL", "")
ORIGIN = os.environ.get("KNOQ_ALLOWED_ORIGIN", "")
COOKIE = os.environ.get("SESSION_COOKIE_NAME", "knoq_session")


def token(user: str, org: str) -> str:
    result = subprocess.run(
        [os.environ["KNOQ_ADMIN_BIN"], "issue-token", "--user", user, "--org", org],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@contextlib.contextmanager
def injected_fault(fault: dict):
    """A DynamoDB fault the test emulator injects while the block runs (infra/local/faults.py)."""
    faults = os.environ["AWS_ENDPOINT_URL"].rstrip("/") + "/_knoq/faults"
    planted = requests.post(faults, json=fault, timeout=10)
    planted.raise_for_status()
    try:
        yield
    finally:
        requests.delete(faults, params={"id": planted.json()["id"]}, timeout=10).raise_for_status()


class Caller:
    """One user in one organisation; every answer is validated before it is returned."""

    def __init__(self, test: unittest.TestCase, with_cookie: bool = True, origin: str | None = ORIGIN):
        self.test = test
        self.http = requests.Session()
        if with_cookie:
            self.http.cookies.set(COOKIE, token(f"user-{uuid.uuid4()}", f"org-{uuid.uuid4()}"))
        self.origin = origin
        self.statuses: list[tuple[str, str, int]] = []

    def call(self, method: str, path: str, *, body=None, raw: bytes | None = None, query=None):
        headers = {"Origin": self.origin} if self.origin and method != "GET" else {}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        response = self.http.request(
            method, f"{API}/api/managed-agents/{path}", data=data, params=query, headers=headers, timeout=30
        )
        operation = SCHEMA[f"/api/managed-agents/{path}"][method]
        try:
            operation.validate_response(response)
        except Exception as error:  # the failure names the broken rule
            self.test.fail(f"{method} {path} {response.status_code} {response.text!r} breaks openapi.yaml: {error}")
        self.statuses.append((method, path, response.status_code))
        return response


class ContractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not API:
            raise RuntimeError("KNOQ_API_URL is not set: run through `make test`, which starts the stack")

    def test_every_route_and_status_conforms(self):
        alice = Caller(self)
        created = alice.call("POST", "session", body={"text": "Contract check"})
        self.assertEqual(created.status_code, 200)
        session = created.json()["id"]
        self.assertEqual(alice.call("GET", "transcript", query={"sessionId": session}).status_code, 200)
        since = {"sessionId": session, "sinceEventId": str(uuid.uuid4())}
        self.assertEqual(alice.call("GET", "transcript", query=since).status_code, 200)
        # A waiting read at the session's end: an empty page after the wait (or the next event).
        page = alice.call("GET", "transcript", query={"sessionId": session}).json()
        at_end = {"sessionId": session, "sinceEventId": page["events"][-1]["id"], "waitSeconds": "1"}
        self.assertEqual(alice.call("GET", "transcript", query=at_end).status_code, 200)
        for bad_wait in ("21", "-1", "1.5", "soon"):
            bad = {"sessionId": session, "waitSeconds": bad_wait}
            self.assertEqual(alice.call("GET", "transcript", query=bad).status_code, 400, bad_wait)
        self.assertEqual(alice.call("GET", "sessions").status_code, 200)
        self.assertEqual(alice.call("POST", "message", body={"sessionId": session, "text": "More"}).status_code, 200)

        # (503: DynamoDBFaultContractTest)
        # 400 of each kind, 404, 413
        self.assertEqual(alice.call("POST", "cancel", raw=b"{nope").status_code, 400)
        self.assertEqual(alice.call("POST", "message", body={"sessionId": session}).status_code, 400)
        self.assertEqual(alice.call("POST", "session", body={"text": 5}).status_code, 400)
        self.assertEqual(alice.call("GET", "transcript", query={"sessionId": "x"}).status_code, 400)
        self.assertEqual(alice.call("DELETE", "session").status_code, 400)
        unknown = str(uuid.uuid4())
        self.assertEqual(alice.call("POST", "cancel", body={"sessionId": unknown}).status_code, 404)
        self.assertEqual(alice.call("GET", "transcript", query={"sessionId": unknown}).status_code, 404)
        self.assertEqual(alice.call("POST", "message", body={"sessionId": unknown, "text": "x"}).status_code, 404)
        self.assertEqual(alice.call("DELETE", "session", query={"sessionId": unknown}).status_code, 404)
        huge = json.dumps({"text": "x" * 70_000}).encode()
        self.assertEqual(alice.call("POST", "session", raw=huge).status_code, 413)

        # cancel, again, then the cancelled session refuses messages (409)
        self.assertEqual(alice.call("POST", "cancel", body={"sessionId": session}).json(), {"ok": True})
        again = alice.call("POST", "cancel", body={"sessionId": session})
        self.assertEqual(again.json(), {"ok": True, "alreadyCancelled": True})
        self.assertEqual(alice.call("POST", "message", body={"sessionId": session, "text": "x"}).status_code, 409)

        # 401 and 403 on every route that has them
        stranger = Caller(self, with_cookie=False)
        for method, path in [("POST", "session"), ("POST", "cancel"), ("POST", "message"), ("GET", "sessions")]:
            self.assertEqual(stranger.call(method, path, body={}).status_code, 401)
        self.assertEqual(stranger.call("GET", "transcript", query={"sessionId": session}).status_code, 401)
        self.assertEqual(stranger.call("DELETE", "session", query={"sessionId": session}).status_code, 401)
        cross_site = Caller(self, origin="https://evil.example")
        for method, path in [("POST", "session"), ("POST", "cancel"), ("POST", "message")]:
            self.assertEqual(cross_site.call(method, path, body={}).status_code, 403)
        self.assertEqual(cross_site.call("DELETE", "session", query={"sessionId": session}).status_code, 403)

        # 429 with Retry-After (validated as a declared header)
        limited = Caller(self)
        statuses = [limited.call("POST", "cancel", body={"sessionId": unknown}).status_code for _ in range(31)]
        self.assertEqual(statuses.count(429), 1, statuses)

        # delete, then 404 for it everywhere
        self.assertEqual(alice.call("DELETE", "session", query={"sessionId": session}).json(), {"ok": True})
        self.assertEqual(alice.call("DELETE", "session", query={"sessionId": session}).status_code, 404)
        self.assertEqual(alice.call("GET", "transcript", query={"sessionId": session}).status_code, 404)
        listed = alice.call("GET", "sessions").json()["sessions"]
        self.assertNotIn(session, [s["id"] for s in listed])

    def test_a_response_that_breaks_the_document_is_caught(self):
        """The validation itself can fail: a body the document does not allow is refused."""
        alice = Caller(self)
        response = alice.call("GET", "sessions")
        response._content = b'{"sessions": [], "extra": 1}'
        with self.assertRaises(Exception):
            SCHEMA["/api/managed-agents/sessions"]["GET"].validate_response(response)


class DynamoDBFaultContractTest(unittest.TestCase):
    """The statuses only a DynamoDB fault provokes. The faults are planted on the project's own
    emulator (`/_knoq/faults`), so run.sh runs this class there only."""

    @classmethod
    def setUpClass(cls):
        if not API:
            raise RuntimeError("KNOQ_API_URL is not set: run through `make test`, which starts the stack")

    def test_a_cancel_throttled_through_every_retry_is_503_with_retry_after(self):
        alice = Caller(self)
        created = alice.call("POST", "session", body={"text": "Contract check under throttling"})
        self.assertEqual(created.status_code, 200)
        session = created.json()["id"]
        throttled = {"operation": "UpdateItem", "table": "SessionsTable",
                     "error": "ThrottlingException", "contains": session}
        with injected_fault(throttled):
            self.assertEqual(alice.call("POST", "cancel", body={"sessionId": session}).status_code, 503)


if __name__ == "__main__":
    unittest.main()

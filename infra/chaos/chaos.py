"""Whole-system randomized ("chaos") test of the local stack, with a history checker.

Many users (a few sessions each, in several organisations) drive many sessions at once, each
session a random script drawn from the seed: create; messages during and between turns; single
and simultaneous cancels; deletes mid-run; incremental transcript reads with `sinceEventId`
(waiting reads, `waitSeconds`, while a turn is followed to its end);
list calls. The texts steer the bundled provider emulator (`[[emu ...]]` directives: streams of
random length and pace, tool rounds, 529/429 overloads, silences, broken streams), and the
DynamoDB emulator injects its seeded random fault schedule (`POST /_knoq/chaos`) when it has
one. Every request and answer goes into a history (`.local/chaos/<seed>.jsonl`); once every
session is at rest (or a bound passes) the final state is read (full transcripts, lists,
the provider's recording, deleted sessions probed) and `history_check.py` checks the
history against the contract (SPEC.md), reading nothing but the history.

Run by `make chaos SEED=... SESSIONS=... CLIENTS=...` (infra/local/run.sh chaos starts the
stack with fault injection) and, bounded, by `make test`. Against a running stack:

    KNOQ_API_URL=... KNOQ_ADMIN_BIN=... KNOQ_ALLOWED_ORIGIN=... AWS_ENDPOINT_URL=... \\
    KNOQ_PROVIDER_URL=... python infra/chaos/chaos.py --seed 7 --sessions 12 --clients 8

The seed fixes every script, text and directive (and the emulator's fault schedule); the
interleaving is the machine's, so a rerun meets the same scenarios, not the same timings.
Exit status: 0 when the history passes, 1 on a violation, 2 on a harness error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import history_check  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/managed-agents"
REQUEST_TIMEOUT_S = 30.0
#: This many requests in a row without an answer: the API has stopped answering; the scripts
#: stop, and the final state is read as far as it still can be.
UNANSWERED_IN_A_ROW = 20
#: Rates (the emulator's names, infra/local/chaos.py) this runner sets over the emulator's own
#: defaults: none, so every kind of fault runs at the rate the emulator names.
DEFAULT_RATES: dict[str, float] = {}
TERMINAL_FOR_TURN = ("status_idle", "error", "status_terminated")


def now_ms() -> float:
    return time.time() * 1000


def is_local_host_failure(status: int, headers) -> bool:
    """A 500 that `cargo lambda watch` (the local API host) answered itself: its body is a
    problem document (`application/problem+json` or text), never the API's `application/json`."""
    content_type = (headers.get("Content-Type") or headers.get("content-type") or "").split(";")[0].strip()
    return status == 500 and content_type != "application/json"


# -- the scripts --------------------------------------------------------------------------------


def scenario(rng: random.Random) -> dict:
    """A provider scenario for one message: emulator directives (besides the tag)."""
    kind = rng.choices(
        ["plain", "tools", "overload", "rate", "silent", "malformed", "midstream", "slow"],
        weights=[34, 20, 9, 6, 10, 7, 7, 7])[0]
    d = {"words": rng.randint(2, 30), "delay_ms": rng.randint(3, 60)}
    if kind == "tools":
        d["tool_rounds"] = rng.randint(1, 3)
    elif kind == "overload":
        d["fail"] = "529:1"
    elif kind == "rate":
        d["fail"] = "429:1"
    elif kind == "silent":
        d["silent_ms"] = rng.randint(300, 2500)
    elif kind == "malformed":
        d["malformed"] = 1
    elif kind == "midstream":
        d["midstream_error"] = 1
    elif kind == "slow":
        d.update(words=rng.randint(20, 60), delay_ms=rng.randint(40, 100))
    if kind not in ("tools",):
        d["notool"] = 1
    d["kind"] = kind
    return d


def session_script(rng: random.Random) -> list[tuple]:
    """A session's steps after its create: what a client does, in order, without waiting unless
    a step says so (so messages land during turns as well as between them)."""
    steps: list[tuple] = []
    for _ in range(rng.randint(2, 9)):
        step = rng.choices(
            ["message", "message_between", "read", "wait_idle", "sleep", "list", "cancel", "delete",
             "cancel_delete"],
            weights=[18, 16, 14, 8, 10, 6, 9, 3, 1])[0]
        if step == "message":
            steps.append(("message", scenario(rng)))
        elif step == "message_between":
            steps += [("wait_idle",), ("message", scenario(rng))]
        elif step == "read":
            steps.append(("read",))
        elif step == "wait_idle":
            steps.append(("wait_idle",))
        elif step == "sleep":
            steps.append(("sleep", rng.randint(50, 2000)))
        elif step == "list":
            steps.append(("list",))
        elif step == "cancel":
            steps.append(("cancel", rng.choice([1, 1, 2, 3, 4])))
        elif step == "delete":
            steps.append(("delete",))
            break
        else:
            steps.append(("cancel_delete",))
            break
    if steps[-1][0] not in ("delete", "cancel_delete"):
        steps.append(("wait_idle",))
    return steps


def plan(seed: int, sessions: int) -> list[dict]:
    """Every session's user, organisation, opening scenario and script, from the seed alone."""
    rng = random.Random(seed)
    users = max(1, (sessions + 2) // 3)
    orgs = max(1, min(users, (users + 3) // 4 + 1))
    out = []
    for k in range(sessions):
        user = rng.randrange(users) if k >= users else k  # every user has at least one session
        out.append({"key": k, "user": user, "org": user % orgs, "opening": scenario(rng),
                    "steps": session_script(rng), "words": " ".join(rng.choice(WORDS) for _ in range(4))})
    # at most 3 sessions a user (10 creates a minute, 20 an hour): move the surplus round-robin
    counts: dict[int, int] = {}
    for s in out:
        while counts.get(s["user"], 0) >= 3:
            s["user"] = (s["user"] + 1) % users
            s["org"] = s["user"] % orgs
        counts[s["user"]] = counts.get(s["user"], 0) + 1
    return out


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


# -- the runner ---------------------------------------------------------------------------------


class Runner:
    def __init__(self, args, env: dict):
        self.args = args
        self.api = env["KNOQ_API_URL"].rstrip("/")
        self.origin = env.get("KNOQ_ALLOWED_ORIGIN") or self.api
        self.admin = env["KNOQ_ADMIN_BIN"]
        self.aws = (env.get("AWS_ENDPOINT_URL") or "").rstrip("/")
        self.provider = (env.get("KNOQ_PROVIDER_URL") or "").rstrip("/")
        self.cookie_name = env.get("SESSION_COOKIE_NAME") or "knoq_session"
        self.seed = args.seed
        self.nonce = f"{int(time.time()) % 100000:05d}{os.getpid() % 1000:03d}"
        self.prefix = f"c{self.seed}x{self.nonce}"  # this run's tags and tokens
        self.lock = threading.Lock()
        self.seq = 0
        self.out = open(args.history, "w")
        self.cookies: dict[int, str] = {}
        self.deadline = time.monotonic() + args.max_seconds
        self.final_deadline = float("inf")
        self.reader_seq = 0
        self.sessions: dict[int, dict] = {}
        self.unanswered_in_a_row = 0
        self.api_down: float | None = None  # when the API stopped answering (monotonic)
        self.timeout = REQUEST_TIMEOUT_S

    def stopped(self) -> bool:
        return time.monotonic() > self.deadline or self.api_down is not None

    # history -----------------------------------------------------------------------------------

    def write(self, record: dict):
        with self.lock:
            self.out.write(json.dumps(record, sort_keys=True) + "\n")

    def http(self, method: str, url: str, body=None, headers=None, timeout=REQUEST_TIMEOUT_S):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers or {}), e.read()

    def call(self, op: str, method: str, path: str, *, user: int, key: int | None = None,
             session_id: str | None = None, query: dict | None = None, body=None, **extra) -> dict:
        """One API request, recorded with its answer (or the transport error)."""
        q = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.api + BASE + path + ("?" + urllib.parse.urlencode(q) if q else "")
        headers = {"Cookie": f"{self.cookie_name}={self.cookies[user]}"}
        if method != "GET":
            headers["Origin"] = self.origin
        rec = {"kind": "req", "op": op, "method": method, "path": path, "query": q, "body": body,
               "user": user, "key": key, "sessionId": session_id, "thread": threading.current_thread().name,
               "t0": time.monotonic(), "w0": now_ms(), **extra}
        try:
            status, hdrs, raw = self.http(method, url, body, headers, timeout=self.timeout)
            for _ in range(2):
                if not (method == "GET" and is_local_host_failure(status, hdrs)):
                    break
                # `cargo lambda watch` answered a 500 of its own (a problem document, not the
                # API's JSON `{"error"}`; no function saw the request), now and then under load.
                # API Gateway has no such answer: a GET, which changes nothing, is sent again,
                # as the Rust tests' client does, and the history notes it apart from requests.
                self.write({"kind": "local_host_500", "op": op, "path": path, "w": now_ms(),
                            "body": raw[:300].decode(errors="replace")})
                time.sleep(0.2)
                status, hdrs, raw = self.http(method, url, body, headers, timeout=self.timeout)
            rec["status"] = status
            rec["retryAfter"] = hdrs.get("Retry-After") or hdrs.get("retry-after")
            try:
                rec["response"] = json.loads(raw) if raw else None
            except ValueError:
                rec["response"] = {"_raw": raw[:500].decode(errors="replace")}
        except Exception as e:  # no answer: timeout, refused, reset
            rec["status"], rec["error"] = None, f"{type(e).__name__}: {e}"
        rec["t1"], rec["w1"] = time.monotonic(), now_ms()
        with self.lock:
            self.seq += 1
            rec["i"] = self.seq
            self.unanswered_in_a_row = self.unanswered_in_a_row + 1 if rec["status"] is None else 0
            if self.unanswered_in_a_row >= UNANSWERED_IN_A_ROW and self.api_down is None:
                self.api_down = time.monotonic()
                print(f"chaos: THE API STOPPED ANSWERING: {UNANSWERED_IN_A_ROW} requests in a row without an "
                      f"answer within {self.timeout:.0f} s (request #{self.seq}); stopping the scripts", flush=True)
                self.out.write(json.dumps({"kind": "api_down", "atRequest": self.seq, "w": now_ms()}) + "\n")
        self.write(rec)
        return rec

    # setup -------------------------------------------------------------------------------------

    def issue_cookies(self, users: set[int], orgs: dict[int, int]):
        for u in sorted(users):
            out = subprocess.run([self.admin, "issue-token", "--user", f"{self.prefix}-u{u}",
                                  "--org", f"{self.prefix}-o{orgs[u]}"],
                                 capture_output=True, text=True, check=True, timeout=60)
            self.cookies[u] = out.stdout.strip()

    def chaos_faults(self, method: str, body=None):
        """The emulator's random fault schedule: (status, JSON) or (None, error)."""
        if not self.aws:
            return None, "no AWS_ENDPOINT_URL"
        try:
            status, _, raw = self.http(method, self.aws + "/_knoq/chaos", body, timeout=10)
            try:
                return status, json.loads(raw) if raw else None
            except ValueError:
                return status, raw[:200].decode(errors="replace")
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"

    # a session's script ------------------------------------------------------------------------

    def text(self, s: dict, j: int, d: dict) -> tuple[str, str, str]:
        token = f"tok-{self.prefix}-s{s['key']}-m{j}"
        tag = f"{self.prefix}-s{s['key']}-m{j}"
        directives = " ".join(f"{k}={v}" for k, v in d.items() if k != "kind")
        return f"{token} {s['words']} message {j} [[emu tag={tag} {directives}]]", token, tag

    def run_session(self, s: dict):
        st = self.sessions[s["key"]] = {"id": None, "reader": None, "cursor": None, "deleted": False}
        text, token, tag = self.text(s, 0, s["opening"])
        rec = self.call("create", "POST", "/session", user=s["user"], key=s["key"], body={"text": text},
                        token=token, tag=tag, scenario=s["opening"]["kind"])
        if rec["status"] != 200 or not isinstance(rec.get("response"), dict):
            return
        st["id"] = rec["response"].get("id")
        self.new_reader(st)
        j = 0
        for step in s["steps"]:
            if self.stopped():
                break
            kind = step[0]
            if kind == "message":
                j += 1
                text, token, tag = self.text(s, j, step[1])
                self.call("message", "POST", "/message", user=s["user"], key=s["key"], session_id=st["id"],
                          body={"sessionId": st["id"], "text": text}, token=token, tag=tag,
                          scenario=step[1]["kind"])
            elif kind == "read":
                self.read_until_caught_up(s, st)
            elif kind == "wait_idle":
                self.wait_idle(s, st, 45)
            elif kind == "sleep":
                time.sleep(step[1] / 1000)
            elif kind == "list":
                self.call("list", "GET", "/sessions", user=s["user"])
            elif kind == "cancel":
                self.at_once(s, st, ["cancel"] * step[1])
            elif kind == "delete":
                self.call("delete", "DELETE", "/session", user=s["user"], key=s["key"], session_id=st["id"],
                          query={"sessionId": st["id"]})
            elif kind == "cancel_delete":
                self.at_once(s, st, ["cancel", "delete"])
            if random.random() < 0.5:  # a reader between steps, now and then (not from the seed)
                self.read_until_caught_up(s, st, max_pages=1)

    def at_once(self, s: dict, st: dict, ops: list[str]):
        """Requests on one session from several threads released at the same instant."""
        barrier = threading.Barrier(len(ops))

        def one(op):
            barrier.wait(timeout=10)
            if op == "cancel":
                self.call("cancel", "POST", "/cancel", user=s["user"], key=s["key"], session_id=st["id"],
                          body={"sessionId": st["id"]}, burst=len(ops))
            else:
                self.call("delete", "DELETE", "/session", user=s["user"], key=s["key"], session_id=st["id"],
                          query={"sessionId": st["id"]}, burst=len(ops))

        threads = [threading.Thread(target=one, args=(op,), name=f"{threading.current_thread().name}+{n}")
                   for n, op in enumerate(ops)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def new_reader(self, st: dict):
        with self.lock:
            self.reader_seq += 1
            st["reader"], st["cursor"], st["prev"] = self.reader_seq, None, None

    def read(self, s: dict, st: dict, wait: int = 0) -> dict:
        """One incremental read from the reader's cursor; with `wait`, a waiting read (answered
        as soon as an event follows the cursor, else an empty page after `wait` seconds)."""
        query = {"sessionId": st["id"], "sinceEventId": st["cursor"]}
        if wait and st["cursor"]:
            query["waitSeconds"] = str(wait)
        rec = self.call("read", "GET", "/transcript", user=s["user"], key=s["key"], session_id=st["id"],
                        query=query, reader=st["reader"], prevRead=st.get("prev"))
        if rec["status"] == 200 and isinstance(rec.get("response"), dict):
            events = rec["response"].get("events") or []
            if events:
                st["cursor"] = events[-1]["id"]
            st["prev"] = rec["i"]
            st["last_type"] = events[-1]["type"] if events else st.get("last_type")
        return rec

    def read_until_caught_up(self, s: dict, st: dict, max_pages: int = 20, wait: int = 0):
        for page in range(max_pages):
            rec = self.read(s, st, wait if page == 0 else 0)
            if rec["status"] != 200 or not rec["response"].get("hasMore"):
                return rec
        return None

    def wait_idle(self, s: dict, st: dict, seconds: float):
        """Incremental reads until the turn in flight is over (its last event ends a turn and no
        run is active), or `seconds` pass. Once it holds a cursor, each round is a waiting read
        (2 s), as a client following the turn live would make."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stopped():
            waiting = bool(st["cursor"])
            rec = self.read_until_caught_up(s, st, wait=2)
            if rec is None:
                continue
            if rec["status"] == 404:
                return
            if rec["status"] == 200 and st.get("last_type") in TERMINAL_FOR_TURN \
                    and rec["response"].get("workflowRunId") is None:
                return
            if not (waiting and rec["status"] == 200):
                time.sleep(0.3 if rec["status"] == 200 else 1.0)

    # at rest -----------------------------------------------------------------------------------

    def full_transcript(self, s: dict, sid: str, op: str) -> tuple[int | None, list, dict | None]:
        events, since, last = [], None, None
        for _ in range(200):
            if time.monotonic() > self.final_deadline:
                return None, events, None
            rec = self.call(op, "GET", "/transcript", user=s["user"], key=s["key"], session_id=sid,
                            query={"sessionId": sid, "sinceEventId": since})
            last = rec
            if rec["status"] != 200:
                return rec["status"], events, None
            page = rec["response"]
            events += page.get("events") or []
            if events:
                since = events[-1]["id"]
            if not page.get("hasMore"):
                return 200, events, page
        return last["status"] if last else None, events, None

    def provider_entries(self) -> list[dict]:
        try:
            status, _, raw = self.http("GET", self.provider + "/_emulator/requests", timeout=30)
            entries = json.loads(raw) if status == 200 else []
        except Exception:
            entries = []
        return [e for e in entries if str(e.get("tag") or "").startswith(self.prefix + "-")]

    def rest(self, plans: list[dict], seconds: float) -> bool:
        """Waits until every live session's last event ends a turn with no run active and every
        provider call of this run is closed; False when `seconds` pass first."""
        end = time.monotonic() + seconds
        pending = [s for s in plans if self.sessions.get(s["key"], {}).get("id")]
        while time.monotonic() < end:
            still = []
            for s in pending:
                if time.monotonic() > end:
                    still.append(s)
                    continue
                sid = self.sessions[s["key"]]["id"]
                status, events, page = self.full_transcript(s, sid, "rest_probe")
                if status == 200 and (not events or events[-1]["type"] not in TERMINAL_FOR_TURN
                                      or page.get("workflowRunId") is not None):
                    still.append(s)
                elif status not in (200, 404):
                    still.append(s)
            pending = still
            if not pending and all(e.get("closedAtMs") for e in self.provider_entries()):
                return True
            time.sleep(1.0)
        return False

    def final_state(self, plans: list[dict]):
        for s in plans:
            st = self.sessions.get(s["key"]) or {}
            sid = st.get("id")
            if not sid:
                continue
            status, events, page = self.full_transcript(s, sid, "final_read")
            self.write({"kind": "final_transcript", "key": s["key"], "sessionId": sid, "status": status,
                        "events": events, "workflowRunId": (page or {}).get("workflowRunId"),
                        "title": (page or {}).get("title")})
            if status == 404:  # deleted (or lost): probed everywhere; each answer is in the history
                self.call("final_probe", "POST", "/message", user=s["user"], key=s["key"], session_id=sid,
                          body={"sessionId": sid, "text": f"after delete {self.prefix}"})
                self.call("final_probe", "POST", "/cancel", user=s["user"], key=s["key"], session_id=sid,
                          body={"sessionId": sid})
                self.call("final_probe", "DELETE", "/session", user=s["user"], key=s["key"], session_id=sid,
                          query={"sessionId": sid})
        for u in sorted({s["user"] for s in plans}):
            self.call("final_list", "GET", "/sessions", user=u)
        self.describe_runs_left()
        self.write({"kind": "provider", "prefix": self.prefix, "entries": self.provider_entries()})

    def describe_runs_left(self):
        """For each session not at rest in its final read (a run still named, or a last event
        that ends no turn): each of its executions' status and last history events, as the
        emulator's Step Functions tells them. A diagnosis of a run that did not come to rest;
        the history checker does not read it."""
        with self.lock:
            self.out.flush()
        try:
            records = [json.loads(line) for line in open(self.args.history)]
        except OSError:
            return
        restless = {r["sessionId"]: r["key"] for r in records
                    if r.get("kind") == "final_transcript" and r.get("status") == 200
                    and (r.get("workflowRunId") or not r.get("events")
                         or r["events"][-1]["type"] not in TERMINAL_FOR_TURN)}
        if not restless or not self.aws:
            return
        try:
            import boto3  # the emulator's own dependency, in the venv
            sfn = boto3.client("stepfunctions", endpoint_url=self.aws,
                               region_name=os.environ.get("AWS_REGION") or "us-east-1")
            executions = [e for m in sfn.list_state_machines()["stateMachines"]
                          for page in sfn.get_paginator("list_executions").paginate(
                              stateMachineArn=m["stateMachineArn"])
                          for e in page["executions"]]
            for e in executions:
                d = sfn.describe_execution(executionArn=e["executionArn"])
                sid = json.loads(d.get("input") or "{}").get("sessionId")
                if sid not in restless:
                    continue
                h = sfn.get_execution_history(executionArn=e["executionArn"], reverseOrder=True, maxResults=6)
                last = [(x["type"], str(x.get("timestamp"))[11:23]) for x in h["events"]]
                self.write({"kind": "run_left", "key": restless[sid], "run": d["name"], "status": d["status"],
                            "stopDate": str(d.get("stopDate")), "lastEvents": last})
                print(f"chaos: session key {restless[sid]} not at rest: run {d['name']} {d['status']} "
                      f"(started {str(d.get('startDate'))[11:23]}, stopped {str(d.get('stopDate'))[11:23]}); "
                      f"last events {last}", flush=True)
        except Exception as e:  # a diagnosis only: never fails the run
            print(f"chaos: could not describe the runs left: {e}", flush=True)

    # the whole run -----------------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        plans = plan(args.seed, args.sessions)
        users = {s["user"] for s in plans}
        orgs = {s["user"]: s["org"] for s in plans}
        self.write({"kind": "meta", "seed": args.seed, "sessions": args.sessions, "clients": args.clients,
                    "rates": args.rates, "prefix": self.prefix, "users": len(users), "orgs": len(set(orgs.values())),
                    "plans": plans, "startedAt": now_ms()})
        self.issue_cookies(users, orgs)
        status, answer = self.chaos_faults("POST", {"seed": args.seed, "rates": args.rates})
        scheduled = status == 200
        if scheduled:
            _, state = self.chaos_faults("GET")
            rates = state.get("rates") if isinstance(state, dict) else None
            print(f"chaos: the emulator's fault schedule is on (seed {args.seed}), rates "
                  f"{json.dumps(rates if rates is not None else args.rates, sort_keys=True)}", flush=True)
        else:
            why = "answered 404" if status == 404 else f"answered {status} {str(answer)[:60]!r}"
            print(f"chaos: NO FAULT SCHEDULE in this run: the emulator's /_knoq/chaos {why} (not there yet?); "
                  "going on with the provider's faults only", flush=True)
        self.write({"kind": "fault_schedule", "status": status, "answer": answer})
        if status == 400:  # a rate name or value the emulator refuses: the run would mean nothing
            print(f"chaos: the emulator refused the fault rates: {answer}", file=sys.stderr)
            return 2
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=args.clients, thread_name_prefix="client") as pool:
                for f in [pool.submit(self.run_session, s) for s in plans]:
                    f.result()
            drive_s = time.monotonic() - started
            print(f"chaos: scripts done in {drive_s:.0f} s; waiting for rest", flush=True)
            self.final_deadline = time.monotonic() + args.rest_seconds + 30
            at_rest = self.rest(plans, args.rest_seconds if self.api_down is None else 20)
            self.write({"kind": "rest", "atRest": at_rest, "waitedS": time.monotonic() - started - drive_s})
        finally:
            counts = None
            if scheduled:
                _, counts = self.chaos_faults("GET")
                self.chaos_faults("DELETE")
                self.write({"kind": "faults_injected", "counts": counts})
        if self.api_down is not None:
            self.timeout = 10.0
        self.final_deadline = time.monotonic() + args.final_seconds
        self.final_state(plans)
        self.out.close()
        return self.report(at_rest, counts, time.monotonic() - started)

    def report(self, at_rest: bool, counts, elapsed: float) -> int:
        records = history_check.load(self.args.history)
        reqs = [r for r in records if r["kind"] == "req"]
        by_status: dict[str, int] = {}
        for r in reqs:
            by_status[str(r.get("status"))] = by_status.get(str(r.get("status")), 0) + 1
        provider = next((r for r in records if r["kind"] == "provider"), {"entries": []})["entries"]
        lat = sorted(r["t1"] - r["t0"] for r in reqs) or [0.0]
        ops: dict[str, int] = {}
        for r in reqs:
            ops[r["op"]] = ops.get(r["op"], 0) + 1
        print(f"chaos: {len(reqs)} requests in {elapsed:.0f} s, by status {dict(sorted(by_status.items()))}, "
              f"by kind {dict(sorted(ops.items()))}; answer time p50 {lat[len(lat) // 2]:.2f} s, "
              f"p95 {lat[int(len(lat) * 0.95)]:.2f} s, max {lat[-1]:.2f} s; {len(provider)} provider calls; "
              f"at rest: {at_rest}", flush=True)
        host_failures = sum(1 for r in records if r["kind"] == "local_host_500")
        if host_failures:
            print(f"chaos: cargo lambda watch answered {host_failures} GET(s) with a 500 of its own; "
                  "each was sent again (local_host_500 in the history)", flush=True)
        if counts is not None:
            injected = counts.get("injected", counts) if isinstance(counts, dict) else counts
            total = sum(injected.values()) if isinstance(injected, dict) else "?"
            print(f"chaos: faults injected by the emulator ({total}): {json.dumps(injected, sort_keys=True)}",
                  flush=True)
        violations = history_check.check(records)
        print(f"chaos: history: {self.args.history}")
        if not violations:
            print(f"chaos: PASS seed={self.args.seed} sessions={self.args.sessions}: every invariant holds",
                  flush=True)
            return 0
        print(f"chaos: FAIL seed={self.args.seed} sessions={self.args.sessions}: "
              f"{len(violations)} violation(s) of {len({v.invariant for v in violations})} invariant(s)")
        print(history_check.describe(violations, limit=self.args.show))
        print(f"chaos: reproduce with: make chaos SEED={self.args.seed} SESSIONS={self.args.sessions} "
              f"CLIENTS={self.args.clients}", flush=True)
        names = ", ".join(sorted({v.invariant for v in violations}))
        print(f"chaos: to keep it as a regression, add to infra/chaos/regressions.txt:\n"
              f"  {self.args.seed} {self.args.sessions} {self.args.clients}  {names}: <what failed> ({time.strftime('%Y-%m-%d')})",
              flush=True)
        return 1


def parse_rates(text: str | None) -> dict:
    """`--fault-rates`: JSON ({"dynamodb_throttled": 0.05, ...}) or name=rate,name=rate."""
    if not text:
        return dict(DEFAULT_RATES)
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    out = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        out[k.strip()] = float(v)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--sessions", type=int, default=24)
    p.add_argument("--clients", type=int, default=24, help="concurrent client threads")
    p.add_argument("--max-seconds", type=float, default=300, help="no new step after this")
    p.add_argument("--rest-seconds", type=float, default=150, help="bound of the wait for rest")
    p.add_argument("--final-seconds", type=float, default=180, help="bound of the final state's reads")
    p.add_argument("--fault-rates", default=os.environ.get("CHAOS_FAULT_RATES"),
                   help="the emulator schedule's rates: JSON or kind=rate,kind=rate (passed through)")
    p.add_argument("--history", default=None, help="default .local/chaos/<seed>.jsonl")
    p.add_argument("--show", type=int, default=20, help="violations printed in full")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**9)
    args.rates = parse_rates(args.fault_rates)
    print(f"chaos: seed={args.seed} sessions={args.sessions} clients={args.clients} "
          f"max_seconds={args.max_seconds:.0f}", flush=True)
    print(f"chaos: fault rates {json.dumps(args.rates, sort_keys=True) if args.rates else 'the emulator defaults'}"
          + (" (over the emulator's defaults)" if args.rates else ""), flush=True)
    if args.history is None:
        (ROOT / ".local" / "chaos").mkdir(parents=True, exist_ok=True)
        args.history = str(ROOT / ".local" / "chaos" / f"{args.seed}.jsonl")
    missing = [k for k in ("KNOQ_API_URL", "KNOQ_ADMIN_BIN") if not os.environ.get(k)]
    if missing:
        print(f"chaos: {', '.join(missing)} not set: run it through `make chaos` (infra/local/run.sh chaos)",
              file=sys.stderr)
        return 2
    # SIGTERM (make, run.sh, a timeout) still turns the emulator's fault schedule off (run's finally)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return Runner(args, dict(os.environ)).run()


if __name__ == "__main__":
    raise SystemExit(main())

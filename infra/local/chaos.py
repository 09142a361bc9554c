"""Seeded random faults: every AWS call the functions make may fail the way AWS fails it.

Beside the planted faults of faults.py (which fire exactly where a test asks), this mode
draws faults at named rates from a seed, as FoundationDB's simulation and Jepsen do: rates
high enough that one run of tens of sessions meets every kind several times.

Only on the project's own emulator, and only when asked: `stack.py serve --fault-injection`
(`make test`) serves the control endpoint, off until a test turns it on; `serve --chaos-seed N
[--chaos-rate NAME=P ...]` starts with it on (also without --fault-injection: the one way to
have it in `make dev`). The seed and the rates are printed at start, one line on stdout.

    POST   /_knoq/chaos {"seed": 7, "rates": {"dynamodb_throttled": 0.1}, "scope": "<text>"}
                 -> turns it on: rates not named keep their defaults (DEFAULT_RATES); an
                    unknown name, a rate outside 0..1 or a seed that is not an integer is a
                    400 naming it. With `scope`, only requests whose body contains that text
                    (a session id, a test's user) are touched, like a planted fault's
                    `contains`.
    GET    /_knoq/chaos -> {"enabled", "seed", "rates", "scope", "injected": {name: count}}
    DELETE /_knoq/chaos -> turns it off; answers the same, with the counts so far.

Every decision is `hash(seed, rate name, operation, n) < rate`, n counting the requests of
that operation (in scope) that reached that decision. So the same seed makes the same
decisions for the same sequence of requests of each operation: a single-threaded client
gets the very same schedule again. With concurrent clients, which request is the n-th of
its operation depends on thread scheduling, so which request a fault hits is not
reproducible; the schedule per operation (the n-th UpdateItem fails) is. A stale read and a
write conflict also depend on timing (what was written or transacted in the last
milliseconds), so they are reproducible only as far as the timing is.

What each rate does (names in DEFAULT_RATES):
- DynamoDB (JSON 1.0 errors, as faults.py sends them):
  `dynamodb_write_conflict`: UpdateItem/PutItem/DeleteItem answered
  TransactionConflictException (400), at this base rate;
  `dynamodb_write_conflict_near_transaction`: the same, for a write to an item that a
  TransactWriteItems touches now or touched within TRANSACTION_WINDOW_SECS;
  `dynamodb_transaction_conflict`: TransactWriteItems cancelled
  (TransactionCanceledException, a `TransactionConflict` reason on one item);
  `dynamodb_committed_response_lost`: a write applied, then answered 500
  (InternalServerError) as if the response were lost;
  `dynamodb_throttled`: any request answered ProvisionedThroughputExceededException or
  ThrottlingException (400);
  `dynamodb_internal_error`: any request answered InternalServerError (500);
  `dynamodb_stale_read`: a GetItem, BatchGetItem or Query (of a table or an index) without
  ConsistentRead answered with each item as it was before the last write to it (or without
  it, if that write created it), when that write was less than STALE_WINDOW_SECS ago (a
  Query does not bring back an item a recent write deleted).
- Step Functions: `sfn_task_throttled` (SendTaskSuccess/SendTaskFailure/SendTaskHeartbeat
  answered ThrottlingException, 400), `sfn_task_internal_error` (500 InternalFailure),
  `sfn_task_timed_out` (TaskTimedOut, 400, the token left unanswered);
  `lambda_service_exception`: a Lambda task's invoke fails with `Lambda.ServiceException`
  (the ASL Retry resends it).
- Lambda: `lambda_async_duplicate` (an asynchronous invoke delivered twice),
  `lambda_async_late` (delivered up to LATE_MAX_SECS late), `lambda_function_error` (a
  synchronous invoke answered with a function error, `Lambda.Unknown`, without running).
- Secrets Manager: `secrets_error` (GetSecretValue answered InternalServiceError, 500).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from typing import Any, Callable

#: The path the chaos mode is controlled on.
PATH = "/_knoq/chaos"

#: Every rate, with its default: what AWS does under load, made frequent enough that a run of
#: tens of sessions (thousands of requests) meets each kind several times.
DEFAULT_RATES: dict[str, float] = {
    "dynamodb_write_conflict": 0.01,
    "dynamodb_write_conflict_near_transaction": 0.5,
    "dynamodb_transaction_conflict": 0.03,
    "dynamodb_committed_response_lost": 0.02,
    "dynamodb_throttled": 0.02,
    "dynamodb_internal_error": 0.01,
    "dynamodb_stale_read": 0.05,
    "sfn_task_throttled": 0.03,
    "sfn_task_internal_error": 0.02,
    "sfn_task_timed_out": 0.02,
    "lambda_service_exception": 0.02,
    "lambda_async_duplicate": 0.05,
    "lambda_async_late": 0.05,
    "lambda_function_error": 0.01,
    "secrets_error": 0.05,
}
#: A single-item write this soon after a transaction touched its item may conflict with it.
TRANSACTION_WINDOW_SECS = 0.05
#: A read this soon after a write may see the item as it was before.
STALE_WINDOW_SECS = 0.5
#: The longest an asynchronous event is delivered late.
LATE_MAX_SECS = 3.0

_SINGLE_WRITES = ("UpdateItem", "PutItem", "DeleteItem")
_WRITES = (*_SINGLE_WRITES, "TransactWriteItems", "BatchWriteItem")
_SFN_TASK_ANSWERS = ("SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat")


class Chaos:
    """The seeded schedule and what it has injected. Off until `enable`."""

    def __init__(self):
        self._lock = threading.Lock()
        self.enabled = False
        self.seed = 0
        self.rates = dict(DEFAULT_RATES)
        self.scope: str | None = None
        self.injected: dict[str, int] = {}
        self._counters: dict[tuple[str, str], int] = {}
        # (table, key json) -> (time of the last write, the item before it or None)
        self._before: dict[tuple[str, str], tuple[float, dict | None]] = {}
        # (table, key json) -> [transactions in flight touching it, when the last one ended]
        self._transacted: dict[tuple[str, str], list] = {}

    # -- control ---------------------------------------------------------------------------

    def enable(self, spec: Any) -> None:
        """Turns the mode on from a spec ({"seed", "rates", "scope"}); ValueError naming
        what is wrong."""
        if not isinstance(spec, dict):
            raise ValueError("the chaos spec is a JSON object")
        unknown_fields = set(spec) - {"seed", "rates", "scope"}
        if unknown_fields:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown_fields))}")
        seed = spec.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("seed is required (an integer)")
        rates = spec.get("rates", {})
        if not isinstance(rates, dict):
            raise ValueError("rates is an object of rate name -> probability")
        unknown = sorted(set(rates) - set(DEFAULT_RATES))
        if unknown:
            raise ValueError(f"unknown rates: {', '.join(unknown)} (known: {', '.join(DEFAULT_RATES)})")
        for name, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ValueError(f"rate {name} must be a number from 0 to 1")
        scope = spec.get("scope")
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise ValueError("scope must be a non-empty string")
        with self._lock:
            self.seed, self.scope = seed, scope
            self.rates = {**DEFAULT_RATES, **{k: float(v) for k, v in rates.items()}}
            self.injected, self._counters = {}, {}
            self._before, self._transacted = {}, {}
            self.enabled = True

    def disable(self) -> dict:
        with self._lock:
            self.enabled = False
        return self.state()

    def state(self) -> dict:
        with self._lock:
            return {"enabled": self.enabled, "seed": self.seed, "rates": dict(self.rates),
                    "scope": self.scope, "injected": dict(self.injected)}

    def describe(self) -> str:
        """The line printed at start."""
        rates = " ".join(f"{name}={rate:g}" for name, rate in self.rates.items())
        return f"chaos: seed={self.seed} scope={self.scope or '-'} rates: {rates}"

    # -- decisions -------------------------------------------------------------------------

    def _in_scope(self, body: str | bytes) -> bool:
        if not self.enabled:
            return False
        if self.scope is None:
            return True
        if isinstance(body, bytes):
            return self.scope.encode() in body
        return self.scope in body

    def _draw(self, name: str, operation: str) -> float:
        with self._lock:
            n = self._counters.get((name, operation), 0)
            self._counters[(name, operation)] = n + 1
        digest = hashlib.sha256(f"{self.seed}:{name}:{operation}:{n}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def decide(self, name: str, operation: str, body: str | bytes = "") -> bool:
        """Whether fault `name` hits this request (counted in `injected` if so)."""
        if not self._in_scope(body):
            return False
        rate = self.rates[name]
        if rate <= 0:
            return False
        if self._draw(name, operation) >= rate:
            return False
        self._count(name)
        return True

    def _count(self, name: str) -> None:
        with self._lock:
            self.injected[name] = self.injected.get(name, 0) + 1

    # -- Lambda (invoke.py asks) -----------------------------------------------------------

    def lambda_invoke_fault(self, name: str, payload: bytes) -> None:
        if self.decide("lambda_service_exception", f"Invoke:{name}", payload):
            import invoke

            raise invoke.service_fault("chaos: Lambda failed to run the invoke (service error)")

    def function_error(self, name: str, payload: bytes) -> dict | None:
        if self.decide("lambda_function_error", f"Invoke:{name}", payload):
            return {"errorType": "Lambda.Unknown",
                    "errorMessage": "chaos: the function failed without an error of its own"}
        return None

    def async_deliveries(self, name: str, payload: bytes) -> list[float]:
        """The delays (seconds) after which an asynchronous event is delivered: one, or two
        when it is duplicated."""
        delay = 0.0
        if self.decide("lambda_async_late", f"Event:{name}", payload):
            delay = LATE_MAX_SECS * self._draw("lambda_async_late_delay", name)
        deliveries = [delay]
        if self.decide("lambda_async_duplicate", f"Event:{name}", payload):
            deliveries.append(LATE_MAX_SECS * self._draw("lambda_async_duplicate_delay", name))
        return deliveries

    # -- Step Functions and Secrets Manager (the WSGI dispatcher asks) ----------------------

    def service_fault(self, target: str, body: bytes) -> tuple[int, dict, bytes] | None:
        """An AWS error answer for a Step Functions task answer or a GetSecretValue, or None."""
        service, _, operation = target.partition(".")
        if service == "AWSStepFunctions" and operation in _SFN_TASK_ANSWERS:
            for name, status, kind, message in (
                ("sfn_task_throttled", 400, "ThrottlingException", "Rate exceeded"),
                ("sfn_task_internal_error", 500, "InternalFailure",
                 "The request processing has failed because of an unknown error."),
                ("sfn_task_timed_out", 400, "TaskTimedOut", "Task Timed Out"),
            ):
                if self.decide(name, operation, body):
                    return _json_error(status, kind, message, "1.0")
        elif service == "secretsmanager" and operation == "GetSecretValue":
            if self.decide("secrets_error", operation, body):
                return _json_error(500, "InternalServiceError",
                                   "An error occurred on the server side.", "1.1")
        return None

    # -- DynamoDB --------------------------------------------------------------------------

    def record_write(self, handler: Any, operation: str, request: dict, original: Callable):
        """Runs a DynamoDB request (under the emulator's DynamoDB lock) and, for a write that
        succeeds, remembers each item as it was before, for stale reads."""
        if not self.enabled or operation not in _WRITES:
            return original(handler)
        keys = _written_keys(handler, operation, request)
        before = [(key, _current(handler, *key)) for key in keys]
        answer = original(handler)
        if answer[0] < 300:
            now = time.monotonic()
            with self._lock:
                for key, item in before:
                    self._before[key] = (now, item)
        return answer

    def dynamodb(self, handler: Any, operation: str, raw_body: str, original: Callable):
        """Answers a DynamoDB request, with a fault when the schedule says so."""
        if not self._in_scope(raw_body):
            return original(handler)
        try:
            request = json.loads(raw_body or "{}")
        except ValueError:
            return original(handler)
        import faults

        items = len(request.get("TransactItems", []))
        if self.decide("dynamodb_throttled", operation, raw_body):
            kind = ("ThrottlingException" if self._draw("dynamodb_throttle_kind", operation) < 0.5
                    else "ProvisionedThroughputExceededException")
            return faults._error_response(kind, operation, items, 0)
        if self.decide("dynamodb_internal_error", operation, raw_body):
            return faults._error_response("InternalServerError", operation, items, 0)
        if operation in _SINGLE_WRITES:
            keys = _written_keys(handler, operation, request)
            if self._near_transaction(keys) and self.decide(
                "dynamodb_write_conflict_near_transaction", operation, raw_body
            ):
                return faults._error_response("TransactionConflictException", operation, 0, 0)
            if self.decide("dynamodb_write_conflict", operation, raw_body):
                return faults._error_response("TransactionConflictException", operation, 0, 0)
        if operation == "TransactWriteItems" and items and self.decide(
            "dynamodb_transaction_conflict", operation, raw_body
        ):
            index = int(self._draw("dynamodb_transaction_item", operation) * items)
            return faults._error_response("TransactionConflictException", operation, items, index)
        if operation in ("GetItem", "BatchGetItem", "Query") and not _consistent(operation, request):
            return self._maybe_stale(handler, operation, request, raw_body, original)
        lost = operation in _WRITES and self.decide("dynamodb_committed_response_lost", operation, raw_body)
        if operation == "TransactWriteItems":
            keys = _written_keys(handler, operation, request)
            self._transaction(keys, +1)
            try:
                answer = original(handler)
            finally:
                self._transaction(keys, -1)
        else:
            answer = original(handler)
        if lost and answer[0] < 300:
            return faults._error_response("InternalServerError", operation, items, 0)
        return answer

    def _transaction(self, keys: list[tuple[str, str]], change: int) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                entry = self._transacted.setdefault(key, [0, now])
                entry[0] += change
                entry[1] = now

    def _near_transaction(self, keys: list[tuple[str, str]]) -> bool:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                entry = self._transacted.get(key)
                if entry and (entry[0] > 0 or now - entry[1] < TRANSACTION_WINDOW_SECS):
                    return True
        return False

    def _stale(self, key: tuple[str, str]) -> tuple[bool, dict | None]:
        with self._lock:
            entry = self._before.get(key)
        if entry is None or time.monotonic() - entry[0] >= STALE_WINDOW_SECS:
            return False, None
        return True, entry[1]

    def _maybe_stale(self, handler, operation, request, raw_body, original):
        answer = original(handler)
        if answer[0] >= 300:
            return answer
        status, headers, body = answer
        if operation == "GetItem":
            key = (request.get("TableName", ""), _key_json(request.get("Key", {})))
            recent, item = self._stale(key)
            if not recent or not self.decide("dynamodb_stale_read", operation, raw_body):
                return answer
            result = json.loads(body)
            result.pop("Item", None)
            if item is not None:
                result["Item"] = _project(item, request)
            return _rewritten(status, headers, result)
        if operation == "Query":
            return self._stale_query(handler, status, headers, body, request, raw_body)
        # BatchGetItem: each item of the answer may be stale on its own.
        result = json.loads(body)
        changed = False
        for table, wanted in request.get("RequestItems", {}).items():
            if wanted.get("ConsistentRead"):
                continue
            got = result.get("Responses", {}).get(table, [])
            schema = [k for k in wanted.get("Keys", [{}])[0]] if wanted.get("Keys") else []
            for key in wanted.get("Keys", []):
                recent, item = self._stale((table, _key_json(key)))
                if not recent or not self.decide("dynamodb_stale_read", operation, raw_body):
                    continue
                got = [g for g in got if {k: g.get(k) for k in schema} != key]
                if item is not None:
                    got.append(_project(item, wanted))
                changed = True
            if changed:
                result.setdefault("Responses", {})[table] = got
        return _rewritten(status, headers, result) if changed else answer


    def _stale_query(self, handler, status, headers, body, request, raw_body):
        """A Query's page with each recently written item as it was before that write (left
        out when the write created it). Items a recent write removed are not brought back."""
        table = request.get("TableName", "")
        result = json.loads(body)
        page, changed = [], False
        for item in result.get("Items", []):
            key = _table_key(handler, table, item)
            recent, before = self._stale((table, _key_json(key))) if key else (False, None)
            if recent and self.decide("dynamodb_stale_read", "Query", raw_body):
                changed = True
                if before is not None:
                    page.append(_project(before, request))
                continue
            page.append(item)
        if not changed:
            return status, headers, body
        result["Items"] = page
        if "Count" in result:
            result["Count"] = len(page)
        return _rewritten(status, headers, result)


def _rewritten(status: int, headers: dict, result: dict) -> tuple[int, dict, str]:
    """An answer with a new body: DynamoDB's CRC32 header (which the SDKs check) recomputed."""
    import zlib

    body = json.dumps(result)
    headers = {k: v for k, v in headers.items() if k.lower() not in ("x-amz-crc32", "content-length")}
    headers["x-amz-crc32"] = str(zlib.crc32(body.encode()))
    return status, headers, body


def _json_error(status: int, kind: str, message: str, version: str) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": f"application/x-amz-json-{version}", "x-amzn-RequestId": "chaos"}
    return status, headers, json.dumps({"__type": kind, "message": message}).encode()


def _consistent(operation: str, request: dict) -> bool:
    if operation in ("GetItem", "Query"):
        return bool(request.get("ConsistentRead"))
    return all(t.get("ConsistentRead") for t in request.get("RequestItems", {}).values())


def _key_json(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def _table_key(handler: Any, table: str, item: dict) -> dict:
    try:
        schema = handler.dynamodb_backend.get_table(table)
    except Exception:  # noqa: BLE001 - an unknown table fails on its own
        return {}
    names = [schema.hash_key_attr] + ([schema.range_key_attr] if schema.range_key_attr else [])
    return {name: item[name] for name in names if name in item}


def _written_keys(handler: Any, operation: str, request: dict) -> list[tuple[str, str]]:
    """(table, key json) of every item a write names."""
    found = []
    if operation in ("UpdateItem", "DeleteItem"):
        found.append((request.get("TableName", ""), request.get("Key", {})))
    elif operation == "PutItem":
        table = request.get("TableName", "")
        found.append((table, _table_key(handler, table, request.get("Item", {}))))
    elif operation == "TransactWriteItems":
        for entry in request.get("TransactItems", []):
            for kind, action in entry.items():
                table = action.get("TableName", "")
                if kind == "Put":
                    found.append((table, _table_key(handler, table, action.get("Item", {}))))
                else:
                    found.append((table, action.get("Key", {})))
    elif operation == "BatchWriteItem":
        for table, writes in request.get("RequestItems", {}).items():
            for write in writes:
                if "PutRequest" in write:
                    found.append((table, _table_key(handler, table, write["PutRequest"].get("Item", {}))))
                elif "DeleteRequest" in write:
                    found.append((table, write["DeleteRequest"].get("Key", {})))
    return [(table, _key_json(key)) for table, key in found if key]


def _current(handler: Any, table: str, key_json: str) -> dict | None:
    """The item as it is now (the emulator's DynamoDB lock is held), or None."""
    try:
        item = handler.dynamodb_backend.get_item(table, json.loads(key_json))
    except Exception:  # noqa: BLE001 - the write itself reports what is wrong
        return None
    return None if item is None else item.to_json()["Attributes"]


def _project(item: dict, request: dict) -> dict:
    """`item` cut to the top-level attributes a ProjectionExpression names."""
    expression = request.get("ProjectionExpression")
    if not expression:
        return item
    names = request.get("ExpressionAttributeNames", {})
    wanted = set()
    for path in expression.split(","):
        top = path.strip().split(".")[0].split("[")[0]
        wanted.add(names.get(top, top))
    return {k: v for k, v in item.items() if k in wanted}


#: The one schedule of this emulator.
MODE = Chaos()


def _control(environ: dict, start_response: Callable) -> list[bytes]:
    method = environ.get("REQUEST_METHOD", "GET")
    status, body = "200 OK", {}
    try:
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                spec = json.loads(environ["wsgi.input"].read(length) or b"null")
            except ValueError:
                raise ValueError("the body is not JSON") from None
            MODE.enable(spec)
            print(MODE.describe(), flush=True)
            body = MODE.state()
        elif method == "DELETE":
            body = MODE.disable()
        elif method == "GET":
            body = MODE.state()
        else:
            status, body = "405 Method Not Allowed", {"error": "use GET, POST or DELETE"}
    except ValueError as error:
        status, body = "400 Bad Request", {"error": str(error)}
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def install_recorder() -> None:
    """Hooks the DynamoDB handler below the emulator's DynamoDB lock (call before stack.py
    serialises DynamoDB), to remember items as they were before each write."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    def call_action(self):
        if not MODE.enabled:
            return original(self)
        raw = self.raw_body
        raw_body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
        operation = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
        try:
            request = json.loads(raw_body or "{}")
        except ValueError:
            return original(self)
        return MODE.record_write(self, operation, request, original)

    DynamoHandler.call_action = call_action


def install() -> None:
    """Hooks the DynamoDB handler (above the lock: faults come before it is taken) and the
    server's dispatcher (the control endpoint, Step Functions and Secrets Manager faults).
    Call before faults.install, whose hook then runs first: a planted fault is served
    before the schedule is asked."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DynamoHandler.call_action

    def call_action(self):
        if not MODE.enabled:
            return original(self)
        raw = self.raw_body
        raw_body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
        operation = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
        return MODE.dynamodb(self, operation, raw_body, original)

    DynamoHandler.call_action = call_action
    dispatch = DomainDispatcherApplication.__call__

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") == PATH:
            return _control(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if MODE.enabled and (target.startswith("AWSStepFunctions.") or target.startswith("secretsmanager.")):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            fault = MODE.service_fault(target, body)
            if fault is not None:
                status, headers, payload = fault
                reason = {400: "Bad Request", 500: "Internal Server Error"}.get(status, "Error")
                start_response(f"{status} {reason}", [*headers.items(), ("Content-Length", str(len(payload)))])
                return [payload]
        return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = __call__

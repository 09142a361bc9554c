"""DynamoDB fault injection for tests, on the project's own emulator.

`stack.py serve --fault-injection` installs it (`make test` does; `make dev` never does).
A test plants faults over HTTP on the emulator's own port:

    POST   /_knoq/faults   {"operation": "UpdateItem", "table": "SessionsTable",
                            "error": "TransactionConflictException", "count": 2,
                            "contains": "<session id>", "after": 0}
                                                              -> {"id": "<fault id>"}
    GET    /_knoq/faults     every fault, with `hits` and `remaining` (spent ones too)
    DELETE /_knoq/faults?id=<fault id>                        -> removes that fault
    DELETE /_knoq/faults                                      -> removes every fault

The next `count` DynamoDB requests (every request, until deleted, without `count`) that
match fail the way real DynamoDB fails them; with `after`, the first `after` requests that
match are served normally first (a purge interrupted half-way, say). A request matches when its operation is
`operation`, one of the tables it names equals `table` or ends with it, and, with
`contains`, its JSON body contains that text (a session id, say), so that tests running in
parallel on one emulator never hit each other's faults. SDK retries are new requests: they
match again while the count lasts.

Errors, as DynamoDB sends them (JSON 1.0 protocol: a status and a `__type`):
- `TransactionConflictException` (400). For `TransactWriteItems`, which never answers it,
  the same situation is what DynamoDB does send: `TransactionCanceledException` with a
  `TransactionConflict` cancellation reason on the first item that matched.
- `ProvisionedThroughputExceededException` and `ThrottlingException` (400): throttling,
  which the AWS SDKs retry with backoff.
- `InternalServerError` (500): DynamoDB failing; the SDKs retry it too.
- `CommittedResponseLost`: the request is applied, then answered with a 500 as if the
  response had been lost on the way, so the SDK sends a write that already committed again.
  (A request that fails by itself, its condition false say, gets its real answer.)
- `SlowResponse` with `delayMs` (1 to 120000): the request is held that long, then served
  normally, as a DynamoDB under strain or a slow network path answers late: how a test
  makes one write outlast a worker's lease.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs

#: The path tests plant faults on.
PATH = "/_knoq/faults"

_ERRORS: dict[str, tuple[int, str, str]] = {
    "TransactionConflictException": (
        400,
        "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
        "Transaction is ongoing for the item",
    ),
    "ProvisionedThroughputExceededException": (
        400,
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API.",
    ),
    "ThrottlingException": (
        400,
        "com.amazon.coral.availability#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
    ),
    "InternalServerError": (
        500,
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "Internal server error",
    ),
}
COMMITTED_RESPONSE_LOST = "CommittedResponseLost"
SLOW_RESPONSE = "SlowResponse"
#: Every error a fault may name.
ERRORS = (*_ERRORS, COMMITTED_RESPONSE_LOST, SLOW_RESPONSE)
#: The longest a `SlowResponse` may hold a request, in milliseconds.
MAX_DELAY_MS = 120_000

_lock = threading.Lock()
_faults: dict[str, dict[str, Any]] = {}


def plant(spec: dict[str, Any]) -> str:
    """Adds a fault; its id. Raises ValueError naming what is wrong with `spec`."""
    if not isinstance(spec, dict):
        raise ValueError("a fault is a JSON object")
    fault: dict[str, Any] = {}
    for name in ("operation", "table", "error"):
        value = spec.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} is required (a non-empty string)")
        fault[name] = value
    if fault["error"] not in ERRORS:
        raise ValueError(f"error must be one of {', '.join(ERRORS)}")
    contains = spec.get("contains")
    if isinstance(contains, str):
        contains = [contains]
    if contains is not None and (
        not isinstance(contains, list) or not contains
        or not all(isinstance(text, str) and text for text in contains)
    ):
        raise ValueError("contains must be a non-empty string or a list of them")
    count = spec.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer (omit it for every request)")
    after = spec.get("after", 0)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError("after must be a non-negative integer")
    delay_ms = spec.get("delayMs")
    if fault["error"] == SLOW_RESPONSE:
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or not 1 <= delay_ms <= MAX_DELAY_MS:
            raise ValueError(f"delayMs must be an integer from 1 to {MAX_DELAY_MS} for {SLOW_RESPONSE}")
    elif delay_ms is not None:
        raise ValueError(f"delayMs is for {SLOW_RESPONSE} only")
    fault.update(contains=contains, remaining=count, hits=0, passed=0, after=after,
                 delay_ms=delay_ms, id=str(uuid.uuid4()))
    with _lock:
        _faults[fault["id"]] = fault
    return fault["id"]


def clear(fault_id: str | None = None) -> int:
    """Removes one fault, or every fault without an id; how many were removed."""
    with _lock:
        if fault_id is None:
            removed = len(_faults)
            _faults.clear()
            return removed
        return 1 if _faults.pop(fault_id, None) else 0


def listed() -> list[dict[str, Any]]:
    """Every fault planted, with how often it fired (`hits`) and how many are left."""
    with _lock:
        return [dict(fault) for fault in _faults.values()]


def _tables(operation: str, request: dict[str, Any]) -> list[str]:
    """The table names a DynamoDB request names, in order."""
    if operation in ("TransactWriteItems", "TransactGetItems"):
        return [
            next(iter(item.values())).get("TableName", "")
            for item in request.get("TransactItems", [])
            if isinstance(item, dict) and item
        ]
    if operation in ("BatchWriteItem", "BatchGetItem"):
        return list(request.get("RequestItems", {}))
    name = request.get("TableName")
    return [name] if isinstance(name, str) else []


def _take(operation: str, raw_body: str) -> tuple[dict[str, Any], int | None] | None:
    """The first fault this request matches, its count used up by one, and the index of the
    first transaction item that matched; None when no fault matches."""
    if not _faults:
        return None  # the common case costs one check
    try:
        request = json.loads(raw_body or "{}")
    except ValueError:
        return None
    tables = _tables(operation, request)
    with _lock:
        for fault in _faults.values():
            if fault["operation"] != operation or fault["remaining"] == 0:
                continue
            if fault["contains"] is not None and not all(text in raw_body for text in fault["contains"]):
                continue
            index = next(
                (i for i, name in enumerate(tables) if name.endswith(fault["table"])), None
            )
            if index is None:
                continue
            if fault["passed"] < fault["after"]:
                fault["passed"] += 1
                return None  # served normally: the first `after` matches pass
            fault["hits"] += 1
            if fault["remaining"] is not None:
                fault["remaining"] -= 1  # a spent fault stays listed, with its hits
            return dict(fault), index
    return None


def _error_response(
    error: str, operation: str, request_items: int, index: int
) -> tuple[int, dict, str]:
    """(status, headers, body) of `error` as DynamoDB answers it."""
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    if error == "TransactionConflictException" and operation == "TransactWriteItems":
        reasons = [{"Code": "None"} for _ in range(request_items)]
        reasons[index] = {
            "Code": "TransactionConflict",
            "Message": "Transaction is ongoing for the item",
        }
        codes = ", ".join(reason["Code"] for reason in reasons)
        body = {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
            "CancellationReasons": reasons,
        }
        return 400, headers, json.dumps(body)
    status, kind, message = _ERRORS[error]
    return status, headers, json.dumps({"__type": kind, "message": message})


def _operation(handler: Any) -> str:
    target = handler.headers.get("X-Amz-Target") or ""
    return target.rsplit(".", 1)[-1]


def _wrap_dynamodb(original: Callable) -> Callable:
    def call_action(self):  # moto's DynamoHandler.call_action
        raw = self.raw_body
        raw_body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
        operation = _operation(self)
        taken = _take(operation, raw_body)
        if taken is None:
            return original(self)
        fault, index = taken
        if fault["error"] == SLOW_RESPONSE:
            time.sleep(fault["delay_ms"] / 1000)  # this request's thread only
            return original(self)
        items = len(json.loads(raw_body or "{}").get("TransactItems", []))
        if fault["error"] == COMMITTED_RESPONSE_LOST:
            answer = original(self)
            if answer[0] >= 300:
                return answer  # nothing committed, so nothing to lose: the real answer
            return _error_response("InternalServerError", operation, items, index or 0)
        return _error_response(fault["error"], operation, items, index or 0)

    return call_action


def _control(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
    """The WSGI endpoint tests plant and clear faults through."""
    method = environ.get("REQUEST_METHOD", "GET")
    status, body = "200 OK", {}
    try:
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            spec = json.loads(environ["wsgi.input"].read(length) or b"null")
            body = {"id": plant(spec)}
        elif method == "DELETE":
            ids = parse_qs(environ.get("QUERY_STRING", "")).get("id")
            body = {"removed": clear(ids[0] if ids else None)}
        elif method == "GET":
            body = {"faults": listed()}
        else:
            status, body = "405 Method Not Allowed", {"error": "use GET, POST or DELETE"}
    except ValueError as error:
        status, body = "400 Bad Request", {"error": str(error)}
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def install() -> None:
    """Hooks moto's DynamoDB handler and the server's dispatcher. Call before the server
    starts; the handler may already be wrapped (stack.py serialises DynamoDB requests)."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    DynamoHandler.call_action = _wrap_dynamodb(DynamoHandler.call_action)
    dispatch = DomainDispatcherApplication.__call__

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") == PATH:
            return _control(environ, start_response)
        return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = __call__

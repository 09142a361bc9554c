"""AWS limits the emulator would otherwise let through, answered with the error AWS gives.

What moto 5.2.5 enforces by itself (checked by test_limits.py, so a moto upgrade that drops
one shows): a DynamoDB item over 400 KB (PutItem, UpdateItem, and inside TransactWriteItems:
`ValidationException: Item size has exceeded the maximum allowed size`), a TransactWriteItems
of more than 100 items (`ValidationException`), and a Step Functions state's output or task
result over 256 KiB (the execution fails with `States.DataLimitExceeded`).

What this module adds:
- DynamoDB: a TransactWriteItems whose items together exceed 4 MB is refused with
  `ValidationException` (DynamoDB's aggregate limit on a transaction).
The Lambda payload limits (6 MB synchronous, 1 MB asynchronous) are in invoke.py, on the
invokes the state machines make. The HTTP routes are served by `cargo lambda watch` itself,
whose answers never pass through this emulator: their 6 MB limit (the whole API Gateway
answer JSON) can only be checked in front of `cargo lambda watch` (a proxy on the API port)
or by the tests that read the routes' answers.
"""

from __future__ import annotations

import base64
import json
from typing import Any

#: DynamoDB's limit on the items of one TransactWriteItems together.
TRANSACTION_BYTES_LIMIT = 4 * 1024 * 1024


def attribute_size(value: dict) -> int:
    """The size DynamoDB counts for one attribute value (its name not included)."""
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(base64.b64decode(inner)) if isinstance(inner, str) else len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(attribute_size({"N": n}) for n in inner)
    if kind == "BS":
        return sum(attribute_size({"B": b}) for b in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + attribute_size(v) for k, v in inner.items())
    return len(json.dumps(inner))


def item_size(item: dict) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def transaction_size(request: dict) -> int:
    """What a TransactWriteItems writes, as DynamoDB sizes it: each Put's item, each other
    action's key and the values it sets."""
    total = 0
    for entry in request.get("TransactItems", []):
        for kind, action in entry.items():
            if kind == "Put":
                total += item_size(action.get("Item", {}))
            else:
                total += item_size(action.get("Key", {}))
                total += sum(attribute_size(v) for v in action.get("ExpressionAttributeValues", {}).values())
    return total


def _validation_error(message: str) -> tuple[int, dict, str]:
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "limits"}
    body = {"__type": "com.amazon.coral.validate#ValidationException", "message": message}
    return 400, headers, json.dumps(body)


def check_dynamodb(operation: str, raw_body: str) -> tuple[int, dict, str] | None:
    """DynamoDB's answer to a request over a limit moto does not enforce, or None."""
    if operation != "TransactWriteItems":
        return None
    try:
        request = json.loads(raw_body or "{}")
        size = transaction_size(request)
    except (ValueError, AttributeError, TypeError):
        return None  # malformed: moto answers it
    if size > TRANSACTION_BYTES_LIMIT:
        return _validation_error(
            f"Transaction request cannot be larger than 4 MB (this one is {size} bytes)"
        )
    return None


_installed = False


def install() -> None:
    """Hooks moto's DynamoDB handler (stack.py serve, always: limits hold in `make dev`)."""
    global _installed
    if _installed:
        return
    _installed = True
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    def call_action(self: Any):
        operation = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
        if operation == "TransactWriteItems":
            raw = self.raw_body
            raw_body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
            refused = check_dynamodb(operation, raw_body)
            if refused is not None:
                return refused
        return original(self)

    DynamoHandler.call_action = call_action

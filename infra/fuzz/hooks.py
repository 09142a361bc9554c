"""Schemathesis hooks for fuzzing the local stack (loaded through SCHEMATHESIS_HOOKS).

Bodies that are not valid UTF-8 are left out. With a textual content type, `cargo lambda
watch` refuses such a body itself, with its own 500, before any function runs (even without
a cookie), so the fuzzer would be testing the local emulator rather than the functions. On
AWS, API Gateway hands the function the body, and the functions answer 400 for bytes that
are not JSON: `JsonObject::from_request` has unit tests for binary and invalid bodies, and
the fuzzer still sends such bytes with content types `cargo lambda watch` passes through.

Waiting transcript reads are bounded: a valid `waitSeconds` above 1 is sent as 1, so a read of
a real session (the stateful phase links them) with a random cursor waits at most a second
rather than up to 20 for each example. Values outside 0-20 and values that are not whole
numbers are sent as generated (the 400 they earn is checked); the long waits themselves are
covered by tests/tests/routes/transcript.rs.
"""

import schemathesis


def _is_utf8(body) -> bool:
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


@schemathesis.hook
def filter_body(ctx, body) -> bool:
    return _is_utf8(body)


@schemathesis.hook
def map_query(ctx, query):
    wait = query.get("waitSeconds") if isinstance(query, dict) else None
    if isinstance(wait, int) and not isinstance(wait, bool) and 1 < wait <= 20:
        query = {**query, "waitSeconds": 1}
    return query

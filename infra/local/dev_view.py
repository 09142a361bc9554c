"""What `make dev` shows after its banner: one readable line per request and per turn event,
read from the services' log as it grows (`dev_view.py --follow .local/dev.log`); everything else the
services print (instances starting, the emulator's own lines) stays in the log file.

    12:01:02.345  POST /api/managed-agents/session      200  118 ms
    12:01:02.401  session 7c8e6753 created (run 1cc94e16)
    12:01:05.870  session 7c8e6753 turn finished (end_turn... tokens 412 in / 96 out)
    12:01:06.002  session 7c8e6753 run ended: idle
    12:01:09.113  WARN  the run could not be woken ...
"""

from __future__ import annotations

import re
import sys
import time
from typing import Iterable, Iterator

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINE = re.compile(r"^(?P<at>\d{4}-\d\d-\d\dT(?P<time>\d\d:\d\d:\d\d(?:\.\d{1,3})?)\d*Z)\s+"
                  r"(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)\s+(?P<rest>.*)$")
REQUEST = re.compile(r"\brequest status=(?P<status>\d+) .*?latency_ms=(?P<ms>[\d.]+).*?"
                     r"\broute=(?P<route>.+?)(?: user=.*)?$")
CREATED = re.compile(r"\bsession created session_id=(?P<session>[0-9a-f-]+) run_id=(?P<run>[0-9a-f-]+)")
WORKER = re.compile(r"\bworker request=WorkerRequest \{ session_id: \"(?P<session>[0-9a-f-]+)\".*"
                    r"answer=WorkerResponse \{ outcome: (?P<outcome>\w+), input_tokens: (?P<input>\d+), "
                    r"output_tokens: (?P<output>\d+) \}")
CHECKER = re.compile(r"\bchecker request=\w+ \{ session_id: \"(?P<session>[0-9a-f-]+)\".*"
                     r"response=CheckerResponse \{ next: (?P<next>\w+), outcome: (?P<outcome>\w+) \}")
#: What the message of a WARN or ERROR line keeps: its text before the span's fields.
NOISE = re.compile(r"\s+(requestId|xrayTraceId|request_id|route|user)=.*$")

#: WARN lines that say nothing about the system: `cargo lambda watch` sets
#: AWS_LAMBDA_MAX_CONCURRENCY, and the runtime warns once per instance that it serves one
#: request at a time (as Lambda does).
IGNORED = ("AWS_LAMBDA_MAX_CONCURRENCY",)

WORKER_OUTCOMES = {
    "Finished": "turn finished",
    "Failed": "turn failed",
    "Stopped": "worker stopped (the turn is no longer its own)",
}


def short(session_id: str) -> str:
    """The first block of a UUID: enough to tell sessions apart on one screen."""
    return session_id.split("-", 1)[0]


def view(line: str) -> str | None:
    """The one line to show for a log line, or None for a line not worth a line."""
    line = ANSI.sub("", line.rstrip("\n"))
    match = LINE.match(line)
    if not match:
        return None
    at, level, rest = match.group("time")[:12], match.group("level"), match.group("rest")
    if request := REQUEST.search(rest):
        route = request.group("route").strip().strip('"')
        ms = float(request.group("ms"))
        return f"{at}  {route:<40} {request.group('status')}  {ms:.0f} ms"
    if created := CREATED.search(rest):
        return f"{at}  session {short(created.group('session'))} created (run {short(created.group('run'))})"
    if worker := WORKER.search(rest):
        what = WORKER_OUTCOMES.get(worker.group("outcome"))
        if what is None:
            return None  # NotClaimed: a second delivery that did nothing
        tokens = f"tokens {worker.group('input')} in / {worker.group('output')} out"
        return f"{at}  session {short(worker.group('session'))} {what} ({tokens})"
    if checker := CHECKER.search(rest):
        session = short(checker.group("session"))
        if checker.group("next") == "Stop":
            return f"{at}  session {session} run ended: {checker.group('outcome').lower()}"
        if checker.group("next") == "StartWorker":
            return f"{at}  session {session} next turn started"
        return None  # a poll that goes on: every interval, not worth a line
    if level in ("WARN", "ERROR") and not any(text in rest for text in IGNORED):
        message = NOISE.sub("", rest)
        message = re.sub(r"^Lambda runtime invoke(:request)?:\s*", "", message)
        return f"{at}  {level:<5} {message[:160]}"
    return None


def lines(stream: Iterable[str]) -> Iterator[str]:
    """The lines to show for a stream of log lines."""
    for line in stream:
        shown = view(line)
        if shown is not None:
            yield shown


def follow(path: str, poll_seconds: float = 0.1) -> Iterator[str]:
    """The lines appended to `path` from now on, as they come (`tail -F` in one process, so
    that the kernel's parent-death signal that `run.sh` asks for reaches the whole viewer)."""
    with open(path, encoding="utf-8", errors="replace") as log:
        log.seek(0, 2)
        pending = ""
        while True:
            chunk = log.readline()
            if not chunk:
                time.sleep(poll_seconds)
                continue
            pending += chunk
            if pending.endswith("\n"):
                yield pending
                pending = ""


def main() -> None:
    """`dev_view.py --follow LOG` follows the log; without it, reads standard input."""
    source = follow(sys.argv[2]) if sys.argv[1:2] == ["--follow"] else sys.stdin
    try:
        for shown in lines(source):
            print(shown, flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass


if __name__ == "__main__":
    main()

"""The Lambda Invoke the local Step Functions interpreter makes, as AWS Lambda answers it.

moto's interpreter calls `lambda_eval_utils._invoke_lambda_function` for every Lambda task;
stack.py replaces it with `LambdaInvoker.invoke`, which sends a plain HTTP Invoke to
`cargo lambda watch` and answers as AWS Lambda and Step Functions would:

- A function error: `cargo lambda watch` answers 500 with the error JSON; AWS answers 200
  with `X-Amz-Function-Error`, and Step Functions names the failure after its `errorType`.
- Concurrency. Every function has `concurrency` slots (what `cargo lambda watch
  --concurrency` gives it: 8 in `make dev`, 16 in `make test`). An invoke takes a slot for
  as long as its HTTP request is open; one that finds none free is refused at once with
  `TooManyRequestsException` (429), which the interpreter names
  `Lambda.TooManyRequestsException` (it prefixes the ClientError code with `Lambda.`) and the
  states' Retry resends after its interval. AWS refuses a synchronous invoke over the
  function's concurrency the same way; nothing is queued behind a busy function.
- A synchronous invoke is waited for no longer than its task can wait: the task's timeout
  (`TimeoutSeconds`/`TimeoutSecondsPath`: the Poll task's `pollSeconds`), counted from when
  the invoke starts. moto gives up on a task at its timeout but leaves the thread that runs
  it alone; that thread used to wait for the function however long it took, and a checker
  slower than the poll interval added one more waiting invoke every cycle of every run,
  without end. Now the task's thread is released at its timeout (the already discarded
  attempt sees `Lambda.ServiceException`), while the HTTP request itself runs on in a
  thread of its own, holding the function's slot until the function answers. That is how
  AWS counts concurrency (a running invocation is counted until it ends, whether or not
  anyone still waits for it), and it is what makes the bound real: `cargo lambda watch`
  does not drop an invocation whose caller hung up (seen: a checker invocation run 17 s
  after its caller had closed the connection, its answer then refused with a 500), so
  closing the connection would only move the unbounded queue into `cargo lambda watch`.
- An asynchronous invoke (the worker start: `InvocationType: Event`, recognised by the
  function's name since moto drops that parameter) is answered 202 at once and queued, as
  AWS queues it; a dispatcher per function delivers queued events whenever a slot is free
  (the function's own timeout bounds each delivery). The queue holds at most
  `queue_limit` events; beyond it the invoke is refused with `TooManyRequestsException`.
  Chaos (chaos.py) may deliver an event twice or late, as AWS may. An event whose
  function fails (a function error, or no answer) is delivered again up to the function's
  `EventInvokeConfig.MaximumRetryAttempts` (`async_retries`, AWS's default 2), after
  `ASYNC_RETRY_DELAYS` (AWS waits about a minute, then two; locally one and two seconds, so
  a bounded test sees the retries), then dropped, as AWS drops it.
- Limits: a synchronous response over 6,291,556 bytes becomes the function error AWS
  gives (`Function.ResponseSizeTooLarge`); a request over 6,291,556 bytes (synchronous) or
  1,048,576 bytes (asynchronous) is refused with `RequestEntityTooLargeException` (413).

So what bounds the pending invokes: per function, at most `concurrency` HTTP requests to
`cargo lambda watch` are open at any moment (sync and async together), each for at most the
function's timeout, and no interpreter thread waits on one longer than its task's timeout;
queued asynchronous events are data only, at most `queue_limit` of them; everything over
that is refused at once (Lambda.TooManyRequestsException).
"""

from __future__ import annotations

import heapq
import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

#: AWS Lambda's limit on a synchronous invoke's request and response (6 MB, as AWS counts).
SYNC_PAYLOAD_LIMIT = 6_291_556
#: AWS Lambda's limit on an asynchronous invoke's payload (1 MB since 2025).
ASYNC_PAYLOAD_LIMIT = 1_048_576
#: Concurrency of each function unless told otherwise (`cargo lambda watch`'s in `make dev`).
DEFAULT_CONCURRENCY = 8
#: Queued asynchronous events per function beyond which an Event invoke is refused.
DEFAULT_QUEUE_LIMIT = 1000
#: How long an invoke may run when its task sets no timeout: the functions' Lambda timeout.
FUNCTION_TIMEOUT_SECS = 900
#: Retries of a failed asynchronous event when its function sets none (AWS's default).
DEFAULT_ASYNC_RETRIES = 2
#: Seconds before the first and the later retries of a failed asynchronous event.
ASYNC_RETRY_DELAYS = (1.0, 2.0)


def client_error(code: str, message: str, status: int, operation: str = "Invoke"):
    """A botocore ClientError as the Lambda client raises it for `code`."""
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "local"},
        },
        operation,
    )


def too_many_requests(name: str):
    return client_error(
        "TooManyRequestsException",
        f"Rate Exceeded. (function {name}: every one of its concurrent executions is busy)",
        429,
    )


def service_fault(message: str, status: int = 500):
    return client_error("ServiceException", message, status)


class Slots:
    """Per-function count of open invokes, bounded by `limit`; taking one never waits."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("concurrency must be at least 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def take(self, name: str) -> bool:
        with self._lock:
            held = self._open.get(name, 0)
            if held >= self.limit:
                self.refused[name] = self.refused.get(name, 0) + 1
                return False
            self._open[name] = held + 1
            self.peak[name] = max(self.peak.get(name, 0), held + 1)
            return True

    def give_back(self, name: str) -> None:
        with self._lock:
            self._open[name] -= 1

    def open(self, name: str) -> int:
        with self._lock:
            return self._open.get(name, 0)


class _Queue:
    """One function's queued asynchronous events and the thread that delivers them."""

    def __init__(self, invoker: "LambdaInvoker", name: str):
        self.invoker, self.name = invoker, name
        self.events: list[tuple[float, int, bytes, int]] = []  # (due, seq, payload, attempt)
        self.seq = 0
        self.changed = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name=f"async-{name}").start()

    def put(self, payload: bytes, delay: float, attempt: int = 0) -> bool:
        with self.changed:
            if len(self.events) >= self.invoker.queue_limit:
                return False
            self.seq += 1
            heapq.heappush(self.events, (time.monotonic() + delay, self.seq, payload, attempt))
            self.changed.notify()
            return True

    def __len__(self) -> int:
        with self.changed:
            return len(self.events)

    def _run(self) -> None:
        while True:
            with self.changed:
                while not self.events or self.events[0][0] > time.monotonic():
                    wait = self.events[0][0] - time.monotonic() if self.events else None
                    self.changed.wait(wait)
                _, _, payload, attempt = self.events[0]
                if not self.invoker.slots.take(self.name):
                    # Every slot is busy: AWS keeps the event and tries again a little later.
                    self.changed.wait(0.05)
                    continue
                heapq.heappop(self.events)
            threading.Thread(target=self._deliver, args=(payload, attempt), daemon=True).start()

    def _deliver(self, payload: bytes, attempt: int) -> None:
        try:
            self.invoker._post(self.name, payload, FUNCTION_TIMEOUT_SECS)
        except (urllib.error.HTTPError, OSError) as error:
            retries = self.invoker.async_retries.get(self.name, DEFAULT_ASYNC_RETRIES)
            if attempt < retries:
                delay = ASYNC_RETRY_DELAYS[min(attempt, len(ASYNC_RETRY_DELAYS) - 1)]
                if self.put(payload, delay, attempt + 1):
                    print(f"stack: asynchronous invoke of {self.name} failed ({error}); "
                          f"retry {attempt + 1} of {retries} in {delay:.0f} s", flush=True)
                    return
            # Dropped, as AWS drops it after its retries.
            print(f"stack: asynchronous invoke of {self.name} failed: {error}; dropped", flush=True)
        finally:
            self.invoker.slots.give_back(self.name)


class LambdaInvoker:
    """Invokes the functions `cargo lambda watch` serves at `endpoint` as AWS Lambda would
    for Step Functions (module docstring). `chaos`, when given, is consulted for Lambda
    faults (chaos.py)."""

    def __init__(
        self,
        endpoint: str,
        asynchronous: set[str],
        concurrency: int = DEFAULT_CONCURRENCY,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        chaos: Any = None,
        async_retries: dict[str, int] | None = None,
    ):
        self.endpoint = endpoint.rstrip("/")
        self.asynchronous = set(asynchronous)
        self.slots = Slots(concurrency)
        self.queue_limit = queue_limit
        self.chaos = chaos
        self.async_retries = dict(async_retries or {})
        self._queues: dict[str, _Queue] = {}
        self._queues_lock = threading.Lock()

    def _post(self, name: str, payload: bytes, timeout: float) -> bytes:
        request = urllib.request.Request(
            f"{self.endpoint}/2015-03-31/functions/{urllib.parse.quote(name, safe='')}/invocations",
            data=payload,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def queued(self, name: str) -> int:
        queue = self._queues.get(name)
        return len(queue) if queue else 0

    def _queue(self, name: str) -> _Queue:
        with self._queues_lock:
            if name not in self._queues:
                self._queues[name] = _Queue(self, name)
            return self._queues[name]

    def invoke(self, parameters: dict, timeout: float | None = None) -> dict:
        """One Invoke, as the interpreter's Lambda client would answer it; `timeout` is how
        long the calling task can still wait (None: the function's timeout)."""
        name = parameters["FunctionName"]
        payload = parameters.get("Payload") or b"{}"
        if isinstance(payload, str):
            payload = payload.encode()
        chaos = self.chaos
        if parameters.get("InvocationType") == "Event" or name in self.asynchronous:
            if len(payload) > ASYNC_PAYLOAD_LIMIT:
                raise client_error(
                    "RequestEntityTooLargeException",
                    f"Request must be smaller than {ASYNC_PAYLOAD_LIMIT} bytes for the Invoke operation",
                    413,
                )
            deliveries = [0.0]
            if chaos is not None:
                chaos.lambda_invoke_fault(name, payload)  # raises Lambda.ServiceException
                deliveries = chaos.async_deliveries(name, payload)
            queue = self._queue(name)
            for delay in deliveries:
                if not queue.put(payload, delay):
                    raise too_many_requests(name)
            return {"StatusCode": 202, "Payload": ""}

        if len(payload) > SYNC_PAYLOAD_LIMIT:
            raise client_error(
                "RequestEntityTooLargeException",
                f"Request must be smaller than {SYNC_PAYLOAD_LIMIT} bytes for the Invoke operation",
                413,
            )
        if chaos is not None:
            chaos.lambda_invoke_fault(name, payload)
            error = chaos.function_error(name, payload)
            if error is not None:
                return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": error}
        wait = FUNCTION_TIMEOUT_SECS if timeout is None else min(timeout, FUNCTION_TIMEOUT_SECS)
        if wait <= 0:
            raise service_fault(f"the task's time was up before {name} was invoked", 504)
        if not self.slots.take(name):
            raise too_many_requests(name)
        # The request runs in a thread of its own, which holds the slot until the function
        # has answered (as AWS counts a running invocation against the concurrency, whoever
        # still waits for it); the task waits for it only as long as it can.
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                outcome["body"] = self._post(name, payload, FUNCTION_TIMEOUT_SECS)
            except urllib.error.HTTPError as error:
                outcome["http_error"] = (error.code, error.read())
            except OSError as error:
                outcome["os_error"] = error
            finally:
                self.slots.give_back(name)
                done.set()

        threading.Thread(target=run, daemon=True, name=f"invoke-{name}").start()
        # The task's own timeout (moto's timer: `States.Timeout`, which the Poll step's Catch
        # takes to its next poll, as on AWS) must win the race; the thread lets go only
        # ABANDON_GRACE_SECS after it, when moto has already discarded this attempt.
        if not done.wait(wait + (ABANDON_GRACE_SECS if timeout is not None else 0)):
            # The task has given up: so does its invoke (the function runs on, in its slot).
            raise service_fault(f"invoke of {name} abandoned: its task's timeout ({wait:.1f} s) is up", 504)
        if "http_error" in outcome:
            code, body = outcome["http_error"]
            try:
                answer = json.loads(body)
            except ValueError:
                answer = None
            if code >= 500 and isinstance(answer, dict) and "errorType" in answer:
                return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": answer}
            raise service_fault(f"HTTP {code}: {body[:200]!r}", code)
        if "os_error" in outcome:
            raise service_fault(f"invoke of {name} failed: {outcome['os_error']}", 503)
        body = outcome["body"]
        if len(body) > SYNC_PAYLOAD_LIMIT:
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": {
                    "errorType": "Function.ResponseSizeTooLarge",
                    "errorMessage": "Response payload size exceeded maximum allowed payload size "
                    f"({SYNC_PAYLOAD_LIMIT} bytes).",
                },
            }
        from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

        return {"StatusCode": 200, "Payload": lambda_eval_utils._from_payload(io.BytesIO(body))}


#: How long after its task's timeout a synchronous invoke's waiting thread lets go: long enough
#: for moto's own timer to end the task first (a checker slower than the poll interval must
#: be a `States.Timeout`, looping to the next poll, never a `Lambda.ServiceException` that
#: the Retry counts and that ends the run after a few slow polls).
ABANDON_GRACE_SECS = 1.0

#: The task a Lambda invoke runs for, per thread: (seconds it may still wait, from when).
_task = threading.local()


def install(invoker: LambdaInvoker) -> Callable[[], None]:
    """Makes moto's interpreter invoke through `invoker`, each synchronous invoke bounded by
    its task's timeout; answers a function that undoes it (tests)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_lambda as service_lambda,
    )

    cls = service_lambda.StateTaskServiceLambda
    original_task = cls._eval_service_task
    original_invoke = lambda_eval_utils._invoke_lambda_function

    def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        # The task's timeout, evaluated as the interpreter does before it starts the task
        # (moto runs this in the thread it stops waiting for at that timeout).
        # It starts a little after moto's own clock (by the time the parameters take to
        # evaluate), so the invoke is abandoned at most that little after the task gave up.
        try:
            self.timeout.eval(env=env)
            _task.budget = (float(env.stack.pop()), time.monotonic())
        except Exception:  # noqa: BLE001 - the task itself reports a bad timeout path
            _task.budget = None
        try:
            return original_task(self, env, resource_runtime_part, normalised_parameters, state_credentials)
        finally:
            _task.budget = None

    def invoke(parameters: dict, region: str, state_credentials) -> dict:
        budget = getattr(_task, "budget", None)
        timeout = None if budget is None else budget[0] - (time.monotonic() - budget[1])
        return invoker.invoke(parameters, timeout)

    cls._eval_service_task = _eval_service_task
    lambda_eval_utils._invoke_lambda_function = invoke

    def undo() -> None:
        cls._eval_service_task = original_task
        lambda_eval_utils._invoke_lambda_function = original_invoke

    return undo

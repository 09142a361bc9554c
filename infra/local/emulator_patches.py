"""What the project's emulator adds to moto, installed by `stack.py serve`:

- patches to moto's handlers: DynamoDB requests applied one at a time, as DynamoDB applies
  each atomically (`serialise_dynamodb`); results moto recomputes on every request kept
  (`cache_what_moto_recomputes`); planted DynamoDB faults (`inject_dynamodb_faults`,
  faults.py); the state machines' Lambda calls sent to `cargo lambda watch` and answered as AWS
  Lambda answers, with its concurrency bound (`report_function_errors_as_aws_lambda_does`,
  invoke.py);
- stand-ins for what moto does not run: EventBridge's schedules (`run_schedules`) and its
  Step Functions execution-status rules (`run_execution_status_rules`), as template.yaml
  declares them (sam_template.py).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from sam_template import MOTO_ACCOUNT, REGION, async_retries, load_template, state_machine_arn, table_name


def scheduled_event() -> bytes:
    """The event EventBridge sends a function its schedule runs."""
    import datetime
    import json
    import uuid

    return json.dumps({
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/local-schedule"],
        "detail": {},
    }).encode()


def run_schedules(lambda_endpoint: str, periods: dict[str, int], stop: threading.Event) -> None:
    """Invokes each scheduled function at its rate, as EventBridge would, until `stop`."""
    import urllib.error
    import urllib.request

    def every(name: str, period: int) -> None:
        while not stop.wait(period):
            request = urllib.request.Request(
                f"{lambda_endpoint}/2015-03-31/functions/{name}/invocations",
                data=scheduled_event(),
                method="POST",
            )
            try:
                # The function logs what it did; only a failure is worth a line here.
                with urllib.request.urlopen(request, timeout=period) as response:
                    response.read()
            except (urllib.error.HTTPError, OSError) as error:
                print(f"stack: scheduled {name} failed: {error}", flush=True)

    for name, period in periods.items():
        threading.Thread(target=every, args=(name, period), daemon=True).start()


def execution_status_event(execution: dict, state_machine_arn_: str) -> bytes:
    """The event EventBridge sends for a Step Functions execution's status change."""
    import datetime
    import json
    import uuid

    def millis(value):
        return int(value.timestamp() * 1000) if value is not None else None

    return json.dumps({
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": MOTO_ACCOUNT,
        "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [execution["executionArn"]],
        "detail": {
            "executionArn": execution["executionArn"],
            "stateMachineArn": state_machine_arn_,
            "name": execution["name"],
            "status": execution["status"],
            "startDate": millis(execution.get("startDate")),
            "stopDate": millis(execution.get("stopDate")),
            "input": execution.get("input"),
            "output": execution.get("output"),
        },
    }).encode()


#: How often the local stand-in for an execution-status rule looks for executions that ended.
EXECUTION_RULE_PERIOD_S = 0.5


def run_execution_status_rules(
    endpoint: str, invoker, prefix: str, rules: list[dict], stop: threading.Event
) -> None:
    """Stands in for EventBridge's Step Functions rules (`execution_status_rules`): every
    `EXECUTION_RULE_PERIOD_S`, each execution of the rule's state machines that has reached one
    of its statuses since is delivered once to the rule's function as an asynchronous invoke
    through `invoker` (invoke.py, so the stack's bounds and fault schedule apply), until
    `stop`. A delivery that fails is tried again the next round, as EventBridge retries."""
    import boto3

    sfn = boto3.client(
        "stepfunctions", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="local", aws_secret_access_key="local",
    )
    seen: set[tuple[str, str]] = set()

    def deliver(function: str, body: bytes) -> None:
        invoker.invoke({"FunctionName": function, "InvocationType": "Event", "Payload": body})

    def loop() -> None:
        while not stop.wait(EXECUTION_RULE_PERIOD_S):
            for rule in rules:
                for logical_id in rule["state_machines"]:
                    arn = state_machine_arn(REGION, table_name(prefix, logical_id))
                    for status in rule["statuses"]:
                        try:
                            pages = sfn.get_paginator("list_executions").paginate(
                                stateMachineArn=arn, statusFilter=status
                            )
                            ended = [e for page in pages for e in page["executions"]]
                        except Exception as error:  # the emulator is stopping, or not up yet
                            print(f"stack: execution rule: {error}", flush=True)
                            continue
                        for execution in ended:
                            key = (rule["function"], execution["executionArn"])
                            if key in seen:
                                continue
                            try:
                                described = sfn.describe_execution(executionArn=execution["executionArn"])
                                deliver(rule["function"], execution_status_event(described, arn))
                            except Exception as error:
                                # EventBridge retries a failed delivery; so does the next round.
                                print(f"stack: execution rule for {rule['function']}: {error}", flush=True)
                                continue
                            seen.add(key)

    threading.Thread(target=loop, name="execution-status-rules", daemon=True).start()


def cache_what_moto_recomputes() -> None:
    """moto's Step Functions interpreter builds a new JSONPath parser (a yacc table) for every
    path it evaluates, and its server lists moto's package directory on every request: under a
    60-session chaos run that was a fifth of the emulator's CPU (py-spy, 2026-12-02). Both
    results never change for a given input, so they are kept; nothing moto answers changes."""
    import functools

    import moto.backends
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    json_path.parse = functools.lru_cache(maxsize=4096)(json_path.parse)
    result_path.parse = functools.lru_cache(maxsize=4096)(result_path.parse)
    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules


def serialise_dynamodb() -> None:
    """Real DynamoDB applies each request to an item atomically. moto's Python handlers can be
    interleaved between threads, so every DynamoDB request is run under one lock. Races in the
    code under test (read-then-write, lost updates across requests) still show: only the
    emulator's own, single-request atomicity is made dependable."""
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    original = DynamoHandler.call_action

    def call_action(self):
        with lock:
            return original(self)

    DynamoHandler.call_action = call_action


def inject_dynamodb_faults() -> None:
    """With --fault-injection: tests may plant DynamoDB faults over HTTP on the emulator's
    port (`/_knoq/faults`, see infra/local/faults.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import faults

    faults.install()


def report_function_errors_as_aws_lambda_does(
    lambda_endpoint: str, asynchronous: set[str], concurrency: int, chaos=None
):
    """The interpreter's Lambda call is replaced by a plain HTTP Invoke to `cargo lambda
    watch` that answers as AWS Lambda does (infra/local/invoke.py): a function error as 200
    with `X-Amz-Function-Error` (`cargo lambda watch` answers 500), which Step Functions names
    after its `errorType`; anything else that fails as a Lambda service fault
    (`Lambda.ServiceException`); an invoke over the function's `concurrency` refused at once
    with `Lambda.TooManyRequestsException`; a synchronous invoke abandoned when its task's
    timeout is up; an asynchronous one answered 202 at once and queued. Answers the
    invoker."""
    import invoke

    invoker = invoke.LambdaInvoker(
        lambda_endpoint, asynchronous, concurrency, chaos=chaos, async_retries=async_retries(load_template())
    )
    invoke.install(invoker)
    return invoker

"""The local Step Functions' Lambda invokes push back as AWS does (infra/local/invoke.py):
bounded per function, refused with Lambda's own error beyond the bound, abandoned when their
task gives up, and held to Lambda's payload limits.

Run by `make test` (python -m unittest discover -s infra/local).
"""

import json
import select
import socket
import threading
import time
import unittest
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.exceptions import ClientError

import invoke


class FakeWatch:
    """A stand-in for `cargo lambda watch`: function `slow` answers after `slow_seconds`
    (and stops as soon as its caller hangs up), `fast` at once, `big` with `big_size` bytes,
    `fail` with the 500 `cargo lambda watch` gives a function error. Counts what is open."""

    def __init__(self, slow_seconds: float = 3.0):
        self.slow_seconds = slow_seconds
        self.big_size = 0
        self.lock = threading.Lock()
        self.open = {}
        self.peak = {}
        self.calls = {}
        self.bodies = []
        watch = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                name = self.path.split("/")[3]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with watch.lock:
                    watch.open[name] = watch.open.get(name, 0) + 1
                    watch.peak[name] = max(watch.peak.get(name, 0), watch.open[name])
                    watch.calls[name] = watch.calls.get(name, 0) + 1
                    watch.bodies.append((name, body))
                try:
                    status, answer = 200, b'{"ok":true}'
                    if name == "slow":
                        if not self._wait_unless_hung_up(watch.slow_seconds):
                            return
                    elif name == "big":
                        answer = b'"' + b"a" * (watch.big_size - 2) + b'"'
                    elif name == "fail":
                        status, answer = 500, b'{"errorType":"Knoq.StoreError","errorMessage":"x"}'
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                finally:
                    with watch.lock:
                        watch.open[name] -= 1

            def _wait_unless_hung_up(self, seconds: float) -> bool:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    readable, _, _ = select.select([self.connection], [], [], 0.02)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        return False  # the caller closed the connection
                return True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class InvokerTest(unittest.TestCase):
    def setUp(self):
        self.watch = FakeWatch(slow_seconds=2.0)
        self.addCleanup(self.watch.close)
        self.invoker = invoke.LambdaInvoker(self.watch.url, {"worker"}, concurrency=2)

    def test_an_invoke_over_the_concurrency_is_refused_at_once_with_lambdas_429(self):
        threads = [threading.Thread(target=self._swallow, args=({"FunctionName": "slow"}, 5)) for _ in range(2)]
        for thread in threads:
            thread.start()
        while self.invoker.slots.open("slow") < 2:
            time.sleep(0.01)
        started = time.monotonic()
        with self.assertRaises(ClientError) as refused:
            self.invoker.invoke({"FunctionName": "slow"}, 5)
        self.assertLess(time.monotonic() - started, 0.2, "refused at once, not queued")
        error = refused.exception.response
        self.assertEqual((error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]),
                         ("TooManyRequestsException", 429))
        # ...which the interpreter names Lambda.TooManyRequestsException, as Retry matches it.
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
            StateTaskServiceLambda,
        )

        name, _ = StateTaskServiceLambda._error_cause_from_client_error(refused.exception)
        self.assertEqual(name, "Lambda.TooManyRequestsException")
        # Another function has slots of its own.
        self.assertEqual(self.invoker.invoke({"FunctionName": "fast"}, 5)["Payload"], {"ok": True})
        for thread in threads:
            thread.join()
        self.assertEqual(self.invoker.slots.open("slow"), 0)

    def _swallow(self, parameters, timeout):
        try:
            self.invoker.invoke(parameters, timeout)
        except ClientError:
            pass

    def test_a_synchronous_invoke_is_abandoned_when_its_task_stops_waiting(self):
        started = time.monotonic()
        with self.assertRaises(ClientError) as abandoned:
            self.invoker.invoke({"FunctionName": "slow"}, 0.3)
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 0.3 + invoke.ABANDON_GRACE_SECS - 0.05, "moto's timer goes first")
        self.assertLess(waited, 0.3 + invoke.ABANDON_GRACE_SECS + 0.7, "then the task's thread is released")
        self.assertEqual(abandoned.exception.response["Error"]["Code"], "ServiceException")
        # The function runs on, and counts against the concurrency until it answers, as in AWS
        # (cargo lambda watch would run it anyway: closing the connection frees nothing).
        self.assertEqual(self.invoker.slots.open("slow"), 1)
        deadline = time.monotonic() + 5
        while self.invoker.slots.open("slow") and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.invoker.slots.open("slow"), 0, "its slot is free once the function answered")
        with self.assertRaises(ClientError):
            self.invoker.invoke({"FunctionName": "fast"}, 0)  # no time left: not even sent

    def test_a_function_error_is_answered_as_aws_lambda_answers_it(self):
        answer = self.invoker.invoke({"FunctionName": "fail"}, 5)
        self.assertEqual((answer["StatusCode"], answer["FunctionError"]), (200, "Unhandled"))
        self.assertEqual(answer["Payload"]["errorType"], "Knoq.StoreError")

    def test_an_asynchronous_invoke_is_answered_202_at_once_and_delivered_within_the_bound(self):
        for _ in range(5):
            started = time.monotonic()
            answer = self.invoker.invoke({"FunctionName": "worker", "Payload": b'{"n":1}'}, 5)
            self.assertEqual(answer["StatusCode"], 202)
            self.assertLess(time.monotonic() - started, 0.2)
        deadline = time.monotonic() + 5
        while self.watch.calls.get("worker", 0) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.watch.calls.get("worker"), 5)
        self.assertLessEqual(self.invoker.slots.peak["worker"], 2)

    def test_a_failed_asynchronous_event_is_retried_as_its_function_says_then_dropped(self):
        invoker = invoke.LambdaInvoker(self.watch.url, set(), concurrency=2, async_retries={"fail": 1})
        self.assertEqual(invoker.invoke({"FunctionName": "fail", "InvocationType": "Event"})["StatusCode"], 202)
        self.assertEqual(invoker.invoke({"FunctionName": "fast", "InvocationType": "Event"})["StatusCode"], 202)
        deadline = time.monotonic() + invoke.ASYNC_RETRY_DELAYS[0] + 3
        while self.watch.calls.get("fail", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(max(invoke.ASYNC_RETRY_DELAYS) + 0.5)  # a further retry would be in by now
        self.assertEqual(self.watch.calls.get("fail"), 2, "delivered once, retried once, then dropped")
        self.assertEqual(self.watch.calls.get("fast"), 1, "an event that succeeded is not sent again")
        self.assertEqual(invoker.queued("fail"), 0)
        self.assertEqual(invoke.DEFAULT_ASYNC_RETRIES, 2, "AWS's default for a function that sets none")

    def test_a_full_asynchronous_queue_refuses_with_429(self):
        invoker = invoke.LambdaInvoker(self.watch.url, {"slow"}, concurrency=1, queue_limit=2)
        accepted = 0
        with self.assertRaises(ClientError) as refused:
            for _ in range(10):
                invoker.invoke({"FunctionName": "slow"}, 5)
                accepted += 1
        self.assertEqual(refused.exception.response["Error"]["Code"], "TooManyRequestsException")
        self.assertLessEqual(accepted, 3, "one delivering, two queued")

    def test_payloads_over_lambdas_limits(self):
        with self.assertRaises(ClientError) as too_big:
            self.invoker.invoke({"FunctionName": "worker", "Payload": b"x" * (invoke.ASYNC_PAYLOAD_LIMIT + 1)})
        self.assertEqual(too_big.exception.response["Error"]["Code"], "RequestEntityTooLargeException")
        self.assertEqual(too_big.exception.response["ResponseMetadata"]["HTTPStatusCode"], 413)
        self.assertEqual(self.invoker.invoke({"FunctionName": "worker", "Payload": b"x" * 1000})["StatusCode"], 202)
        with self.assertRaises(ClientError) as too_big:
            self.invoker.invoke({"FunctionName": "fast", "Payload": b"x" * (invoke.SYNC_PAYLOAD_LIMIT + 1)})
        self.assertEqual(too_big.exception.response["Error"]["Code"], "RequestEntityTooLargeException")
        self.watch.big_size = invoke.SYNC_PAYLOAD_LIMIT
        self.assertEqual(len(self.invoker.invoke({"FunctionName": "big"}, 10)["Payload"]),
                         invoke.SYNC_PAYLOAD_LIMIT - 2)
        self.watch.big_size = invoke.SYNC_PAYLOAD_LIMIT + 1
        answer = self.invoker.invoke({"FunctionName": "big"}, 10)
        self.assertEqual(answer["FunctionError"], "Unhandled")
        self.assertEqual(answer["Payload"]["errorType"], "Function.ResponseSizeTooLarge")


class InterpreterTest(unittest.TestCase):
    """Many runs of moto's real interpreter polling a checker slower than the poll."""

    CONCURRENCY = 3
    RUNS = 12

    def test_runs_polling_a_slow_checker_keep_pending_invokes_bounded(self):
        import logging

        import boto3
        from moto import mock_aws
        from moto.server import ThreadedMotoServer

        for noisy in ("werkzeug", "moto.stepfunctions"):
            logger = logging.getLogger(noisy)
            self.addCleanup(logger.setLevel, logger.level)
            logger.setLevel(logging.CRITICAL)
        watch = FakeWatch(slow_seconds=3.0)
        self.addCleanup(watch.close)
        invoker = invoke.LambdaInvoker(watch.url, set(), concurrency=self.CONCURRENCY)
        undo = invoke.install(invoker)
        self.addCleanup(undo)
        mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        mock.start()
        self.addCleanup(mock.stop)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self.addCleanup(server.stop)
        host, port = server.get_host_and_port()
        sfn = boto3.client("stepfunctions", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        retry = {"ErrorEquals": ["Lambda.TooManyRequestsException", "Lambda.ServiceException"],
                 "IntervalSeconds": 1, "MaxAttempts": 50, "BackoffRate": 1}
        definition = {
            "TimeoutSeconds": 6,
            "StartAt": "Poll",
            "States": {
                "Poll": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                    "Parameters": {"FunctionName": "slow", "Payload": {"token.$": "$$.Task.Token"}},
                    "TimeoutSecondsPath": "$.pollSeconds",
                    "Retry": [retry],
                    "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": None, "Next": "NextPoll"}],
                    "Next": "Done",
                },
                "NextPoll": {"Type": "Pass", "Next": "Poll"},
                "Done": {"Type": "Succeed"},
            },
        }
        arn = sfn.create_state_machine(name="slow-poll", definition=json.dumps(definition),
                                       roleArn="arn:aws:iam::123456789012:role/r")["stateMachineArn"]
        # (moto's server names an execution started without a name "None": name each.)
        runs = [sfn.start_execution(stateMachineArn=arn, name=f"run-{i}",
                                    input=json.dumps({"pollSeconds": 1}))["executionArn"]
                for i in range(self.RUNS)]

        fast_worst = 0.0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            started = time.monotonic()
            with urllib.request.urlopen(urllib.request.Request(
                    f"{watch.url}/2015-03-31/functions/fast/invocations", data=b"{}"), timeout=5) as r:
                r.read()
            fast_worst = max(fast_worst, time.monotonic() - started)
            self.assertLessEqual(invoker.slots.open("slow"), self.CONCURRENCY)
            time.sleep(0.1)

        self.assertLess(fast_worst, 1.0, "the fast function kept answering (a loaded machine allowed for)")
        self.assertLessEqual(invoker.slots.peak["slow"], self.CONCURRENCY)
        # What the server saw: never more open than the bound, and about one invoke per slot
        # per 3 s the slow checker takes (5 s of runs), not one per run per poll interval.
        self.assertLessEqual(watch.peak["slow"], self.CONCURRENCY, watch.peak)
        self.assertLessEqual(watch.calls["slow"], self.CONCURRENCY * 3, watch.calls)
        self.assertGreater(invoker.slots.refused.get("slow", 0), 0, "runs over the bound were refused")

        for run in runs:
            while sfn.describe_execution(executionArn=run)["status"] == "RUNNING":
                time.sleep(0.2)
        refused = [
            event["taskFailedEventDetails"]
            for run in runs
            for event in sfn.get_execution_history(executionArn=run, maxResults=1000)["events"]
            if event["type"] == "TaskFailed"
            and event["taskFailedEventDetails"]["error"] == "Lambda.TooManyRequestsException"
        ]
        self.assertTrue(refused, "the refusals reached the runs as Lambda.TooManyRequestsException")
        self.assertIn("Status Code: 429", refused[0]["cause"])
        deadline = time.monotonic() + 5
        while invoker.slots.open("slow") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(invoker.slots.open("slow"), 0, "nothing is left pending")


if __name__ == "__main__":
    unittest.main()

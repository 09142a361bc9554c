"""What `make dev` shows after its banner (infra/local/dev_view.py): one line per request
and per turn event, nothing for the services' chatter. The log lines below are the
functions' own, as `cargo lambda watch` writes them.

Run by `make test` (python -m unittest discover -s infra/local).
"""

import os
import tempfile
import time
import threading
import unittest

import dev_view

SESSION = "bc16739f-5390-4b24-9879-90b2f081e8aa"
RUN = "88bd8179-bbfb-445b-a576-77387375ce52"
SPAN = ('requestId="f700e872" xrayTraceId="Root=1-6b1;Sampled=1" request_id=f700e872 '
        'route=POST /api/managed-agents/session')


class DevViewTest(unittest.TestCase):
    def test_a_request_is_one_line_with_its_route_status_and_latency(self):
        line = (f"2026-12-02T15:32:56.815574Z  INFO Lambda runtime invoke:request: request "
                f'status=200 outcome="ok" latency_ms=120.29672 {SPAN} user="047581e659e17a3a"')
        self.assertEqual(dev_view.view(line),
                         "15:32:56.815  POST /api/managed-agents/session         200  120 ms")
        unauthenticated = line.replace("status=200", "status=401").split(' user=')[0]
        self.assertIn("401", dev_view.view(unauthenticated))

    def test_turn_events_are_one_line_each_and_polls_that_go_on_none(self):
        created = (f"2026-12-02T15:32:56.782492Z  INFO Lambda runtime invoke:request: session "
                   f"created session_id={SESSION} run_id={RUN} {SPAN}")
        self.assertEqual(dev_view.view(created), "15:32:56.782  session bc16739f created (run 88bd8179)")
        worker = (f'2026-12-02T15:33:01.100000Z  INFO Lambda runtime invoke: worker request=WorkerRequest '
                  f'{{ session_id: "{SESSION}", run_id: "{RUN}" }} answer=WorkerResponse {{ outcome: '
                  f'Finished, input_tokens: 412, output_tokens: 96 }} requestId="a1"')
        self.assertEqual(dev_view.view(worker),
                         "15:33:01.100  session bc16739f turn finished (tokens 412 in / 96 out)")
        poll = (f'2026-12-02T15:33:02.000000Z  INFO Lambda runtime invoke: checker request=Poll {{ '
                f'session_id: "{SESSION}", run_id: "{RUN}", task_token: Some("<present>"), .. }} '
                f'response=CheckerResponse {{ next: Continue, outcome: Running }} requestId="b2"')
        self.assertIsNone(dev_view.view(poll))
        stop = poll.replace("next: Continue, outcome: Running", "next: Stop, outcome: Cancelled")
        self.assertEqual(dev_view.view(stop), "15:33:02.000  session bc16739f run ended: cancelled")
        again = worker.replace("Finished", "NotClaimed")
        self.assertIsNone(dev_view.view(again), "a second delivery that did nothing")

    def test_warnings_keep_their_message_and_the_services_chatter_is_dropped(self):
        warn = ('2026-12-02T15:33:03.000000Z  WARN Lambda runtime invoke:request: the run could '
                f'not be woken error=throttled {SPAN}')
        self.assertEqual(dev_view.view(warn),
                         "15:33:03.000  WARN  the run could not be woken error=throttled")
        for chatter in [
            ' INFO spawning function instance function="cancel" instance_id=af58',
            "    Blocking waiting for file lock on package cache",
            "Error: hyper_util::client::legacy::Error(SendRequest, hyper::Error(IncompleteMessage))",
            "2026-12-02T15:33:03.000000Z  WARN AWS_LAMBDA_MAX_CONCURRENCY is set to 8, but the "
            "concurrency-tokio feature is not enabled",
            "2026-12-02T15:33:03.000000Z DEBUG purge sweep: nothing to do",
            "\x1b[2m2026-12-02T15:33:04.000000Z\x1b[0m  INFO some other line",
        ]:
            self.assertIsNone(dev_view.view(chatter), chatter)

    def test_colours_are_stripped_before_reading(self):
        line = ("\x1b[2m2026-12-02T15:32:56.815574Z\x1b[0m \x1b[32m INFO\x1b[0m request status=204 "
                'outcome="ok" latency_ms=3.2 route=GET /api/managed-agents/sessions')
        self.assertEqual(dev_view.view(line),
                         "15:32:56.815  GET /api/managed-agents/sessions         204  3 ms")

    def test_following_the_log_yields_only_whole_lines_written_after_it_started(self):
        with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as log:
            log.write("written before\n")
        self.addCleanup(os.unlink, log.name)
        seen: list[str] = []
        lines = dev_view.follow(log.name, poll_seconds=0.01)
        reader = threading.Thread(target=lambda: seen.extend(next(lines) for _ in range(2)), daemon=True)
        reader.start()
        time.sleep(0.1)
        with open(log.name, "a") as log_file:
            log_file.write("first ")
            log_file.flush()
            time.sleep(0.05)
            log_file.write("half\nsecond\n")
        reader.join(timeout=5)
        self.assertEqual(seen, ["first half\n", "second\n"])


if __name__ == "__main__":
    unittest.main()

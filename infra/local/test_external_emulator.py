"""Checks the path against an emulator the project does not start (LocalStack).

Run by `make test` (python -m unittest discover -s infra/local). ProvisionOnPlainMotoTest
starts a plain moto server (moto_server, none of stack.py's hooks) on 127.0.0.1 in the account
LocalStack uses, 000000000000.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

import boto3

import stack

ROOT = stack.ROOT
LOCALSTACK_ACCOUNT = "000000000000"
PROVIDER = {"base_url": "http://127.0.0.1:4598", "api_key": "local-test-key", "model": ""}


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ProvisionOnPlainMotoTest(unittest.TestCase):
    """`stack.provision` against a plain moto server."""

    @classmethod
    def setUpClass(cls):
        port = spare_port()
        cls.endpoint = f"http://127.0.0.1:{port}"
        cls.server = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "MOTO_ACCOUNT_ID": LOCALSTACK_ACCOUNT},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cls.addClassCleanup(cls.stop_server)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{cls.endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if cls.server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start within 30 s")
                time.sleep(0.2)
        cls.work = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.work.cleanup)

    @classmethod
    def stop_server(cls):
        cls.server.terminate()
        try:
            cls.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.server.kill()
            cls.server.wait()

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def provision(self, prefix: str) -> dict[str, str]:
        """Provisions under `prefix`; the env file's variables (what `cargo lambda watch` gets)."""
        env_file = Path(self.work.name) / f"{prefix}env"
        with contextlib.redirect_stdout(io.StringIO()):
            stack.provision(self.endpoint, prefix, env_file, "http://127.0.0.1:9000", False,
                            {"KNOQ_FAULT_INJECTION": "enabled"}, PROVIDER)
        return dict(line.split("=", 1) for line in env_file.read_text().splitlines())

    def machine(self, prefix: str) -> tuple[str, dict]:
        sfn = self.client("stepfunctions")
        arn = next(m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]
                   if m["name"] == f"{prefix}TurnStateMachine")
        return arn, json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])

    def test_the_routes_start_runs_of_the_state_machine_in_the_emulators_account(self):
        env = self.provision("e-")
        arn, _ = self.machine("e-")
        self.assertEqual(env["TURN_STATE_MACHINE_ARN"], arn)
        self.assertIn(f":{LOCALSTACK_ACCOUNT}:", arn, "not moto's default account")
        self.assertEqual(env["AWS_ENDPOINT_URL"], self.endpoint)


if __name__ == "__main__":
    unittest.main()

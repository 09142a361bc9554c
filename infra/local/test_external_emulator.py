"""Checks the path against an emulator the project does not start (LocalStack): the functions
the state machine invokes are deployed into it, and the state machine invokes exactly those.

Run by `make test` (python -m unittest discover -s infra/local). ProvisionOnPlainMotoTest
starts a plain moto server (moto_server, none of stack.py's hooks) on 127.0.0.1 in the account
LocalStack uses, 000000000000: moto stores functions without running them, which is as far as
this machine (no Docker) can go. Running them is LocalStack's part, untested here.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import unittest
import urllib.request
import zipfile
from pathlib import Path

import boto3

import lambda_deploy
import sam_template
import stack

ROOT = sam_template.ROOT
LOCALSTACK_ACCOUNT = "000000000000"
PROVIDER = {"base_url": "http://127.0.0.1:4598", "api_key": "local-test-key", "model": ""}
CONTAINER_PROVIDER = "http://host.docker.internal:4598"


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fake_zip(path: Path, text: str) -> Path:
    """A deployment zip as `cargo lambda build --output-format zip` lays it out: one `bootstrap`."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bootstrap", f"#!/bin/sh\n# {text}\n")
    return path


class PiecesTest(unittest.TestCase):
    """The pure parts, on the real template."""

    @classmethod
    def setUpClass(cls):
        cls.template = sam_template.load_template()

    def test_the_host_cpu_names_the_lambda_architecture(self):
        self.assertEqual(lambda_deploy.host_architecture("x86_64"), "x86_64")
        self.assertEqual(lambda_deploy.host_architecture("AMD64"), "x86_64")
        self.assertEqual(lambda_deploy.host_architecture("aarch64"), "arm64")
        self.assertEqual(lambda_deploy.host_architecture("arm64"), "arm64")
        with self.assertRaises(SystemExit):
            lambda_deploy.host_architecture("riscv64")

    def test_the_build_makes_one_zip_per_binary_for_the_host_architecture_apart_from_make_build(self):
        command = lambda_deploy.build_command(["checker", "worker"], "x86_64", Path("/t/lambda-emulator"))
        self.assertEqual(
            command,
            ["cargo", "lambda", "build", "--release", "--x86-64", "--output-format", "zip",
             "--bin", "checker", "--bin", "worker", "--lambda-dir", "/t/lambda-emulator"],
        )
        self.assertIn("--arm64", lambda_deploy.build_command(["checker"], "arm64", Path("/t")))

    def test_a_build_that_fails_or_leaves_no_zip_stops_the_provisioning(self):
        with tempfile.TemporaryDirectory() as directory:
            lambda_dir = Path(directory)
            commands = []

            def builds(command):
                commands.append(command)
                for binary in ("checker", "worker"):
                    (lambda_dir / binary).mkdir(exist_ok=True)
                    fake_zip(lambda_dir / binary / "bootstrap.zip", binary)
                return subprocess.CompletedProcess(command, 0)

            zips = lambda_deploy.build_zips(["checker", "worker"], "x86_64", lambda_dir, run=builds)
            self.assertEqual(zips, {b: lambda_dir / b / "bootstrap.zip" for b in ("checker", "worker")})
            self.assertEqual(commands, [lambda_deploy.build_command(["checker", "worker"], "x86_64", lambda_dir)])
            with self.assertRaises(SystemExit):
                lambda_deploy.build_zips(["other"], "x86_64", lambda_dir,
                                         run=lambda command: subprocess.CompletedProcess(command, 0))
            with self.assertRaises(SystemExit):
                lambda_deploy.build_zips(["checker"], "x86_64", lambda_dir,
                                         run=lambda command: subprocess.CompletedProcess(command, 101))

    def test_a_loopback_provider_is_reached_from_a_container_through_dockers_host_alias(self):
        self.assertEqual(lambda_deploy.provider_url_for_containers("http://127.0.0.1:4598"), CONTAINER_PROVIDER)
        self.assertEqual(lambda_deploy.provider_url_for_containers("http://localhost:4598/v"),
                         "http://host.docker.internal:4598/v")
        self.assertEqual(lambda_deploy.provider_url_for_containers("http://172.17.0.1:4598"), "http://172.17.0.1:4598")
        self.assertEqual(lambda_deploy.provider_url_for_containers("https://api.anthropic.com"),
                         "https://api.anthropic.com")

    def test_the_state_machine_invokes_the_checker_and_the_worker_only(self):
        invoked = sam_template.invoked_functions(self.template)
        self.assertEqual(invoked, ["CheckerFunction", "WorkerFunction"])
        self.assertEqual([sam_template.local_function_name(self.template, f) for f in invoked], ["checker", "worker"])

    def test_settings_come_from_the_function_else_from_globals(self):
        worker = lambda_deploy.function_settings(self.template, "WorkerFunction")
        self.assertEqual(
            {k: v for k, v in worker["settings"].items() if k != "Description"},
            {"Runtime": "provided.al2023", "Handler": "bootstrap", "Timeout": 900, "MemorySize": 256},
        )
        self.assertEqual(worker["event_invoke"], {"MaximumRetryAttempts": 1, "MaximumEventAgeInSeconds": 60})
        checker = lambda_deploy.function_settings(self.template, "CheckerFunction")
        self.assertEqual(checker["settings"]["Timeout"], 10, "Globals' timeout")
        self.assertEqual(checker["event_invoke"], {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600},
                         "the EventBridge rule's invokes, retried as AWS's default would")
        sweeper = lambda_deploy.function_settings(self.template, "PurgeSweeperFunction")
        self.assertIsNone(sweeper["event_invoke"], "a function that sets none")

    def test_a_deployed_function_gets_its_own_environment_only(self):
        parameters = {**sam_template.LOCAL_PARAMETERS, **sam_template.provider_parameters("arn:s", PROVIDER)}
        checker = sam_template.function_environment(self.template, "p-", parameters, only="CheckerFunction")
        worker = sam_template.function_environment(self.template, "p-", parameters, only="WorkerFunction")
        shared = sam_template.function_environment(self.template, "p-", parameters)
        self.assertNotIn("ANTHROPIC_BASE_URL", checker)
        self.assertEqual(worker["ANTHROPIC_BASE_URL"], PROVIDER["base_url"])
        self.assertNotIn("TURN_STATE_MACHINE_ARN", worker)
        self.assertIn("TURN_STATE_MACHINE_ARN", shared, "cargo lambda watch's one environment has all")
        self.assertEqual(worker["SESSIONS_TABLE"], "p-SessionsTable")

    def test_the_definition_names_the_deployed_arns_and_refuses_a_missing_one(self):
        arns = {"CheckerFunction": "arn:checker", "WorkerFunction": "arn:worker"}
        definition = json.loads(sam_template.state_machine_definition(self.template, "TurnStateMachine", arns))
        named = {n: s["Parameters"]["FunctionName"] for n, s in definition["States"].items() if s["Type"] == "Task"}
        self.assertEqual(named, {"StartWorker": "arn:worker", "Poll": "arn:checker", "RecordFailure": "arn:checker"})
        with self.assertRaises(SystemExit):
            sam_template.state_machine_definition(self.template, "TurnStateMachine", {"CheckerFunction": "arn:checker"})

    def test_the_emulator_sets_aws_variables_itself_so_a_deployment_refuses_them(self):
        with self.assertRaises(SystemExit) as refused:
            lambda_deploy.deploy_function(None, "f", Path("/nowhere.zip"), {}, {"AWS_ENDPOINT_URL": "x"}, "r", "x86_64")
        self.assertIn("AWS_ENDPOINT_URL", str(refused.exception))


class ProvisionOnPlainMotoTest(unittest.TestCase):
    """`stack.provision` with a deployment, against a plain moto server."""

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

    def provision(self, prefix: str, zip_text: str = "v1", provider_url: str = CONTAINER_PROVIDER,
                  deploy: bool = True) -> dict[str, str]:
        """Provisions under `prefix`; the env file's variables (what `cargo lambda watch` gets)."""
        work = Path(self.work.name)
        deployment = lambda_deploy.FunctionDeployment(
            zips={b: fake_zip(work / f"{prefix}{b}-{zip_text}.zip", f"{b} {zip_text}") for b in ("checker", "worker")},
            architecture="x86_64",
            provider_url=provider_url,
        ) if deploy else None
        env_file = work / f"{prefix}env"
        with contextlib.redirect_stdout(io.StringIO()):
            stack.provision(self.endpoint, prefix, env_file, "http://127.0.0.1:9000", False,
                            {"KNOQ_FAULT_INJECTION": "enabled"}, PROVIDER, deployment)
        return dict(line.split("=", 1) for line in env_file.read_text().splitlines())

    def functions_named(self, prefix: str) -> dict[str, dict]:
        listed = self.client("lambda").list_functions()["Functions"]
        return {f["FunctionName"]: f for f in listed if f["FunctionName"].startswith(prefix)}

    def machine(self, prefix: str) -> tuple[str, dict]:
        sfn = self.client("stepfunctions")
        arn = next(m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]
                   if m["name"] == f"{prefix}TurnStateMachine")
        return arn, json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])

    def test_the_invoked_functions_are_deployed_as_the_template_defines_them(self):
        self.provision("a-")
        deployed = self.functions_named("a-")
        self.assertEqual(set(deployed), {"a-checker", "a-worker"}, "the routes stay under cargo lambda watch")
        timeouts = {"a-checker": 10, "a-worker": 900}
        secret_arn = self.client("secretsmanager").describe_secret(SecretId="a-anthropic-api-key")["ARN"]
        for name, function in deployed.items():
            self.assertEqual(function["Runtime"], "provided.al2023", name)
            self.assertEqual(function["Handler"], "bootstrap", name)
            self.assertEqual(function["Timeout"], timeouts[name], name)
            self.assertEqual(function["MemorySize"], 256, name)
            self.assertEqual(function["Architectures"], ["x86_64"], name)
            self.assertEqual(function["Role"], f"arn:aws:iam::{LOCALSTACK_ACCOUNT}:role/knoq-local-function")
            zip_bytes = (Path(self.work.name) / f"{name}-v1.zip").read_bytes()
            self.assertEqual(function["CodeSha256"], lambda_deploy.code_sha256(zip_bytes), f"{name}: its own zip")
            variables = function["Environment"]["Variables"]
            self.assertEqual([k for k in variables if k.startswith("AWS_")], [], "the emulator sets those")
            self.assertEqual(variables["SESSIONS_TABLE"], "a-SessionsTable")
            self.assertEqual(variables["POLL_INTERVAL_SECS"], "1")
            self.assertEqual(variables["KNOQ_FAULT_INJECTION"], "enabled")
        checker = deployed["a-checker"]["Environment"]["Variables"]
        self.assertFalse({"ANTHROPIC_BASE_URL", "TURN_STATE_MACHINE_ARN"} & set(checker), "not the checker's")
        worker = deployed["a-worker"]["Environment"]["Variables"]
        self.assertEqual(worker["ANTHROPIC_BASE_URL"], CONTAINER_PROVIDER, "the provider as a container reaches it")
        self.assertEqual(worker["ANTHROPIC_API_KEY_SECRET_ARN"], secret_arn)
        self.assertEqual(
            self.client("lambda").get_function_event_invoke_config(FunctionName="a-worker")["MaximumRetryAttempts"], 1
        )

    def test_the_state_machine_invokes_exactly_the_deployed_functions(self):
        env = self.provision("b-")
        arn, definition = self.machine("b-")
        deployed = {f["FunctionArn"] for f in self.functions_named("b-").values()}
        invoked = {s["Parameters"]["FunctionName"] for s in definition["States"].values() if s["Type"] == "Task"}
        self.assertEqual(invoked, deployed)
        start = definition["States"]["StartWorker"]["Parameters"]
        self.assertEqual((start["FunctionName"].rsplit(":", 1)[1], start["InvocationType"]), ("b-worker", "Event"))
        # The routes start runs of that machine: its ARN in the emulator's account, not moto's default.
        self.assertEqual(env["TURN_STATE_MACHINE_ARN"], arn)
        self.assertIn(f":{LOCALSTACK_ACCOUNT}:", arn)
        self.assertEqual(env["AWS_ENDPOINT_URL"], self.endpoint, "cargo lambda watch talks to the emulator directly")
        self.assertEqual(env["ANTHROPIC_BASE_URL"], PROVIDER["base_url"], "...and to the provider on this machine")

    def test_provisioning_again_updates_the_functions_code_and_environment(self):
        self.provision("c-")
        self.provision("c-", zip_text="v2", provider_url="http://172.17.0.1:4598")
        deployed = self.functions_named("c-")
        self.assertEqual(set(deployed), {"c-checker", "c-worker"})
        zip_bytes = (Path(self.work.name) / "c-worker-v2.zip").read_bytes()
        self.assertEqual(deployed["c-worker"]["CodeSha256"], lambda_deploy.code_sha256(zip_bytes))
        self.assertEqual(deployed["c-worker"]["Environment"]["Variables"]["ANTHROPIC_BASE_URL"], "http://172.17.0.1:4598")

    def test_without_a_deployment_nothing_is_deployed_and_the_local_names_stay(self):
        env = self.provision("d-", deploy=False)
        self.assertEqual(self.functions_named("d-"), {})
        arn, definition = self.machine("d-")
        self.assertEqual(env["TURN_STATE_MACHINE_ARN"], arn, "in the emulator's account")
        invoked = {s["Parameters"]["FunctionName"] for s in definition["States"].values() if s["Type"] == "Task"}
        self.assertEqual(invoked, {"checker", "worker"}, "what the project's own emulator passes to cargo lambda watch")


class LeftOutOnAnotherEmulatorTest(unittest.TestCase):
    """What `run.sh test` leaves out against an external emulator is exactly what needs the
    project's own one (the DynamoDB faults of /_knoq/faults)."""

    def test_the_nextest_profile_leaves_out_exactly_the_modules_that_plant_dynamodb_faults(self):
        config = tomllib.loads((ROOT / ".config" / "nextest.toml").read_text())
        left_out = set(re.findall(r"test\(/\^(\w+)::/\)", config["profile"]["external-emulator"]["default-filter"]))
        planting = {path.stem for path in (ROOT / "tests" / "tests").glob("*/*.rs")
                    if re.search(r"Fault::(new|slow)\(", path.read_text())}
        self.assertTrue(planting, "tests plant faults with support::Fault; update this test if that changed")
        self.assertEqual(left_out, planting)

    def test_the_contract_test_that_runs_there_plants_no_fault(self):
        tree = ast.parse((ROOT / "infra" / "fuzz" / "test_contract.py").read_text())
        classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
        uses_faults = {
            name for name, node in classes.items()
            if any(isinstance(n, ast.Name) and n.id == "injected_fault" for n in ast.walk(node))
        }
        self.assertEqual(uses_faults, {"DynamoDBFaultContractTest"})
        run_sh = (ROOT / "infra" / "local" / "run.sh").read_text()
        self.assertIn("test_contract.ContractTest", run_sh)
        self.assertIn("--profile external-emulator", run_sh)


if __name__ == "__main__":
    unittest.main()

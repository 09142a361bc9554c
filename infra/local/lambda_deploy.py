"""Deploys the functions a state machine invokes into an AWS emulator that runs Lambda
functions itself (LocalStack), for `stack.py provision --deploy-functions`.

Why: an emulator's Step Functions invokes the functions *it* hosts. LocalStack's interpreter
calls its own Lambda service through an internal client, with no setting that points those
invokes elsewhere, so functions served on the host by `cargo lambda watch` are out of its
reach. The project's own emulator (stack.py serve) passes the invokes to `cargo lambda watch`
instead and needs none of this.

What it does: builds each function with `cargo lambda` for the host's architecture (the
emulator runs the zip in a container on this machine: an arm64 zip on an x86_64 host would
need CPU emulation), and creates or updates it with the template's runtime, handler, timeout,
memory and asynchronous-invoke settings and the environment it is given. The environment
carries no AWS_* variable: inside the emulator's containers, region, credentials and
AWS_ENDPOINT_URL (pointing back at the emulator) are set by the emulator, and AWS rejects
those names in a function's environment anyway.
"""

from __future__ import annotations

import base64
import hashlib
import platform
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

#: The role the deployed functions run as. LocalStack checks only its form; moto requires it
#: to exist, so it is created first (`ensure_role`).
FUNCTION_ROLE_NAME = "knoq-local-function"
LAMBDA_TRUST_POLICY = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
    '"Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
)
#: The host name under which a container started by Docker reaches the host (Docker Desktop
#: defines it; a Linux engine needs `--add-host=host.docker.internal:host-gateway`).
DOCKER_HOST_ALIAS = "host.docker.internal"


@dataclass
class FunctionDeployment:
    """What `provision` needs to deploy the invoked functions: each binary's zip, the
    architecture they were built for, and the model provider's base URL as the functions
    reach it from inside the emulator's containers."""

    zips: dict[str, Path]
    architecture: str
    provider_url: str


def host_architecture(machine: str | None = None) -> str:
    """The Lambda architecture matching this machine's CPU (`platform.machine()`)."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise SystemExit(f"stack: no Lambda architecture runs on a {machine!r} host")


def build_command(binaries: list[str], architecture: str, lambda_dir: Path) -> list[str]:
    """The `cargo lambda build` that makes one `bootstrap.zip` per binary, for `architecture`,
    into `lambda_dir/<binary>/` (apart from `make build`'s arm64 zips in target/lambda)."""
    flag = {"x86_64": "--x86-64", "arm64": "--arm64"}[architecture]
    command = ["cargo", "lambda", "build", "--release", flag, "--output-format", "zip"]
    for binary in binaries:
        command += ["--bin", binary]
    return command + ["--lambda-dir", str(lambda_dir)]


def build_zips(binaries: list[str], architecture: str, lambda_dir: Path, run=subprocess.run) -> dict[str, Path]:
    """Builds the binaries' zips (`build_command`) and answers binary -> zip path."""
    command = build_command(binaries, architecture, lambda_dir)
    print("stack: building " + " ".join(command), flush=True)
    if run(command).returncode != 0:
        raise SystemExit("stack: cargo lambda build failed")
    zips = {binary: lambda_dir / binary / "bootstrap.zip" for binary in binaries}
    missing = [str(path) for path in zips.values() if not path.is_file()]
    if missing:
        raise SystemExit(f"stack: cargo lambda build made no {', '.join(missing)}")
    return zips


def provider_url_for_containers(host_url: str) -> str:
    """The provider's base URL as the deployed functions reach it: a loopback host (which,
    inside a container, is the container itself) becomes Docker's name for the host; any
    other URL is kept."""
    parts = urllib.parse.urlsplit(host_url)
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        netloc = DOCKER_HOST_ALIAS + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return host_url


def function_settings(template: dict, logical_id: str) -> dict:
    """CreateFunction settings a function has in the template (its own, else Globals): Runtime,
    Handler, Timeout, MemorySize, Description; and its EventInvokeConfig (or None)."""
    defaults = template.get("Globals", {}).get("Function", {})
    props = template["Resources"][logical_id].get("Properties", {})
    settings = {}
    for key in ("Runtime", "Handler", "Timeout", "MemorySize"):
        value = props.get(key, defaults.get(key))
        if value is None:
            raise SystemExit(f"template.yaml: {logical_id} has no {key}, not even in Globals")
        settings[key] = value
    settings["Description"] = " ".join(str(props.get("Description", "")).split())
    return {"settings": settings, "event_invoke": props.get("EventInvokeConfig")}


def ensure_role(iam, name: str = FUNCTION_ROLE_NAME) -> str:
    """The deployed functions' role (created when missing); its ARN."""
    try:
        return iam.create_role(RoleName=name, AssumeRolePolicyDocument=LAMBDA_TRUST_POLICY)["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        return iam.get_role(RoleName=name)["Role"]["Arn"]


def code_sha256(zip_bytes: bytes) -> str:
    """The CodeSha256 Lambda reports for a zip: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


def deploy_function(
    lambda_client,
    name: str,
    zip_path: Path,
    template_settings: dict,
    environment: dict[str, str],
    role_arn: str,
    architecture: str,
) -> str:
    """Creates function `name` (or updates its code and configuration) and waits until it
    can be invoked; its ARN."""
    reserved = sorted(key for key in environment if key.startswith("AWS_"))
    if reserved:
        raise SystemExit(f"stack: {name}: the emulator sets {', '.join(reserved)} itself")
    code = zip_path.read_bytes()
    configuration = {
        **template_settings["settings"],
        "Role": role_arn,
        "Environment": {"Variables": environment},
    }
    try:
        arn = lambda_client.create_function(
            FunctionName=name, Code={"ZipFile": code}, Architectures=[architecture], **configuration
        )["FunctionArn"]
        lambda_client.get_waiter("function_active_v2").wait(FunctionName=name)
    except lambda_client.exceptions.ResourceConflictException:
        # Provisioned before under this prefix: the same function, new code and settings.
        lambda_client.update_function_configuration(FunctionName=name, **configuration)
        lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
        arn = lambda_client.update_function_code(
            FunctionName=name, ZipFile=code, Architectures=[architecture]
        )["FunctionArn"]
        lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    event_invoke = template_settings["event_invoke"]
    if event_invoke:
        unknown = set(event_invoke) - {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"}
        if unknown:
            raise SystemExit(f"stack: {name}: cannot deploy EventInvokeConfig {sorted(unknown)} locally")
        lambda_client.put_function_event_invoke_config(FunctionName=name, **event_invoke)
    return arn

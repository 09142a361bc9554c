"""The local AWS stack: the moto emulator, with tables and function environment taken
from template.yaml.

    python infra/local/stack.py serve --port 4566 --env-file .local/dev.env \
        --allowed-origin http://127.0.0.1:9000

starts the emulator on 127.0.0.1:PORT (DynamoDB, and Step Functions able to execute state
machines, whose Lambda invokes pass through over HTTP to AWS_ENDPOINT_URL_LAMBDA), creates
every AWS::DynamoDB::Table of template.yaml, writes the functions' environment (the
template's Globals, with !Ref resolved to the local table names) to --env-file, and runs in
the foreground until SIGINT or SIGTERM.

    python infra/local/stack.py provision --endpoint http://localhost:4566 --env-file F

creates the same tables on an emulator that is already running (LocalStack, say) and writes
the environment for it.

    python infra/local/stack.py check

parses the template and prints what `serve` would create, without starting anything.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"


class _TemplateLoader(yaml.SafeLoader):
    """YAML loader that reads CloudFormation short-form tags (!Ref, !GetAtt, !Sub ...)."""


def _cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict:
    """The template as plain data; short-form tags become their long form."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_TemplateLoader)


def table_name(prefix: str, logical_id: str) -> str:
    """The local name of a table resource."""
    return f"{prefix}{logical_id}"


def tables(template: dict) -> dict[str, dict]:
    """Logical id -> properties of every AWS::DynamoDB::Table resource."""
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::DynamoDB::Table"
    }


def create_table_requests(template: dict, prefix: str) -> list[tuple[dict, dict | None]]:
    """(CreateTable arguments, UpdateTimeToLive arguments or None) for every table."""
    requests = []
    for logical_id, props in tables(template).items():
        name = table_name(prefix, logical_id)
        create = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            create["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ttl = props.get("TimeToLiveSpecification")
        ttl_request = (
            {"TableName": name, "TimeToLiveSpecification": ttl} if ttl else None
        )
        requests.append((create, ttl_request))
    return requests


def function_environment(template: dict, prefix: str, overrides: dict[str, str]) -> dict[str, str]:
    """The Globals function environment with each !Ref resolved: a table to its local name,
    a parameter to its default, unless `overrides` names the parameter."""
    parameters = template.get("Parameters", {})
    table_ids = set(tables(template))
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    resolved = {}
    for key, value in variables.items():
        if isinstance(value, dict) and "Ref" in value:
            ref = value["Ref"]
            if ref in table_ids:
                value = table_name(prefix, ref)
            elif ref in overrides:
                value = overrides[ref]
            elif ref in parameters:
                value = parameters[ref]["Default"]
            else:
                raise SystemExit(f"template.yaml: Globals refers to unknown {ref!r}")
        resolved[key] = str(value)
    return resolved


def _serialise_dynamodb() -> None:
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


def provision(
    endpoint: str, prefix: str, env_file: Path, allowed_origin: str, from_environment: bool
) -> None:
    """Creates every table of the template on `endpoint` (those that exist already are left
    alone) and writes the functions' environment for that endpoint to `env_file`. Region and
    credentials are the emulator's dummies unless `from_environment` takes them from the
    standard AWS variables (an emulator this script did not start may want its own)."""
    import os

    import boto3

    template = load_template()
    env = os.environ if from_environment else {}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or REGION
    access_key = env.get("AWS_ACCESS_KEY_ID", "test")
    secret_key = env.get("AWS_SECRET_ACCESS_KEY", "test")
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )
    existing = set(dynamodb.list_tables().get("TableNames", []))
    requests = create_table_requests(template, prefix)
    for create, ttl in requests:
        if create["TableName"] in existing:
            continue
        dynamodb.create_table(**create)
        dynamodb.get_waiter("table_exists").wait(TableName=create["TableName"])
        if ttl:
            dynamodb.update_time_to_live(**ttl)

    environment = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        **function_environment(template, prefix, {"AllowedOrigin": allowed_origin}),
    }
    env_file.parent.mkdir(parents=True, exist_ok=True)
    partial = env_file.with_suffix(".partial")
    partial.write_text("".join(f"{key}={value}\n" for key, value in environment.items()))
    partial.replace(env_file)  # readers never see a half-written file
    print(f"stack: tables on {endpoint}: " + ", ".join(c["TableName"] for c, _ in requests), flush=True)
    print(f"stack: function environment written to {env_file}", flush=True)


def serve(args: argparse.Namespace) -> None:
    from moto import mock_aws
    from moto.server import ThreadedMotoServer

    _serialise_dynamodb()
    if not args.verbose:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    mock = mock_aws(
        config={
            "stepfunctions": {"execute_state_machine": True},
            "core": {"passthrough": {"services": ["lambda"]}},
        }
    )
    mock.start()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=args.verbose)
    server.start()
    endpoint = f"http://127.0.0.1:{args.port}"

    provision(endpoint, args.prefix, Path(args.env_file), args.allowed_origin, False)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    mock.stop()


def provision_command(args: argparse.Namespace) -> None:
    provision(args.endpoint, args.prefix, Path(args.env_file), args.allowed_origin, True)


def check(_: argparse.Namespace) -> None:
    template = load_template()
    for create, ttl in create_table_requests(template, "local-"):
        print(create["TableName"], "ttl" if ttl else "")
    for key, value in function_environment(template, "local-", {}).items():
        print(f"{key}={value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the emulator in the foreground")
    serve_parser.add_argument("--port", type=int, default=4566)
    serve_parser.add_argument("--prefix", default="knoq-local-", help="table name prefix")
    serve_parser.add_argument("--env-file", required=True)
    serve_parser.add_argument("--allowed-origin", default="http://127.0.0.1:9000")
    serve_parser.add_argument("--verbose", action="store_true", help="log every request")
    serve_parser.set_defaults(run=serve)
    provision_parser = commands.add_parser(
        "provision", help="create the tables on an emulator that is already running (LocalStack)"
    )
    provision_parser.add_argument("--endpoint", required=True)
    provision_parser.add_argument("--prefix", default="knoq-local-", help="table name prefix")
    provision_parser.add_argument("--env-file", required=True)
    provision_parser.add_argument("--allowed-origin", default="http://127.0.0.1:9000")
    provision_parser.set_defaults(run=provision_command)
    check_parser = commands.add_parser("check", help="print what serve would create")
    check_parser.set_defaults(run=check)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())

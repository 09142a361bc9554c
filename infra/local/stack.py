"""The local AWS stack's command line: the moto emulator, with tables and function environment
taken from template.yaml (read by sam_template.py; what the emulator adds to moto is in
emulator_patches.py).

    python infra/local/stack.py serve --port 4566 --env-file .local/dev.env \
        --allowed-origin http://127.0.0.1:9000

starts the emulator on 127.0.0.1:PORT (DynamoDB, and Step Functions able to execute state
machines, whose Lambda invokes pass through over HTTP to AWS_ENDPOINT_URL_LAMBDA), creates
every AWS::DynamoDB::Table of template.yaml and every AWS::Serverless::StateMachine (from
the very file its DefinitionUri names, with each function ARN substituted by the function's
local name, which `cargo lambda watch` serves), writes the functions' environment (the
template's Globals and every function's own Environment, with !Ref resolved to the local
names) to --env-file, and runs in the foreground until SIGINT or SIGTERM.

    python infra/local/stack.py provision --endpoint http://localhost:4566 --env-file F \
        [--deploy-functions] [--function-provider-url URL] [--fault-injection]

creates the same tables, state machines and API key secret on an emulator that is already
running (LocalStack, say) and writes the environment for it. Without --deploy-functions the
state machines invoke functions by their local names, which only the project's own emulator
resolves (it passes them to `cargo lambda watch`). With it, the functions the state machines
invoke are built with `cargo lambda` for this machine's architecture and deployed into that
emulator (lambda_deploy.py), and the state machines invoke those functions by their ARNs: an
emulator's Step Functions only ever invokes the functions it hosts itself.

Both take `--parameter NAME=VALUE` (repeatable) to set a template parameter for this stack
only, over LOCAL_PARAMETERS: `make test` raises the read limit that way (run.sh).

    python infra/local/stack.py check

Pushing back as AWS does (infra/local/invoke.py): the state machines' Lambda invokes never
pile up. Per function, at most `--function-concurrency` invokes are open at once (sync and
async together), each holding its slot until the function answers (as AWS counts running
invocations); one more is refused at once with Lambda.TooManyRequestsException, which the
states' Retry resends later; no interpreter thread waits on an invoke past its task's
timeout; asynchronous events wait in a bounded queue as data.

parses the template and prints what `serve` would create, without starting anything.
"""


from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path

import emulator_patches
from sam_template import (
    LOCAL_PARAMETERS,
    REGION,
    ROOT,
    asynchronous_functions,
    create_table_requests,
    execution_status_rules,
    function_environment,
    invoked_functions,
    load_template,
    local_function_name,
    parameter_overrides,
    provider_parameters,
    schedules,
    state_machine_arn,
    state_machine_definition,
    state_machine_role_arn,
    state_machines,
    table_name,
)


def create_api_key_secret(secrets, prefix: str, api_key: str) -> str:
    """Stores the model provider's API key as the worker reads it in production (a Secrets
    Manager secret whose SecretString is the key) and answers the secret's ARN."""
    name = f"{prefix}anthropic-api-key"
    try:
        return secrets.create_secret(Name=name, SecretString=api_key)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=name, SecretString=api_key)
        return secrets.describe_secret(SecretId=name)["ARN"]


def provision(
    endpoint: str,
    prefix: str,
    env_file: Path,
    allowed_origin: str,
    from_environment: bool,
    extra_environment: dict[str, str] | None = None,
    provider: dict[str, str] | None = None,
    deployment: "lambda_deploy.FunctionDeployment | None" = None,
    overrides: dict[str, str] | None = None,
) -> None:
    """Creates every table and state machine of the template on `endpoint` (tables that
    exist already are left alone; state machines are updated) and writes the functions'
    environment for that endpoint to `env_file`, with `overrides` (template parameter ->
    value) over LOCAL_PARAMETERS. Region and credentials are the emulator's dummies unless
    `from_environment` takes them from the standard AWS variables (an emulator this script
    did not start may want its own).

    With a `deployment`, the functions the state machines invoke are deployed into that
    emulator first (each with its own environment, `extra_environment` included), and the
    state machines invoke them by their ARNs; otherwise by their local names."""
    import os

    import boto3

    template = load_template()
    env = os.environ if from_environment else {}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or REGION
    access_key = env.get("AWS_ACCESS_KEY_ID", "test")
    secret_key = env.get("AWS_SECRET_ACCESS_KEY", "test")
    def client(service: str):
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )

    # The account resources land in: moto's 123456789012, LocalStack's 000000000000, or
    # whatever the emulator derives from the credentials.
    account = client("sts").get_caller_identity()["Account"]

    dynamodb = client("dynamodb")
    existing = set(dynamodb.list_tables().get("TableNames", []))
    requests = create_table_requests(template, prefix)
    for create, ttl in requests:
        if create["TableName"] in existing:
            continue
        dynamodb.create_table(**create)
        dynamodb.get_waiter("table_exists").wait(TableName=create["TableName"])
        if ttl:
            dynamodb.update_time_to_live(**ttl)

    provider = provider or provider_from_environment()
    secret_arn = create_api_key_secret(client("secretsmanager"), prefix, provider["api_key"])
    parameters = {**LOCAL_PARAMETERS, "AllowedOrigin": allowed_origin, **(overrides or {})}

    function_arns = None
    if deployment is not None:
        function_arns = deploy_invoked_functions(
            client, template, prefix, region, account, deployment,
            {**parameters, **provider_parameters(secret_arn, {**provider, "base_url": deployment.provider_url})},
            extra_environment or {},
        )

    sfn = client("stepfunctions")
    existing_machines = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    machine_names = []
    for logical_id in state_machines(template):
        name = table_name(prefix, logical_id)
        definition = state_machine_definition(template, logical_id, function_arns)
        if name in existing_machines:
            sfn.update_state_machine(stateMachineArn=existing_machines[name], definition=definition)
            arn = existing_machines[name]
        else:
            arn = sfn.create_state_machine(
                name=name, definition=definition, roleArn=state_machine_role_arn(account)
            )["stateMachineArn"]
        if arn != state_machine_arn(region, name, account):
            raise SystemExit(f"stack: the emulator named state machine {name} {arn}; expected the standard ARN")
        machine_names.append(name)

    environment = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        **function_environment(
            template,
            prefix,
            {**parameters, **provider_parameters(secret_arn, provider)},
            region,
            account,
        ),
        # A person reads `make dev`'s terminal: plain log lines, no metric lines.
        "KNOQ_LOG_FORMAT": "text",
        **(extra_environment or {}),
    }
    env_file.parent.mkdir(parents=True, exist_ok=True)
    partial = env_file.with_suffix(".partial")
    partial.write_text("".join(f"{key}={env_value(value)}\n" for key, value in environment.items()))
    partial.replace(env_file)  # readers never see a half-written file
    print(f"stack: tables on {endpoint}: " + ", ".join(c["TableName"] for c, _ in requests), flush=True)
    print(f"stack: state machines: {', '.join(machine_names)}", flush=True)
    print(f"stack: function environment written to {env_file}", flush=True)


def deploy_invoked_functions(
    client,
    template: dict,
    prefix: str,
    region: str,
    account: str,
    deployment: "lambda_deploy.FunctionDeployment",
    parameters: dict[str, str],
    extra_environment: dict[str, str],
) -> dict[str, str]:
    """Deploys every function a state machine invokes into the emulator, named
    `<prefix><binary>`, with its own environment from the template (`parameters` resolving
    the !Refs: the provider as the function reaches it from its container) plus
    `extra_environment`; logical id -> function ARN."""
    import lambda_deploy

    role_arn = lambda_deploy.ensure_role(client("iam"))
    lambda_client = client("lambda")
    arns = {}
    for logical_id in invoked_functions(template):
        binary = local_function_name(template, logical_id)
        if binary not in deployment.zips:
            raise SystemExit(f"stack: no zip for {binary}, which a state machine invokes")
        environment = {
            **function_environment(template, prefix, parameters, region, account, only=logical_id),
            **extra_environment,
        }
        arns[logical_id] = lambda_deploy.deploy_function(
            lambda_client,
            f"{prefix}{binary}",
            deployment.zips[binary],
            lambda_deploy.function_settings(template, logical_id),
            environment,
            role_arn,
            deployment.architecture,
        )
        print(f"stack: deployed {arns[logical_id]} ({deployment.architecture})", flush=True)
    return arns


def env_value(value: str) -> str:
    """`value` as the env file holds it: bare when it is one plain word, else double-quoted with
    the characters that both `cargo lambda watch` (dotenv) and a shell give meaning escaped."""
    if re.fullmatch(r"[A-Za-z0-9_./:@%+,=-]*", value):
        return value
    escaped = "".join("\\" + c if c in '\\"$`' else c for c in value)
    return f'"{escaped}"'


def provider_from_environment() -> dict[str, str]:
    """The model provider the local worker calls: KNOQ_PROVIDER_URL and KNOQ_PROVIDER_API_KEY
    (set by run.sh: the user's ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY, or the bundled
    provider emulator's), and KNOQ_MODEL when set."""
    import os

    base_url = os.environ.get("KNOQ_PROVIDER_URL", "")
    api_key = os.environ.get("KNOQ_PROVIDER_API_KEY", "")
    if not base_url or not api_key:
        raise SystemExit("stack: KNOQ_PROVIDER_URL and KNOQ_PROVIDER_API_KEY must name the model provider")
    return {"base_url": base_url, "api_key": api_key, "model": os.environ.get("KNOQ_MODEL", "")}


def serve(args: argparse.Namespace) -> None:
    import os

    from moto import mock_aws
    from moto.server import ThreadedMotoServer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import chaos

    chaos_mode = None
    if args.fault_injection or args.chaos_seed is not None:
        chaos_mode = chaos.MODE
        chaos.install_recorder()  # below the DynamoDB lock
    emulator_patches.serialise_dynamodb()
    emulator_patches.cache_what_moto_recomputes()
    import limits

    limits.install()  # AWS limits moto lets through (limits.py), in every mode
    if chaos_mode is not None:
        chaos.install()
    if args.fault_injection:
        emulator_patches.inject_dynamodb_faults()
    if args.chaos_seed is not None:
        rates = {}
        for pair in args.chaos_rate or []:
            name, equals, value = pair.partition("=")
            try:
                rates[name] = float(value)
            except ValueError:
                raise SystemExit(f"stack: --chaos-rate {pair!r}: expected NAME=PROBABILITY") from None
        chaos_spec = {"seed": args.chaos_seed, "rates": rates}
        try:
            chaos_mode.enable(chaos_spec)  # checked and printed now, on once provisioned
        except ValueError as error:
            raise SystemExit(f"stack: chaos: {error}") from None
        chaos_mode.disable()
        print(chaos_mode.describe(), flush=True)
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

    lambda_endpoint = os.environ.get("AWS_ENDPOINT_URL_LAMBDA")
    invoker = None
    if lambda_endpoint:
        invoker = emulator_patches.report_function_errors_as_aws_lambda_does(
            lambda_endpoint.rstrip("/"),
            asynchronous_functions(load_template()),
            args.function_concurrency,
            chaos_mode,
        )
    else:
        print("stack: AWS_ENDPOINT_URL_LAMBDA is not set; state machine runs cannot reach the functions", flush=True)
    extra = {"KNOQ_FAULT_INJECTION": "enabled"} if args.fault_injection else {}
    parameters = parameter_overrides(load_template(), args.parameter)
    provision(
        endpoint, args.prefix, Path(args.env_file), args.allowed_origin, False, extra, overrides=parameters
    )
    if args.chaos_seed is not None:
        # On after the stack's own set-up, whose requests are no part of the schedule.
        chaos_mode.enable(chaos_spec)

    stop = threading.Event()
    if args.run_schedules and lambda_endpoint:
        emulator_patches.run_schedules(lambda_endpoint.rstrip("/"), schedules(load_template()), stop)
    if invoker is not None:
        emulator_patches.run_execution_status_rules(endpoint, invoker, args.prefix, execution_status_rules(load_template()), stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    mock.stop()


def provision_command(args: argparse.Namespace) -> None:
    import os

    import lambda_deploy

    provider = provider_from_environment()
    deployment = None
    if args.deploy_functions:
        template = load_template()
        binaries = [local_function_name(template, f) for f in invoked_functions(template)]
        architecture = lambda_deploy.host_architecture()
        target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
        provider_url = (
            args.function_provider_url
            or os.environ.get("KNOQ_FUNCTION_PROVIDER_URL")
            or lambda_deploy.provider_url_for_containers(provider["base_url"])
        )
        deployment = lambda_deploy.FunctionDeployment(
            zips=lambda_deploy.build_zips(binaries, architecture, target / "lambda-emulator"),
            architecture=architecture,
            provider_url=provider_url,
        )
    extra = {"KNOQ_FAULT_INJECTION": "enabled"} if args.fault_injection else {}
    provision(
        args.endpoint, args.prefix, Path(args.env_file), args.allowed_origin, True, extra, provider,
        deployment, parameter_overrides(load_template(), args.parameter),
    )


def check(_: argparse.Namespace) -> None:
    template = load_template()
    for create, ttl in create_table_requests(template, "local-"):
        print(create["TableName"], "ttl" if ttl else "")
    for logical_id in state_machines(template):
        print(f"state machine {logical_id}:")
        print(state_machine_definition(template, logical_id))
    placeholder = provider_parameters("<the local API key secret>", {"base_url": "<the provider>"})
    for key, value in function_environment(template, "local-", {**LOCAL_PARAMETERS, **placeholder}).items():
        print(f"{key}={value}")


def main() -> None:
    import os

    import invoke

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the emulator in the foreground")
    serve_parser.add_argument("--port", type=int, default=4566)
    serve_parser.add_argument("--prefix", default="knoq-local-", help="table name prefix")
    serve_parser.add_argument("--env-file", required=True)
    serve_parser.add_argument("--allowed-origin", default="http://127.0.0.1:9000")
    serve_parser.add_argument("--verbose", action="store_true", help="log every request")
    serve_parser.add_argument(
        "--fault-injection",
        action="store_true",
        help="let tests plant faults on sessions (KNOQ_FAULT_INJECTION=enabled) and on DynamoDB "
        "requests (/_knoq/faults, faults.py); for `make test` only",
    )
    serve_parser.add_argument(
        "--function-concurrency",
        type=int,
        default=int(os.environ.get("KNOQ_FUNCTION_CONCURRENCY") or invoke.DEFAULT_CONCURRENCY),
        help="concurrent invokes each function takes from the state machines, as `cargo lambda "
        "watch --concurrency` runs it (default: KNOQ_FUNCTION_CONCURRENCY, else "
        f"{invoke.DEFAULT_CONCURRENCY}); more are refused with Lambda.TooManyRequestsException",
    )
    serve_parser.add_argument(
        "--chaos-seed",
        type=int,
        help="start with seeded random AWS faults on (infra/local/chaos.py; POST /_knoq/chaos "
        "turns them on later with --fault-injection)",
    )
    serve_parser.add_argument(
        "--chaos-rate",
        action="append",
        metavar="NAME=PROBABILITY",
        help="with --chaos-seed: one rate over its default (repeatable; chaos.DEFAULT_RATES)",
    )
    serve_parser.add_argument(
        "--run-schedules",
        action="store_true",
        help="invoke the template's scheduled functions at their rate, as EventBridge does "
        "(`make dev`; tests invoke them when they choose)",
    )
    serve_parser.set_defaults(run=serve)
    provision_parser = commands.add_parser(
        "provision", help="create the tables on an emulator that is already running (LocalStack)"
    )
    provision_parser.add_argument("--endpoint", required=True)
    provision_parser.add_argument("--prefix", default="knoq-local-", help="table name prefix")
    provision_parser.add_argument("--env-file", required=True)
    provision_parser.add_argument("--allowed-origin", default="http://127.0.0.1:9000")
    provision_parser.add_argument(
        "--deploy-functions",
        action="store_true",
        help="build the functions the state machines invoke (cargo lambda, this machine's "
        "architecture) and deploy them into the emulator, which runs them itself (LocalStack)",
    )
    provision_parser.add_argument(
        "--function-provider-url",
        help="the model provider's base URL as the deployed functions reach it from the emulator's "
        "containers (default: KNOQ_FUNCTION_PROVIDER_URL, else KNOQ_PROVIDER_URL with a loopback "
        "host replaced by host.docker.internal)",
    )
    provision_parser.add_argument(
        "--fault-injection",
        action="store_true",
        help="let tests plant faults on sessions (KNOQ_FAULT_INJECTION=enabled); DynamoDB faults "
        "(/_knoq/faults) exist on the project's own emulator only",
    )
    provision_parser.set_defaults(run=provision_command)
    for command_parser in (serve_parser, provision_parser):
        command_parser.add_argument(
            "--parameter",
            action="append",
            metavar="NAME=VALUE",
            help="set a template parameter for this stack (repeatable), over the local defaults",
        )
    check_parser = commands.add_parser("check", help="print what serve would create")
    check_parser.set_defaults(run=check)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())

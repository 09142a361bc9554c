"""The local AWS stack: the moto emulator, with tables and function environment taken
from template.yaml.

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

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
#: The account moto puts resources in unless told otherwise (LocalStack's is 000000000000):
#: `provision` asks the emulator (STS GetCallerIdentity) rather than assuming either.
MOTO_ACCOUNT = "123456789012"


def state_machine_role_arn(account: str) -> str:
    """The role the local state machines name (emulators check its form, not its rights)."""
    return f"arn:aws:iam::{account}:role/knoq-local-state-machine"


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


def functions(template: dict) -> dict[str, dict]:
    """Logical id -> resource of every AWS::Serverless::Function."""
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def local_function_name(template: dict, logical_id: str) -> str:
    """The name a function has locally: its binary, which `cargo lambda watch` serves."""
    resource = functions(template).get(logical_id)
    if resource is None:
        raise SystemExit(f"template.yaml: {logical_id!r} is not an AWS::Serverless::Function")
    return resource["Metadata"]["BuildProperties"]["Binary"]


_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_UNIT_SECS = {"minute": 60, "hour": 3600, "day": 86400}


def schedules(template: dict) -> dict[str, int]:
    """Local name -> period in seconds of every function a `Schedule` event runs at a
    `rate(...)` (EventBridge's other form, `cron(...)`, is refused: nothing uses it)."""
    periods = {}
    for logical_id, resource in functions(template).items():
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") != "Schedule":
                continue
            expression = event["Properties"]["Schedule"]
            match = _RATE.fullmatch(expression)
            if match is None:
                raise SystemExit(f"template.yaml: {logical_id}: unsupported schedule {expression!r}")
            count, unit = int(match[1]), match[2].rstrip("s")
            periods[local_function_name(template, logical_id)] = count * _UNIT_SECS[unit]
    return periods


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


def _run_schedules(lambda_endpoint: str, periods: dict[str, int], stop: threading.Event) -> None:
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


def _sub_text(value) -> str:
    """A template string written plain or as `!Sub "..."` (its text, unsubstituted)."""
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return value["Fn::Sub"]
    if isinstance(value, str):
        return value
    raise SystemExit(f"template.yaml: expected a string or !Sub string, got {value!r}")


def execution_status_rules(template: dict) -> list[dict]:
    """Every `EventBridgeRule` event of a function that matches Step Functions' "Execution
    Status Change" events: {"function": local name, "statuses": [...], "state_machines":
    [logical ids]}. The rule's `stateMachineArn` names a state machine by its `Name`; any other
    kind of EventBridge rule is refused (nothing else uses one)."""
    by_name = {_sub_text(props.get("Name", "")): logical for logical, props in state_machines(template).items()}
    rules = []
    for logical_id, resource in functions(template).items():
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") != "EventBridgeRule":
                continue
            pattern = event["Properties"]["Pattern"]
            if pattern.get("source") != ["aws.states"] or pattern.get("detail-type") != [
                "Step Functions Execution Status Change"
            ]:
                raise SystemExit(f"template.yaml: {logical_id}: unsupported EventBridge rule {pattern!r}")
            detail = pattern.get("detail", {})
            machines = []
            for arn in detail.get("stateMachineArn", []):
                name = _sub_text(arn).rpartition(":stateMachine:")[2]
                if name not in by_name:
                    raise SystemExit(f"template.yaml: {logical_id}: no state machine named {name!r}")
                machines.append(by_name[name])
            rules.append({
                "function": local_function_name(template, logical_id),
                "statuses": list(detail["status"]),
                "state_machines": machines or sorted(state_machines(template)),
            })
    return rules


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


def _run_execution_status_rules(
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


def state_machines(template: dict) -> dict[str, dict]:
    """Logical id -> properties of every AWS::Serverless::StateMachine."""
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::StateMachine"
    }


def invoked_functions(template: dict) -> list[str]:
    """Logical ids of the functions the state machines invoke (each !GetAtt <Function>.Arn in
    their DefinitionSubstitutions), in order."""
    invoked = set()
    for props in state_machines(template).values():
        for value in props.get("DefinitionSubstitutions", {}).values():
            if isinstance(value, dict) and "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == "Arn":
                if value["Fn::GetAtt"][0] in functions(template):
                    invoked.add(value["Fn::GetAtt"][0])
    return sorted(invoked)


def state_machine_definition(
    template: dict, logical_id: str, function_arns: dict[str, str] | None = None
) -> str:
    """The definition file the state machine's DefinitionUri names, with every
    DefinitionSubstitutions entry replaced: a function's !GetAtt Arn by its ARN in
    `function_arns` (logical id -> ARN of the function deployed into an emulator), or else
    by its local name (which the project's own emulator passes to `cargo lambda watch`)."""
    props = state_machines(template)[logical_id]
    text = (ROOT / props["DefinitionUri"]).read_text(encoding="utf-8")
    for key, value in props.get("DefinitionSubstitutions", {}).items():
        if isinstance(value, dict) and "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == "Arn":
            target = value["Fn::GetAtt"][0]
            if function_arns is not None:
                if target not in function_arns:
                    raise SystemExit(f"stack: {target} was not deployed; {logical_id} invokes it")
                value = function_arns[target]
            else:
                value = local_function_name(template, target)
        elif not isinstance(value, str):
            raise SystemExit(f"template.yaml: cannot substitute {key!r} locally: {value!r}")
        text = text.replace("${" + key + "}", value)
    leftover = re.search(r"\$\{[A-Za-z0-9]+\}", text)
    if leftover:
        raise SystemExit(f"{props['DefinitionUri']}: {leftover.group(0)} has no substitution")
    return text


def state_machine_arn(region: str, name: str, account: str = MOTO_ACCOUNT) -> str:
    """The ARN an emulator gives a state machine called `name` in `account`."""
    return f"arn:aws:states:{region}:{account}:stateMachine:{name}"


def function_environment(
    template: dict,
    prefix: str,
    overrides: dict[str, str],
    region: str = REGION,
    account: str = MOTO_ACCOUNT,
    only: str | None = None,
) -> dict[str, str]:
    """The environment of every function (Globals, plus each function's own Environment;
    `cargo lambda watch` gives all functions one environment), or with `only` (a logical id)
    of that one function, with each !Ref resolved: a table or state machine to its local name
    or ARN, a parameter to its default unless `overrides` names it."""
    parameters = template.get("Parameters", {})
    table_ids = set(tables(template))
    machine_ids = set(state_machines(template))
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for logical_id, resource in functions(template).items():
        if only is not None and logical_id != only:
            continue
        own = resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
        variables.update(own)
    resolved = {}
    for key, value in variables.items():
        if isinstance(value, dict) and "Ref" in value:
            ref = value["Ref"]
            if ref in table_ids:
                value = table_name(prefix, ref)
            elif ref in machine_ids:
                value = state_machine_arn(region, table_name(prefix, ref), account)
            elif ref in overrides:
                value = overrides[ref]
            elif ref in parameters:
                if "Default" not in parameters[ref]:
                    raise SystemExit(f"template.yaml: parameter {ref} has no default; the local stack must set it")
                value = parameters[ref]["Default"]
            else:
                raise SystemExit(f"template.yaml: a function environment refers to unknown {ref!r}")
        resolved[key] = str(value)
    return resolved


def _cache_what_moto_recomputes() -> None:
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


def _inject_dynamodb_faults() -> None:
    """With --fault-injection: tests may plant DynamoDB faults over HTTP on the emulator's
    port (`/_knoq/faults`, see infra/local/faults.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import faults

    faults.install()


#: Parameters the local stack sets differently from the template's defaults: a cancel is
#: seen within one second, as SPEC's local contract says; the session cookie loses its
#: `__Host-` prefix, which browsers honour only on cookies set over https.
#: `ReadsLimitPerMinute` stays the template's 300 here, so `make dev` answers as production
#: does; `make test`, whose tests poll transcripts every 25-100 ms, raises it with
#: `--parameter` (run.sh).
LOCAL_PARAMETERS = {
    "PollIntervalSeconds": "1",
    "SessionCookieName": "knoq_session",
}


def parameter_overrides(template: dict, pairs: list[str] | None) -> dict[str, str]:
    """`--parameter NAME=VALUE` arguments as a dict, each NAME a parameter of the template
    (a misspelt one would otherwise be ignored without a word)."""
    overrides = {}
    for pair in pairs or []:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise SystemExit(f"stack: --parameter {pair!r}: expected NAME=VALUE")
        if name not in template.get("Parameters", {}):
            raise SystemExit(f"stack: --parameter {name}: template.yaml has no such parameter")
        overrides[name] = value
    return overrides


def async_retries(template: dict) -> dict[str, int]:
    """Local name -> `EventInvokeConfig.MaximumRetryAttempts` of every function that sets it
    (the others get AWS's default, invoke.DEFAULT_ASYNC_RETRIES)."""
    retries = {}
    for logical_id, resource in functions(template).items():
        config = resource.get("Properties", {}).get("EventInvokeConfig") or {}
        if "MaximumRetryAttempts" in config:
            retries[local_function_name(template, logical_id)] = int(config["MaximumRetryAttempts"])
    return retries


def asynchronous_functions(template: dict) -> set[str]:
    """Local names of the functions a state machine of the template invokes asynchronously
    (`"InvocationType": "Event"`). moto's interpreter drops `InvocationType` from the
    parameters it hands the Lambda call (seen in moto 5.2.5: only FunctionName and Payload
    arrive), so the invoke hook recognises these calls by the function they name."""
    import json

    names = set()
    for logical_id in state_machines(template):
        definition = json.loads(state_machine_definition(template, logical_id))
        for state in definition["States"].values():
            parameters = state.get("Parameters", {})
            if parameters.get("InvocationType") == "Event":
                names.add(parameters["FunctionName"])
    return names


def _report_function_errors_as_aws_lambda_does(
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


def create_api_key_secret(secrets, prefix: str, api_key: str) -> str:
    """Stores the model provider's API key as the worker reads it in production (a Secrets
    Manager secret whose SecretString is the key) and answers the secret's ARN."""
    name = f"{prefix}anthropic-api-key"
    try:
        return secrets.create_secret(Name=name, SecretString=api_key)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=name, SecretString=api_key)
        return secrets.describe_secret(SecretId=name)["ARN"]


def provider_parameters(secret_arn: str, provider: dict[str, str]) -> dict[str, str]:
    """Template parameters of the worker's provider settings, locally: the secret created
    here, and the base URL and model `provider` names (KNOQ_MODEL, else the default)."""
    parameters = {"AnthropicApiKeySecretArn": secret_arn, "AnthropicBaseUrl": provider["base_url"]}
    if provider.get("model"):
        parameters["Model"] = provider["model"]
    return parameters


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
    _serialise_dynamodb()
    _cache_what_moto_recomputes()
    import limits

    limits.install()  # AWS limits moto lets through (limits.py), in every mode
    if chaos_mode is not None:
        chaos.install()
    if args.fault_injection:
        _inject_dynamodb_faults()
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
        invoker = _report_function_errors_as_aws_lambda_does(
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
        _run_schedules(lambda_endpoint.rstrip("/"), schedules(load_template()), stop)
    if invoker is not None:
        _run_execution_status_rules(endpoint, invoker, args.prefix, execution_status_rules(load_template()), stop)
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

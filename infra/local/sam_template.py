"""template.yaml as the local stack reads it: the tables, functions, state machines, schedules
and execution-status rules it declares, each function's environment with every !Ref resolved
to its local name, and the template parameters the local stack sets (LOCAL_PARAMETERS,
`--parameter NAME=VALUE`). Pure reading: nothing here starts or calls anything.

`stack.py` builds the stack from it; `emulator_patches.py` runs what it declares that the
emulator lacks (schedules, rules).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml


#: The repository, and its template.
ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
#: The region the local stack runs in.
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


def provider_parameters(secret_arn: str, provider: dict[str, str]) -> dict[str, str]:
    """Template parameters of the worker's provider settings, locally: the secret created
    here, and the base URL and model `provider` names (KNOQ_MODEL, else the default)."""
    parameters = {"AnthropicApiKeySecretArn": secret_arn, "AnthropicBaseUrl": provider["base_url"]}
    if provider.get("model"):
        parameters["Model"] = provider["model"]
    return parameters

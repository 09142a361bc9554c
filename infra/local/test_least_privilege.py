"""Least privilege: template.yaml grants every function and the turn workflow exactly what
their code uses, each statement written out, no wildcard anywhere.

Run by `make test` (python -m unittest discover -s infra/local). The checks are plain
functions that return a list of problems; `TemplateIsLeastPrivilegeTest` runs them on the
real template and the real Rust sources, `ChecksCanFailTest` on mutated copies, so each
check is shown to catch what it is for.

When the code starts (or stops) calling DynamoDB or Step Functions somewhere, update NEEDS
below (and the template's Policies with it): `test_needs_agrees_with_the_code` fails until
both agree.
"""

from __future__ import annotations

import copy
import json
import re
import unittest
from pathlib import Path

import yaml

import sam_template

SHARED_SRC = sam_template.ROOT / "shared" / "src"

# ----------------------------------------------------------------------------------------
# What the code needs: function -> (template resource, index or None) -> IAM actions.
# Derived from shared/src: every HTTP function authenticates first (auth.rs ->
# store/auth_sessions.rs GetItem); a transaction (store/mod.rs `transact`) needs the
# per-item action of each of its items (Put -> PutItem, Update -> UpdateItem), never a
# Transact* action; an event is always appended in a transaction of an Update of the session
# item and a Put of the event (store/sessions/mod.rs `append`).
# ----------------------------------------------------------------------------------------
AUTH = ("AuthSessionsTable", None)
LIMITS = ("RateLimitsTable", None)
SESSIONS = ("SessionsTable", None)
OWNER_INDEX = ("SessionsTable", "by_owner")
PURGE_QUEUE = ("SessionsTable", "purge_queue")
EVENTS = ("EventsTable", None)
ORGANISATIONS = ("OrganisationsTable", None)
TURN = ("TurnStateMachine", None)
#: The model provider's API key: a secret the stack does not own, named by a parameter whose
#: AllowedPattern pins it to one Secrets Manager secret ARN (see `parameter_resource`).
API_KEY_SECRET = ("AnthropicApiKeySecretArn", None)

NEEDS: dict[str, dict[tuple[str, str | None], set[str]]] = {
    # routes/cancel.rs
    "CancelFunction": {
        # workflow.rs wake: SendTaskSuccess of the token the stamp returned
        TURN: {"states:SendTaskSuccess"},
        AUTH: {"dynamodb:GetItem"},
        # rate_limit.rs: one limit is a plain UpdateItem, several a transaction of Updates
        LIMITS: {"dynamodb:UpdateItem"},
        # sessions.cancel (the stamp), then get + terminate when no live run will end it
        SESSIONS: {"dynamodb:UpdateItem", "dynamodb:GetItem"},
        # terminate: the status_terminated event, in the append transaction; a refused
        # append reads whether its own event landed (sessions/mod.rs event_written)
        EVENTS: {"dynamodb:PutItem", "dynamodb:GetItem"},
    },
    # routes/create_session.rs
    "CreateSessionFunction": {
        AUTH: {"dynamodb:GetItem"},
        LIMITS: {"dynamodb:UpdateItem"},  # minute and hour limits: one transaction of Updates
        ORGANISATIONS: {"dynamodb:GetItem"},  # organisations.policy
        # sessions.create: Put of the session (+ Put of its first event); when the run
        # cannot start (routes/mod.rs start_run): get, then fail_turn's guarded Update
        SESSIONS: {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem"},
        # the first user_message; fail_turn's error event; event_written after a refusal
        EVENTS: {"dynamodb:PutItem", "dynamodb:GetItem"},
        TURN: {"states:StartExecution"},  # workflow.rs
    },
    # routes/message.rs
    "MessageFunction": {
        AUTH: {"dynamodb:GetItem"},
        LIMITS: {"dynamodb:UpdateItem"},
        # get_owned, then append_message_queued / append_message_starting_run (Update);
        # start_run's failure path as in create
        SESSIONS: {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        EVENTS: {"dynamodb:PutItem", "dynamodb:GetItem"},  # the append; event_written
        TURN: {"states:StartExecution"},
    },
    # routes/list_sessions.rs -> sessions.list_owned
    "ListSessionsFunction": {
        AUTH: {"dynamodb:GetItem"},
        LIMITS: {"dynamodb:UpdateItem"},  # the read limit, shared with transcript: one UpdateItem
        OWNER_INDEX: {"dynamodb:Query"},
        SESSIONS: {"dynamodb:BatchGetItem"},  # consistent re-read of the listed ids
    },
    # routes/delete_session.rs
    "DeleteSessionFunction": {
        AUTH: {"dynamodb:GetItem"},
        # mark_deleted (UpdateItem), then purge.rs purge_session's remove_deleted (DeleteItem)
        SESSIONS: {"dynamodb:UpdateItem", "dynamodb:DeleteItem"},
        # events.purge: consistent Query of the keys, BatchWriteItem of DeleteRequests
        EVENTS: {"dynamodb:Query", "dynamodb:BatchWriteItem"},
    },
    # purge.rs sweep: pending_purges (index Query), then purge_session as in delete
    "PurgeSweeperFunction": {
        PURGE_QUEUE: {"dynamodb:Query"},
        SESSIONS: {"dynamodb:DeleteItem"},
        EVENTS: {"dynamodb:Query", "dynamodb:BatchWriteItem"},
    },
    # routes/transcript.rs
    "TranscriptFunction": {
        AUTH: {"dynamodb:GetItem"},
        LIMITS: {"dynamodb:UpdateItem"},  # the read limit, shared with list: one UpdateItem
        SESSIONS: {"dynamodb:GetItem"},  # get_owned
        EVENTS: {"dynamodb:Query"},  # events.page
    },
    # checker.rs: get; append_turn_event / terminate / fail_turn (Update + Put);
    # start_next_turn (UpdateItem)
    "CheckerFunction": {
        SESSIONS: {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        EVENTS: {"dynamodb:PutItem", "dynamodb:GetItem"},  # the append; event_written
        # workflow.rs answer / fail: the poll step's task token; start_on: a hand-over
        TURN: {"states:SendTaskSuccess", "states:SendTaskFailure", "states:StartExecution"},
    },
    # agent/worker.rs through store/turn_worker.rs: claim_turn, renew_lease, finish_turn,
    # add_token_usage (UpdateItem); append_worker_event (Update + Put, GetItem when refused);
    # the transcript as conversation (events.page: Query); agent/tools.rs search_sessions
    # (list_owned: index Query + BatchGetItem; events.page); lambda.rs: the API key, once
    "WorkerFunction": {
        SESSIONS: {"dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:BatchGetItem"},
        OWNER_INDEX: {"dynamodb:Query"},
        EVENTS: {"dynamodb:Query", "dynamodb:PutItem", "dynamodb:GetItem"},  # + event_written
        API_KEY_SECRET: {"secretsmanager:GetSecretValue"},
    },
}

#: Calls in shared/src that no function makes: (resource, action) -> who makes them.
CODE_ONLY = {
    ("AuthSessionsTable", "dynamodb:PutItem"): "knoq-admin issue-token (infra/admin)",
}

#: Which template resources each file of shared/src that calls AWS talks to, and, where a
#: file talks to several, which of its calls go to which (None: any call of the file).
SOURCE_TARGETS: dict[str, dict[str, set[str] | None]] = {
    "store/auth_sessions.rs": {"AuthSessionsTable": None},
    "store/organisations.rs": {"OrganisationsTable": None},
    "store/events.rs": {"EventsTable": None},
    # every call is on the sessions table but event_put, the Put of an appended event, and
    # event_written, the GetItem of an event a refused append looks for
    "store/sessions/mod.rs": {
        "SessionsTable": None,
        "EventsTable": {"dynamodb:PutItem", "dynamodb:GetItem"},
    },
    # the session's writers by concern: the sessions table only (their events go through
    # mod.rs's append)
    "store/sessions/cancel.rs": {"SessionsTable": None},
    "store/sessions/delete.rs": {"SessionsTable": None},
    "store/sessions/list.rs": {"SessionsTable": None},
    "store/sessions/messages.rs": {"SessionsTable": None},
    "store/sessions/run.rs": {"SessionsTable": None},
    "rate_limit.rs": {"RateLimitsTable": None},
    "workflow.rs": {"TurnStateMachine": None},
    "store/turn_worker.rs": {"SessionsTable": None},
    "lambda.rs": {"AnthropicApiKeySecretArn": None},
}

#: SDK calls -> the IAM action each needs. A transaction's items are counted one by one
#: (`Put::builder()` inside a TransactWriteItem is a PutItem); `transact_write_items()`
#: itself needs no action of its own.
SDK_CALLS = {
    "get_item": "dynamodb:GetItem",
    "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "batch_get_item": "dynamodb:BatchGetItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
    "execute_statement": "dynamodb:PartiQLSelect",
    "describe_table": "dynamodb:DescribeTable",
    "start_execution": "states:StartExecution",
    "start_sync_execution": "states:StartSyncExecution",
    "stop_execution": "states:StopExecution",
    "describe_execution": "states:DescribeExecution",
    "get_secret_value": "secretsmanager:GetSecretValue",
    "send_task_success": "states:SendTaskSuccess",
    "send_task_failure": "states:SendTaskFailure",
}
TRANSACTION_ITEMS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}

LAMBDA_INVOKE_INTEGRATIONS = {
    "arn:aws:states:::lambda:invoke",
    "arn:aws:states:::lambda:invoke.waitForTaskToken",
}


# ----------------------------------------------------------------------------------------
# Reading the template
# ----------------------------------------------------------------------------------------
def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def strings_in(node) -> list[str]:
    """Every string anywhere inside `node` (intrinsics included: a !Sub string, !Join parts)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings_in(value)]
    return []


def statements(node, path: str = ""):
    """(path, statement) of every IAM policy statement anywhere in `node`: every element of
    every `Statement` list (policy documents, SAM inline policies, trust policies, ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            if key == "Statement":
                for index, statement in enumerate(as_list(value)):
                    sid = statement.get("Sid") if isinstance(statement, dict) else None
                    yield f"{here}[{sid or index}]", statement
            else:
                yield from statements(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from statements(value, f"{path}[{index}]")


def resources_of(template: dict, *types: str) -> dict[str, dict]:
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") in types
    }


def wildcard_problems(template: dict) -> list[str]:
    """Any `*` in any Action or Resource of any statement in the template (inside !Sub,
    !Join, !If too); NotAction/NotResource (which grant everything else); a Resource taken
    from a parameter (which could be anything)."""
    parameters = set(template.get("Parameters", {}))
    problems = []
    for path, statement in statements(template):
        if not isinstance(statement, dict):
            problems.append(f"{path}: not a statement: {statement!r}")
            continue
        for key in ("NotAction", "NotResource"):
            if key in statement:
                problems.append(f"{path}: {key} grants everything it does not name")
        for key in ("Action", "NotAction", "Resource", "NotResource"):
            for text in strings_in(statement.get(key)):
                if "*" in text:
                    problems.append(f"{path}: wildcard in {key}: {text!r}")
        for resource in as_list(statement.get("Resource", [])):
            if isinstance(resource, dict) and resource.get("Ref") in parameters:
                if parameter_resource(template, resource["Ref"]) is None:
                    problems.append(f"{path}: Resource is parameter {resource['Ref']!r}")
    return problems


#: ARNs a parameter naming one resource must refuse: wildcards and partial ARNs.
TOO_BROAD = [
    "*",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:*",
    "arn:aws:secretsmanager:*:*:secret:knoq",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:knoq-*",
]


def parameter_resource(template: dict, name: str) -> tuple[str, None] | None:
    """A Resource given by parameter `name` names one resource only when the parameter's
    AllowedPattern pins it to an ARN and refuses every wildcard of TOO_BROAD."""
    pattern = template.get("Parameters", {}).get(name, {}).get("AllowedPattern")
    if not pattern or not pattern.startswith("^arn:"):
        return None
    if any(re.fullmatch(pattern, broad) for broad in TOO_BROAD):
        return None
    return name, None


def policy_shape_problems(template: dict) -> list[str]:
    """Every function and state machine has its own inline Policies, a list of policy
    documents with explicit statements: no SAM policy template, no managed policy, no role
    of its own making (Role), no Connectors, nothing inherited from Globals."""
    problems = []
    for section, settings in template.get("Globals", {}).items():
        for key in ("Policies", "Role", "PermissionsBoundary"):
            if key in settings:
                problems.append(f"Globals.{section}.{key}: permissions must be each resource's own")
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") == "AWS::Serverless::Connector" or "Connectors" in resource:
            problems.append(f"{logical_id}: SAM connectors generate policies; write the statements")
    owners = resources_of(template, "AWS::Serverless::Function", "AWS::Serverless::StateMachine")
    for logical_id, resource in owners.items():
        props = resource.get("Properties", {})
        if "Role" in props:
            problems.append(f"{logical_id}: Role given, so its permissions are not in Policies")
        policies = props.get("Policies")
        if policies is None:
            problems.append(f"{logical_id}: no Policies of its own")
            continue
        count = 0
        for index, policy in enumerate(as_list(policies)):
            where = f"{logical_id}.Policies[{index}]"
            if isinstance(policy, str):
                problems.append(f"{where}: managed policy {policy!r} instead of statements")
            elif isinstance(policy, dict) and "Statement" in policy:
                count += len(as_list(policy["Statement"]))
            elif isinstance(policy, dict):
                names = ", ".join(policy)
                problems.append(f"{where}: SAM policy template {names} instead of statements")
            else:
                problems.append(f"{where}: not a policy document: {policy!r}")
        if count == 0:
            problems.append(f"{logical_id}: Policies has no statement")
    return problems


#: A state machine's ARN built from its fixed Name (a !Ref would make a dependency cycle
#: when the state machine's own functions need it).
STATE_MACHINE_ARN_SUB = re.compile(
    r"arn:\$\{AWS::Partition\}:states:\$\{AWS::Region\}:\$\{AWS::AccountId\}:stateMachine:(.+)"
)
ARN_SUB = re.compile(r"\$\{(\w+)\.Arn\}(?:/index/([A-Za-z0-9_.-]+))?")
#: Resource types whose Ref is their ARN (a table's Ref is its name: not an IAM resource).
REF_IS_ARN = {
    "AWS::Serverless::StateMachine",
    "AWS::StepFunctions::StateMachine",
    "AWS::SNS::Topic",
}


def resource_target(template: dict, value) -> tuple[str, str | None] | str:
    """(logical id, index name or None) that an IAM Resource value names, or a problem."""
    resources = template.get("Resources", {})
    if isinstance(value, dict) and len(value) == 1:
        (kind, arg), = value.items()
        if kind == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else arg
            if len(parts) == 2 and parts[1] == "Arn" and parts[0] in resources:
                return parts[0], None
        elif kind == "Ref" and parameter_resource(template, arg) is not None:
            return parameter_resource(template, arg)
        elif kind == "Ref" and arg in resources:
            if resources[arg].get("Type") in REF_IS_ARN:
                return arg, None
            return f"Ref {arg} is not an ARN ({resources[arg].get('Type')})"
        elif kind == "Fn::Sub" and isinstance(arg, str):
            match = ARN_SUB.fullmatch(arg)
            if match and match.group(1) in resources:
                return match.group(1), match.group(2)
            named = STATE_MACHINE_ARN_SUB.fullmatch(arg)
            if named:
                for logical_id, resource in resources.items():
                    name = resource.get("Properties", {}).get("Name")
                    if resource.get("Type") in REF_IS_ARN and name == {"Fn::Sub": named.group(1)}:
                        return logical_id, None
    return f"{json.dumps(value)} names no resource of this template"


def granted(template: dict, logical_id: str) -> tuple[dict, list[str]]:
    """What the Allow statements of a resource's own Policies grant: (resource, index) ->
    actions, and the problems met reading them."""
    grants: dict[tuple[str, str | None], set[str]] = {}
    problems = []
    policies = template["Resources"][logical_id].get("Properties", {}).get("Policies", [])
    for policy in as_list(policies):
        if not isinstance(policy, dict):
            continue
        for path, statement in statements(policy, f"{logical_id}.Policies"):
            effect = statement.get("Effect") if isinstance(statement, dict) else None
            if effect == "Deny":
                continue
            if effect != "Allow":
                problems.append(f"{path}: Effect must be Allow or Deny, not {effect!r}")
                continue
            for resource in as_list(statement.get("Resource", [])):
                target = resource_target(template, resource)
                if isinstance(target, str):
                    problems.append(f"{path}: {target}")
                    continue
                for action in as_list(statement.get("Action", [])):
                    if not isinstance(action, str):
                        problems.append(f"{path}: action is not a plain string: {action!r}")
                        continue
                    grants.setdefault(target, set()).add(action)
    return grants, problems


def describe(target: tuple[str, str | None]) -> str:
    table, index = target
    return f"{table} index {index}" if index else table


def function_grant_problems(template: dict, needs: dict = NEEDS) -> list[str]:
    """Each function may do exactly what NEEDS says its code does: nothing more (least
    privilege), nothing less (it would fail with AccessDenied in AWS; the local emulator
    does not enforce IAM, so no other test would notice)."""
    problems = []
    functions = resources_of(template, "AWS::Serverless::Function")
    for logical_id in sorted(set(needs) - set(functions)):
        problems.append(f"NEEDS names {logical_id}, which the template no longer defines")
    for logical_id in functions:
        if logical_id not in needs:
            problems.append(f"{logical_id}: not in NEEDS; derive its entry from its code")
            continue
        grants, read_problems = granted(template, logical_id)
        problems += read_problems
        need = needs[logical_id]
        for target in sorted(set(grants) | set(need), key=lambda t: (t[0], t[1] or "")):
            have = {a.lower(): a for a in grants.get(target, set())}
            want = {a.lower(): a for a in need.get(target, set())}
            for action in sorted(set(have) - set(want)):
                hint = ""
                if action.startswith("dynamodb:transact"):
                    hint = " (a transaction needs its items' PutItem/UpdateItem/..., not this)"
                problems.append(
                    f"{logical_id}: may {have[action]} on {describe(target)}, "
                    f"which its code never does{hint}"
                )
            for action in sorted(set(want) - set(have)):
                problems.append(
                    f"{logical_id}: its code needs {want[action]} on {describe(target)}, "
                    "which its Policies do not grant"
                )
    return problems


def task_states(definition) -> list[dict]:
    """Every Task state of a definition, inside Parallel branches and Map iterators too."""
    found = []
    if isinstance(definition, dict):
        if definition.get("Type") == "Task":
            found.append(definition)
        for value in definition.values():
            found += task_states(value)
    elif isinstance(definition, list):
        for value in definition:
            found += task_states(value)
    return found


def state_machine_definition(props: dict, root: Path) -> dict | str:
    if isinstance(props.get("Definition"), dict):
        return props["Definition"]
    uri = props.get("DefinitionUri")
    if isinstance(uri, str):
        return yaml.safe_load((root / uri).read_text(encoding="utf-8"))
    return f"cannot read its definition ({json.dumps(uri)})"


def state_machine_problems(template: dict, root: Path = sam_template.ROOT) -> list[str]:
    """A state machine's role may invoke exactly the functions its definition names, and
    do nothing else."""
    problems = []
    functions = resources_of(template, "AWS::Serverless::Function")
    for logical_id, resource in resources_of(template, "AWS::Serverless::StateMachine").items():
        props = resource.get("Properties", {})
        definition = state_machine_definition(props, root)
        if isinstance(definition, str):
            problems.append(f"{logical_id}: {definition}")
            continue
        substitutions = props.get("DefinitionSubstitutions", {})
        named = set()
        for task in task_states(definition):
            resource_arn = task.get("Resource")
            if resource_arn in LAMBDA_INVOKE_INTEGRATIONS:
                arguments = task.get("Parameters") or task.get("Arguments") or {}
                function_name = arguments.get("FunctionName")
            else:
                function_name = resource_arn  # a Lambda ARN as the Task's Resource
            placeholder = re.fullmatch(r"\$\{(\w+)\}", function_name or "")
            value = substitutions.get(placeholder.group(1)) if placeholder else None
            target = resource_target(template, value) if value is not None else None
            if isinstance(target, tuple) and target[0] in functions:
                named.add(target)
            else:
                problems.append(
                    f"{logical_id}: Task {resource_arn} {function_name!r} is not a function "
                    "of this template through DefinitionSubstitutions; extend this test"
                )
        grants, read_problems = granted(template, logical_id)
        problems += read_problems
        invocable = set()
        for target, actions in grants.items():
            for action in actions:
                if action.lower() == "lambda:invokefunction":
                    invocable.add(target)
                else:
                    problems.append(
                        f"{logical_id}: may {action} on {describe(target)}; its definition "
                        "only invokes functions"
                    )
        for target in sorted(invocable - named):
            problems.append(
                f"{logical_id}: may invoke {describe(target)}, which its definition never names"
            )
        for target in sorted(named - invocable):
            problems.append(
                f"{logical_id}: its definition invokes {describe(target)}, which its role may not"
            )
    return problems


def template_problems(template: dict, root: Path = sam_template.ROOT) -> list[str]:
    return (
        wildcard_problems(template)
        + policy_shape_problems(template)
        + function_grant_problems(template)
        + state_machine_problems(template, root)
    )


# ----------------------------------------------------------------------------------------
# Reading the code
# ----------------------------------------------------------------------------------------
def rust_sources(src: Path = SHARED_SRC) -> dict[str, str]:
    return {
        path.relative_to(src).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(src.rglob("*.rs"))
    }


def actions_called(source: str) -> set[str]:
    """The IAM actions the AWS SDK calls in one Rust file need (comments skipped)."""
    code = "\n".join(re.sub(r"//.*", "", line) for line in source.splitlines())
    actions = {SDK_CALLS[m] for m in re.findall(r"\.(\w+)\(\)", code) if m in SDK_CALLS}
    actions |= {
        TRANSACTION_ITEMS[m]
        for m in re.findall(r"\b(\w+)::builder\(\)", code)
        if m in TRANSACTION_ITEMS
    }
    return actions


def code_problems(sources: dict[str, str], needs: dict = NEEDS) -> list[str]:
    """NEEDS and the code agree: every action the code calls on a resource is in some
    function's entry for it (or in CODE_ONLY), and every entry is a call the code makes."""
    problems = []
    called: dict[str, set[str]] = {}  # resource -> actions the code calls on it
    for name, source in sources.items():
        actions = actions_called(source)
        if not actions:
            continue
        if name not in SOURCE_TARGETS:
            problems.append(
                f"shared/src/{name} calls {sorted(actions)}: add it to SOURCE_TARGETS and NEEDS"
            )
            continue
        for action in sorted(actions):
            resources = {
                resource
                for resource, only in SOURCE_TARGETS[name].items()
                if only is None or action in only
            }
            for resource in resources:
                called.setdefault(resource, set()).add(action)
            in_needs = any(
                action in acts
                for need in needs.values()
                for (resource, _), acts in need.items()
                if resource in resources
            )
            if not in_needs and not any((r, action) in CODE_ONLY for r in resources):
                problems.append(
                    f"shared/src/{name} calls {action} on {'/'.join(sorted(resources))}, "
                    "which no function's NEEDS entry has"
                )
    for logical_id, need in needs.items():
        for (resource, index), actions in need.items():
            for action in sorted(actions - called.get(resource, set())):
                problems.append(
                    f"NEEDS gives {logical_id} {action} on {describe((resource, index))}, "
                    "which no code calls"
                )
    return problems


# ----------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------
class TemplateIsLeastPrivilegeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.template = sam_template.load_template()

    def test_the_template_has_what_these_checks_read(self):
        functions = resources_of(self.template, "AWS::Serverless::Function")
        self.assertGreaterEqual(len(functions), 7)
        self.assertGreaterEqual(len(list(statements(self.template))), 20)
        self.assertTrue(resources_of(self.template, "AWS::Serverless::StateMachine"))

    def test_no_wildcard_in_any_action_or_resource(self):
        self.assertEqual(wildcard_problems(self.template), [])

    def test_every_function_and_state_machine_has_its_own_explicit_statements(self):
        self.assertEqual(policy_shape_problems(self.template), [])

    def test_every_function_may_do_exactly_what_its_code_does(self):
        self.assertEqual(function_grant_problems(self.template), [])

    def test_the_workflow_may_invoke_only_the_functions_its_definition_names(self):
        self.assertEqual(state_machine_problems(self.template), [])

    def test_needs_agrees_with_the_code(self):
        sources = rust_sources()
        self.assertIn("store/sessions/mod.rs", sources)
        self.assertEqual(code_problems(sources), [])


class ChecksCanFailTest(unittest.TestCase):
    """Each check, fed a mutated copy of the template (or of the code), fails."""

    @classmethod
    def setUpClass(cls):
        cls.template = sam_template.load_template()

    def mutated(self):
        return copy.deepcopy(self.template)

    def policies(self, template, logical_id):
        return template["Resources"][logical_id]["Properties"]["Policies"]

    def first_statements(self, template, logical_id):
        return self.policies(template, logical_id)[0]["Statement"]

    def assert_problem(self, problems: list[str], *fragments: str):
        self.assertTrue(
            any(all(f in p for f in fragments) for p in problems),
            f"expected a problem with {fragments} among {problems}",
        )

    def test_an_api_key_secret_parameter_that_allows_a_wildcard_fails(self):
        template = self.mutated()
        template["Parameters"]["AnthropicApiKeySecretArn"]["AllowedPattern"] = "^arn:aws:.+$"
        problems = template_problems(template)
        self.assert_problem(problems, "Resource is parameter 'AnthropicApiKeySecretArn'")

    def test_another_function_reading_the_api_key_fails(self):
        template = self.mutated()
        self.first_statements(template, "CheckerFunction").append(
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": {"Ref": "AnthropicApiKeySecretArn"},
            }
        )
        problems = template_problems(template)
        self.assert_problem(problems, "CheckerFunction", "secretsmanager:GetSecretValue")

    def test_a_wildcard_action_fails(self):
        template = self.mutated()
        self.first_statements(template, "CancelFunction")[0]["Action"] = ["dynamodb:*"]
        problems = template_problems(template)
        self.assert_problem(problems, "wildcard in Action", "dynamodb:*")
        self.assert_problem(problems, "CancelFunction: may dynamodb:*")

    def test_a_wildcard_resource_fails(self):
        template = self.mutated()
        self.first_statements(template, "TranscriptFunction")[1]["Resource"] = "*"
        problems = template_problems(template)
        self.assert_problem(problems, "TranscriptFunction", "wildcard in Resource")
        self.assert_problem(problems, "names no resource of this template")

    def test_a_wildcard_inside_a_sub_string_fails(self):
        template = self.mutated()
        for statement in self.first_statements(template, "ListSessionsFunction"):
            if statement["Action"] == ["dynamodb:Query"]:
                statement["Resource"] = {"Fn::Sub": "${SessionsTable.Arn}/index/*"}
        self.assert_problem(wildcard_problems(template), "'${SessionsTable.Arn}/index/*'")

    def test_a_wildcard_in_any_other_policy_of_the_template_fails(self):
        template = self.mutated()
        template["Resources"]["ExtraPolicy"] = {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "extra",
                "Roles": ["someone"],
                "PolicyDocument": {
                    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                   "Resource": {"Fn::Join": ["", ["arn:aws:s3:::b/", "*"]]}}],
                },
            },
        }
        self.assert_problem(wildcard_problems(template), "ExtraPolicy", "wildcard in Resource")

    def test_not_action_fails(self):
        template = self.mutated()
        statement = self.first_statements(template, "CheckerFunction")[0]
        statement["NotAction"] = statement.pop("Action")
        self.assert_problem(wildcard_problems(template), "NotAction grants everything")

    def test_a_function_without_policies_fails(self):
        template = self.mutated()
        del template["Resources"]["MessageFunction"]["Properties"]["Policies"]
        problems = template_problems(template)
        self.assert_problem(problems, "MessageFunction: no Policies of its own")
        self.assert_problem(problems, "MessageFunction: its code needs dynamodb:GetItem")

    def test_a_function_with_a_role_of_its_own_fails(self):
        template = self.mutated()
        props = template["Resources"]["CheckerFunction"]["Properties"]
        del props["Policies"]
        props["Role"] = "arn:aws:iam::123456789012:role/anything"
        self.assert_problem(policy_shape_problems(template), "CheckerFunction: Role given")

    def test_a_sam_policy_template_fails(self):
        template = self.mutated()
        self.policies(template, "TranscriptFunction").append(
            {"DynamoDBCrudPolicy": {"TableName": {"Ref": "EventsTable"}}}
        )
        self.assert_problem(policy_shape_problems(template), "SAM policy template DynamoDBCrudPolicy")

    def test_a_managed_policy_fails(self):
        template = self.mutated()
        self.policies(template, "TranscriptFunction").append("AmazonDynamoDBReadOnlyAccess")
        self.assert_problem(policy_shape_problems(template), "managed policy 'AmazonDynamoDBReadOnlyAccess'")

    def test_an_action_the_code_does_not_need_fails(self):
        template = self.mutated()
        self.first_statements(template, "TranscriptFunction").append(
            {"Effect": "Allow", "Action": ["dynamodb:Scan", "dynamodb:PutItem"],
             "Resource": {"Fn::GetAtt": ["EventsTable", "Arn"]}}
        )
        problems = function_grant_problems(template)
        self.assert_problem(problems, "TranscriptFunction: may dynamodb:Scan on EventsTable")
        self.assert_problem(problems, "TranscriptFunction: may dynamodb:PutItem on EventsTable")

    def test_a_needed_action_on_the_wrong_table_fails(self):
        template = self.mutated()
        for statement in self.first_statements(template, "DeleteSessionFunction"):
            if "dynamodb:BatchWriteItem" in statement["Action"]:
                statement["Resource"] = {"Fn::GetAtt": ["SessionsTable", "Arn"]}
        problems = function_grant_problems(template)
        self.assert_problem(problems, "may dynamodb:BatchWriteItem on SessionsTable")
        self.assert_problem(problems, "needs dynamodb:BatchWriteItem on EventsTable")

    def test_a_transact_write_items_action_fails(self):
        template = self.mutated()
        self.first_statements(template, "CheckerFunction").append(
            {"Effect": "Allow", "Action": "dynamodb:TransactWriteItems",
             "Resource": {"Fn::GetAtt": ["SessionsTable", "Arn"]}}
        )
        self.assert_problem(function_grant_problems(template), "TransactWriteItems", "PutItem/UpdateItem")

    def test_the_table_instead_of_its_index_fails(self):
        template = self.mutated()
        for statement in self.first_statements(template, "ListSessionsFunction"):
            if statement["Action"] == ["dynamodb:Query"]:
                statement["Resource"] = {"Fn::GetAtt": ["SessionsTable", "Arn"]}
        problems = function_grant_problems(template)
        self.assert_problem(problems, "may dynamodb:Query on SessionsTable,")
        self.assert_problem(problems, "needs dynamodb:Query on SessionsTable index by_owner")

    def test_a_table_name_as_resource_fails(self):
        template = self.mutated()
        self.first_statements(template, "TranscriptFunction")[1]["Resource"] = {"Ref": "SessionsTable"}
        self.assert_problem(function_grant_problems(template), "Ref SessionsTable is not an ARN")

    def test_a_function_missing_from_needs_fails(self):
        template = self.mutated()
        template["Resources"]["SpareFunction"] = copy.deepcopy(template["Resources"]["TranscriptFunction"])
        self.assert_problem(function_grant_problems(template), "SpareFunction: not in NEEDS")

    def test_a_workflow_that_may_invoke_another_function_fails(self):
        template = self.mutated()
        statement = self.first_statements(template, "TurnStateMachine")[0]
        statement["Resource"] = [statement["Resource"], {"Fn::GetAtt": ["CancelFunction", "Arn"]}]
        self.assert_problem(
            state_machine_problems(template), "may invoke CancelFunction, which its definition never names"
        )

    def test_a_workflow_that_may_do_more_than_invoke_fails(self):
        template = self.mutated()
        self.first_statements(template, "TurnStateMachine").append(
            {"Effect": "Allow", "Action": "dynamodb:GetItem",
             "Resource": {"Fn::GetAtt": ["SessionsTable", "Arn"]}}
        )
        self.assert_problem(state_machine_problems(template), "may dynamodb:GetItem on SessionsTable")

    def test_a_workflow_whose_definition_names_another_function_fails(self):
        template = self.mutated()
        props = template["Resources"]["TurnStateMachine"]["Properties"]
        props["DefinitionSubstitutions"]["CheckerFunctionArn"] = {"Fn::GetAtt": ["CancelFunction", "Arn"]}
        problems = state_machine_problems(template)
        self.assert_problem(problems, "may invoke CheckerFunction, which its definition never names")
        self.assert_problem(problems, "invokes CancelFunction, which its role may not")

    def test_an_inline_definition_is_read_too(self):
        template = self.mutated()
        props = template["Resources"]["TurnStateMachine"]["Properties"]
        props["Definition"] = json.loads((sam_template.ROOT / props.pop("DefinitionUri")).read_text())
        self.assertEqual(state_machine_problems(template), [])
        props["Definition"]["States"]["Poll"]["Parameters"]["FunctionName"] = "arn:aws:lambda:x"
        self.assert_problem(state_machine_problems(template), "is not a function of this template")

    def test_code_that_calls_more_than_needs_says_fails(self):
        sources = rust_sources()
        sources["store/events.rs"] += "\nfn more(c: &Client) { c.scan().send(); }\n"
        self.assert_problem(code_problems(sources), "store/events.rs calls dynamodb:Scan on EventsTable")

    def test_a_new_file_that_calls_aws_fails(self):
        sources = rust_sources()
        sources["store/new.rs"] = "fn f(c: &Client) { c.get_item().send(); }"
        self.assert_problem(code_problems(sources), "store/new.rs calls ['dynamodb:GetItem']")

    def test_needs_that_no_code_calls_fails(self):
        needs = copy.deepcopy(NEEDS)
        needs["TranscriptFunction"][EVENTS].add("dynamodb:DeleteItem")
        self.assert_problem(
            code_problems(rust_sources(), needs), "TranscriptFunction dynamodb:DeleteItem on EventsTable"
        )

    def test_transaction_items_count_as_their_own_actions(self):
        source = "let u = Update::builder(); let p = Put::builder(); c.transact_write_items();"
        self.assertEqual(actions_called(source), {"dynamodb:UpdateItem", "dynamodb:PutItem"})
        self.assertEqual(actions_called("// c.scan()\n"), set())


if __name__ == "__main__":
    unittest.main()

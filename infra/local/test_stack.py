"""Checks that template.yaml gives the local stack and the functions what they need.

Run by `make test` (python -m unittest discover -s infra/local).
"""

import copy
import json
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import yaml

import emulator_patches
import sam_template
import stack

CONFIG_RS = sam_template.ROOT / "shared" / "src" / "config.rs"


class TemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.template = sam_template.load_template()

    def test_short_form_tags_are_read(self):
        cancel = self.template["Resources"]["CancelFunction"]["Properties"]
        resources = [
            statement["Resource"]
            for statement in cancel["Policies"][0]["Statement"]
        ]
        self.assertIn({"Fn::GetAtt": ["SessionsTable", "Arn"]}, resources)

    def test_every_table_becomes_a_create_request_with_its_keys(self):
        requests = {c["TableName"]: (c, ttl) for c, ttl in sam_template.create_table_requests(self.template, "p-")}
        self.assertEqual(
            set(requests),
            {f"p-{t}" for t in ["SessionsTable", "EventsTable", "AuthSessionsTable",
                                "RateLimitsTable", "OrganisationsTable"]},
        )
        sessions, _ = requests["p-SessionsTable"]
        self.assertEqual(sessions["GlobalSecondaryIndexes"][0]["IndexName"], "by_owner")
        for name in ["p-AuthSessionsTable", "p-RateLimitsTable"]:
            _, ttl = requests[name]
            self.assertEqual(ttl["TimeToLiveSpecification"]["AttributeName"], "expires_at")

    def test_environment_resolves_every_reference(self):
        env = sam_template.function_environment(
            self.template, "p-", {"AllowedOrigin": "http://127.0.0.1:9000", **PROVIDER}
        )
        self.assertEqual(env["SESSIONS_TABLE"], "p-SessionsTable")
        self.assertEqual(env["ALLOWED_ORIGIN"], "http://127.0.0.1:9000")
        self.assertEqual(env["SESSION_COOKIE_NAME"], "__Host-knoq_session", "production's default")
        for value in env.values():
            self.assertNotIn("Ref", value)

    def test_every_variable_the_functions_require_is_set_by_the_template(self):
        required = set(re.findall(r'required\("([A-Z_]+)"\)', CONFIG_RS.read_text()))
        self.assertGreaterEqual(len(required), 6, "config.rs changed shape; update this test")
        env = sam_template.function_environment(self.template, "p-", PROVIDER)
        self.assertEqual(required - set(env), set())
        self.assertEqual(env["ANTHROPIC_API_KEY_SECRET_ARN"], "arn:local-secret")

    def test_a_parameter_without_default_must_be_set_locally(self):
        with self.assertRaises(SystemExit):
            sam_template.function_environment(self.template, "p-", {})

    def test_the_local_stack_names_the_cookie_without_the_https_only_prefix(self):
        env = sam_template.function_environment(self.template, "p-", {**sam_template.LOCAL_PARAMETERS, **PROVIDER})
        self.assertEqual(env["SESSION_COOKIE_NAME"], "knoq_session")

    def test_every_function_has_a_log_group_with_the_retention_parameter(self):
        groups = {
            logical_id: resource["Properties"]
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == "AWS::Logs::LogGroup"
        }
        named = {}
        for logical_id, props in groups.items():
            match = re.fullmatch(r"/aws/lambda/\$\{(\w+)\}", props["LogGroupName"].get("Fn::Sub", ""))
            self.assertIsNotNone(match, f"{logical_id}: named as Lambda names a function's group")
            named[match.group(1)] = logical_id
            self.assertEqual(props["RetentionInDays"], {"Ref": "LogRetentionDays"}, logical_id)
        self.assertEqual(set(named), set(sam_template.functions(self.template)), "one per function")
        parameter = self.template["Parameters"]["LogRetentionDays"]
        self.assertEqual(parameter["Default"], 30)
        self.assertIn(parameter["Default"], parameter["AllowedValues"])

    def test_the_api_throttles_every_route_by_default_from_the_parameters(self):
        api = self.template["Resources"]["HttpApi"]["Properties"]
        self.assertEqual(
            api["DefaultRouteSettings"],
            {"ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
             "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"}},
        )
        parameters = self.template["Parameters"]
        self.assertEqual(parameters["ApiThrottlingBurstLimit"]["Default"], 200)
        self.assertEqual(parameters["ApiThrottlingRateLimit"]["Default"], 100)
        create = api["RouteSettings"]["POST /api/managed-agents/session"]
        for key in ["ThrottlingBurstLimit", "ThrottlingRateLimit"]:
            tighter = parameters[create[key]["Ref"]]["Default"]
            self.assertLess(tighter, parameters[api["DefaultRouteSettings"][key]["Ref"]]["Default"])

    def test_the_purge_sweeper_runs_every_minute_and_other_schedules_are_read_or_refused(self):
        self.assertEqual(sam_template.schedules(self.template), {"purge-sweeper": 60})
        resources = copy.deepcopy(self.template["Resources"])
        events = resources["PurgeSweeperFunction"]["Properties"]["Events"]
        events["EveryMinute"]["Properties"]["Schedule"] = "rate(2 hours)"
        self.assertEqual(sam_template.schedules({**self.template, "Resources": resources}), {"purge-sweeper": 7200})
        events["EveryMinute"]["Properties"]["Schedule"] = "cron(0 * * * ? *)"
        with self.assertRaises(SystemExit):
            sam_template.schedules({**self.template, "Resources": resources})
        event = json.loads(emulator_patches.scheduled_event())
        self.assertEqual((event["source"], event["detail-type"]), ("aws.events", "Scheduled Event"))

    def test_a_turn_execution_that_ends_unfinished_goes_to_the_checker_and_other_rules_are_refused(self):
        rules = sam_template.execution_status_rules(self.template)
        self.assertEqual(rules, [{
            "function": "checker",
            "statuses": ["FAILED", "TIMED_OUT", "ABORTED"],
            "state_machines": ["TurnStateMachine"],
        }])
        resources = copy.deepcopy(self.template["Resources"])
        rule = resources["CheckerFunction"]["Properties"]["Events"]["RunEndedUnfinished"]["Properties"]
        rule["Pattern"]["source"] = ["aws.s3"]
        with self.assertRaises(SystemExit):
            sam_template.execution_status_rules({**self.template, "Resources": resources})
        described = {
            "executionArn": "arn:aws:states:us-east-1:123456789012:execution:m:r", "name": "r",
            "status": "ABORTED", "input": '{"sessionId":"s","runId":"r"}', "startDate": None,
        }
        event = json.loads(emulator_patches.execution_status_event(described, "arn:m"))
        self.assertEqual(event["detail-type"], "Step Functions Execution Status Change")
        self.assertEqual(event["source"], "aws.states")
        self.assertEqual(event["detail"]["status"], "ABORTED")
        self.assertEqual(json.loads(event["detail"]["input"]), {"sessionId": "s", "runId": "r"})

    def test_the_purge_queue_index_keys_tombstones_by_their_mark(self):
        table = self.template["Resources"]["SessionsTable"]["Properties"]
        [index] = [i for i in table["GlobalSecondaryIndexes"] if i["IndexName"] == "purge_queue"]
        self.assertEqual([k["AttributeName"] for k in index["KeySchema"]], ["purge_queue", "deleted_at"])
        types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        self.assertEqual((types["purge_queue"], types["deleted_at"]), ("S", "S"))

    def test_unknown_reference_is_an_error(self):
        broken = {**self.template, "Globals": {"Function": {"Environment": {"Variables": {"X": {"Ref": "Nope"}}}}}}
        with self.assertRaises(SystemExit):
            sam_template.function_environment(broken, "p-", {})

    def test_the_read_limit_is_300_in_production_and_dev_and_raised_by_a_parameter_override(self):
        parameter = self.template["Parameters"]["ReadsLimitPerMinute"]
        self.assertEqual((parameter["Default"], parameter["MinValue"]), (300, 1))
        dev = sam_template.function_environment(self.template, "p-", {**sam_template.LOCAL_PARAMETERS, **PROVIDER})
        self.assertEqual(dev["RATE_LIMIT_READS_PER_MINUTE"], "300")
        raised = sam_template.parameter_overrides(self.template, ["ReadsLimitPerMinute=100000"])
        env = sam_template.function_environment(
            self.template, "p-", {**sam_template.LOCAL_PARAMETERS, **PROVIDER, **raised}
        )
        self.assertEqual(env["RATE_LIMIT_READS_PER_MINUTE"], "100000")
        self.assertEqual(env["RATE_LIMIT_CANCEL_PER_MINUTE"], "30", "the other limits keep theirs")

    def test_a_parameter_override_must_name_a_template_parameter(self):
        self.assertEqual(sam_template.parameter_overrides(self.template, None), {})
        self.assertEqual(sam_template.parameter_overrides(self.template, ["Model=a=b"]), {"Model": "a=b"})
        for bad in ["ReadsLimitPerMinut=5", "ReadsLimitPerMinute", "=5"]:
            with self.assertRaises(SystemExit, msg=bad):
                sam_template.parameter_overrides(self.template, [bad])


#: The provider parameters the local stack sets (the template has no default for the secret).
PROVIDER = sam_template.provider_parameters("arn:local-secret", {"base_url": "http://127.0.0.1:1"})


class StateMachineTest(unittest.TestCase):
    """The turn workflow's definition, exactly as template.yaml deploys it."""

    @classmethod
    def setUpClass(cls):
        cls.template = sam_template.load_template()
        cls.props = cls.template["Resources"]["TurnStateMachine"]["Properties"]
        cls.definition = json.loads((sam_template.ROOT / cls.props["DefinitionUri"]).read_text())

    def task_states(self, definition=None):
        states = (definition or self.definition)["States"]
        return {name: state for name, state in states.items() if state["Type"] == "Task"}

    def test_every_function_the_definition_invokes_is_a_function_of_the_template(self):
        invoked = set()
        for name, state in self.task_states().items():
            self.assertIn(
                state["Resource"],
                {"arn:aws:states:::lambda:invoke", "arn:aws:states:::lambda:invoke.waitForTaskToken"},
                name,
            )
            placeholder = re.fullmatch(r"\$\{(\w+)\}", state["Parameters"]["FunctionName"])
            self.assertIsNotNone(placeholder, f"{name} must name its function through a substitution")
            invoked.add(placeholder.group(1))
        substitutions = self.props["DefinitionSubstitutions"]
        self.assertEqual(invoked, set(substitutions), "every substitution is used, none is missing")
        functions = sam_template.functions(self.template)
        for key in invoked:
            target = substitutions[key]["Fn::GetAtt"]
            self.assertIn(target[0], functions, f"{key} names a function the template defines")
            self.assertEqual(target[1], "Arn")
        # ...and the role may invoke exactly those functions, nothing else.
        statements = self.props["Policies"][0]["Statement"]
        allowed = set()
        for statement in statements:
            if "lambda:InvokeFunction" in statement["Action"]:
                resources = statement["Resource"]
                resources = resources if isinstance(resources, list) else [resources]
                allowed |= {json.dumps(resource) for resource in resources}
        self.assertEqual(allowed, {json.dumps(substitutions[key]) for key in invoked})

    def test_the_loop_polls_with_a_token_that_times_out_into_the_next_poll(self):
        states = self.definition["States"]
        self.assertEqual(self.definition["StartAt"], "StartWorker")
        start = states["StartWorker"]
        self.assertEqual(start["Parameters"]["InvocationType"], "Event", "the worker runs beside the loop")
        self.assertEqual(start["Parameters"]["FunctionName"], "${WorkerFunctionArn}")
        self.assertEqual(start["Next"], "Poll")
        self.assertEqual(start["Catch"][0]["Next"], "RecordFailure")
        poll = states["Poll"]
        self.assertEqual(poll["Resource"], "arn:aws:states:::lambda:invoke.waitForTaskToken")
        self.assertEqual(poll["Parameters"]["Payload"]["taskToken.$"], "$$.Task.Token")
        self.assertEqual(poll["TimeoutSecondsPath"], "$.pollSeconds", "the token's timeout is the wait")
        self.assertEqual(poll["Next"], "TurnGoesOn")
        self.assertEqual(poll["Parameters"]["FunctionName"], "${CheckerFunctionArn}")
        # A timed-out token is the normal cycle: caught (moto cannot Retry a token task's
        # timeout) back into Poll, and no Retry may match it.
        self.assertEqual(poll["Catch"][0], {"ErrorEquals": ["States.Timeout"], "ResultPath": None, "Next": "NextPoll"})
        self.assertEqual((states["NextPoll"]["Type"], states["NextPoll"]["Next"]), ("Pass", "Poll"))
        self.assertEqual(poll["Catch"][1]["Next"], "RecordFailure")
        for retry in poll["Retry"]:
            self.assertFalse({"States.ALL", "States.Timeout"} & set(retry["ErrorEquals"]), retry)
        choices = {c["StringEquals"]: c["Next"] for c in states["TurnGoesOn"]["Choices"]}
        self.assertEqual(choices, {"continue": "Poll", "startWorker": "StartWorker"})
        self.assertEqual(states["RecordFailure"]["Next"], "TurnFailed")
        self.assertGreater(self.definition["TimeoutSeconds"], 0)
        for name, state in states.items():
            for target in [state.get("Next"), state.get("Default")] + [
                c.get("Next") for c in state.get("Choices", []) + state.get("Catch", [])
            ]:
                if target is not None:
                    self.assertIn(target, states, f"{name} goes to a state that exists")

    def test_every_invoke_rides_out_a_minute_of_throttling_before_its_run_gives_up(self):
        # Chaos seed 102 (60 sessions): polls throttled past 4 attempts (7 s) failed their runs,
        # cutting answers the model had given in full.
        for name, state in self.task_states().items():
            [throttled] = [r for r in state["Retry"] if "Lambda.TooManyRequestsException" in r["ErrorEquals"]]
            self.assertEqual(throttled["ErrorEquals"], ["Lambda.TooManyRequestsException"], name)
            self.assertEqual(throttled["JitterStrategy"], "FULL", f"{name}: runs throttled together retry apart")
            patience, delay = 0, throttled["IntervalSeconds"]
            for _ in range(throttled["MaxAttempts"]):
                patience += min(delay, throttled["MaxDelaySeconds"])
                delay *= throttled["BackoffRate"]
            self.assertGreaterEqual(patience, 60, f"{name}: at most {patience} s of throttling")
            self.assertIs(state["Retry"][0], throttled, f"{name}: matched first")

    def test_local_definition_substitutes_the_local_function_name(self):
        local = json.loads(sam_template.state_machine_definition(self.template, "TurnStateMachine"))
        names = {name: state["Parameters"]["FunctionName"] for name, state in self.task_states(local).items()}
        self.assertEqual(names, {"StartWorker": "worker", "Poll": "checker", "RecordFailure": "checker"})

    def test_the_worker_is_the_one_function_started_asynchronously(self):
        self.assertEqual(sam_template.asynchronous_functions(self.template), {"worker"})

    def test_env_values_survive_dotenv_and_the_shell(self):
        self.assertEqual(stack.env_value("http://127.0.0.1:1"), "http://127.0.0.1:1")
        quoted = stack.env_value('say "hi" for $5, it\'s `fine`')
        echoed = subprocess.run(
            ["bash", "-c", f"X={quoted}; printf %s \"$X\""], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(echoed, 'say "hi" for $5, it\'s `fine`')

    def cfn_lint_with_definition(self, definition) -> subprocess.CompletedProcess:
        """cfn-lint reads neither a DefinitionUri file nor (after the SAM transform) an
        inlined definition, so lint the definition as the AWS::StepFunctions::StateMachine
        the transform produces: the same states, the same substitution keys."""
        substitutions = {
            key: f"arn:aws:lambda:us-east-1:123456789012:function:{key}"
            for key in self.props["DefinitionSubstitutions"]
        }
        machine = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {
                "TurnStateMachine": {
                    "Type": "AWS::StepFunctions::StateMachine",
                    "Properties": {
                        "RoleArn": "arn:aws:iam::123456789012:role/turn",
                        "StateMachineType": self.props["Type"],
                        "Definition": definition,
                        "DefinitionSubstitutions": substitutions,
                    },
                }
            },
        }
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as out:
            yaml.safe_dump(machine, out)
        try:
            return subprocess.run(
                [str(Path(sys.executable).parent / "cfn-lint"), out.name],
                capture_output=True,
                text=True,
            )
        finally:
            Path(out.name).unlink()

    def test_the_definition_passes_cfn_lint(self):
        result = self.cfn_lint_with_definition(self.definition)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_cfn_lint_does_check_the_definition(self):
        broken = copy.deepcopy(self.definition)
        broken["States"]["TurnGoesOn"]["Type"] = "Snooze"
        result = self.cfn_lint_with_definition(broken)
        self.assertNotEqual(result.returncode, 0, "a broken definition must fail the lint")
        self.assertIn("Snooze", result.stdout, result.stdout + result.stderr)


if __name__ == "__main__":
    unittest.main()

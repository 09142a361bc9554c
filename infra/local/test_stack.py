"""Checks that template.yaml gives the local stack and the functions what they need.

Run by `make test` (python -m unittest discover -s infra/local).
"""

import re
import unittest
from pathlib import Path

import stack

CONFIG_RS = stack.ROOT / "shared" / "src" / "config.rs"


class TemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.template = stack.load_template()

    def test_short_form_tags_are_read(self):
        cancel = self.template["Resources"]["CancelFunction"]["Properties"]
        resources = [
            statement["Resource"]
            for statement in cancel["Policies"][0]["Statement"]
        ]
        self.assertIn({"Fn::GetAtt": ["SessionsTable", "Arn"]}, resources)

    def test_every_table_becomes_a_create_request_with_its_keys(self):
        requests = {c["TableName"]: (c, ttl) for c, ttl in stack.create_table_requests(self.template, "p-")}
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
        env = stack.function_environment(self.template, "p-", {"AllowedOrigin": "http://127.0.0.1:9000"})
        self.assertEqual(env["SESSIONS_TABLE"], "p-SessionsTable")
        self.assertEqual(env["ALLOWED_ORIGIN"], "http://127.0.0.1:9000")
        self.assertEqual(env["SESSION_COOKIE_NAME"], "knoq_session")
        for value in env.values():
            self.assertNotIn("Ref", value)

    def test_every_variable_the_functions_require_is_set_by_the_template(self):
        required = set(re.findall(r'required\("([A-Z_]+)"\)', CONFIG_RS.read_text()))
        self.assertGreaterEqual(len(required), 6, "config.rs changed shape; update this test")
        env = stack.function_environment(self.template, "p-", {})
        self.assertEqual(required - set(env), set())

    def test_unknown_reference_is_an_error(self):
        broken = {**self.template, "Globals": {"Function": {"Environment": {"Variables": {"X": {"Ref": "Nope"}}}}}}
        with self.assertRaises(SystemExit):
            stack.function_environment(broken, "p-", {})


if __name__ == "__main__":
    unittest.main()

"""The fault injection's own rules (infra/local/faults.py): what a fault matches, how often,
and what it answers. The Rust tests (tests/tests/scenarios/faults.rs) check the same over HTTP with the SDK.

Run by `make test` (python -m unittest discover -s infra/local).
"""

import json
import time
import unittest

import faults


class FaultsTest(unittest.TestCase):
    def setUp(self):
        faults.clear()
        self.addCleanup(faults.clear)

    def test_a_fault_must_name_operation_table_and_a_known_error(self):
        for spec, message in [
            ({"table": "T", "error": "ThrottlingException"}, "operation"),
            ({"operation": "PutItem", "error": "ThrottlingException"}, "table"),
            ({"operation": "PutItem", "table": "T", "error": "Nope"}, "error must be one of"),
            ({"operation": "PutItem", "table": "T", "error": "ThrottlingException", "count": 0}, "count"),
            ({"operation": "PutItem", "table": "T", "error": "ThrottlingException", "count": True}, "count"),
            ({"operation": "PutItem", "table": "T", "error": "ThrottlingException", "contains": ""}, "contains"),
            ({"operation": "PutItem", "table": "T", "error": "ThrottlingException", "contains": ["a", ""]}, "contains"),
            ({"operation": "PutItem", "table": "T", "error": "ThrottlingException", "after": -1}, "after"),
            ({"operation": "PutItem", "table": "T", "error": "ThrottlingException", "after": "2"}, "after"),
            ({"operation": "PutItem", "table": "T", "error": "SlowResponse"}, "delayMs"),
            ({"operation": "PutItem", "table": "T", "error": "SlowResponse", "delayMs": 0}, "delayMs"),
            ({"operation": "PutItem", "table": "T", "error": "SlowResponse", "delayMs": 120_001}, "delayMs"),
            ({"operation": "PutItem", "table": "T", "error": "ThrottlingException", "delayMs": 5}, "delayMs"),
        ]:
            with self.assertRaisesRegex(ValueError, message):
                faults.plant(spec)

    def test_a_fault_matches_its_operation_table_suffix_and_text_as_often_as_asked(self):
        faults.plant({"operation": "UpdateItem", "table": "SessionsTable",
                      "error": "ThrottlingException", "count": 2, "contains": "s-1"})
        body = json.dumps({"TableName": "knoq-local-SessionsTable", "Key": {"id": {"S": "s-1"}}})
        other = json.dumps({"TableName": "knoq-local-SessionsTable", "Key": {"id": {"S": "s-2"}}})
        self.assertIsNone(faults._take("PutItem", body))
        self.assertIsNone(faults._take("UpdateItem", other))
        self.assertIsNone(faults._take("UpdateItem", body.replace("SessionsTable", "EventsTable")))
        self.assertIsNotNone(faults._take("UpdateItem", body))
        self.assertIsNotNone(faults._take("UpdateItem", body))
        self.assertIsNone(faults._take("UpdateItem", body), "spent after two")
        [listed] = faults.listed()
        self.assertEqual((listed["hits"], listed["remaining"]), (2, 0))

    def test_a_fault_without_count_lasts_until_cleared(self):
        fault_id = faults.plant({"operation": "Query", "table": "EventsTable", "error": "InternalServerError"})
        body = json.dumps({"TableName": "p-EventsTable"})
        for _ in range(5):
            self.assertIsNotNone(faults._take("Query", body))
        self.assertEqual(faults.clear(fault_id), 1)
        self.assertIsNone(faults._take("Query", body))

    def test_a_fault_with_several_texts_matches_requests_holding_them_all(self):
        faults.plant({"operation": "UpdateItem", "table": "SessionsTable",
                      "error": "CommittedResponseLost", "contains": ["s-1", "turn_seq + :one"]})
        body = json.dumps({"TableName": "p-SessionsTable", "Key": {"id": {"S": "s-1"}},
                           "UpdateExpression": "SET turn_seq = turn_seq + :one"})
        self.assertIsNone(faults._take("UpdateItem", body.replace("turn_seq + :one", "x = :y")))
        self.assertIsNone(faults._take("UpdateItem", body.replace("s-1", "s-2")))
        self.assertIsNotNone(faults._take("UpdateItem", body))

    def test_a_fault_with_after_lets_that_many_matching_requests_through_first(self):
        faults.plant({"operation": "BatchWriteItem", "table": "EventsTable",
                      "error": "InternalServerError", "after": 2, "contains": "s-1"})
        body = json.dumps({"RequestItems": {"p-EventsTable": [{"DeleteRequest": {"Key": "s-1"}}]}})
        other = body.replace("s-1", "s-2")
        self.assertIsNone(faults._take("BatchWriteItem", other), "others do not count")
        self.assertIsNone(faults._take("BatchWriteItem", body))
        self.assertIsNone(faults._take("BatchWriteItem", body))
        for _ in range(3):
            self.assertIsNotNone(faults._take("BatchWriteItem", body))
        [listed] = faults.listed()
        self.assertEqual((listed["passed"], listed["hits"]), (2, 3))

    def test_a_transaction_conflict_is_a_cancellation_naming_the_item_that_matched(self):
        faults.plant({"operation": "TransactWriteItems", "table": "EventsTable",
                      "error": "TransactionConflictException"})
        body = json.dumps({"TransactItems": [
            {"Update": {"TableName": "p-SessionsTable"}},
            {"Put": {"TableName": "p-EventsTable"}},
        ]})
        fault, index = faults._take("TransactWriteItems", body)
        self.assertEqual(index, 1)
        status, headers, answer = faults._error_response(fault["error"], "TransactWriteItems", 2, index)
        answer = json.loads(answer)
        self.assertEqual(status, 400)
        self.assertTrue(answer["__type"].endswith("#TransactionCanceledException"))
        self.assertEqual([r["Code"] for r in answer["CancellationReasons"]], ["None", "TransactionConflict"])
        self.assertEqual(headers["Content-Type"], "application/x-amz-json-1.0")

    def test_a_slow_response_holds_the_request_then_serves_it(self):
        faults.plant({"operation": "GetItem", "table": "T", "error": "SlowResponse",
                      "delayMs": 150, "count": 1})

        class Handler:  # what `_wrap_dynamodb` reads of moto's handler
            raw_body = json.dumps({"TableName": "p-T"}).encode()
            headers = {"X-Amz-Target": "DynamoDB_20120810.GetItem"}

        served = []
        call = faults._wrap_dynamodb(lambda handler: served.append(1) or (200, {}, "{}"))
        started = time.monotonic()
        self.assertEqual(call(Handler()), (200, {}, "{}"))
        self.assertGreaterEqual(time.monotonic() - started, 0.15)
        started = time.monotonic()
        self.assertEqual(call(Handler()), (200, {}, "{}"), "spent after one")
        self.assertLess(time.monotonic() - started, 0.1)
        self.assertEqual(served, [1, 1], "both served by the emulator itself")

    def test_errors_have_dynamodbs_status_and_type(self):
        for error, status in [("TransactionConflictException", 400), ("ThrottlingException", 400),
                              ("ProvisionedThroughputExceededException", 400), ("InternalServerError", 500)]:
            got, _, body = faults._error_response(error, "UpdateItem", 0, 0)
            self.assertEqual(got, status)
            self.assertTrue(json.loads(body)["__type"].endswith("#" + error))


if __name__ == "__main__":
    unittest.main()

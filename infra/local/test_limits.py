"""AWS's limits on the local emulator (infra/local/limits.py, and what moto enforces by
itself, checked so that an upgrade that drops one shows), answered with AWS's errors.
The Lambda payload limits are tested in test_invoke.py.

Run by `make test` (python -m unittest discover -s infra/local).
"""

import json
import logging
import time
import unittest

import boto3
from botocore.exceptions import ClientError

import invoke
import limits
from test_invoke import FakeWatch


class LimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from moto import mock_aws
        from moto.server import ThreadedMotoServer

        for noisy in ("werkzeug", "moto.stepfunctions"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        cls.mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        cls.mock.start()
        limits.install()
        cls.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        cls.server.start()
        host, port = cls.server.get_host_and_port()

        def client(service):
            return boto3.client(service, endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                                aws_access_key_id="test", aws_secret_access_key="test")

        cls.dynamodb, cls.sfn = client("dynamodb"), client("stepfunctions")
        cls.dynamodb.create_table(TableName="L", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                                  AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                                  BillingMode="PAY_PER_REQUEST")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.mock.stop()

    def assert_validation(self, call, message):
        with self.assertRaises(ClientError) as caught:
            call()
        error = caught.exception.response
        self.assertEqual((error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]),
                         ("ValidationException", 400))
        self.assertIn(message, error["Error"]["Message"])

    def test_an_item_over_400_kb_is_refused(self):
        big = {"S": "x" * 409_600}  # 400 KB as DynamoDB counts: 409,600 bytes, names included
        self.assert_validation(lambda: self.dynamodb.put_item(TableName="L", Item={"id": {"S": "a"}, "b": big}),
                               "Item size has exceeded the maximum allowed size")
        self.assert_validation(lambda: self.dynamodb.update_item(
            TableName="L", Key={"id": {"S": "a"}}, UpdateExpression="SET b = :b",
            ExpressionAttributeValues={":b": big}), "exceeded the maximum allowed size")
        self.assert_validation(lambda: self.dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "L", "Item": {"id": {"S": "a"}, "b": big}}}]), "Item size has exceeded")
        self.dynamodb.put_item(TableName="L", Item={"id": {"S": "a"}, "b": {"S": "x" * 390_000}})

    def test_a_transaction_over_100_items_or_4_mb_is_refused(self):
        self.assert_validation(lambda: self.dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "L", "Item": {"id": {"S": f"k{i}"}}}} for i in range(101)]), "100")
        items = [{"Put": {"TableName": "L", "Item": {"id": {"S": f"m{i}"}, "b": {"S": "x" * 45_000}}}}
                 for i in range(100)]
        self.assertGreater(limits.transaction_size({"TransactItems": items}), limits.TRANSACTION_BYTES_LIMIT)
        self.assert_validation(lambda: self.dynamodb.transact_write_items(TransactItems=items),
                               "Transaction request cannot be larger than 4 MB")
        self.dynamodb.transact_write_items(TransactItems=items[:80])  # 3.6 MB pass

    def test_sizes_are_counted_as_dynamodb_counts_them(self):
        self.assertEqual(limits.item_size({"id": {"S": "ab"}}), 4)
        self.assertEqual(limits.item_size({"n": {"N": "123"}}), 1 + 3)
        self.assertEqual(limits.item_size({"t": {"BOOL": True}, "m": {"M": {"k": {"S": "v"}}}}), 2 + 1 + 3 + 1 + 1 + 1)

    def test_a_task_result_over_256_kib_fails_the_execution_with_data_limit_exceeded(self):
        watch = FakeWatch()
        self.addCleanup(watch.close)
        watch.big_size = 256 * 1024 + 10
        undo = invoke.install(invoke.LambdaInvoker(watch.url, set(), concurrency=2))
        self.addCleanup(undo)
        definition = {"StartAt": "Big", "States": {"Big": {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "big", "Payload": {}}, "End": True}}}
        arn = self.sfn.create_state_machine(name="big", definition=json.dumps(definition),
                                            roleArn="arn:aws:iam::123456789012:role/r")["stateMachineArn"]
        run = self.sfn.start_execution(stateMachineArn=arn, name="big-1", input="{}")["executionArn"]
        deadline = time.monotonic() + 20
        while (described := self.sfn.describe_execution(executionArn=run))["status"] == "RUNNING":
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        self.assertEqual(described["status"], "FAILED")
        self.assertEqual(described.get("error"), "States.DataLimitExceeded")


if __name__ == "__main__":
    unittest.main()

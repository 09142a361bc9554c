"""The seeded random fault mode (infra/local/chaos.py), through a real emulator and the AWS
SDK for Python: each fault fires at rate 1 in the shape AWS sends it, never at rate 0, the
same seed draws the same schedule, stale reads show the previous version, bad specs are 400s.

Run by `make test` (python -m unittest discover -s infra/local).
"""

import json
import logging
import time
import unittest
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

import chaos
import invoke
from test_invoke import FakeWatch

ALL_OFF = {name: 0 for name in chaos.DEFAULT_RATES}


class ChaosTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from moto import mock_aws
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        cls.mock = mock_aws()
        cls.mock.start()
        chaos.install_recorder()
        chaos.install()
        cls.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        cls.server.start()
        host, port = cls.server.get_host_and_port()
        cls.endpoint = f"http://{host}:{port}"

        def client(service):
            return boto3.client(service, endpoint_url=cls.endpoint, region_name="us-east-1",
                                aws_access_key_id="test", aws_secret_access_key="test",
                                config=Config(retries={"total_max_attempts": 1}))

        cls.dynamodb, cls.sfn, cls.secrets = client("dynamodb"), client("stepfunctions"), client("secretsmanager")
        cls.dynamodb.create_table(TableName="p-T", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                                  AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                                  BillingMode="PAY_PER_REQUEST")
        cls.secrets.create_secret(Name="key", SecretString="sk")

    @classmethod
    def tearDownClass(cls):
        chaos.MODE.disable()
        cls.server.stop()
        cls.mock.stop()

    def setUp(self):
        self.addCleanup(chaos.MODE.disable)

    def only(self, name, rate=1.0, seed=1, scope=None):
        spec = {"seed": seed, "rates": {**ALL_OFF, name: rate}}
        if scope:
            spec["scope"] = scope
        chaos.MODE.enable(spec)

    def put(self, key, value):
        self.dynamodb.put_item(TableName="p-T", Item={"id": {"S": key}, "v": {"S": value}})

    def assert_error(self, call, code, status, message=None):
        with self.assertRaises(ClientError) as caught:
            call()
        error = caught.exception.response
        self.assertEqual((error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]), (code, status))
        if message:
            self.assertIn(message, error["Error"]["Message"])
        return error

    def test_dynamodb_faults_at_rate_one_are_answered_as_dynamodb_does(self):
        get = lambda: self.dynamodb.get_item(TableName="p-T", Key={"id": {"S": "a"}})  # noqa: E731
        self.only("dynamodb_throttled")
        with self.assertRaises(ClientError) as caught:
            get()
        self.assertIn(caught.exception.response["Error"]["Code"],
                      {"ThrottlingException", "ProvisionedThroughputExceededException"})
        self.assertEqual(caught.exception.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.only("dynamodb_internal_error")
        self.assert_error(get, "InternalServerError", 500)
        self.only("dynamodb_write_conflict")
        self.assert_error(lambda: self.put("a", "1"), "TransactionConflictException", 400, "Transaction is ongoing")
        get()  # reads are not writes
        self.only("dynamodb_transaction_conflict")
        error = self.assert_error(lambda: self.dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "p-T", "Item": {"id": {"S": "t1"}}}},
            {"Put": {"TableName": "p-T", "Item": {"id": {"S": "t2"}}}},
        ]), "TransactionCanceledException", 400)
        self.assertEqual(sorted(r["Code"] for r in error["CancellationReasons"]), ["None", "TransactionConflict"])
        self.assertEqual(chaos.MODE.state()["injected"], {"dynamodb_transaction_conflict": 1})

    def test_a_lost_response_follows_a_committed_write(self):
        self.only("dynamodb_committed_response_lost")
        self.assert_error(lambda: self.put("lost", "1"), "InternalServerError", 500)
        chaos.MODE.disable()
        item = self.dynamodb.get_item(TableName="p-T", Key={"id": {"S": "lost"}}, ConsistentRead=True)
        self.assertEqual(item["Item"]["v"], {"S": "1"}, "the write had committed")

    def test_a_write_to_an_item_a_transaction_just_touched_conflicts(self):
        self.only("dynamodb_write_conflict_near_transaction")
        self.dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "p-T", "Item": {"id": {"S": "tx"}, "v": {"S": "0"}}}}])
        key = [("p-T", chaos._key_json({"id": {"S": "tx"}}))]
        # The request just served touched the item (a few ms ago: this machine may be slower
        # than the window between two SDK calls, so the window is checked directly).
        self.assertTrue(chaos.MODE._near_transaction(key))
        chaos.MODE._transaction(key, +1)  # a transaction on the item is in flight
        self.assert_error(lambda: self.dynamodb.update_item(
            TableName="p-T", Key={"id": {"S": "tx"}}, UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"S": "1"}}), "TransactionConflictException", 400)
        self.put("other", "1")  # an item no transaction touched
        chaos.MODE._transaction(key, -1)
        time.sleep(chaos.TRANSACTION_WINDOW_SECS * 2)
        self.put("tx", "2")  # the transaction is long over

    def test_a_stale_read_shows_the_previous_version_then_the_new_one(self):
        self.put("s", "old")
        self.only("dynamodb_stale_read")
        self.put("s", "new")
        self.put("created", "x")
        stale = self.dynamodb.get_item(TableName="p-T", Key={"id": {"S": "s"}})
        self.assertEqual(stale["Item"]["v"], {"S": "old"})
        self.assertNotIn("Item", self.dynamodb.get_item(TableName="p-T", Key={"id": {"S": "created"}}))
        consistent = self.dynamodb.get_item(TableName="p-T", Key={"id": {"S": "s"}}, ConsistentRead=True)
        self.assertEqual(consistent["Item"]["v"], {"S": "new"}, "a consistent read is never stale")
        projected = self.dynamodb.get_item(TableName="p-T", Key={"id": {"S": "s"}}, ProjectionExpression="v")
        self.assertEqual(projected["Item"], {"v": {"S": "old"}})
        batch = self.dynamodb.batch_get_item(RequestItems={"p-T": {"Keys": [{"id": {"S": "s"}}, {"id": {"S": "created"}}]}})
        self.assertEqual([i["v"] for i in batch["Responses"]["p-T"]], [{"S": "old"}])
        query = self.dynamodb.query(TableName="p-T", KeyConditionExpression="id = :s",
                                    ExpressionAttributeValues={":s": {"S": "s"}})
        self.assertEqual([i["v"] for i in query["Items"]], [{"S": "old"}])
        self.assertEqual(self.dynamodb.query(TableName="p-T", KeyConditionExpression="id = :s",
                                             ExpressionAttributeValues={":s": {"S": "created"}})["Count"], 0)
        time.sleep(chaos.STALE_WINDOW_SECS + 0.1)
        fresh = self.dynamodb.get_item(TableName="p-T", Key={"id": {"S": "s"}})
        self.assertEqual(fresh["Item"]["v"], {"S": "new"})

    def test_step_functions_and_secrets_manager_faults(self):
        answer = lambda: self.sfn.send_task_success(taskToken="t-1", output="{}")  # noqa: E731
        self.only("sfn_task_throttled")
        self.assert_error(answer, "ThrottlingException", 400)
        self.only("sfn_task_internal_error")
        self.assert_error(answer, "InternalFailure", 500)
        self.only("sfn_task_timed_out")
        self.assert_error(answer, "TaskTimedOut", 400)
        self.assert_error(lambda: self.sfn.send_task_failure(taskToken="t-1"), "TaskTimedOut", 400)
        self.only("secrets_error")
        self.assert_error(lambda: self.secrets.get_secret_value(SecretId="key"), "InternalServiceError", 500)
        chaos.MODE.disable()
        self.assertEqual(self.secrets.get_secret_value(SecretId="key")["SecretString"], "sk")

    def test_lambda_faults(self):
        watch = FakeWatch()
        self.addCleanup(watch.close)
        invoker = invoke.LambdaInvoker(watch.url, {"worker"}, concurrency=4, chaos=chaos.MODE)
        self.only("lambda_service_exception")
        with self.assertRaises(ClientError) as caught:
            invoker.invoke({"FunctionName": "fast"}, 5)
        self.assertEqual(caught.exception.response["Error"]["Code"], "ServiceException")
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
            StateTaskServiceLambda,
        )

        name, _ = StateTaskServiceLambda._error_cause_from_client_error(caught.exception)
        self.assertEqual(name, "Lambda.ServiceException")
        self.only("lambda_function_error")
        answer = invoker.invoke({"FunctionName": "fast"}, 5)
        self.assertEqual((answer["FunctionError"], answer["Payload"]["errorType"]), ("Unhandled", "Lambda.Unknown"))
        self.only("lambda_async_duplicate")
        invoker.invoke({"FunctionName": "worker", "Payload": b'{"twice":1}'})
        self.wait_for(lambda: [b for _, b in watch.bodies].count(b'{"twice":1}') == 2, chaos.LATE_MAX_SECS + 2)
        self.only("lambda_async_late", seed=3)
        started = time.monotonic()
        invoker.invoke({"FunctionName": "worker", "Payload": b'{"late":1}'})
        self.wait_for(lambda: (b"worker", b'{"late":1}') in [(n.encode(), b) for n, b in watch.bodies],
                      chaos.LATE_MAX_SECS + 2)
        self.assertLessEqual(time.monotonic() - started, chaos.LATE_MAX_SECS + 1)
        self.assertEqual(chaos.MODE.state()["injected"], {"lambda_async_late": 1})

    def wait_for(self, condition, seconds):
        deadline = time.monotonic() + seconds
        while not condition():
            self.assertLess(time.monotonic(), deadline, "in time")
            time.sleep(0.02)

    def test_rate_zero_never_fires(self):
        chaos.MODE.enable({"seed": 9, "rates": ALL_OFF})
        for i in range(30):
            self.put(f"z{i}", "1")
            self.dynamodb.get_item(TableName="p-T", Key={"id": {"S": f"z{i}"}})
        self.dynamodb.transact_write_items(TransactItems=[{"Put": {"TableName": "p-T", "Item": {"id": {"S": "z"}}}}])
        self.secrets.get_secret_value(SecretId="key")
        self.assertEqual(chaos.MODE.state()["injected"], {})

    def test_the_same_seed_draws_the_same_schedule(self):
        def schedule(seed):
            chaos.MODE.enable({"seed": seed, "rates": {"dynamodb_throttled": 0.3}})
            return [chaos.MODE.decide("dynamodb_throttled", op) for op in ["GetItem", "PutItem"] * 100]

        first = schedule(42)
        self.assertEqual(schedule(42), first)
        self.assertNotEqual(schedule(43), first)
        self.assertTrue(30 < sum(first) < 90, sum(first))

    def test_scope_limits_faults_to_requests_holding_the_text(self):
        self.only("dynamodb_internal_error", scope="mine")
        self.put("theirs", "1")
        self.assert_error(lambda: self.put("mine", "1"), "InternalServerError", 500)

    def control(self, method, body=None):
        request = urllib.request.Request(f"{self.endpoint}{chaos.PATH}", method=method,
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def test_the_control_endpoint(self):
        status, state = self.control("POST", {"seed": 5, "rates": {"secrets_error": 1}})
        self.assertEqual(status, 200)
        self.assertEqual((state["enabled"], state["seed"]), (True, 5))
        self.assertEqual(state["rates"]["dynamodb_throttled"], chaos.DEFAULT_RATES["dynamodb_throttled"])
        with self.assertRaises(ClientError):
            self.secrets.get_secret_value(SecretId="key")
        status, state = self.control("GET")
        self.assertEqual(state["injected"], {"secrets_error": 1})
        status, state = self.control("DELETE")
        self.assertEqual((status, state["enabled"], state["injected"]), (200, False, {"secrets_error": 1}))
        for bad, named in [
            ({"seed": 1, "rates": {"nope": 0.1, "dynamodb_throttled": 0.1}}, "nope"),
            ({"seed": 1, "rates": {"dynamodb_throttled": 2}}, "dynamodb_throttled"),
            ({"rates": {}}, "seed"),
            ({"seed": "1"}, "seed"),
            ({"seed": 1, "scope": ""}, "scope"),
            ({"seed": 1, "colour": "red"}, "colour"),
            ([], "object"),
        ]:
            status, answer = self.control("POST", bad)
            self.assertEqual(status, 400, bad)
            self.assertIn(named, answer["error"])
        self.assertFalse(self.control("GET")[1]["enabled"], "a bad spec turns nothing on")


if __name__ == "__main__":
    unittest.main()

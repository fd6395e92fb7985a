"""Fan-out end to end: the scheduled handler queues one task per cluster on moto's SQS, and this test plays the
event source mapping: it receives the real messages, invokes handler.worker.lambda_handler with Lambda's SQS
event shape, deletes what succeeded and lets the rest come back, until the queue is empty or dead-lettered."""
from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from handler import worker
from netpol_scan.lambda_context import LambdaContext
from netpol_scan.sandbox.kube_api import Cluster
from netpol_scan.sandbox.securityhub_proxy import SecurityHubProxy
from tests.integration.conftest import NETPOL_GENERATOR, by_namespace, of_cluster, s3_json, scan_status

ACCOUNTS = [f"{100000000000 + i * 11111:012d}" for i in range(10)]
REGIONS = ["eu-west-1", "us-east-1", "ap-southeast-2"]
MAX_RECEIVES = 3
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


class Queue:
    """The scan queue (FIFO, with a dead-letter queue after MAX_RECEIVES receives) and its event source."""

    def __init__(self, world) -> None:
        self.sqs = world.client("sqs")
        dlq = self.sqs.create_queue(QueueName="scan-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.url = self.sqs.create_queue(QueueName="scan.fifo", Attributes={
            "FifoQueue": "true", "VisibilityTimeout": "600",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES})})["QueueUrl"]
        self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.dlq = dlq
        self.invocations = 0

    def drain(self, seconds_per_invocation: float = 900, invocations: int = 10_000) -> list[dict[str, Any]]:
        """Delivers batches of one message (the template's BatchSize) until none is left; returns the responses."""
        responses = []
        for _ in range(invocations):
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=1,
                                                AttributeNames=["All"]).get("Messages", [])
            if not messages:
                break
            response = worker.lambda_handler(self.event(messages), LambdaContext(seconds_per_invocation))
            self.invocations += 1
            responses.append(response)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            for message in messages:
                if message["MessageId"] in failed:  # as if its visibility timeout ran out
                    self.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"],
                                                       VisibilityTimeout=0)
                else:
                    self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return responses

    def receive(self) -> list[dict[str, Any]]:
        return self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=1,
                                        AttributeNames=["All"]).get("Messages", [])

    def next_receivable(self, message: dict[str, Any]) -> float:
        """When moto's SQS will deliver this message again (Unix time): its visibility, read from the server."""
        from moto.sqs.models import sqs_backends

        name = self.url.rsplit("/", 1)[-1]
        for account in list(sqs_backends.values()):
            for backend in list(account.values()):
                for stored in list(getattr(backend.queues.get(name), "_messages", ())):
                    if stored.id == message["MessageId"]:
                        return stored.visible_at / 1000
        raise AssertionError(f"message {message['MessageId']} is not in {name}")

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": self.arn, "awsRegion": "eu-west-1"} for m in messages]}

    def dead_letters(self) -> list[dict[str, Any]]:
        found = []
        while batch := self.sqs.receive_message(QueueUrl=self.dlq, MaxNumberOfMessages=10).get("Messages", []):
            found.extend(json.loads(m["Body"]) for m in batch)
            for m in batch:
                self.sqs.delete_message(QueueUrl=self.dlq, ReceiptHandle=m["ReceiptHandle"])
        return found


@pytest.fixture
def queue(world, scanner_env, monkeypatch) -> Iterator[Queue]:
    q = Queue(world)
    monkeypatch.setenv("SCAN_QUEUE_URL", q.url)
    monkeypatch.setenv("FLEET_MODE", "queue")
    monkeypatch.setenv("SCAN_MAX_RECEIVES", str(MAX_RECEIVES))
    monkeypatch.setenv("TARGET_ACCOUNTS", ",".join(ACCOUNTS))
    monkeypatch.setenv("TARGET_REGIONS", ",".join(REGIONS))
    yield q


class Member:
    """One cluster of the fleet, and what a scan of it must find."""

    def __init__(self, i: int) -> None:
        self.account, self.region = ACCOUNTS[i % len(ACCOUNTS)], REGIONS[i % len(REGIONS)]
        namespaces = {f"ns-{j}": ({"deny": DENY_ALL} if j % 3 == 0 else {}) for j in range((i % 7) + 1)}
        self.cluster = Cluster(f"c{i:02d}", namespaces)
        self.namespaces = len(namespaces)
        self.failing = sum(1 for policies in namespaces.values() if not policies)


def fleet(world) -> dict[str, Member]:
    """51 clusters over 10 accounts and 3 Regions, of 1 to 7 namespaces; c07 is unreachable."""
    members = {m.cluster.name: m for m in map(Member, range(51))}
    for m in members.values():
        world.enable_security_hub(m.account, m.region)
        world.add_cluster(m.account, m.region, m.cluster, reachable=m.cluster.name != "c07")
    return members


def run_with_manifest(run_id: str, clusters: list[str], started: str, deadline: str):
    """The fleet store, in a worker's report bucket, of a fanned-out run whose manifest lists these clusters."""
    import boto3

    from handler.run import fanout
    from handler.config import Settings
    from handler.run.executors import worker_context

    store = fanout.FleetStore(worker_context(Settings.from_env(), boto3.Session()).store)
    store.put_manifest(fanout.RunManifest(run_id, started, deadline,
                                          [[ACCOUNTS[0], REGIONS[0], name, False] for name in clusters]))
    return store


@pytest.fixture
def hub(world, monkeypatch) -> Iterator[SecurityHubProxy]:
    """Security Hub that throttles calls and fails findings on demand, in front of moto's."""
    with SecurityHubProxy(world.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECURITYHUB", proxy.endpoint)
        yield proxy


def test_a_fleet_through_the_queue_is_one_exact_run(world, invoke, queue, hub):
    members = fleet(world)
    hub.throttle(4)
    sent, failed_once = itertools.count(1), set()

    def every_ninth_fails_once(finding):
        if finding["Id"] not in failed_once and next(sent) % 9 == 0:
            failed_once.add(finding["Id"])
            return "InternalException"
        return None

    hub.reject(every_ninth_fails_once)
    members["c03"].cluster.inject("namespaces", 503, times=None)      # 5xx, always
    members["c11"].cluster.forbid("networkpolicies")                  # RBAC
    members["c25"].cluster.inject("networkpolicies", 500, times=6)    # heals on its third delivery
    failing = {"c03", "c07", "c11"}

    queued = invoke({})

    assert (queued["mode"], queued["clusters_queued"], queued["report_pending"]) == ("queue", 51, True)
    responses = queue.drain()
    summary = s3_json(world, queued["report"])["summary"]
    scanned = [m for name, m in members.items() if name not in failing]
    assert (summary["clusters_scanned"], summary["clusters_failed"]) == (48, 3)
    assert summary["namespaces"] == sum(m.namespaces for m in scanned)
    assert summary["namespaces_failing"] == sum(m.failing for m in scanned)
    assert {f["cluster"].split("/")[2] for f in summary["failures"]} == failing
    assert sorted(t["cluster"] for t in queue.dead_letters()) == sorted(failing)
    # Each failing cluster failed on every delivery; c25 on its first two (a read retries 500s 4 times).
    assert sum(1 for r in responses if r["batchItemFailures"]) == 3 * MAX_RECEIVES + 1
    c07 = members["c07"]
    unreachable = scan_status(world.findings(c07.account, c07.region),
                              f"arn:aws:eks:{c07.region}:{c07.account}:cluster/c07")
    assert len(unreachable) == 1 and "dead-letter queue" in unreachable[0]["Description"]
    assert all(f"gave up after attempt {MAX_RECEIVES} of {MAX_RECEIVES}" in f["error"] for f in summary["failures"])
    for name, m in members.items():
        got = by_namespace(world.findings(m.account, m.region), name)
        assert len(got) == (0 if name in failing else m.namespaces), name
        assert all(f["AwsAccountId"] == m.account for f in got.values())
    # Throttled calls and failed findings were sent again: nothing lost, nothing reported rejected.
    assert [c.status for c in hub.calls].count(429) == 4 and failed_once
    assert summary["findings_rejected"] == 0
    assert summary["findings_imported"] == sum(
        len(of_cluster(world.findings(m.account, m.region), name)) for name, m in members.items())


def test_an_unchanged_fleet_imports_nothing_the_second_time(world, invoke, queue):
    fleet(world)
    first = invoke({})
    queue.drain()
    first_summary = s3_json(world, first["report"])["summary"]

    second = invoke({})
    queue.drain()
    second_summary = s3_json(world, second["report"])["summary"]

    assert first_summary["findings_imported"] > 0
    assert second_summary["findings_imported"] == 0
    assert second_summary["namespaces"] == first_summary["namespaces"]
    assert second_summary["clusters_scanned"] == first_summary["clusters_scanned"] == 50  # c07 is unreachable


def test_a_worker_short_of_time_publishes_nothing_and_the_task_comes_back(world, invoke, queue, monkeypatch):
    monkeypatch.setenv("TARGET_ACCOUNTS", ACCOUNTS[0])
    monkeypatch.setenv("TARGET_REGIONS", REGIONS[0])
    world.enable_security_hub(ACCOUNTS[0], REGIONS[0])
    world.add_cluster(ACCOUNTS[0], REGIONS[0], Cluster("late", {"default": {}}))

    queued = invoke({})
    responses = queue.drain(seconds_per_invocation=20, invocations=1)  # delivered 20 s before the timeout

    assert queued["mode"] == "queue"
    assert len(responses[0]["batchItemFailures"]) == 1
    assert world.findings(ACCOUNTS[0], REGIONS[0]) == [] or all(
        f["GeneratorId"] != NETPOL_GENERATOR for f in world.findings(ACCOUNTS[0], REGIONS[0]))
    queue.drain()  # with time to spare, the same task is scanned whole
    assert len(by_namespace(world.findings(ACCOUNTS[0], REGIONS[0]), "late")) == 1


def test_a_run_whose_tasks_never_finished_is_reported_once_its_deadline_passed(world, queue):
    from handler.run import fanout

    lost = "20200101T000000Z-0000dead"
    store = run_with_manifest(lost, ["gone"], "2020-01-01T00:00:00.000Z", "2020-01-01T06:00:00.000Z")
    assert store.open_run_ids() == [lost]

    fanout.finalize_overdue(store)

    report = s3_json(world, fanout.report_key_of(lost))
    assert report["summary"]["clusters_failed"] == 1
    assert "never finished" in report["summary"]["failures"][0]["error"]
    assert store.open_run_ids() == []


def test_a_failed_task_comes_back_after_a_short_backoff_not_the_queues_visibility_timeout(world, invoke, queue,
                                                                                          monkeypatch):
    """The queue keeps a received message invisible for 5,400 s (the template's VisibilityTimeout), and a FIFO
    message group waits while one of its messages is invisible: a failed task must come back within minutes."""
    monkeypatch.setenv("TARGET_ACCOUNTS", ACCOUNTS[0])
    monkeypatch.setenv("TARGET_REGIONS", REGIONS[0])
    monkeypatch.setenv("SECURITYHUB_WORKERS_PER_ACCOUNT", "1")  # one message group for the account and Region
    world.enable_security_hub(ACCOUNTS[0], REGIONS[0])
    world.add_cluster(ACCOUNTS[0], REGIONS[0], Cluster("a-down", {"default": {}}), reachable=False)
    world.add_cluster(ACCOUNTS[0], REGIONS[0], Cluster("b-up", {"default": {}}))
    queue.sqs.set_queue_attributes(QueueUrl=queue.url, Attributes={"VisibilityTimeout": "5400"})
    invoke({})

    for attempt, backoff in enumerate((30, 120), start=1):
        received, (message,) = time.time(), queue.receive()
        assert json.loads(message["Body"])["cluster"] == "a-down"
        assert int(message["Attributes"]["ApproximateReceiveCount"]) == attempt
        response = worker.lambda_handler(queue.event([message]), LambdaContext(900))
        assert response["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
        assert queue.receive() == []  # the failed task is invisible, and the rest of its group waits behind it
        assert received + backoff - 1 <= queue.next_receivable(message) <= time.time() + backoff
        queue.sqs.change_message_visibility(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"],
                                            VisibilityTimeout=0)  # as if the backoff had passed

    (message,) = queue.receive()  # the last attempt fails too: the task is visible again at once,
    response = worker.lambda_handler(queue.event([message]), LambdaContext(900))
    assert response["batchItemFailures"] and queue.next_receivable(message) <= time.time()
    (following,) = queue.receive()  # so SQS moves it to the dead-letter queue and the group goes on
    assert json.loads(following["Body"])["cluster"] == "b-up"
    assert [t["cluster"] for t in queue.dead_letters()] == ["a-down"]


def test_a_warm_worker_keeps_its_scan_context_while_lambda_changes_the_trace_id(world, invoke, queue, monkeypatch):
    monkeypatch.setenv("TARGET_ACCOUNTS", ACCOUNTS[0])
    monkeypatch.setenv("TARGET_REGIONS", REGIONS[0])
    world.enable_security_hub(ACCOUNTS[0], REGIONS[0])
    for name in ("one", "two"):
        world.add_cluster(ACCOUNTS[0], REGIONS[0], Cluster(name, {"default": {}}))
    invoke({})

    contexts = []
    for trace in ("Root=1-00000001-000000000000000000000001", "Root=1-00000002-000000000000000000000002"):
        monkeypatch.setenv("_X_AMZN_TRACE_ID", trace)  # Lambda sets a new one for every invocation
        (message,) = queue.receive()
        assert worker.lambda_handler(queue.event([message]), LambdaContext(900))["batchItemFailures"] == []
        queue.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
        contexts.append(worker._warm_context()[0])

    assert contexts[0] is contexts[1]  # identity, sessions and exemptions loaded once, not per message
    monkeypatch.setenv("REFRESH_DAYS", "3")  # a setting that changes does make a new one
    assert worker._warm_context()[0] is not contexts[0]


def test_two_workers_finishing_a_run_together_write_one_report(world, queue):
    from handler.run import fanout

    run_id = "20200101T000000Z-0000beef"
    store = run_with_manifest(run_id, ["c"], "2020-01-01T00:00:00.000Z", "2020-01-01T06:00:00.000Z")

    reports = [fanout.finalize(store, run_id), fanout.finalize(store, run_id)]

    assert reports[0] is not None and reports[1] is None  # one report, so one ScanDuration
    assert s3_json(world, fanout.report_key_of(run_id))["run_id"] == run_id


def test_recording_a_runs_results_lists_them_once_not_after_every_record(world, queue):
    """A worker finds out whether it finished the run from a counter, not from a listing of every result: over a
    run of n clusters that is n small requests, not n listings (n^2/2 keys)."""
    from handler.run import fanout

    run_id, clusters = "20990101T000000Z-00000abc", [f"c{i:02d}" for i in range(12)]
    store = run_with_manifest(run_id, clusters, "2099-01-01T00:00:00.000Z", "2099-01-01T06:00:00.000Z")
    listings: list[str] = []
    store.reports._s3.meta.events.register("before-call.s3.ListObjectsV2",
                                           lambda params, **_: listings.append(params["query_string"]["prefix"]))

    reports = [fanout.record(store, run_id, _result(name)) for name in clusters]

    assert reports[:-1] == [None] * 11 and reports[-1]["clusters_scanned"] == 12
    assert len(listings) == 1  # once, for the report
    again = fanout.record(store, run_id, s3_json(world, f"fleet/run={run_id}/clusters/account="
                                                             f"{ACCOUNTS[0]}/region={REGIONS[0]}/cluster=c00.json"))
    assert again is None  # a task delivered again counts once, and the report is not written twice


def test_a_local_fan_out_returns_the_report_its_workers_wrote(world, invoke, monkeypatch):
    monkeypatch.setenv("FLEET_MODE", "local")
    world.add_cluster("123456789012", "eu-west-1", Cluster("one", {"default": {}, "web": {"deny": DENY_ALL}}))
    world.add_cluster("123456789012", "eu-west-1", Cluster("two", {"default": {}}))

    summary = invoke({})

    assert (summary["mode"], summary["clusters_scanned"], summary["namespaces_failing"]) == ("fan-out", 2, 2)
    report = s3_json(world, summary["report"])
    assert report["summary"]["clusters_scanned"] == 2
    assert [c["securityhub_calls"] for c in report["clusters"]] == [1, 1]


def test_a_scanned_clusters_log_line_says_where_its_cpu_went(world, scanner_env, caplog):
    import logging

    import boto3

    from handler.config import Settings
    from handler.run.report import Run
    from handler.run.scan import ClusterTask, ScanContext, scan_cluster

    world.add_cluster("123456789012", "eu-west-1", Cluster("one", {"default": {}, "web": {"deny": DENY_ALL}}))
    context = ScanContext.create(Settings.from_env(), boto3.Session(), logging.getLogger("scan-stages"))
    run = Run.start()

    with caplog.at_level(logging.INFO, logger="scan-stages"):
        scan_cluster(context, ClusterTask(run.run_id, run.started_at, "123456789012", "eu-west-1", "one"))

    (line,) = [r for r in caplog.records if r.getMessage() == "cluster scanned"]
    assert {"clients", "state_read", "describe", "token", "read", "evaluate", "plan", "asff", "findings_file", "hub",
            "state_write"} == set(line.cpu_seconds)


def test_the_collector_walks_nothing_while_a_cluster_is_scanned(world, scanner_env):
    import gc
    import logging
    import weakref

    import boto3

    from handler.cluster_reader import ClusterReader
    from handler.config import Settings
    from handler.run.report import Run
    from handler.run.scan import ClusterTask, ScanContext, scan_cluster

    class KeepingSight(ClusterReader):
        """The reader, with a weak reference to each cluster it reads: it lives as long as the cluster's scan (its
        snapshot, results, findings), so a collector pass that starts while it is alive walks them."""

        clusters: list[weakref.ref] = []

        def read(self, cluster, *args, **kwargs):
            self.clusters.append(weakref.ref(cluster))
            return super().read(cluster, *args, **kwargs)

    world.add_cluster("123456789012", "eu-west-1", Cluster("one", {f"team-{i}": {"deny": DENY_ALL} for i in range(300)}))
    context = ScanContext.create(Settings.from_env(), boto3.Session(), logging.getLogger("scan-gc"),
                                 reader=KeepingSight())
    run = Run.start()
    passes_while_scanning: list[bool] = []
    watch = lambda phase, info: phase == "start" and passes_while_scanning.append(  # noqa: E731
        any(ref() is not None for ref in KeepingSight.clusters))
    gc.callbacks.append(watch)
    try:
        outcome = scan_cluster(context, ClusterTask(run.run_id, run.started_at, "123456789012", "eu-west-1", "one"))
        outcome = scan_cluster(context, ClusterTask(run.run_id, run.started_at, "123456789012", "eu-west-1", "one"))
    finally:
        gc.callbacks.remove(watch)

    assert (outcome.result, outcome.namespaces) == ("scanned", 300) and len(KeepingSight.clusters) == 2
    assert not any(passes_while_scanning), "the collector ran during a cluster's scan, and walked what it held"
    assert all(ref() is None for ref in KeepingSight.clusters) and gc.isenabled()


def _result(name: str) -> dict[str, Any]:
    return {"account_id": ACCOUNTS[0], "region": REGIONS[0], "cluster": name, "cluster_arn": "", "result": "scanned",
            "error": None, "namespaces": 1, "namespaces_failing": 0, "namespaces_terminating": 0, "findings": 1,
            "findings_imported": 1, "findings_archived": 0, "findings_rejected": [], "findings_key": None}


def test_a_result_recorded_but_not_counted_is_counted_when_its_task_comes_back(world, queue):
    """A worker that recorded its cluster's result and then failed to count it (its count kept conflicting, or its
    invocation ended) fails its record, and SQS delivers the task again: that delivery must count it, or the
    run's last worker finds one cluster missing and no report is written until the run's deadline."""
    from handler.run import fanout

    run_id, clusters = "20990101T000000Z-0000cafe", ["a", "b", "c"]
    store = run_with_manifest(run_id, clusters, "2099-01-01T00:00:00.000Z", "2099-01-01T06:00:00.000Z")
    store.put_result(run_id, _result("a"))  # and no count: the worker stopped here

    reports = [fanout.record(store, run_id, _result(name)) for name in clusters]  # "a" delivered again

    assert reports[:2] == [None, None]
    assert reports[2] is not None and reports[2]["clusters_scanned"] == 3
    assert s3_json(world, fanout.report_key_of(run_id))["summary"]["clusters_scanned"] == 3


def test_fifty_workers_finishing_at_once_count_every_cluster_and_write_one_report(world, queue):
    """Progress is counted in shards of about PROGRESS_SHARD_SIZE clusters, so that workers finishing together
    contend for one shard each, not all for one object; every count succeeds and one worker writes the report."""
    from concurrent.futures import ThreadPoolExecutor

    from handler.run import fanout

    run_id, clusters = "20990101T000000Z-0000f1f1", [f"c{i:03d}" for i in range(200)]
    store = run_with_manifest(run_id, clusters, "2099-01-01T00:00:00.000Z", "2099-01-01T06:00:00.000Z")
    layout = s3_json(world, f"fleet/run={run_id}/progress/layout.json")

    with ThreadPoolExecutor(max_workers=50) as pool:
        reports = list(pool.map(lambda name: fanout.record(store, run_id, _result(name)), clusters))

    assert layout["shards"] == 4 and sum(
        s3_json(world, f"fleet/run={run_id}/progress/shard={k}.json")["expected"] for k in range(4)) == 200
    assert [r["clusters_scanned"] for r in reports if r is not None] == [200]
    assert sorted(s3_json(world, f"fleet/run={run_id}/progress/complete.json")["complete"]) == [0, 1, 2, 3]

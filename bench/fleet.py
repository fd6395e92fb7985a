"""Benchmark: a fleet of 1,000 EKS clusters in 100 accounts and 3 Regions scanned through the scan queue, its
per-stage CPU per cluster, and the modelled wall time of a real deployment at WorkerMaximumConcurrency 20 and 50.

    .venv/bin/python -m bench.fleet [--clusters 1000] [--accounts 100] [--concurrency 16] [--seed 7]

What runs where:
- a child process (pinned to the last core) is the far side: moto (S3, STS, EKS, SQS) through
  netpol_scan.sandbox.aws_world.World, one netpol_scan.sandbox.kube_api.KubeApiServer per cluster (its own TLS
  endpoint and CA, EKS tokens verified against the credentials moto's STS issued), each answering every request
  after a fixed per-cluster latency (20-30 ms), and a Security Hub stand-in that answers BatchImportFindings
  itself after 80-150 ms and counts calls and findings per account and Region (moto's Security Hub scans a list
  per imported finding, which at hundreds of thousands of findings would dominate);
- this process (pinned to the first core) is the client: the scheduled handler and the workers, nothing else.

Two runs in one command, each a first scan into a fresh report bucket: the clusters of the first quarter of the
accounts (n/4), then the whole fleet (n). A run: handler.app.lambda_handler (FLEET_MODE=queue) discovers the
clusters and queues one message per cluster on a moto FIFO queue with a dead-letter queue; then --concurrency
threads, each one worker execution environment (its scan context made once, its CPU timed), receive one message
at a time and hand it to the worker's record handling with Lambda's SQS event shape; the last writes the report.

Measured per message, in the thread that handles it: CPU per stage (handler/run/stages.py: time.thread_time,
a nested stage charged to itself, the reader's own threads charged to the read), the S3 and STS requests it makes (botocore's before-send event on the
session the worker is built from), and from the run report the cluster's Kubernetes API requests and Security
Hub calls. From those, bench/fleet_model.py models the deployment's wall time at 20 and 50 workers.

Floors (exit 1): every cluster scanned and reported; the modelled run under 10 minutes at 20 and at 50 workers;
no per-cluster cost growing with the fleet (n against n/4: CPU per stage and per message within 1.5x plus
0.5 ms, S3 requests per message within 1.1x); no progress count failed in the run or in the model's replay of
the counts at 20 and 50 workers. Numbers and method: docs/benchmarks.md, section 3.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import statistics
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from typing import Any

from bench.common import pin_to_cpu, verdict

REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
MIN_NAMESPACES, MAX_NAMESPACES = 5, 5_000
MEDIAN_NAMESPACES, SIGMA = 40, 1.3  # log-normal sizes: most clusters small, a few large
KUBE_LATENCY = (0.020, 0.030)   # seconds per request, per cluster (fixed for a cluster, drawn from this range)
HUB_LATENCY = (0.080, 0.150)    # seconds per BatchImportFindings call (drawn per call)
ROLE_NAME = "NetpolScannerRole"
MAX_RECEIVES = 3
DRAIN_TIMEOUT_SECONDS = 1200
CHILD_TIMEOUT_SECONDS = 600
IDLE_POLL_SECONDS = 0.25
SERVER_POLL_SECONDS = 60.0  # 1,000 API servers polling every 50 ms would wake 20,000 times a second
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
MODEL_WORKERS = (20, 50)
MODEL_TARGET_SECONDS = 600.0
GROWTH_CPU_RATIO, GROWTH_CPU_SLACK, GROWTH_REQUESTS_RATIO = 1.5, 0.0005, 1.1
SIZE_BUCKETS = ((5, 9), (10, 49), (50, 199), (200, 999), (1000, 5000))
STAGES = ("clients", "state_read", "describe", "token", "read", "evaluate", "plan", "asff", "findings_file", "hub",
          "state_write", "result", "progress", "finalize")
HUB_STAGES = ("asff", "findings_file", "hub")


# ---------------------------------------------------------------------------------------------------------------
# The fleet
# ---------------------------------------------------------------------------------------------------------------

def fleet_spec(clusters: int, accounts: int, seed: int) -> list[dict[str, Any]]:
    """Clusters over `accounts` accounts, each account in 2 or 3 of the 3 Regions; every account and Region gets a
    cluster before any gets a second. Sizes are log-normal (median 40, sigma 1.3) clipped to 5..5,000, with at least
    one of each bound. In each cluster a share of 20-60% of the namespaces holds a default-deny policy."""
    rng = random.Random(seed)
    account_ids = [f"{210000000000 + i * 1_000_003:012d}" for i in range(accounts)]
    places = [(a, r) for a in account_ids for r in rng.sample(REGIONS, rng.choice((2, 3)))]
    sizes = [min(MAX_NAMESPACES, max(MIN_NAMESPACES, round(rng.lognormvariate(math.log(MEDIAN_NAMESPACES), SIGMA))))
             for _ in range(clusters)]
    sizes[0], sizes[1] = MIN_NAMESPACES, MAX_NAMESPACES
    rng.shuffle(sizes)
    spec = []
    for i, size in enumerate(sizes):
        account, region = places[i % len(places)] if i < len(places) else rng.choice(places)
        spec.append({"account": account, "region": region, "name": f"fleet-{i:04d}", "namespaces": size,
                     "with_policies": round(size * rng.uniform(0.2, 0.6)),
                     "latency": round(rng.uniform(*KUBE_LATENCY), 4)})
    return spec


def describe_fleet(label: str, specs: list[dict[str, Any]]) -> None:
    sizes = sorted(s["namespaces"] for s in specs)
    places = {(s["account"], s["region"]) for s in specs}
    print(f"{label}: {len(specs)} clusters in {len({s['account'] for s in specs})} accounts, {len(places)} "
          f"account/Regions; {sum(sizes):,} namespaces ({sum(s['with_policies'] for s in specs):,} with a policy); "
          f"size min {sizes[0]}, median {statistics.median(sizes):g}, p90 {sizes[int(len(sizes) * 0.9)]}, "
          f"max {sizes[-1]}; " + ", ".join(f"{lo}-{hi}: {sum(lo <= n <= hi for n in sizes)}"
                                             for lo, hi in SIZE_BUCKETS), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# The far side (child process): Kubernetes API servers and the Security Hub stand-in
# ---------------------------------------------------------------------------------------------------------------

class HubSink:
    """Answers BatchImportFindings (every finding accepted) after a drawn latency; counts per account/Region."""

    def __init__(self, latency: tuple[float, float], seed: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.latency = latency
        self.reset()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 120

            def setup(self) -> None:
                super().setup()
                import socket
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = sink.answer(self.path, self.headers.get("Authorization", ""), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.calls: dict[str, list[float]] = defaultdict(list)
            self.findings: dict[str, int] = defaultdict(int)
            self.other_calls = 0
            self.in_flight = self.max_in_flight = 0

    def answer(self, path: str, authorization: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path.split("?")[0] != "/findings/import":
            with self.lock:
                self.other_calls += 1
            return 200, {}
        arrived = time.monotonic()
        findings = json.loads(body).get("Findings", [])
        scope = re.search(r"Credential=[^/]+/[0-9]+/([^/]+)/", authorization)
        account = findings[0].get("AwsAccountId", "?") if findings else "?"
        key = f"{account}/{scope.group(1) if scope else '?'}"
        with self.lock:
            self.calls[key].append(arrived)
            self.findings[key] += len(findings)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            delay = self.rng.uniform(*self.latency)
        time.sleep(delay)
        with self.lock:
            self.in_flight -= 1
        return 200, {"SuccessCount": len(findings), "FailedCount": 0, "FailedFindings": []}

    def stats(self) -> dict[str, Any]:
        with self.lock:
            calls = {k: sorted(v) for k, v in self.calls.items()}
            findings = dict(self.findings)
            other, max_in_flight = self.other_calls, self.max_in_flight
        peak = 0  # the most calls one account and Region received within any 1-second window
        for stamps in calls.values():
            start = 0
            for end, t in enumerate(stamps):
                while t - stamps[start] >= 1.0:
                    start += 1
                peak = max(peak, end - start + 1)
        return {"calls": sum(len(v) for v in calls.values()), "findings": sum(findings.values()),
                "account_regions": len(calls), "peak_calls_per_second": peak, "other_calls": other,
                "max_in_flight": max_in_flight}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def build_cluster(spec: dict[str, Any]) -> Any:
    from netpol_scan.sandbox.kube_api import Cluster

    cluster = Cluster(spec["name"])
    n, k = spec["namespaces"], spec["with_policies"]
    covered = {(j * n) // k for j in range(k)} if k else set()
    for j in range(n):
        name = ("default", "kube-system", "kube-public", "kube-node-lease")[j] if j < 4 else f"team-{j:05d}"
        cluster.add_namespace(name, labels={"team": f"t{j % 17}"})
        if j in covered:
            cluster.add_policy(name, "default-deny-all", DENY_ALL)
    cluster.inject(".*", None, times=None, delay_seconds=spec["latency"])
    return cluster


def serve(conn: Any, specs: list[dict[str, Any]], seed: int, pin: bool) -> None:
    """Child process: moto (S3, STS, EKS, SQS), one Kubernetes API server per cluster (EKS tokens verified against
    moto's STS credentials), the Security Hub stand-in; creates the EKS clusters; answers commands."""
    sink = world = None
    try:
        if pin:
            pin_to_cpu(-1)
        from netpol_scan.sandbox.aws_world import World
        from netpol_scan.sandbox.kube_api import KubeApiServer

        world = World()
        clusters = [build_cluster(spec) for spec in specs]
        eks: dict[tuple[str, str], Any] = {}
        for spec in specs:
            client = eks.get((spec["account"], spec["region"])) or world.client("eks", spec["account"], spec["region"])
            eks[(spec["account"], spec["region"])] = client
            client.create_cluster(
                name=spec["name"], version="1.31", roleArn=f"arn:aws:iam::{spec['account']}:role/eks-cluster",
                resourcesVpcConfig={"subnetIds": ["subnet-00000001"]})
        # The servers start last: each is a thread, and a thousand threads waking for the GIL slowed the building.
        for spec, cluster in zip(specs, clusters):
            server = KubeApiServer(cluster, world.verifier, poll_interval=SERVER_POLL_SECONDS).start()
            world._point(spec["account"], spec["region"], spec["name"], server.endpoint, server.ca_pem)
        sink = HubSink(HUB_LATENCY, seed)
        conn.send(("ready", world.env(), sink.endpoint))
        while True:
            command = conn.recv()
            if command == "stop":
                break
            if command == "take-counts":
                requests = 0
                for cluster in clusters:
                    with cluster.lock:
                        requests += len(cluster.requests)
                        cluster.requests = []
                stats = sink.stats()
                sink.reset()
                conn.send({"kube_requests": requests, "hub": stats, "far_cpu": time.process_time()})
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise
    finally:
        # The API servers are not stopped one by one (each stop waits for its server's next poll): their daemon
        # threads and sockets end with this process.
        if sink is not None:
            sink.stop()
        if world is not None:
            world.stop()


# ---------------------------------------------------------------------------------------------------------------
# The queue and its event source mapping (this process)
# ---------------------------------------------------------------------------------------------------------------

class Queue:
    """The scan queue (FIFO, dead-letter queue after MAX_RECEIVES receives), as the template makes it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        sqs = session.client("sqs")
        dlq = sqs.create_queue(QueueName="scan-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.url = sqs.create_queue(QueueName="scan.fifo", Attributes={
            "FifoQueue": "true", "VisibilityTimeout": "5400",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES}),
        })["QueueUrl"]
        self.arn = sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.dlq = dlq

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": self.arn, "awsRegion": "eu-west-1"} for m in messages]}

    def depth(self, sqs: Any, url: str | None = None) -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=url or self.url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, concurrency: int, environment: Any) -> dict[str, Any]:
        """`concurrency` execution environments at once, batches of one message, until the queue is empty; each
        message measured (Environment.handle)."""
        lock = threading.Lock()
        counts: dict[str, Any] = {"retried": 0, "errors": [], "messages": [], "contexts": []}
        done = threading.Event()
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        clients = [self.session.client("sqs") for _ in range(concurrency)]  # made here: one thread

        def slot(sqs: Any) -> None:
            try:
                env = environment()
                with lock:
                    counts["contexts"].append(env.context_cpu)
                while not done.is_set() and time.monotonic() < deadline:
                    messages = sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=1,
                                                   AttributeNames=["All"]).get("Messages", [])
                    if not messages:
                        if self.depth(sqs) == 0:
                            done.set()
                        else:  # the rest is in flight, or in message groups held by other invocations
                            done.wait(IDLE_POLL_SECONDS)
                        continue
                    measured, failed = env.handle(self.event(messages), messages[0])
                    if failed:  # as if its visibility timeout ran out
                        sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=messages[0]["ReceiptHandle"],
                                                      VisibilityTimeout=0)
                    else:
                        sqs.delete_message(QueueUrl=self.url, ReceiptHandle=messages[0]["ReceiptHandle"])
                    with lock:
                        counts["messages"].append(measured)
                        counts["retried"] += failed
            except BaseException as error:  # noqa: BLE001 - reported, and fails the benchmark
                with lock:
                    counts["errors"].append(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
                done.set()

        threads = [threading.Thread(target=slot, args=(c,), name=f"worker-{i}", daemon=True)
                   for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic() + 30))
        if any(t.is_alive() for t in threads):
            counts["errors"].append(f"workers still running after {DRAIN_TIMEOUT_SECONDS} s")
        elif time.monotonic() >= deadline and not done.is_set():
            counts["errors"].append(f"queue not drained within {DRAIN_TIMEOUT_SECONDS} s")
        counts["dead_letters"] = self.depth(clients[0], self.dlq)
        return counts


class RequestCounter:
    """AWS requests per thread, by service and operation (botocore's before-send event, on the session the worker
    is built from: S3, STS; the target accounts' sessions are the handler's own, and their EKS and Security Hub
    calls are counted from the report)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def __call__(self, event_name: str, request: Any = None, **_: Any) -> None:
        counts = self.local.__dict__.setdefault("counts", Counter())
        _, service, operation = event_name.split(".", 2)
        progress = "/progress/" in str(getattr(request, "url", ""))
        counts[f"{service}.{operation}{' (progress)' if progress else ''}"] += 1  # None: botocore sends it

    def take(self) -> Counter:
        counts = self.local.__dict__.get("counts", Counter())
        self.local.counts = Counter()
        return counts


class Environment:
    """One worker execution environment: its scan context made once (its CPU timed), then one message at a time
    through handler.run.executors.process_event, measured."""

    def __init__(self, requests: RequestCounter) -> None:
        import boto3
        import botocore.session

        from handler.config import Settings
        from handler.run.executors import process_event, worker_context
        from handler.run.stages import CPU
        from netpol_scan.lambda_context import LambdaContext

        self.requests, self.cpu_ledger = requests, CPU
        core = botocore.session.Session()
        core.register("before-send", requests)
        started = time.thread_time()
        context = worker_context(Settings.from_env(), boto3.Session(botocore_session=core))
        self.context_cpu = time.thread_time() - started
        self.call = lambda event: process_event(context, event, LambdaContext(900))
        self.seen: set[tuple[str, str]] = set()  # the targets whose clients this environment made

    def handle(self, event: dict[str, Any], message: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        task = json.loads(message["Body"])
        target = (task["account_id"], task["region"])
        self.cpu_ledger.take()
        self.requests.take()
        cpu0, charged0, wall0 = time.thread_time(), self.cpu_ledger.charged(), time.perf_counter()
        response = self.call(event)
        # The reader's threads (a page fetched ahead, the list of namespaces) work for this message too.
        cpu = time.thread_time() - cpu0 + self.cpu_ledger.charged() - charged0
        wall = time.perf_counter() - wall0
        failed = bool(response.get("batchItemFailures"))
        measured = {"key": (task["account_id"], task["region"], task["cluster"]), "cpu": cpu, "wall": wall,
                    "stages": self.cpu_ledger.take(), "requests": dict(self.requests.take()),
                    "group": message["Attributes"].get("MessageGroupId", ""),
                    "first_sight": target not in self.seen, "first_in_environment": not self.seen,
                    "failed": failed}
        self.seen.add(target)
        return measured, failed


def measure(label: str, session: Any, queue: Queue, far: Any, bucket: str, concurrency: int,
            accounts: list[str]) -> dict[str, Any]:
    from handler import app
    from netpol_scan.lambda_context import LambdaContext

    os.environ.update({"REPORT_BUCKET": bucket, "TARGET_ACCOUNTS": ",".join(accounts)})
    # The previous run's worker environments left their clients behind as cyclic garbage: collected now, so that this
    # run's scheduled function does not pay for it (in Lambda it runs in an execution environment of its own).
    gc.collect()
    far.send("take-counts")
    far_cpu0 = far.recv()["far_cpu"]
    requests = RequestCounter()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    queued = app.lambda_handler({"source": "bench.fleet"}, LambdaContext(900))
    scheduled_wall, scheduled_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    drained = queue.drain(concurrency, lambda: Environment(requests))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    far.send("take-counts")
    counts = far.recv()
    s3 = session.client("s3")
    report = manifest = None
    if queued.get("report"):
        try:
            report = json.loads(s3.get_object(Bucket=bucket, Key=queued["report"])["Body"].read())
        except s3.exceptions.NoSuchKey:
            pass
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"fleet/run={queued['run_id']}/manifest.json")[
            "Body"].read())
        shards = json.loads(s3.get_object(Bucket=bucket, Key=f"fleet/run={queued['run_id']}/progress/layout.json")[
            "Body"].read())["shards"]
    print(f"  {label}: {wall:.1f} s wall ({scheduled_wall:.1f} s scheduled handler + {wall - scheduled_wall:.1f} s "
          f"drain), {cpu:.1f} s client CPU, {counts['far_cpu'] - far_cpu0:.1f} s server-process CPU, "
          f"{queued.get('clusters_queued')} queued", flush=True)
    return {"label": label, "concurrency": concurrency, "wall": wall, "cpu": cpu, "scheduled_wall": scheduled_wall,
            "scheduled_cpu": scheduled_cpu, "queued": queued.get("clusters_queued", 0), "drain": drained,
            "kube_requests": counts["kube_requests"], "hub": counts["hub"], "far_cpu": counts["far_cpu"] - far_cpu0,
            "report": report, "manifest": manifest, "shards": shards if manifest else 0,
            "accounts": len(accounts)}


def setup_client(env: dict[str, str], hub_endpoint: str, buckets: list[str]) -> tuple[Any, Queue]:
    """This process's environment, pointed at the child's moto and Security Hub stand-in; buckets and queue."""
    import boto3

    os.environ.update(env)
    session = boto3.Session()
    for bucket in buckets:
        session.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={
            "LocationConstraint": env["AWS_REGION"]})
    queue = Queue(session)
    os.environ.update({
        "AWS_ENDPOINT_URL_SECURITYHUB": hub_endpoint, "SCAN_ROLE_NAME": ROLE_NAME,
        "TARGET_REGIONS": ",".join(REGIONS), "FLEET_MODE": "queue", "SCAN_QUEUE_URL": queue.url,
        "SCAN_MAX_RECEIVES": str(MAX_RECEIVES)})
    return session, queue


class DropEmf:
    """stdout without the EMF lines that handler.observability.record_metrics prints per cluster (single_metric
    ignores POWERTOOLS_METRICS_DISABLED); everything else passes."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.local = stream, threading.local()

    def write(self, text: str) -> int:
        if text.startswith('{"_aws"'):
            self.local.skip_newline = True
            return len(text)
        if text == "\n" and getattr(self.local, "skip_newline", False):
            self.local.skip_newline = False
            return 1
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def quiet_environment() -> None:
    """Before handler/ is imported: Powertools logs errors only and emits no metrics; no ambient AWS config."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ.update({
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "netpol-scanner", "POWERTOOLS_METRICS_NAMESPACE": "NetpolScannerBench",
        "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR",
        "AWS_LAMBDA_FUNCTION_NAME": "netpol-scanner"})


# ---------------------------------------------------------------------------------------------------------------
# What the runs measured
# ---------------------------------------------------------------------------------------------------------------

def pct(values: list[float]) -> tuple[float, float, float]:
    """p50, p90 and max."""
    if not values:
        return 0.0, 0.0, 0.0
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], ordered[-1]


def message_rows(run: dict[str, Any], specs: dict[tuple[str, str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per successfully handled message, joined with its cluster's result in the run report."""
    results = {(c["account_id"], c["region"], c["cluster"]): c for c in (run["report"] or {}).get("clusters", [])}
    rows = []
    for m in run["drain"]["messages"]:
        result = results.get(m["key"])
        if m["failed"] or result is None:
            continue
        stages = {s: m["stages"].get(s, 0.0) for s in STAGES}
        stages["other"] = max(0.0, m["cpu"] - sum(stages.values()))
        rows.append({**m, "stages": stages, "namespaces": result["namespaces"],
                     "kube_requests": result["api_requests"], "hub_calls": result["securityhub_calls"],
                     "latency": specs[m["key"]]["latency"],
                     "s3": sum(v for k, v in m["requests"].items() if k.startswith("s3."))})
    return rows


def print_stage_table(rows: list[dict[str, Any]], contexts: list[float]) -> None:
    total = sum(r["cpu"] for r in rows) or 1.0
    print(f"\nPer-stage client CPU per message (ms; {len(rows)} messages), thread CPU of the worker that handled it:")
    print("| stage | p50 | p90 | max | mean | total s | share |")
    print("|---|---|---|---|---|---|---|")
    c50, c90, cmax = pct(contexts)
    print(f"| scan context (once per environment, {len(contexts)}) | {c50 * 1e3:.1f} | {c90 * 1e3:.1f} | "
          f"{cmax * 1e3:.1f} | {statistics.fmean(contexts or [0]) * 1e3:.1f} | {sum(contexts):.2f} | - |")
    for stage in (*STAGES, "other"):
        values = [r["stages"][stage] for r in rows]
        p50, p90, top = pct(values)
        print(f"| {stage} | {p50 * 1e3:.2f} | {p90 * 1e3:.2f} | {top * 1e3:.1f} | {statistics.fmean(values) * 1e3:.2f} "
              f"| {sum(values):.2f} | {sum(values) / total:.1%} |")
    p50, p90, top = pct([r["cpu"] for r in rows])
    print(f"| **message** | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} | {top * 1e3:.0f} | {total / len(rows) * 1e3:.1f} | "
          f"{total:.1f} | 100% |")
    requests: Counter = Counter()
    for r in rows:
        requests.update(r["requests"])
    hub = sum(r["hub_calls"] for r in rows)
    print(f"requests per message (mean): " + ", ".join(f"{k} {v / len(rows):.2f}" for k, v in sorted(requests.items()))
          + f"; Security Hub calls {hub / len(rows):.2f} (client CPU of the hub stage per call "
            f"{sum(r['stages']['hub'] for r in rows) / max(1, hub) * 1e3:.2f} ms)")


def print_bucket_table(rows: list[dict[str, Any]]) -> None:
    print("\nPer size bucket (namespaces): client CPU per message (ms) and its main stages (p50)")
    print("| namespaces | clusters | CPU p50 | p90 | max | read p50 | evaluate p50 | asff p50 | hub p50 | "
          "µs per namespace (p50) | Security Hub calls p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for lo, hi in SIZE_BUCKETS:
        bucket = [r for r in rows if lo <= r["namespaces"] <= hi]
        if not bucket:
            continue
        p50, p90, top = pct([r["cpu"] for r in bucket])
        stage = {s: pct([r["stages"][s] for r in bucket])[0] * 1e3 for s in ("read", "evaluate", "asff", "hub")}
        per_ns = pct([r["cpu"] / r["namespaces"] for r in bucket])[0] * 1e6
        print(f"| {lo}-{hi} | {len(bucket)} | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} | {top * 1e3:.0f} | "
              f"{stage['read']:.1f} | {stage['evaluate']:.1f} | {stage['asff']:.1f} | {stage['hub']:.1f} | "
              f"{per_ns:.0f} | {pct([r['hub_calls'] for r in bucket])[0]:g} |")


def finalize_costs(rows: list[dict[str, Any]]) -> tuple[float, dict[str, int], int]:
    """The finalize's CPU and S3 requests (the finalizing message's, less a usual message's), and its message."""
    finals = [r for r in rows if r["stages"]["finalize"] > 0]
    usual = [r for r in rows if r["stages"]["finalize"] == 0]
    if not finals:
        return 0.0, {}, -1
    final = max(finals, key=lambda r: r["stages"]["finalize"])
    typical = s3_requests(*(r["requests"] for r in usual))
    extra = {op: round(count - typical[op] / max(1, len(usual)))
             for op, count in s3_requests(final["requests"]).items()}
    return final["stages"]["finalize"], {op: count for op, count in extra.items() if count > 0}, rows.index(final)


def s3_requests(*counted: dict[str, int]) -> Counter:
    """S3 requests by operation (progress objects' with the rest), summed over the given counts."""
    total: Counter = Counter()
    for counts in counted:
        for name, count in counts.items():
            if name.startswith("s3."):
                total[name[len("s3."):].split(" ")[0]] += count
    return total


def growth(small: dict[str, Any], big: dict[str, Any], small_rows: list[dict[str, Any]],
           big_rows: list[dict[str, Any]]) -> list[str]:
    """Per-cluster costs at n/4 and n: CPU per stage and per message, requests per message, the scheduled handler's
    and the finalize's CPU and requests per cluster. A step that is O(n^2) over a run grows per cluster with n."""
    rows: list[tuple[str, float, float, str]] = []
    for stage in (*STAGES, "other"):
        if stage == "finalize":
            continue
        rows.append((f"{stage} CPU p50 per message", pct([r["stages"][stage] for r in small_rows])[0],
                     pct([r["stages"][stage] for r in big_rows])[0], "cpu"))
    rows.append(("message CPU p50", pct([r["cpu"] for r in small_rows])[0], pct([r["cpu"] for r in big_rows])[0],
                 "cpu"))
    per_ns = [sum(r["cpu"] for r in rs) / max(1, sum(r["namespaces"] for r in rs)) for rs in (small_rows, big_rows)]
    rows.append(("message CPU per namespace, all messages", per_ns[0], per_ns[1], "cpu"))
    rows.append(("scheduled handler CPU per cluster", small["scheduled_cpu"] / max(1, small["queued"]),
                 big["scheduled_cpu"] / max(1, big["queued"]), "cpu"))
    fin = [finalize_costs(rs) for rs in (small_rows, big_rows)]
    rows.append(("finalize CPU per cluster", fin[0][0] / max(1, len(small_rows)), fin[1][0] / max(1, len(big_rows)),
                 "cpu"))
    for operation in ("GetObject", "PutObject", "HeadObject", "ListObjectsV2"):
        values = [statistics.fmean([s3_requests(r["requests"])[operation] for r in rs if r["stages"]["finalize"] == 0]
                                   or [0]) for rs in (small_rows, big_rows)]
        rows.append((f"S3 {operation} per message (finalize aside)", values[0], values[1], "requests"))
    rows.append(("S3 requests of the finalize per cluster", sum(fin[0][1].values()) / max(1, len(small_rows)),
                 sum(fin[1][1].values()) / max(1, len(big_rows)), "requests"))
    rows.append(("STS AssumeRole per message", *[statistics.fmean([r["requests"].get("sts.AssumeRole", 0)
                                                                   for r in rs] or [0])
                                                 for rs in (small_rows, big_rows)], "environment"))
    print(f"\nPer-cluster cost at n/4 = {len(small_rows)} and n = {len(big_rows)} clusters (tolerance: CPU "
          f"{GROWTH_CPU_RATIO}x + {GROWTH_CPU_SLACK * 1e3:g} ms, requests {GROWTH_REQUESTS_RATIO}x):")
    print("| per cluster | n/4 | n | ratio |")
    print("|---|---|---|---|")
    violations = []
    for label, a, b, kind in rows:
        ratio = b / a if a else (1.0 if not b else math.inf)
        unit = (lambda v: f"{v * 1e3:.2f} ms") if kind == "cpu" else (lambda v: f"{v:.3f}")
        print(f"| {label} | {unit(a)} | {unit(b)} | {ratio:.2f}x |")
        if kind == "cpu" and b > a * GROWTH_CPU_RATIO + GROWTH_CPU_SLACK:
            violations.append(f"{label} grows with the fleet: {unit(a)} at n/4, {unit(b)} at n")
        if kind == "requests" and b > a * GROWTH_REQUESTS_RATIO + 0.01:
            violations.append(f"{label} grows with the fleet: {a:.3f} at n/4, {b:.3f} at n")
    print("(STS AssumeRole per message is not a growth: an environment assumes a role on its first message of an "
          "account and Region, and n/4 spreads fewer targets over the same environments.)")
    return violations


def model_fleet(run: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
    from bench.fleet_model import Fleet, Message

    order = {(a, r, c): i for i, (a, r, c, _) in enumerate(run["manifest"]["tasks"])}
    fin_cpu, fin_s3, fin_index = finalize_costs(rows)
    messages = []
    for i, r in enumerate(rows):
        s3 = s3_requests(r["requests"])
        if i == fin_index:
            s3.subtract(fin_s3)
        cpu = r["cpu"] - r["stages"]["clients"] - r["stages"]["finalize"]
        messages.append(Message(index=order[r["key"]], group=r["group"], account=r["key"][0], region=r["key"][1],
                                cluster=r["key"][2], namespaces=r["namespaces"], cpu=cpu,
                                hub_cpu=sum(r["stages"][s] for s in HUB_STAGES),
                                s3_requests={k: v for k, v in s3.items() if v > 0}, kube_requests=r["kube_requests"],
                                kube_latency=r["latency"], hub_calls=r["hub_calls"]))
    # An environment's first clients also parse each service's model (once a process): kept apart from the rest.
    first = [r["stages"]["clients"] for r in rows if r["first_in_environment"]]
    new = [r["stages"]["clients"] for r in rows if r["first_sight"] and not r["first_in_environment"]]
    seen = [r["stages"]["clients"] for r in rows if not r["first_sight"]]
    return Fleet(messages=messages, accounts=run["accounts"], regions=len(REGIONS),
                 account_regions=len({(m.account, m.region) for m in messages}), scheduled_cpu=run["scheduled_cpu"],
                 progress_objects=run["shards"] + 1,
                 clients_cpu={"first": statistics.fmean(first or [0]), "new": statistics.fmean(new or [0]),
                              "seen": statistics.fmean(seen or [0])},
                 context_cpu=statistics.fmean(run["drain"]["contexts"] or [0]), finalize_cpu=fin_cpu,
                 finalize_s3=fin_s3)


def model_report(fleet: Any) -> list[str]:
    from bench.fleet_model import Assumptions, old_backoff, replay_counts, sharded_backoff, simulate
    from handler.run.fanout import PROGRESS_ATTEMPTS, PROGRESS_BACKOFF_SECONDS, PROGRESS_SHARD_SIZE

    a = Assumptions()
    print(f"\nModel of the deployment (bench/fleet_model.py): {a.memory_mb} MB arm64 = {a.vcpu:.2f} vCPU "
          f"(CPU seconds here x {1 / a.vcpu:.2f}, an arm64 core taken as fast as this machine's), Kubernetes API "
          f"20-30 ms a request (each cluster's own), Security Hub {a.hub_latency * 1e3:.0f} ms a call and at most "
          f"{a.hub_calls_per_second:g}/s per account and Region ({a.workers_per_account} message groups, "
          f"{1 / a.hub_interval:g}/s each), S3 " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in a.s3_latency.items())
          + f", EKS/STS {a.aws_call_latency * 1e3:.0f} ms, AssumeRole {a.assume_role_latency * 1e3:.0f} ms, "
            f"SendMessageBatch {a.sqs_send_latency * 1e3:.0f} ms, {a.message_overhead * 1e3:.0f} ms a message for "
            f"the event source mapping, cold start {a.cold_start:g} s + {a.cold_import_here:g} s of imports here; "
            f"clients of an environment's first message {fleet.clients_cpu['first'] * 1e3:.0f} ms CPU, of a "
            f"new target {fleet.clients_cpu['new'] * 1e3:.1f} ms (seen: "
            f"{fleet.clients_cpu['seen'] * 1e3:.2f} ms), scan context {fleet.context_cpu * 1e3:.0f} ms, finalize "
            f"{fleet.finalize_cpu * 1e3:.0f} ms CPU and S3 {dict(fleet.finalize_s3)}")
    print("| workers | modelled wall s | scheduled function s | all sent s | work s (sum) | work / workers s | "
          "longest message s | longest FIFO group s | finalize s | cold starts |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    violations, schedules = [], {}
    for workers in MODEL_WORKERS:
        s = simulate(fleet, workers, a)
        schedules[workers] = s
        print(f"| {workers} | **{s.wall:.1f}** | {s.scheduled:.1f} | {s.sends_done:.1f} | {s.work:.0f} | "
              f"{s.work / workers:.1f} | {s.longest_message[0]:.1f} | {s.longest_group[0]:.1f} | {s.finalize:.1f} | "
              f"{s.cold_starts} |")
        if s.wall >= MODEL_TARGET_SECONDS:
            violations.append(f"modelled run at {workers} workers: {s.wall:.0f} s (target < {MODEL_TARGET_SECONDS:g})")
    for workers, s in schedules.items():
        last = s.last["message"]
        print(f"critical path at {workers}: the last message ({last.account}/{last.region}/{last.cluster}, "
              f"{last.namespaces} namespaces, {last.hub_calls} Security Hub calls) started at {s.last['start']:.1f} s "
              f"after {s.last['waited_for']}, took {s.last['seconds']:.1f} s, then the report {s.finalize:.1f} s; "
              f"longest message {s.longest_message[1]}; longest FIFO group {s.longest_group[1]}")
    print("\nProgress counts replayed at the modelled times (conditional writes: GET then PUT; a PUT conflicts when "
          "another landed on the object in between):")
    print("| workers | counter | objects | counts | attempts mean | attempts max | counts out of attempts |")
    print("|---|---|---|---|---|---|---|")
    shards = max(1, math.ceil(len(fleet.messages) / PROGRESS_SHARD_SIZE))
    for workers, s in schedules.items():
        ends = [(end, f"{m.account}/{m.region}/{m.cluster}") for end, m in s.ends]
        for label, objects, backoff in (("one object (before)", 1, old_backoff),
                                        ("shards (now)", shards, sharded_backoff(*PROGRESS_BACKOFF_SECONDS))):
            c = replay_counts(ends, objects, PROGRESS_ATTEMPTS, backoff, a)
            print(f"| {workers} | {label} | {objects} | {c.counts} | {c.attempts_mean:.2f} | {c.attempts_max} | "
                  f"{c.failed} |")
            if objects > 1 and c.failed:
                violations.append(f"{c.failed} progress counts ran out of attempts at {workers} workers")
    return violations


def check_run(run: dict[str, Any], specs: list[dict[str, Any]]) -> list[str]:
    violations = [f"{run['label']}: {error}" for error in run["drain"]["errors"][:3]]
    summary = (run["report"] or {}).get("summary")
    if not summary:
        return [*violations, f"{run['label']}: no run report was written"]
    if summary.get("clusters_scanned") != len(specs) or summary.get("clusters_failed"):
        violations.append(f"{run['label']}: {summary.get('clusters_scanned')} of {len(specs)} clusters scanned, "
                          f"{summary.get('clusters_failed')} failed: {summary.get('failures', [])[:3]}")
    if summary.get("namespaces") != sum(s["namespaces"] for s in specs):
        violations.append(f"{run['label']}: {summary.get('namespaces')} namespaces in the report")
    if summary.get("findings_imported") != run["hub"]["findings"]:
        violations.append(f"{run['label']}: the report says {summary.get('findings_imported')} findings imported, "
                          f"Security Hub received {run['hub']['findings']}")
    if run["drain"]["retried"] or run["drain"]["dead_letters"]:
        violations.append(f"{run['label']}: {run['drain']['retried']} messages retried, "
                          f"{run['drain']['dead_letters']} dead letters")
    return violations


def print_run(run: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    s, h = run["report"]["summary"] if run["report"] else {}, run["hub"]
    progress_puts = sum(r["requests"].get("s3.PutObject (progress)", 0) for r in rows)
    print(f"{run['label']}: {run['wall']:.1f} s wall, scheduled handler {run['scheduled_wall']:.1f} s "
          f"({run['scheduled_cpu']:.2f} s CPU), client CPU {run['cpu']:.1f} s, server-process CPU "
          f"{run['far_cpu']:.1f} s; "
          f"{run['kube_requests']:,} Kubernetes API requests; Security Hub {h['calls']:,} calls, {h['findings']:,} "
          f"findings in {h['account_regions']} account/Regions, at most {h['peak_calls_per_second']} calls in 1 s "
          f"into one; {s.get('clusters_scanned')} scanned / {s.get('clusters_failed')} failed; progress: "
          f"{progress_puts} conditional PUTs for {len(rows)} counts over {run['shards']} shards "
          f"({max(0, progress_puts - len(rows) - run['shards'])} conflicts at most); retried "
          f"{run['drain']['retried']}, dead letters {run['drain']['dead_letters']}")


# ---------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16, help="worker environments at once in this process")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    if args.clusters < 8 or args.accounts < 4 or not 1 < args.concurrency <= 64:
        parser.error("--clusters at least 8, --accounts at least 4, --concurrency from 2 to 64")
    quiet_environment()
    sys.stdout = DropEmf(sys.stdout)
    pin = not args.no_pin
    specs = fleet_spec(args.clusters, args.accounts, args.seed)
    accounts = sorted({s["account"] for s in specs})
    small_accounts = accounts[:len(accounts) // 4]
    small = [s for s in specs if s["account"] in small_accounts]
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, seed {args.seed}, {args.concurrency} worker "
          f"environments in this process")
    describe_fleet("fleet n", specs)
    describe_fleet("fleet n/4 (its first quarter of the accounts)", small)
    print(f"latency: Kubernetes API {KUBE_LATENCY[0] * 1000:.0f}-{KUBE_LATENCY[1] * 1000:.0f} ms per request "
          f"(per cluster), Security Hub {HUB_LATENCY[0] * 1000:.0f}-{HUB_LATENCY[1] * 1000:.0f} ms per call",
          flush=True)

    ctx = mp.get_context("spawn")
    far, far_end = ctx.Pipe()
    child = ctx.Process(target=serve, args=(far_end, specs, args.seed, pin), daemon=True)
    started = time.perf_counter()
    try:
        child.start()
        waited = 0.0
        while not far.poll(1.0):
            waited += 1.0
            if not child.is_alive() or waited >= CHILD_TIMEOUT_SECONDS:
                raise RuntimeError(f"the server process ended or was not ready within {CHILD_TIMEOUT_SECONDS} s")
        message = far.recv()
        if message[0] != "ready":
            raise RuntimeError(f"the server process failed:\n{message[1]}")
        _, env, hub_endpoint = message
        if pin:
            pin_to_cpu(0)
        session, queue = setup_client(env, hub_endpoint, ["fleet-bench-small", "fleet-bench-all"])
        print(f"setup: {time.perf_counter() - started:.1f} s (servers, moto EKS clusters, queue)", flush=True)
        runs = [measure(f"n/4 = {len(small)} clusters", session, queue, far, "fleet-bench-small", args.concurrency,
                        small_accounts),
                measure(f"n = {len(specs)} clusters", session, queue, far, "fleet-bench-all", args.concurrency,
                        accounts)]
        return report(runs, [small, specs])
    finally:
        if child.is_alive():
            try:
                far.send("stop")
            except (BrokenPipeError, OSError):
                pass
            child.join(60)
            if child.is_alive():
                child.terminate()
                child.join(10)


def report(runs: list[dict[str, Any]], fleets: list[list[dict[str, Any]]]) -> int:
    by_key = {(s["account"], s["region"], s["name"]): s for s in fleets[-1]}
    violations = []
    rows = [message_rows(run, by_key) for run in runs]
    print()
    for run, run_rows, specs in zip(runs, rows, fleets):
        print_run(run, run_rows)
        violations += check_run(run, specs)
    if any(not run["report"] for run in runs):
        return verdict(violations)
    big, big_rows = runs[-1], rows[-1]
    print_stage_table(big_rows, big["drain"]["contexts"])
    print_bucket_table(big_rows)
    violations += growth(runs[0], big, rows[0], big_rows)
    violations += model_report(model_fleet(big, big_rows))
    return verdict(violations)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: a fleet of 300 EKS clusters scanned through the scan queue, at worker concurrency 1 and 20.

    .venv/bin/python -m bench.fleet [--clusters 300] [--concurrency 20] [--seed 7] [--entry environment|handler]

What runs where:
- a child process (pinned to the last core) is the far side: moto (S3, STS, EKS, SQS) through
  netpol_scan.sandbox.aws_world.World, one netpol_scan.sandbox.kube_api.KubeApiServer per cluster (TLS, its own
  CA, EKS tokens verified against the credentials moto's STS issued), each answering every request after a fixed per-cluster latency (20-30 ms, an EKS
  endpoint seen from a Lambda function in its Region), and a Security Hub stand-in that answers
  BatchImportFindings itself after 80-150 ms and counts calls and findings per account and Region (moto's
  Security Hub scans a list per imported finding, which at tens of thousands of findings would dominate);
- this process (pinned to the first core) is the client: the scheduled handler and the workers, and nothing else,
  so that its CPU time (time.process_time) is the scanner's own.

One measured run: handler.app.lambda_handler (FLEET_MODE=queue) discovers the clusters and queues one message
per cluster on a moto FIFO queue with a dead-letter queue; then N worker "invocations" run at once (N threads,
each looping: receive one message, call the worker with Lambda's SQS event shape, delete it on success), which
is what the event source mapping's MaximumConcurrency N means. Each run writes into a fresh report bucket, so the
runs at concurrency 1 and N do the same work (a first scan); a second, unchanged scan at concurrency N then reuses
the bucket of the first run at N and must import nothing (REFRESH_DAYS not due). Floors (exit 1 when broken):
concurrency N at least 8x faster than 1 in wall time, 0 findings imported by the unchanged second scan, every
cluster scanned. Numbers and method: docs/benchmarks.md, section 3.
"""
from __future__ import annotations

import argparse
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
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import pin_to_cpu, verdict

REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
ACCOUNTS = 30
MIN_NAMESPACES, MAX_NAMESPACES = 5, 5_000
KUBE_LATENCY = (0.020, 0.030)   # seconds per request, per cluster (fixed for a cluster, drawn from this range)
HUB_LATENCY = (0.080, 0.150)    # seconds per BatchImportFindings call (drawn per call)
MIN_SPEEDUP = 8.0
ROLE_NAME = "NetpolScannerRole"
MAX_RECEIVES = 3
DRAIN_TIMEOUT_SECONDS = 900
CHILD_TIMEOUT_SECONDS = 300
IDLE_POLL_SECONDS = 0.25
SERVER_POLL_SECONDS = 2.0  # 300 API servers polling every 50 ms woke 6,000 times a second on the far side's core
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}




# ---------------------------------------------------------------------------------------------------------------
# The fleet
# ---------------------------------------------------------------------------------------------------------------

def fleet_spec(clusters: int, seed: int) -> list[dict[str, Any]]:
    """Clusters over ACCOUNTS accounts, each account in 2 or 3 Regions. Sizes are log-normal (median 40, sigma
    1.3: most clusters small, a few large) clipped to 5..5,000, with at least one of each bound. In each cluster
    a share of 20-60% of the namespaces holds a default-deny policy."""
    rng = random.Random(seed)
    accounts = [f"{210000000000 + i * 1_000_003:012d}" for i in range(ACCOUNTS)]
    places = [(a, r) for a in accounts for r in rng.sample(REGIONS, rng.choice((2, 3)))]
    sizes = [min(MAX_NAMESPACES, max(MIN_NAMESPACES, round(rng.lognormvariate(math.log(40), 1.3))))
             for _ in range(clusters)]
    sizes[0], sizes[1] = MIN_NAMESPACES, MAX_NAMESPACES
    rng.shuffle(sizes)
    spec = []
    for i, size in enumerate(sizes):
        account, region = places[i % len(places)] if i < len(places) else rng.choice(places)
        spec.append({"account": account, "region": region, "name": f"fleet-{i:03d}", "namespaces": size,
                     "with_policies": round(size * rng.uniform(0.2, 0.6)),
                     "latency": round(rng.uniform(*KUBE_LATENCY), 4)})
    return spec


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
    servers, sink, world = [], None, None
    try:
        if pin:
            pin_to_cpu(-1)
        from netpol_scan.sandbox.aws_world import World
        from netpol_scan.sandbox.kube_api import KubeApiServer

        world = World()
        clusters = []
        for spec in specs:
            cluster = build_cluster(spec)
            server = KubeApiServer(cluster, world.verifier, poll_interval=SERVER_POLL_SECONDS).start()
            servers.append(server)
            clusters.append(cluster)
            world.client("eks", spec["account"], spec["region"]).create_cluster(
                name=spec["name"], version="1.31", roleArn=f"arn:aws:iam::{spec['account']}:role/eks-cluster",
                resourcesVpcConfig={"subnetIds": ["subnet-00000001"]})
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
        # In parallel: each stop waits for its server's next poll.
        with ThreadPoolExecutor(max_workers=64) as pool:
            list(pool.map(lambda server: server.stop(), servers))
        if sink is not None:
            sink.stop()


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

    def drain(self, concurrency: int, make_invoke: Any) -> dict[str, Any]:
        """`concurrency` invocations at once, batches of one message, until the queue is empty."""
        lock = threading.Lock()
        counts = {"received": 0, "deleted": 0, "retried": 0, "errors": []}
        done = threading.Event()
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        clients = [self.session.client("sqs") for _ in range(concurrency)]  # made here: one thread

        def slot(sqs: Any) -> None:
            try:
                invoke = make_invoke()
                while not done.is_set() and time.monotonic() < deadline:
                    messages = sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=1,
                                                   AttributeNames=["All"]).get("Messages", [])
                    if not messages:
                        if self.depth(sqs) == 0:
                            done.set()
                        else:  # the rest is in flight, or in message groups held by other invocations
                            done.wait(IDLE_POLL_SECONDS)
                        continue
                    response = invoke(self.event(messages))
                    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
                    for m in messages:
                        if m["MessageId"] in failed:  # as if its visibility timeout ran out
                            sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"],
                                                          VisibilityTimeout=0)
                        else:
                            sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
                    with lock:
                        counts["received"] += len(messages)
                        counts["retried"] += len(failed)
                        counts["deleted"] += len(messages) - len(failed)
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


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------

def invoker_factory(entry: str) -> Any:
    """How one worker slot (a Lambda execution environment) handles an event.

    environment: the worker's scan context is built once per slot (its first invocation, timed) and kept, as a warm
    execution environment could keep it; process_event per message.
    handler: handler.worker.lambda_handler per message, exactly as deployed: a new boto3.Session and scan context
    (models loaded, STS GetCallerIdentity, AssumeRole) on every invocation."""
    import boto3
    import botocore.session

    from handler import worker
    from handler.config import Settings
    from handler.run.executors import process_event, worker_context
    from netpol_scan.lambda_context import LambdaContext

    if entry == "handler":
        return lambda: (lambda event: worker.lambda_handler(event, LambdaContext(900)))
    loader_source = boto3.Session()._session  # one loader, shared as discovery.AccountSessions shares it

    def make() -> Any:
        core = botocore.session.Session()
        core.register_component("data_loader", loader_source.get_component("data_loader"))
        context = worker_context(Settings.from_env(), boto3.Session(botocore_session=core))
        return lambda event: process_event(context, event, LambdaContext(900))
    return make


def measure(label: str, session: Any, queue: Queue, far: Any, bucket: str, concurrency: int, entry: str,
            expected: int) -> dict[str, Any]:
    from handler import app
    from netpol_scan.lambda_context import LambdaContext

    os.environ["REPORT_BUCKET"] = bucket
    far.send("take-counts")
    far_cpu0 = far.recv()["far_cpu"]
    make_invoke = invoker_factory(entry)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    queued = app.lambda_handler({"source": "bench.fleet"}, LambdaContext(900))
    queued_at = time.perf_counter() - wall0
    drained = queue.drain(concurrency, make_invoke)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    far.send("take-counts")
    counts = far.recv()
    report = None
    if queued.get("report"):
        body = session.client("s3").get_object(Bucket=bucket, Key=queued["report"])["Body"].read()
        report = json.loads(body)
    summary = (report or {}).get("summary", {})
    seconds = [c["seconds"] for c in (report or {}).get("clusters", [])]
    print(f"  {label}: {wall:.1f} s wall ({queued_at:.1f} s scheduled handler + {wall - queued_at:.1f} s drain), "
          f"{cpu:.1f} s client CPU, {counts['far_cpu'] - far_cpu0:.1f} s server-process CPU, "
          f"{queued.get('clusters_queued')} queued", flush=True)
    return {"label": label, "concurrency": concurrency, "wall": wall, "cpu": cpu, "schedule": queued_at,
            "queued": queued.get("clusters_queued", 0), "drain": drained, "kube_requests": counts["kube_requests"],
            "hub": counts["hub"], "summary": summary, "far_cpu": counts["far_cpu"] - far_cpu0,
            "cluster_seconds_max": max(seconds, default=0.0), "cluster_seconds_sum": sum(seconds)}


def setup_client(env: dict[str, str], hub_endpoint: str, specs: list[dict[str, Any]],
                 buckets: list[str]) -> tuple[Any, Queue]:
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
        "TARGET_ACCOUNTS": ",".join(sorted({s["account"] for s in specs})), "TARGET_REGIONS": ",".join(REGIONS),
        "FLEET_MODE": "queue", "SCAN_QUEUE_URL": queue.url, "SCAN_MAX_RECEIVES": str(MAX_RECEIVES)})
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


def quiet_environment(parameter_validation: bool) -> None:
    """Before handler/ is imported: Powertools logs errors only and emits no metrics; no ambient AWS config."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ.update({
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "netpol-scanner", "POWERTOOLS_METRICS_NAMESPACE": "NetpolScannerBench",
        "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR",
        "AWS_LAMBDA_FUNCTION_NAME": "netpol-scanner"})
    if not parameter_validation:  # botocore reads this setting from the config file only
        import tempfile

        config = tempfile.NamedTemporaryFile("w", prefix="fleet-bench-", suffix=".ini", delete=False)
        config.write("[default]\nparameter_validation = false\n")
        config.close()
        os.environ["AWS_CONFIG_FILE"] = config.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--entry", choices=("environment", "handler"), default="environment")
    parser.add_argument("--parameter-validation", choices=("on", "off"), default="on",
                        help="botocore's client-side parameter validation (on: as deployed)")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    if args.clusters < 2 or not 1 < args.concurrency <= 100:
        parser.error("--clusters must be at least 2 and --concurrency from 2 to 100")
    quiet_environment(args.parameter_validation == "on")
    sys.stdout = DropEmf(sys.stdout)
    pin = not args.no_pin
    specs = fleet_spec(args.clusters, args.seed)
    sizes = sorted(s["namespaces"] for s in specs)
    accounts, places = {s["account"] for s in specs}, {(s["account"], s["region"]) for s in specs}
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, entry={args.entry}, seed={args.seed}, "
          f"botocore parameter validation {args.parameter_validation}")
    print(f"fleet: {len(specs)} clusters in {len(accounts)} accounts, {len(places)} account/Regions "
          f"({len({s['region'] for s in specs})} Regions); {sum(sizes):,} namespaces "
          f"({sum(s['with_policies'] for s in specs):,} with a policy); size min {sizes[0]}, median "
          f"{statistics.median(sizes):g}, p90 {sizes[int(len(sizes) * 0.9)]}, max {sizes[-1]}")
    buckets = [(lo, hi) for lo, hi in ((5, 9), (10, 49), (50, 199), (200, 999), (1000, 5000))]
    print("sizes: " + ", ".join(f"{lo}-{hi}: {sum(lo <= n <= hi for n in sizes)}" for lo, hi in buckets))
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
        session, queue = setup_client(env, hub_endpoint, specs,
                                      ["fleet-bench-c1", f"fleet-bench-c{args.concurrency}"])
        print(f"setup: {time.perf_counter() - started:.1f} s (servers, moto EKS clusters, queue)", flush=True)
        runs = [measure("concurrency 1, first scan", session, queue, far, "fleet-bench-c1", 1, args.entry,
                        len(specs)),
                measure(f"concurrency {args.concurrency}, first scan", session, queue, far,
                        f"fleet-bench-c{args.concurrency}", args.concurrency, args.entry, len(specs)),
                measure(f"concurrency {args.concurrency}, unchanged second scan", session, queue, far,
                        f"fleet-bench-c{args.concurrency}", args.concurrency, args.entry, len(specs))]
        return report(runs, specs)
    finally:
        if child.is_alive():
            try:
                far.send("stop")
            except (BrokenPipeError, OSError):
                pass
            child.join(30)
            if child.is_alive():
                child.terminate()
                child.join(10)


def report(runs: list[dict[str, Any]], specs: list[dict[str, Any]]) -> int:
    one, many, second = runs
    violations = []
    print()
    print("| run | wall s | speedup | client CPU s | CPU / wall | server-process CPU s | Kubernetes API requests | Security Hub calls | "
          "findings imported | SQS messages received | clusters scanned / failed | slowest cluster s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        s, d = run["summary"], run["drain"]
        speedup = one["wall"] / run["wall"]
        print(f"| {run['label']} | {run['wall']:.1f} | {speedup:.1f}x | {run['cpu']:.1f} | "
              f"{run['cpu'] / run['wall']:.2f} | {run['far_cpu']:.1f} | {run['kube_requests']:,} | {run['hub']['calls']:,} | "
              f"{s.get('findings_imported', '?'):,} | {d['received']} | {s.get('clusters_scanned', '?')} / "
              f"{s.get('clusters_failed', '?')} | {run['cluster_seconds_max']:.1f} |")
    print()
    for run in runs:
        h = run["hub"]
        print(f"{run['label']}: scheduled handler {run['schedule']:.1f} s; Security Hub: {h['calls']} calls, "
              f"{h['findings']:,} findings, {h['account_regions']} account/Regions, at most "
              f"{h['peak_calls_per_second']} calls in 1 s into one account/Region, at most {h['max_in_flight']} "
              f"calls in flight, {h['other_calls']} other calls; sum of per-cluster seconds "
              f"{run['cluster_seconds_sum']:.1f}; retried {run['drain']['retried']}, dead letters "
              f"{run['drain']['dead_letters']}")
    for run in runs:
        for error in run["drain"]["errors"][:3]:
            violations.append(f"{run['label']}: {error}")
        s = run["summary"]
        if not s:
            violations.append(f"{run['label']}: no run report was written")
            continue
        if s.get("clusters_scanned") != len(specs) or s.get("clusters_failed"):
            violations.append(f"{run['label']}: {s.get('clusters_scanned')} of {len(specs)} clusters scanned, "
                              f"{s.get('clusters_failed')} failed: {s.get('failures', [])[:3]}")
        if s.get("namespaces") != sum(x["namespaces"] for x in specs):
            violations.append(f"{run['label']}: {s.get('namespaces')} namespaces in the report")
        if s.get("findings_imported") != run["hub"]["findings"]:
            violations.append(f"{run['label']}: the report says {s.get('findings_imported')} findings imported, "
                              f"Security Hub received {run['hub']['findings']}")
    speedup = one["wall"] / many["wall"]
    first_imported = one["summary"].get("findings_imported", 0)
    if many["summary"].get("findings_imported") != first_imported or not first_imported:
        violations.append(f"first scans imported {first_imported} and {many['summary'].get('findings_imported')}"
                          " findings: not the same work")
    if speedup < MIN_SPEEDUP:
        violations.append(f"concurrency {many['concurrency']} is {speedup:.1f}x faster than 1 (floor {MIN_SPEEDUP}x)")
    if second["summary"].get("findings_imported") != 0 or second["hub"]["calls"]:
        violations.append(f"the unchanged second scan imported {second['summary'].get('findings_imported')} findings "
                          f"in {second['hub']['calls']} Security Hub calls (floor: 0)")
    # However many workers, a run takes at least its scheduled handler plus its slowest cluster: at concurrency 1
    # the run is the sum of all clusters, so their ratio bounds the speedup even with a CPU per worker.
    bound = one["wall"] / (many["schedule"] + one["cluster_seconds_max"])
    print(f"critical path: scheduled handler {many['schedule']:.1f} s + slowest cluster alone "
          f"{one['cluster_seconds_max']:.1f} s: no concurrency can be more than {bound:.1f}x faster than 1")
    print()
    print(f"headline: concurrency {many['concurrency']} is {speedup:.1f}x faster than 1 (floor {MIN_SPEEDUP:g}x); "
          f"findings imported: first scan {first_imported:,}, unchanged second scan "
          f"{second['summary'].get('findings_imported')} (floor 0)")
    return verdict(violations)


if __name__ == "__main__":
    sys.exit(main())

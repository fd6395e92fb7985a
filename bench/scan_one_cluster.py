"""Benchmark: scan one cluster of 10,000 namespaces and 5,000 NetworkPolicies from the project's test API server.

    .venv/bin/python -m bench.scan_one_cluster [--namespaces 10000] [--policies 5000] [--rounds 5]

The cluster is served by netpol_scan.sandbox.kube_api.KubeApiServer (TLS, EKS token verification on) in a process of
its own, so the server's CPU and memory do not count against the client. Each measured run is a fresh child
process that imports everything first and then times only the work:

- baseline: the kubernetes client's ApiClient built by handler.cluster_reader.api_client, fetching the same pages
  (same paths, Accept headers, limit and continue) and only json.loads-ing each page to find the continue token;
- scanner: ClusterReader().read() (timed alone as "scanner read"), then handler.evaluation.evaluate() and
  handler.state.plan_scanned() building the ASFF findings ("scanner read+evaluate+build").

Rounds alternate the order (baseline first, then scanner first) and medians are reported; the headline is the
ratio scanner / baseline. Peak RSS is the child's ru_maxrss (imports included); one extra run per variant under
tracemalloc gives the Python heap peak of the timed work alone (its times are not used). The command exits 1 when
a floor is broken (issue 12's targets): more than 2 + ceil(n/500) list requests per kind, the scan (read +
evaluate) over 1.3x the baseline's wall time, or its peak RSS (taken when evaluate returns) over 1.3x the
baseline's. Numbers and method: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import pin_to_cpu, verdict

REGION = "eu-west-1"
STS_HOST = f"sts.{REGION}.amazonaws.com"
ACCESS_KEY = "AKIDBENCHMARK0000000"
SECRET_KEY = "bench-secret"
IDENTITY = "arn:aws:iam::123456789012:role/bench"
ACCOUNT_ID = "123456789012"
CLUSTER_NAME = "bench-cluster"
PAGE_SIZE = 500
MAX_RATIO = 1.3  # issue 12: the scan within 1.3x the raw fetch's wall time
MAX_RSS_RATIO = 1.3  # and its peak RSS within 1.3x the raw fetch's
CHILD_TIMEOUT_SECONDS = 600

BASELINE, SCANNER = "baseline", "scanner"
# The scanner's only other requests: API discovery (which engine kinds exist) and the CIS 5.3.1 evidence, one get
# of each named object (handler/engine_reader.py).
DISCOVERY_AND_ENFORCEMENT = ("/apis", "/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node",
                             "/api/v1/namespaces/kube-system/configmaps/amazon-vpc-cni")


# ---------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------

def clean_aws_environment() -> None:
    """No endpoint overrides, profiles or config files: the token must name the regional STS host, offline."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"




# ---------------------------------------------------------------------------------------------------------------
# The cluster and its server (server process)
# ---------------------------------------------------------------------------------------------------------------

TEAMS = ("payments", "checkout", "search", "catalog", "identity", "ledger", "ml", "data", "web", "mobile",
         "platform", "observability", "risk", "growth", "support", "billing")
ENVIRONMENTS = ("dev", "staging", "prod")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def namespace_names(count: int) -> list[str]:
    names = list(SYSTEM_NAMESPACES[:count])
    names += [f"{TEAMS[i % len(TEAMS)]}-svc{i:05d}-{ENVIRONMENTS[i % 3]}" for i in range(count - len(names))]
    return names


def _managed_fields(manager: str, fields: dict[str, Any], timestamp: str) -> list[dict[str, Any]]:
    # kube-apiserver returns managedFields unless the client asks otherwise; they are a large part of real pages.
    return [{"manager": manager, "operation": "Update", "apiVersion": "v1", "time": timestamp,
             "fieldsType": "FieldsV1", "fieldsV1": fields}]


def policy_spec(index: int) -> tuple[str, dict[str, Any]]:
    """A few shapes real clusters hold: default deny, allow from the ingress controller, allow DNS egress."""
    shape = index % 3
    if shape == 0:
        return "default-deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    if shape == 1:
        return "allow-from-ingress-nginx", {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": f"svc{index:05d}"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "ingress-nginx"}}}],
                "ports": [{"protocol": "TCP", "port": 8080}]}],
            "policyTypes": ["Ingress"]}
    return "allow-dns-egress", {
        "podSelector": {},
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
        "policyTypes": ["Egress"]}


def build_cluster(namespaces: int, policies: int, payload: str = "plain") -> Any:
    """`namespaces` namespaces (4 system ones, 1 in 200 Terminating) and exactly `policies` policies, one or two
    per namespace over evenly spaced namespaces: with 10,000 and 5,000, a third of the namespaces have policies
    (half of those two) and two thirds have none.

    payload "plain": objects as the test server's Cluster.add_namespace / add_policy make them (labels, some
    Helm annotations). "apiserver": also what a real kube-apiserver returns in lists and the test server leaves
    out: metadata.managedFields on every object and kubectl's last-applied-configuration annotation on every
    other policy (pages about 2x larger)."""
    full = payload == "apiserver"
    import json

    from netpol_scan.sandbox.kube_api import Cluster

    cluster = Cluster(CLUSTER_NAME)
    timestamp = "2026-01-01T00:00:00Z"
    names = namespace_names(namespaces)
    for i, name in enumerate(names):
        team = TEAMS[i % len(TEAMS)]
        labels = {"kubernetes.io/metadata.name": name, "team": team, "environment": ENVIRONMENTS[i % 3]}
        meta: dict[str, Any] = {"name": name, "labels": labels}
        if i % 2:
            labels["app.kubernetes.io/managed-by"] = "Helm"
            meta["annotations"] = {"meta.helm.sh/release-name": f"{team}-{i:05d}",
                                   "meta.helm.sh/release-namespace": name}
        if full:
            meta["managedFields"] = _managed_fields("helm" if i % 2 else "kubectl-create", {"f:metadata": {
                "f:labels": {".": {}, **{f"f:{key}": {} for key in labels}}}}, timestamp)
        terminating = i >= len(SYSTEM_NAMESPACES) and i % 200 == 0
        if terminating:
            meta["deletionTimestamp"] = timestamp
        cluster.add_object("v1", "namespaces", {"metadata": meta, "spec": {"finalizers": ["kubernetes"]},
                                                "status": {"phase": "Terminating" if terminating else "Active"}})
    user = names[len(SYSTEM_NAMESPACES):] or names
    with_policies = min(len(user), max(1, math.ceil(policies / 1.5))) if policies else 0
    chosen = [user[(k * len(user)) // with_policies] for k in range(with_policies)] if with_policies else []
    for j in range(policies):
        namespace = chosen[j % with_policies]
        base, spec = policy_spec(j)
        name = base if j < with_policies else f"{base}-{j // with_policies}"
        meta = {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "netpol-baseline"}}
        if full and j % 2 == 0:  # applied with kubectl apply: the whole object again in an annotation
            meta["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": name, "namespace": namespace}, "spec": spec}, separators=(",", ":"))}
        if full:
            meta["managedFields"] = _managed_fields("kubectl-client-side-apply", {"f:spec": {
                f"f:{key}": {} for key in spec}}, timestamp)
        cluster.add_object("networking.k8s.io/v1", "networkpolicies", {"metadata": meta, "spec": spec})
    return cluster


def _secret_for(access_key: str) -> tuple[str, str | None, str] | None:
    return (SECRET_KEY, None, IDENTITY) if access_key == ACCESS_KEY else None


def serve(conn: Any, namespaces: int, policies: int, payload: str, pin: bool) -> None:
    """Server process: builds the cluster, serves it, answers commands on `conn` until "stop"."""
    try:
        if pin:
            pin_to_cpu(-1)
        from netpol_scan.sandbox.kube_api import EksTokenVerifier, KubeApiServer

        cluster = build_cluster(namespaces, policies, payload)
        server = KubeApiServer(cluster, EksTokenVerifier({STS_HOST}, _secret_for)).start()
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise
    conn.send(("ready", server.endpoint, server.ca_data))
    try:
        while True:
            command = conn.recv()
            if command == "stop":
                break
            if command == "take-log":
                with cluster.lock:
                    log, cluster.requests = cluster.requests, []
                conn.send([{"path": r["path"], "status": r["status"], "identity": r["identity"],
                            "accept": r["accept"], "query": r["query"]} for r in log])
    finally:
        server.stop()


@contextmanager
def served_cluster(ctx: Any, namespaces: int, policies: int, payload: str, pin: bool) -> Iterator[tuple[Any, str, str]]:
    """The cluster served by a process of its own (spawned from `ctx`) while the block runs: its command pipe (see
    `serve`), endpoint and CA data."""
    server_conn, server_end = ctx.Pipe()
    server = ctx.Process(target=serve, args=(server_end, namespaces, policies, payload, pin), daemon=True)
    server.start()
    server_end.close()
    try:
        if not server_conn.poll(300):
            raise RuntimeError("the API server did not start in 300 s")
        message = server_conn.recv()
        if message[0] != "ready":
            raise RuntimeError(f"the API server failed:\n{message[1]}")
        _, endpoint, ca_data = message
        yield server_conn, endpoint, ca_data
    finally:
        try:
            server_conn.send("stop")
        except OSError:
            pass
        server.join(30)
        if server.is_alive():
            server.kill()


# ---------------------------------------------------------------------------------------------------------------
# One measured run (client process)
# ---------------------------------------------------------------------------------------------------------------

def measure(conn: Any, variant: str, endpoint: str, ca_data: str, trace: bool, pin: bool) -> None:
    try:
        conn.send(("ok", _measure(variant, endpoint, ca_data, trace, pin)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def _measure(variant: str, endpoint: str, ca_data: str, trace: bool, pin: bool) -> dict[str, Any]:
    if pin:
        pin_to_cpu(0)
    # Every import first: import time is not part of what is measured.
    import datetime as dt
    import gc
    import json
    import resource
    import time
    import tracemalloc

    import boto3
    # cluster_reader.api_client imports the kubernetes client with the first cluster it reads: imported here, so
    # that neither variant's timing includes it and "RSS after imports" holds it, as a warm environment would.
    from kubernetes.client import ApiClient  # noqa: F401

    from handler import collector
    from handler.asff import cluster_resource, encoded_findings
    from handler.cluster_reader import (JSON, METADATA_ONLY, NAMESPACES_PATH, NETWORK_POLICIES_PATH, ClusterReader,
                                        ReadLimits, api_client)
    from handler.models import ClusterInfo, ClusterRef, ComplianceStatus
    from handler.evaluation import Evaluation, Evaluator
    from handler.publish.s3 import GzipJsonLines
    from handler.publish.securityhub import EncodedBatch, batches
    from handler.state import plan_scanned
    from handler.targets.auth import eks_token

    ref = ClusterRef(ACCOUNT_ID, REGION, CLUSTER_NAME)
    details = {"Arn": ref.arn, "Name": CLUSTER_NAME, "Version": "1.31", "Endpoint": endpoint,
               "ClusterStatus": "ACTIVE", "RoleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/eks-cluster",
               "ResourcesVpcConfig": {"SecurityGroupIds": ["sg-0123456789abcdef0"],
                                      "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
                                      "EndpointPublicAccess": False}}
    info = ClusterInfo(ref, endpoint, ca_data, version="1.31", status="ACTIVE", details=details)
    session = boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    token = eks_token(session, CLUSTER_NAME, REGION)
    limits = ReadLimits(page_size=PAGE_SIZE)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    gc.collect()
    gc.freeze()  # as handler/app.py does after its imports
    rss_after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    out: dict[str, Any] = {"variant": variant, "rss_after_imports_mb": rss_after_imports}
    if trace:
        tracemalloc.start()

    if variant == BASELINE:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        api = api_client(info, token, limits)
        items, body_bytes, requests = {}, {}, 0
        try:
            for path, accept in ((NAMESPACES_PATH, METADATA_ONLY), (NETWORK_POLICIES_PATH, JSON)):
                items[path], body_bytes[path], cont = 0, 0, None
                while True:
                    query: list[tuple[str, Any]] = [("limit", limits.page_size)]
                    if cont:
                        query.append(("continue", cont))
                    request = api.param_serialize("GET", path, query_params=query, header_params={"Accept": accept},
                                                  auth_settings=["BearerToken"])
                    response = api.call_api(*request, _request_timeout=(limits.connect_timeout,
                                                                         limits.read_timeout))
                    body = response.read()
                    requests += 1
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status} on {path}: {body[:300]!r}")
                    page = json.loads(body)
                    items[path] += len(page.get("items") or ())
                    body_bytes[path] += len(body)
                    cont = (page.get("metadata") or {}).get("continue")
                    if not cont:
                        break
        finally:
            api.close()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        out.update(wall=wall, cpu=cpu, requests=requests, namespaces=items[NAMESPACES_PATH],
                   policies=items[NETWORK_POLICIES_PATH], namespace_bytes=body_bytes[NAMESPACES_PATH],
                   policy_bytes=body_bytes[NETWORK_POLICIES_PATH])
    else:
        # As handler/run/scan.py scans a cluster: the collector paused for the whole scan (handler/collector.py), the
        # policies analysed and the namespaces evaluated page by page as they are read.
        with collector.paused():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            evaluation = Evaluation(Evaluator())
            snapshot = ClusterReader(limits).read(info, token, as_read=evaluation)
            read_wall, read_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if trace:  # where the heap peak is: during the read, or while the findings are built
                out["traced_read_peak_mb"], out["traced_snapshot_mb"] = (
                    tracemalloc.get_traced_memory()[1] / 1e6, tracemalloc.get_traced_memory()[0] / 1e6)
            snapshot, results = evaluation.finish(snapshot)
            scan_wall, scan_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            out["scan_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
            plan = plan_scanned(None, ref, cluster_resource(info), results, now)
            # As the pipeline publishes them (bench/encode_findings.py times this alone): each finding built, encoded
            # once and compressed for the S3 file, then batched into request bodies; one batch of 100 alive at a time.
            built, json_bytes = 0, 0
            for batch in batches(GzipJsonLines().tee(encoded_findings(plan))):
                built += len(batch)
                json_bytes += len(EncodedBatch(batch).body)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if trace:
                out["traced_findings_mb"] = tracemalloc.get_traced_memory()[0] / 1e6 - out["traced_snapshot_mb"]
        statuses = {status.value: sum(r.status is status for r in results) for status in ComplianceStatus}
        out.update(wall=wall, cpu=cpu, read_wall=read_wall, read_cpu=read_cpu, scan_wall=scan_wall,
                   scan_cpu=scan_cpu, requests=snapshot.api_requests,
                   namespaces=len(snapshot.namespaces), policies=len(snapshot.policies),
                   findings=built, statuses=statuses, findings_json_bytes=json_bytes)
    if trace:
        out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    return out


# ---------------------------------------------------------------------------------------------------------------
# Driver (main process)
# ---------------------------------------------------------------------------------------------------------------

def _run_child(ctx: Any, variant: str, endpoint: str, ca_data: str, trace: bool, pin: bool) -> dict[str, Any]:
    parent, child = ctx.Pipe()
    process = ctx.Process(target=measure, args=(child, variant, endpoint, ca_data, trace, pin), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(CHILD_TIMEOUT_SECONDS):
            raise RuntimeError(f"{variant} run gave no answer in {CHILD_TIMEOUT_SECONDS} s")
        status, payload = parent.recv()
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
    if status != "ok":
        raise RuntimeError(f"{variant} run failed:\n{payload}")
    return payload


def _take_log(server_conn: Any) -> list[dict[str, Any]]:
    server_conn.send("take-log")
    return server_conn.recv()


def list_requests(log: list[dict[str, Any]], path: str) -> int:
    return sum(1 for r in log if r["path"] == path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--payload", choices=("plain", "apiserver"), default="plain",
                        help="plain: objects as the test server makes them (default); apiserver: plus the "
                             "managedFields and last-applied annotations a real kube-apiserver returns")
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the extra tracemalloc run per variant")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate CPUs")
    args = parser.parse_args(argv)
    if args.namespaces < 1 or args.policies < 0 or args.rounds < 1:
        parser.error("--namespaces >= 1, --policies >= 0, --rounds >= 1")
    clean_aws_environment()
    pin = not args.no_pin
    ctx = mp.get_context("spawn")

    from handler.cluster_reader import NAMESPACES_PATH, NETWORK_POLICIES_PATH  # light: no client work happens here

    with served_cluster(ctx, args.namespaces, args.policies, args.payload, pin) as (server_conn, endpoint, ca_data):
        runs: dict[str, list[dict[str, Any]]] = {BASELINE: [], SCANNER: []}
        for round_number in range(args.rounds):
            order = (BASELINE, SCANNER) if round_number % 2 == 0 else (SCANNER, BASELINE)
            for variant in order:
                result = _run_child(ctx, variant, endpoint, ca_data, False, pin)
                log = _take_log(server_conn)
                result["log"] = {
                    "namespaces": list_requests(log, NAMESPACES_PATH),
                    "networkpolicies": list_requests(log, NETWORK_POLICIES_PATH),
                    "other": sum(1 for r in log if r["path"] not in (NAMESPACES_PATH, NETWORK_POLICIES_PATH)
                                 and r["path"] not in DISCOVERY_AND_ENFORCEMENT),
                    # The named enforcement objects are absent from the bench cluster: their 404 is the answer.
                    "not_200": sum(1 for r in log if r["status"] != 200 and r["path"] not in DISCOVERY_AND_ENFORCEMENT),
                    "identities": sorted({str(r["identity"]) for r in log}),
                }
                runs[variant].append(result)
                print(f"round {round_number + 1}/{args.rounds} {variant:8s} wall {result['wall']:.3f} s  "
                      f"peak RSS {result['peak_rss_mb']:.1f} MB", file=sys.stderr, flush=True)
        traced: dict[str, dict[str, Any]] = {}
        if not args.no_tracemalloc:
            for variant in (BASELINE, SCANNER):
                traced[variant] = _run_child(ctx, variant, endpoint, ca_data, True, pin)
                _take_log(server_conn)
    return report(args, runs, traced)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]],
           traced: dict[str, dict[str, Any]]) -> int:
    n, p = args.namespaces, args.policies
    floors = {"namespaces": 2 + math.ceil(n / PAGE_SIZE), "networkpolicies": 2 + math.ceil(p / PAGE_SIZE)}
    med = lambda variant, key: statistics.median(r[key] for r in runs[variant])  # noqa: E731
    base_wall, base_cpu = med(BASELINE, "wall"), med(BASELINE, "cpu")
    rows = [
        ("baseline: fetch pages + json.loads", BASELINE, "wall", "cpu"),
        ("scanner: ClusterReader.read", SCANNER, "read_wall", "read_cpu"),
        ("scanner: read + evaluate (the scan)", SCANNER, "scan_wall", "scan_cpu"),
        ("scanner: scan + build and encode ASFF", SCANNER, "wall", "cpu"),
    ]
    violations: list[str] = []
    for variant in (BASELINE, SCANNER):
        for r in runs[variant]:
            if r["namespaces"] != n or r["policies"] != p:
                violations.append(f"{variant} read {r['namespaces']} namespaces and {r['policies']} policies, "
                                  f"not {n} and {p}")
            if r["log"]["not_200"] or r["log"]["other"]:
                violations.append(f"{variant}: {r['log']['not_200']} non-200 answers, {r['log']['other']} requests "
                                  "to other paths")
            if r["log"]["identities"] != [IDENTITY]:
                violations.append(f"{variant}: server saw identities {r['log']['identities']}")
            for kind, floor in floors.items():
                if r["log"][kind] > floor:
                    violations.append(f"{variant}: {r['log'][kind]} {kind} list requests > floor {floor}")
    s = runs[SCANNER][0]
    b = runs[BASELINE][0]
    print()
    print(f"One cluster: {n} namespaces, {p} NetworkPolicies, payload {args.payload}; {args.rounds} rounds, medians; "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs, page size {PAGE_SIZE}")
    print(f"Pages: namespaces {b['namespace_bytes'] / 1e6:.1f} MB (metadata-only), networkpolicies "
          f"{b['policy_bytes'] / 1e6:.1f} MB; findings built: {s['findings']} "
          f"({s['findings_json_bytes'] / 1e6:.1f} MB of JSON), statuses {s['statuses']}")
    print()
    print("| variant | ns list requests | netpol list requests | floor (ns / netpol) | wall s (median) | "
          "wall ratio | client CPU s (median) | CPU ratio | peak RSS MB (max) | RSS after imports MB | "
          "traced peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, variant, wall_key, cpu_key in rows:
        wall, cpu = med(variant, wall_key), med(variant, cpu_key)
        ns_requests = max(r["log"]["namespaces"] for r in runs[variant])
        np_requests = max(r["log"]["networkpolicies"] for r in runs[variant])
        peak = max(r["peak_rss_mb"] for r in runs[variant])
        imports = statistics.median(r["rss_after_imports_mb"] for r in runs[variant])
        trace = traced.get(variant, {}).get("traced_peak_mb")
        print(f"| {label} | {ns_requests} | {np_requests} | {floors['namespaces']} / {floors['networkpolicies']} | "
              f"{wall:.3f} | {wall / base_wall:.2f}x | {cpu:.3f} | {cpu / base_cpu:.2f}x | {peak:.1f} | "
              f"{imports:.1f} | {'-' if trace is None else f'{trace:.1f}'} |")
    # The floor is on the scan: reading the cluster and evaluating it. Building and JSON-encoding 10,000 findings
    # is publishing work, shown in its own row; in Lambda it is ~3% of the 10 s that Security Hub's 10 calls/s
    # take to accept them.
    ratio = med(SCANNER, "scan_wall") / base_wall
    cpu_ratio = med(SCANNER, "scan_cpu") / base_cpu
    # The scan's peak: read and evaluate, before any finding is built (the last row's peak is publishing's).
    peak_scanner = max(r["scan_peak_rss_mb"] for r in runs[SCANNER])
    peak_baseline = max(r["peak_rss_mb"] for r in runs[BASELINE])
    rss_ratio = peak_scanner / peak_baseline
    if ratio > MAX_RATIO:
        violations.append(f"scanner read+evaluate takes {ratio:.2f}x the baseline (floor {MAX_RATIO}x)")
    if rss_ratio > MAX_RSS_RATIO:
        violations.append(f"scanner read+evaluate peak RSS {peak_scanner:.1f} MB is {rss_ratio:.2f}x the baseline's "
                          f"{peak_baseline:.1f} MB (floor {MAX_RSS_RATIO}x)")
    t = traced.get(SCANNER)
    if t:
        print()
        print(f"scanner heap (tracemalloc run): peak during the read {t['traced_read_peak_mb']:.1f} MB, snapshot held "
              f"after it {t['traced_snapshot_mb']:.1f} MB, findings built {t['traced_findings_mb']:.1f} MB, "
              f"overall peak {t['traced_peak_mb']:.1f} MB")
    print()
    print("per-round wall s: baseline " + " ".join(f"{r['wall']:.3f}" for r in runs[BASELINE])
          + " | scanner " + " ".join(f"{r['wall']:.3f}" for r in runs[SCANNER]))
    print(f"headline: scan (read + evaluate) / baseline = {ratio:.2f}x wall (floor {MAX_RATIO}x), {cpu_ratio:.2f}x "
          f"client CPU; peak RSS of the scan {peak_scanner:.1f} MB = {rss_ratio:.2f}x the baseline's {peak_baseline:.1f} MB "
          f"(floor {MAX_RSS_RATIO}x)")
    return verdict(violations)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: building and encoding the ASFF findings of one cluster, as every run publishes them.

    .venv/bin/python -m bench.encode_findings [--namespaces 10000] [--policies 5000] [--rounds 7]

The snapshot is the cluster of bench/scan_one_cluster.py (10,000 namespaces and 5,000 policies: 30,001 findings),
made in memory with the reader's own item conversion, and evaluated once. Each round then times, in this process,
exactly what handler/run/scan.py does with a scanned cluster's results: state.plan_scanned (digests), then
asff.encoded_findings through GzipJsonLines.tee (the S3 file) into securityhub.batches and EncodedBatch (the
request bodies), and closes the file. The headline is CPU time per finding (median of the rounds; CPU time, not
wall, as the machine is shared); beside it, the CPU of json.dumps(finding) alone over the same findings, measured
in the same rounds, as a yardstick of the machine's speed. The target of issue 12 is 20 µs a finding where the
code before it took 57 µs; on the machine of docs/benchmarks.md that code took 4.96x the yardstick, so the floor
is 20 / 57 x 4.96 = 1.74x the yardstick, whatever the machine and its load. Exits 1 above it, or when an encoding
differs from compact_json(finding) (checked once, outside the timing). Method and numbers: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from typing import Any

from bench.common import verdict
from bench.scan_one_cluster import ACCOUNT_ID, CLUSTER_NAME, REGION, build_cluster

TARGET_US, BEFORE_US, BEFORE_RATIO = 20.0, 57.0, 4.96  # issue 12; the code before it, in units of the yardstick
MAX_RATIO = round(TARGET_US / BEFORE_US * BEFORE_RATIO, 2)
NOW = "2026-12-01T00:00:00.000Z"


def snapshot(namespaces: int, policies: int) -> Any:
    """The benchmark cluster as ClusterReader makes it: every item through the reader's own conversion."""
    from handler.cluster_reader import _namespace, _policy
    from handler.models import ClusterInfo, ClusterRef, ClusterSnapshot

    cluster = build_cluster(namespaces, policies)

    def items(group_version: str, plural: str) -> list[dict[str, Any]]:
        kind = cluster.kind_of(group_version, plural)
        return cluster.list_page(kind, None, 0, None, None, None).items

    ref = ClusterRef(ACCOUNT_ID, REGION, CLUSTER_NAME)
    details = {"Arn": ref.arn, "Name": CLUSTER_NAME, "Version": "1.31", "Endpoint": "https://bench.invalid",
               "ClusterStatus": "ACTIVE", "RoleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/eks-cluster",
               "ResourcesVpcConfig": {"SecurityGroupIds": ["sg-0123456789abcdef0"],
                                      "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
                                      "EndpointPublicAccess": False}}
    info = ClusterInfo(ref, "https://bench.invalid", "", version="1.31", status="ACTIVE", details=details)
    return ClusterSnapshot(info, tuple(map(_namespace, items("v1", "namespaces"))),
                           tuple(map(_policy, items("networking.k8s.io/v1", "networkpolicies"))))


def publish(snap: Any, results: list[Any]) -> tuple[int, int, int]:
    """What the pipeline does with a scanned cluster's results; returns findings, request bytes, file bytes."""
    from handler.asff import cluster_resource, encoded_findings
    from handler.publish.s3 import GzipJsonLines
    from handler.publish.securityhub import EncodedBatch, batches
    from handler.state import plan_scanned

    plan = plan_scanned(None, snap.cluster.ref, cluster_resource(snap.cluster), results, NOW)
    written = GzipJsonLines()
    findings = body_bytes = 0
    for batch in batches(written.tee(encoded_findings(plan))):
        findings += len(batch)
        body_bytes += len(EncodedBatch(batch).body)
    return findings, body_bytes, len(written.close())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    if args.namespaces < 1 or args.policies < 0 or args.rounds < 1:
        parser.error("--namespaces >= 1, --policies >= 0, --rounds >= 1")
    from handler.asff import cluster_resource, encoded_findings
    from handler.evaluation import evaluate
    from handler.publish import compact_json
    from handler.state import plan_scanned

    snap = snapshot(args.namespaces, args.policies)
    results = evaluate(snap, now=NOW)
    plan = plan_scanned(None, snap.cluster.ref, cluster_resource(snap.cluster), results, NOW)
    built = list(encoded_findings(plan))
    violations = [f"the encoding of {finding['Id']} differs from compact_json(finding)"
                  for finding, line in built if line != compact_json(finding)][:5]
    findings = [finding for finding, _ in built]
    del built, plan
    gc.collect()
    gc.freeze()  # as handler/app.py does after its imports

    ours, yardstick = [], []
    for _ in range(args.rounds):
        cpu0 = time.process_time()
        count, body_bytes, file_bytes = publish(snap, results)
        ours.append((time.process_time() - cpu0) / count * 1e6)
        cpu0 = time.process_time()
        for finding in findings:
            json.dumps(finding)
        yardstick.append((time.process_time() - cpu0) / len(findings) * 1e6)
    per_finding, per_dumps = statistics.median(ours), statistics.median(yardstick)
    print(f"{count} findings ({args.namespaces} namespaces, {args.policies} policies); Python "
          f"{platform.python_version()}; {args.rounds} rounds; request bodies {body_bytes / 1e6:.1f} MB, S3 file "
          f"{file_bytes / 1e6:.2f} MB gzip")
    print("per-round CPU µs a finding: " + " ".join(f"{v:.1f}" for v in ours)
          + " | json.dumps alone: " + " ".join(f"{v:.1f}" for v in yardstick))
    ratio = per_finding / per_dumps
    print(f"headline: plan + build + encode + gzip + batch = {per_finding:.1f} µs a finding here, {ratio:.2f}x a bare "
          f"json.dumps of the finding ({per_dumps:.1f} µs; floor {MAX_RATIO}x, was {BEFORE_RATIO}x); on the issue's "
          f"machine about {BEFORE_US * ratio / BEFORE_RATIO:.0f} µs (target {TARGET_US:.0f})")
    if ratio > MAX_RATIO:
        violations.append(f"{ratio:.2f}x the yardstick > {MAX_RATIO}x ({TARGET_US:.0f} µs a finding)")
    return verdict(violations)


if __name__ == "__main__":
    sys.exit(main())

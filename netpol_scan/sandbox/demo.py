"""The local sandbox: a moto server standing in for AWS, Kubernetes API test servers for a few EKS clusters in
two accounts, and one real run of the Lambda handler with events/scheduled.json.

    make demo                      (or: netpol-scan sandbox)

It prints what the scan found and where it wrote it. Nothing leaves this machine.
"""
from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Any

from netpol_scan.sandbox import kinds
from netpol_scan.sandbox.auto_mode import add_auto_mode
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import Cluster
from netpol_scan.lambda_context import LambdaContext

MEMBER_ACCOUNT = "210987654321"
MEMBER_REGION = "us-east-1"
BUCKET = "netpol-scanner-sandbox"
ROLE_NAME = "NetpolScannerRole"
ROOT = Path(__file__).resolve().parents[2]

DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
ALLOW_FRONTEND = {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}
# The kinds of 2025, one of each: the upstream ClusterNetworkPolicy (network-policy-api v0.2) guarding one namespace
# from the Baseline tier, and EKS's own ClusterNetworkPolicy and ApplicationNetworkPolicy on the Auto Mode cluster.
BASELINE_BATCH = {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                  "metadata": {"name": "baseline-batch"},
                  "spec": {"tier": "Baseline", "priority": 50,
                           "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "batch"}}},
                           "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}}
ADMIN_REPORTS_EGRESS = {"apiVersion": "networking.k8s.aws/v1alpha1", "kind": "ClusterNetworkPolicy",
                        "metadata": {"name": "reports-no-egress"},
                        "spec": {"tier": "Admin", "priority": 10,
                                 "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "reports"}}},
                                 "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]}]}}
ORDERS_EGRESS = {"apiVersion": "networking.k8s.aws/v1alpha1", "kind": "ApplicationNetworkPolicy",
                 "metadata": {"name": "egress-to-payments-api", "namespace": "orders"},
                 "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                          "egress": [{"to": [{"domainNames": ["api.payments.example.com"]}],
                                      "ports": [{"protocol": "TCP", "port": 443}]}]}}


AUTO_MODE_CLUSTERS = {"orders-auto"}  # DescribeCluster says computeConfig.enabled


def clusters() -> list[tuple[str, str, Cluster, bool]]:
    """(account, Region, cluster, reachable): a small but varied fleet. orders-auto is an EKS Auto Mode cluster
    with the network policy controller on and every NodePool on a DefaultDeny NodeClass: 5.3.1 PASSED, and its
    namespaces without policies isolated by the nodes (5.3.2 still FAILED: no policy is defined); its namespaces
    orders and reports are guarded by EKS's ApplicationNetworkPolicy and ClusterNetworkPolicy. payments-prod's batch
    namespace has only an upstream ClusterNetworkPolicy (Baseline tier), which counts for 5.3.2."""
    payments = Cluster("payments-prod", {"default": {}, "kube-system": {}, "payments": {"default-deny": DENY_ALL},
                                         "ledger": {"default-deny": DENY_ALL, "allow-frontend": ALLOW_FRONTEND},
                                         "batch": {}})
    payments.add_namespace("old-team", terminating=True)
    kinds.add(payments, BASELINE_BATCH)
    shop = Cluster("shop-staging", {"default": {}, "kube-system": {}, "storefront": {"api": ALLOW_FRONTEND},
                                    "checkout": {}, "search": {}})
    legacy = Cluster("legacy-analytics", {"default": {}})
    orders = add_auto_mode(Cluster("orders-auto", {"default": {}, "kube-system": {}, "orders": {"api": ALLOW_FRONTEND},
                                                   "reports": {}}),
                           node_classes={"default": None, "locked": "DefaultDeny"},
                           node_pools={"apps": "locked", "critical": "locked"})
    kinds.add(orders, ADMIN_REPORTS_EGRESS)
    kinds.add(orders, ORDERS_EGRESS)
    return [(DEFAULT_ACCOUNT, DEFAULT_REGION, payments, True), (MEMBER_ACCOUNT, MEMBER_REGION, shop, True),
            (MEMBER_ACCOUNT, DEFAULT_REGION, legacy, False), (DEFAULT_ACCOUNT, DEFAULT_REGION, orders, True)]


def main() -> int:
    with World() as world:
        for account, region in ((DEFAULT_ACCOUNT, DEFAULT_REGION), (MEMBER_ACCOUNT, MEMBER_REGION),
                                (MEMBER_ACCOUNT, DEFAULT_REGION)):
            world.enable_security_hub(account, region)
        world.create_bucket(BUCKET)
        for account, region, cluster, reachable in clusters():
            world.add_cluster(account, region, cluster, reachable=reachable,
                              auto_mode=cluster.name in AUTO_MODE_CLUSTERS)
        os.environ.update({**world.env(), "REPORT_BUCKET": BUCKET, "SCAN_ROLE_NAME": ROLE_NAME,
                           "TARGET_ACCOUNTS": f"{DEFAULT_ACCOUNT},{MEMBER_ACCOUNT}",
                           "TARGET_REGIONS": f"{DEFAULT_REGION},{MEMBER_REGION}",
                           "POWERTOOLS_SERVICE_NAME": "eks-netpol-scanner", "POWERTOOLS_TRACE_DISABLED": "true",
                           "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "ERROR"),
                           "POWERTOOLS_METRICS_NAMESPACE": "NetpolScanner", "POWERTOOLS_METRICS_DISABLED": "true"})
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_PROFILE", None)
        from handler.app import lambda_handler

        event = json.loads((ROOT / "events" / "scheduled.json").read_text())
        print(f"sandbox: AWS stand-in (moto) at {world.endpoint}; {len(clusters())} EKS clusters in accounts "
              f"{DEFAULT_ACCOUNT} and {MEMBER_ACCOUNT}, each behind its own TLS Kubernetes API server")
        print("sandbox: invoking handler.app.lambda_handler with events/scheduled.json ...\n")
        started = time.monotonic()
        summary = lambda_handler(event, LambdaContext(function_name="eks-netpol-scanner-sandbox"))
        print_summary(world, summary, time.monotonic() - started)
        return 0 if summary["clusters_scanned"] else 1


def print_summary(world: World, summary: dict[str, Any], seconds: float) -> None:
    print(f"scanned {summary['clusters_scanned']} cluster(s), {summary['clusters_failed']} could not be read; "
          f"{summary['namespaces']} namespaces, {summary['namespaces_failing']} without a NetworkPolicy "
          f"({seconds:.1f} s)\n")
    for failure in summary["failures"]:
        where = failure.get("cluster") or failure.get("target")
        print(f"  NOT ASSESSED  {where}: {failure['error']}")
    print()
    for account, region in sorted({(a, r) for a, r, _, _ in clusters()}):
        findings = sorted(world.findings(account, region), key=lambda f: f["Id"])
        print(f"Security Hub {account}/{region}: {len(findings)} finding(s)")
        for finding in findings:
            fields = finding.get("ProductFields", {})
            where = f"{fields.get('kubernetes/cluster')}/{fields.get('kubernetes/namespace', '-')}"
            print(f"  {finding['Compliance']['Status']:<13} {where:<36} {finding['Title'][:70]}")
    print(f"\nS3 bucket {BUCKET}:")
    report = json.loads(world.client("s3").get_object(Bucket=BUCKET, Key=summary["report"])["Body"].read())
    print(f"  {summary['report']}  (run report)")
    for cluster in report["clusters"]:
        if cluster["findings_key"]:
            body = world.client("s3").get_object(Bucket=BUCKET, Key=cluster["findings_key"])["Body"].read()
            count = len(gzip.decompress(body).splitlines())
            print(f"  {cluster['findings_key']}  ({count} ASFF findings)")
    print("\nNext: `netpol-scan cluster` scans your kubeconfig's current context (nothing is written to AWS); "
          "docs/deploy.md deploys the scanner.")


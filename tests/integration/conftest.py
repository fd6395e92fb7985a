"""Fixtures for tests that drive the real handler against a moto server and Kubernetes API test servers."""
from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from netpol_scan.sandbox.aws_world import World
from netpol_scan.lambda_context import LambdaContext

BUCKET = "netpol-reports-test"
ROLE_NAME = "NetpolScannerRole"


@pytest.fixture
def world() -> Iterator[World]:
    with World() as w:
        # moto keeps its backends in module globals, shared by every server in this process: start clean.
        urllib.request.urlopen(urllib.request.Request(f"{w.endpoint}/moto-api/reset", method="POST")).read()
        w.create_bucket(BUCKET)
        yield w


@pytest.fixture
def scanner_env(world: World, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The function's environment: pointed at the world, scanning with the member role."""
    env = {**world.env(), "REPORT_BUCKET": BUCKET, "SCAN_ROLE_NAME": ROLE_NAME,
           "POWERTOOLS_SERVICE_NAME": "netpol-scanner", "POWERTOOLS_METRICS_NAMESPACE": "NetpolScannerTest",
           "POWERTOOLS_TRACE_DISABLED": "true", "AWS_LAMBDA_FUNCTION_NAME": "netpol-scanner"}
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "TARGET_ACCOUNTS", "TARGET_REGIONS", "SCAN_ROLE_EXTERNAL_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def invoke(scanner_env: dict[str, str]):
    """Calls handler.app.lambda_handler as Lambda would, with a fresh context per call."""
    from handler.app import lambda_handler

    def call(event: Any, seconds: float = 900) -> dict[str, Any]:
        return lambda_handler(event, LambdaContext(seconds))

    return call


def s3_json(world: World, key: str) -> Any:
    import gzip

    body = world.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    text = body.decode()
    if key.endswith(".jsonl.gz"):
        return [json.loads(line) for line in text.splitlines() if line]
    return json.loads(text)


NETPOL_GENERATOR = "eks-netpol-scanner/cis-k8s-5.3.2"


def by_namespace(findings: list[dict[str, Any]], cluster: str,
                 generator: str = NETPOL_GENERATOR) -> dict[str, dict[str, Any]]:
    """One control's namespace findings of one cluster (5.3.2's unless told), by namespace."""
    return {f["ProductFields"]["kubernetes/namespace"]: f for f in findings
            if f.get("ProductFields", {}).get("kubernetes/cluster") == cluster
            and "kubernetes/namespace" in f.get("ProductFields", {}) and f["GeneratorId"] == generator}


def of_cluster(findings: list[dict[str, Any]], cluster: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every finding of a cluster (all controls), or of one of its namespaces."""
    fields = [(f, f.get("ProductFields", {})) for f in findings]
    return [f for f, p in fields if p.get("kubernetes/cluster") == cluster
            and (namespace is None or p.get("kubernetes/namespace") == namespace)]


def scan_status(findings: list[dict[str, Any]], cluster_arn: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["Id"] == f"{cluster_arn}/cluster-scan"]

"""Security Hub saying no: throttling, transient and permanent FailedFindings, and the call rate. Nothing is lost."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import by_namespace, s3_json
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION
from netpol_scan.sandbox.kube_api import Cluster
from netpol_scan.sandbox.securityhub_proxy import SecurityHubProxy

NAMESPACES = 250


@pytest.fixture
def proxy(world, scanner_env, monkeypatch) -> Iterator[SecurityHubProxy]:
    with SecurityHubProxy(world.endpoint) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECURITYHUB", running.endpoint)
        yield running


@pytest.fixture
def big(world) -> Cluster:
    cluster = Cluster("big", {f"team-{i:03d}": {} for i in range(NAMESPACES)})
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)
    return cluster


def test_throttled_imports_are_retried_until_everything_lands(world, invoke, proxy, big):
    proxy.throttle(3)

    result = invoke({})

    assert (result["findings_imported"], result["findings_rejected"]) == (NAMESPACES, 0)
    assert len(by_namespace(world.findings(), "big")) == NAMESPACES
    assert [c.status for c in proxy.calls].count(429) == 3
    assert all(c.findings <= 100 for c in proxy.calls)


def test_transient_failed_findings_are_sent_again(world, invoke, proxy, big):
    failing = {f"team-{i:03d}" for i in range(0, NAMESPACES, 25)}
    sent: dict[str, int] = {}

    def internal_error_once(finding):
        namespace = finding["ProductFields"]["kubernetes/namespace"]
        sent[namespace] = sent.get(namespace, 0) + 1
        return "InternalException" if namespace in failing and sent[namespace] == 1 else None

    proxy.reject(internal_error_once)
    result = invoke({})

    assert (result["findings_imported"], result["findings_rejected"]) == (NAMESPACES, 0)
    assert len(by_namespace(world.findings(), "big")) == NAMESPACES
    assert all(sent[ns] == 2 for ns in failing) and all(sent[ns] == 1 for ns in set(sent) - failing)


def test_permanent_rejections_are_reported_and_retried_next_run(world, invoke, proxy, big):
    invoke({})
    big.delete_namespace("team-007")
    proxy.reject(lambda f: "InvalidInput" if f["ProductFields"]["kubernetes/namespace"] in ("team-007", "team-008")
                 else None)

    result = invoke({})

    assert result["findings_rejected"] == 2 and result["findings_imported"] == NAMESPACES - 2
    report = s3_json(world, result["report"])
    rejected = {r["finding_id"].split("/namespace/")[1].split("/")[0]: r["error_code"]
                for r in report["clusters"][0]["findings_rejected"]}
    assert rejected == {"team-007": "InvalidInput", "team-008": "InvalidInput"}
    assert by_namespace(world.findings(), "big")["team-007"]["RecordState"] == "ACTIVE", "the archive did not land"

    proxy.reject(lambda f: None)
    healed = invoke({})

    assert healed["findings_rejected"] == 0 and healed["findings_archived"] == 1
    assert by_namespace(world.findings(), "big")["team-007"]["RecordState"] == "ARCHIVED"


def test_imports_stay_under_ten_calls_a_second_per_account_and_region(world, invoke, proxy):
    for name in ("one", "two", "three"):  # three clusters of one account and Region, scanned in parallel
        world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster(name, {f"ns-{i:03d}": {} for i in range(400)}))

    result = invoke({})

    assert result["findings_imported"] == 1200
    starts = sorted(c.at for c in proxy.calls)
    assert len(starts) == 12
    # The limiter spaces call starts 100 ms apart in the client. Arrivals here jitter with thread scheduling (moto
    # shares this process), so the check is on the whole run: twelve calls span at least eleven intervals, less
    # jitter at both ends. Without the limiter the three clusters' calls all arrive within about 0.3 s.
    assert starts[-1] - starts[0] >= 11 * 0.1 - 0.15, starts

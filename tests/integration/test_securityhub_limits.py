"""Security Hub saying no: throttling, transient and permanent FailedFindings, and the call rate. Nothing is lost."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import NETPOL_GENERATOR, by_namespace, of_cluster, s3_json
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

    assert (result["findings_imported"], result["findings_rejected"]) == (result["findings"], 0)
    assert len(by_namespace(world.findings(), "big")) == NAMESPACES
    assert len(of_cluster(world.findings(), "big")) == result["findings"]
    assert [c.status for c in proxy.calls].count(429) == 3
    assert all(c.findings <= 100 for c in proxy.calls)


def test_transient_failed_findings_are_sent_again(world, invoke, proxy, big):
    failing = {f"team-{i:03d}" for i in range(0, NAMESPACES, 25)}
    sent: dict[str, int] = {}

    def internal_error_once(finding):
        sent[finding["Id"]] = sent.get(finding["Id"], 0) + 1
        namespace = finding["ProductFields"].get("kubernetes/namespace")
        return "InternalException" if namespace in failing and sent[finding["Id"]] == 1 else None

    proxy.reject(internal_error_once)
    result = invoke({})

    assert (result["findings_imported"], result["findings_rejected"]) == (result["findings"], 0)
    assert len(of_cluster(world.findings(), "big")) == result["findings"] == len(sent)
    retried = {fid for fid, count in sent.items() if count == 2}
    assert retried and all("/namespace/" in fid and fid.split("/namespace/")[1].split("/")[0] in failing
                           for fid in retried)
    assert all(count <= 2 for count in sent.values())


def test_permanent_rejections_are_reported_and_retried_next_run(world, invoke, proxy, big):
    invoke({})
    archives = len(of_cluster(world.findings(), "big", "team-007"))
    big.delete_namespace("team-007")
    proxy.reject(lambda f: "InvalidInput" if f["GeneratorId"] == NETPOL_GENERATOR
                 and f["ProductFields"]["kubernetes/namespace"] == "team-007" else None)

    result = invoke({})

    assert result["findings_rejected"] == 1 and result["findings_archived"] == archives
    assert result["findings_imported"] == archives - 1
    report = s3_json(world, result["report"])
    (rejected,) = report["clusters"][0]["findings_rejected"]
    assert rejected["error_code"] == "InvalidInput" and "/namespace/team-007/" in rejected["finding_id"]
    assert by_namespace(world.findings(), "big")["team-007"]["RecordState"] == "ACTIVE", "the archive did not land"

    proxy.reject(lambda f: None)
    healed = invoke({})

    assert (healed["findings_rejected"], healed["findings_archived"], healed["findings_imported"]) == (0, 1, 1)
    assert by_namespace(world.findings(), "big")["team-007"]["RecordState"] == "ARCHIVED"


def test_imports_stay_under_ten_calls_a_second_per_account_and_region(world, invoke, proxy):
    for name in ("one", "two", "three"):  # three clusters of one account and Region, scanned in parallel
        world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster(name, {f"ns-{i:03d}": {} for i in range(150)}))

    result = invoke({})

    assert result["findings_imported"] == result["findings"]
    starts = sorted(c.at for c in proxy.calls)
    assert len(starts) >= 6
    # The limiter spaces call starts 100 ms apart in the client. Arrivals here jitter with thread scheduling (moto
    # shares this process), so the check is on the whole run: n calls span at least n - 1 intervals, less jitter
    # at both ends. Without the limiter the three clusters' calls all arrive within a fraction of that.
    assert starts[-1] - starts[0] >= (len(starts) - 1) * 0.1 - 0.15, starts


def test_a_region_without_security_hub_is_named_in_the_run_summary_in_words(world, invoke, proxy, monkeypatch):
    other_region = "us-east-1"
    monkeypatch.setenv("TARGET_REGIONS", f"{DEFAULT_REGION},{other_region}")
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster("here", {"default": {}}))
    world.add_cluster(DEFAULT_ACCOUNT, other_region, Cluster("there", {"default": {}, "web": {}}))
    proxy.disable(DEFAULT_ACCOUNT, other_region)

    result = invoke({})

    there = next(c for c in s3_json(world, result["report"])["clusters"] if c["cluster"] == "there")
    assert result["clusters_scanned"] == 2 and result["findings_rejected"] == there["findings"] > 0
    (where,) = result["findings_rejected_by_target"]
    assert where["target"] == f"{DEFAULT_ACCOUNT}/{other_region}"
    assert where["findings_rejected"] == result["findings_rejected"]
    assert [why.split(":")[0] for why in where["why"]] == ["Security Hub CSPM is not enabled here"]
    assert s3_json(world, result["report"])["summary"]["findings_rejected_by_target"] == [where]
    assert len(of_cluster(world.findings(), "here")) == result["findings_imported"] > 0

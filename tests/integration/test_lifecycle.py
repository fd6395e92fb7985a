"""The finding lifecycle end to end: the real handler, a moto server over HTTP, Kubernetes API servers over TLS."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (BUCKET, NETPOL_GENERATOR, ROLE_NAME, by_namespace, of_cluster, s3_json,
                                       scan_status)
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION
from netpol_scan.sandbox.kube_api import Cluster

OTHER_ACCOUNT = "222222222222"
OTHER_REGION = "us-east-1"
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
ROOT = Path(__file__).resolve().parents[2]


def shop() -> Cluster:
    return Cluster("shop", {"default": {}, "kube-system": {}, "payments": {"deny": DENY_ALL}, "cart": {}})


def statuses(findings: dict[str, dict]) -> dict[str, tuple[str, str]]:
    return {ns: (f["Compliance"]["Status"], f["RecordState"]) for ns, f in findings.items()}


def test_first_scan_imports_one_finding_per_namespace_into_the_clusters_own_account(world, invoke, monkeypatch):
    monkeypatch.setenv("TARGET_ACCOUNTS", f"{DEFAULT_ACCOUNT},{OTHER_ACCOUNT}")
    monkeypatch.setenv("TARGET_REGIONS", f"{DEFAULT_REGION},{OTHER_REGION}")
    alpha = Cluster("alpha", {"default": {}, "web": {"deny": DENY_ALL}})
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, alpha)
    beta_arn = world.add_cluster(OTHER_ACCOUNT, OTHER_REGION, shop())
    # The same cluster name in another account and Region must never collide with the first.
    world.add_cluster(OTHER_ACCOUNT, DEFAULT_REGION, Cluster("alpha", {"default": {}}))

    result = invoke({"source": "eks-netpol-scanner.schedule"})

    assert result["clusters_scanned"] == 3 and result["clusters_failed"] == 0
    assert result["namespaces"] == 2 + 4 + 1 and result["namespaces_failing"] == 1 + 3 + 1
    mine = world.findings(DEFAULT_ACCOUNT, DEFAULT_REGION)
    theirs = world.findings(OTHER_ACCOUNT, OTHER_REGION)
    assert statuses(by_namespace(mine, "alpha")) == {"default": ("FAILED", "ACTIVE"), "web": ("PASSED", "ACTIVE")}
    assert statuses(by_namespace(theirs, "shop")) == {
        "default": ("FAILED", "ACTIVE"), "kube-system": ("FAILED", "ACTIVE"),
        "payments": ("PASSED", "ACTIVE"), "cart": ("FAILED", "ACTIVE")}
    assert not by_namespace(mine, "shop"), "a member cluster's findings went to the scanner's account"
    for account, region, findings in ((DEFAULT_ACCOUNT, DEFAULT_REGION, mine), (OTHER_ACCOUNT, OTHER_REGION, theirs)):
        assert {f["ProductArn"] for f in findings} == {
            f"arn:aws:securityhub:{region}:{account}:product/{account}/default"}
        assert {f["AwsAccountId"] for f in findings} == {account}
    assert all(f["Resources"][0] == {**f["Resources"][0], "Type": "AwsEksCluster", "Id": beta_arn}
               for f in theirs)
    everything = [f for account, region in ((DEFAULT_ACCOUNT, DEFAULT_REGION), (OTHER_ACCOUNT, OTHER_REGION),
                                            (OTHER_ACCOUNT, DEFAULT_REGION)) for f in world.findings(account, region)]
    ids = [f["Id"] for f in everything]
    assert len(ids) == len(set(ids)) == result["findings_imported"]
    assert sum(f["GeneratorId"] == NETPOL_GENERATOR for f in everything) == 7
    # Each cluster was read with the scan role of its own account.
    identities = {r["identity"] for r in world.server(OTHER_ACCOUNT, OTHER_REGION, "shop").cluster.requests}
    assert identities and all(f":{OTHER_ACCOUNT}:assumed-role/{ROLE_NAME}/" in i for i in identities)


def test_run_report_names_the_findings_it_wrote_in_an_athena_layout(world, invoke):
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, shop())
    result = invoke({})
    report = s3_json(world, result["report"])
    date = report["started_at"][:10]
    assert result["report"] == f"runs/date={date}/run={result['run_id']}.json"
    assert report["summary"]["namespaces_failing"] == 3
    (cluster,) = report["clusters"]
    assert cluster["findings_key"] == (f"findings/date={date}/account={DEFAULT_ACCOUNT}/region={DEFAULT_REGION}/"
                                       f"cluster=shop/run={result['run_id']}.jsonl.gz")
    written = s3_json(world, cluster["findings_key"])
    hub = {f["Id"]: f for f in world.findings()}
    assert {f["Id"] for f in written} == set(hub)
    assert {ns: f["Compliance"]["Status"] for ns, f in by_namespace(written, "shop").items()} == {
        "default": "FAILED", "kube-system": "FAILED", "payments": "PASSED", "cart": "FAILED"}


def test_fixed_deleted_and_recreated_namespaces_keep_their_finding(world, invoke):
    cluster = shop()
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)
    invoke({})
    first = by_namespace(world.findings(), "shop")
    kube_system_findings = len(of_cluster(world.findings(), "shop", "kube-system"))
    time.sleep(0.01)

    cluster.add_policy("cart", "deny", DENY_ALL)
    cluster.delete_namespace("kube-system")
    second_result = invoke({})
    second = by_namespace(world.findings(), "shop")

    assert second_result["findings_archived"] == kube_system_findings
    assert second["cart"]["Id"] == first["cart"]["Id"]
    assert second["cart"]["Compliance"]["Status"] == "PASSED"
    assert second["cart"]["UpdatedAt"] > first["cart"]["UpdatedAt"]
    assert second["cart"]["CreatedAt"] == first["cart"]["CreatedAt"]
    assert second["kube-system"]["Id"] == first["kube-system"]["Id"]
    assert second["kube-system"]["RecordState"] == "ARCHIVED"
    assert {ns for ns, f in second.items() if f["RecordState"] == "ACTIVE"} == {"default", "payments", "cart"}
    assert second["default"]["UpdatedAt"] == first["default"]["UpdatedAt"], "an unchanged finding was re-imported"

    third_result = invoke({})
    assert third_result["findings_archived"] == 0, "an archived finding was archived again"
    assert third_result["findings_imported"] == 0, "an unchanged cluster's findings were imported again"
    assert third_result["namespaces"] == 3 and third_result["namespaces_failing"] == 1

    cluster.add_namespace("kube-system")
    invoke({})
    back = by_namespace(world.findings(), "shop")["kube-system"]
    assert (back["RecordState"], back["Compliance"]["Status"]) == ("ACTIVE", "FAILED")
    assert back["CreatedAt"] == first["kube-system"]["CreatedAt"]


def test_unreadable_cluster_keeps_its_findings_and_says_why(world, invoke):
    cluster = shop()
    arn = world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)
    invoke({})
    before = {f["Id"]: f for f in world.findings()}

    cluster.add_policy("cart", "deny", DENY_ALL)  # a change the failed scan must not see or report
    cluster.delete_namespace("default")
    cluster.inject("networkpolicies", 503, times=None)
    result = invoke({})

    assert (result["clusters_scanned"], result["clusters_failed"]) == (0, 1)
    assert result["namespaces"] == 0 and result["findings_archived"] == 0
    after = {f["Id"]: f for f in world.findings()}
    assert {fid: after[fid] for fid in before} == before, "a failed scan changed earlier findings"
    (status,) = scan_status(list(after.values()), arn)
    assert (status["Compliance"]["Status"], status["RecordState"]) == ("NOT_AVAILABLE", "ACTIVE")
    assert "503" in status["Description"]
    assert [r["Id"] for r in status["Resources"]] == [arn]
    assert result["failures"][0]["cluster"] == f"{DEFAULT_ACCOUNT}/{DEFAULT_REGION}/shop"

    cluster.clear_faults()
    recovered = invoke({})
    assert recovered["clusters_failed"] == 0
    final = world.findings()
    (status,) = scan_status(final, arn)
    assert status["RecordState"] == "ARCHIVED"
    assert statuses(by_namespace(final, "shop")) == {
        "default": ("FAILED", "ARCHIVED"), "kube-system": ("FAILED", "ACTIVE"),
        "payments": ("PASSED", "ACTIVE"), "cart": ("PASSED", "ACTIVE")}


def test_deleted_cluster_has_all_its_findings_archived(world, invoke):
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, shop())
    keep = world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster("keep", {"default": {}}))
    invoke({})
    shop_findings = len(of_cluster(world.findings(), "shop"))
    world.delete_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, "shop")

    result = invoke({})

    assert result["clusters_deleted"] == 1 and result["findings_archived"] == shop_findings
    assert {f["RecordState"] for f in of_cluster(world.findings(), "shop")} == {"ARCHIVED"}
    findings = world.findings()
    assert {f["RecordState"] for f in by_namespace(findings, "shop").values()} == {"ARCHIVED"}
    assert {f["RecordState"] for f in by_namespace(findings, "keep").values()} == {"ACTIVE"}
    assert not scan_status(findings, keep)
    later = invoke({})  # its findings archived, the cluster is forgotten: no longer looked for
    assert (later["clusters_deleted"], later["findings_archived"]) == (0, 0)
    assert not [k for k in world.s3_keys(BUCKET) if k.startswith("state/") and "cluster=shop." in k]


def test_a_scan_naming_one_cluster_never_archives_others(world, invoke):
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, shop())
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster("keep", {"default": {}}))
    invoke({})
    world.delete_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, "shop")

    result = invoke({"clusters": ["keep"]})

    assert (result["clusters_scanned"], result["clusters_deleted"], result["findings_archived"]) == (1, 0, 0)
    assert {f["RecordState"] for f in by_namespace(world.findings(), "shop").values()} == {"ACTIVE"}
    assert invoke({"clusters": ["nosuch"]})["clusters_not_found"] == ["nosuch"]


def test_dry_run_writes_nothing(world, invoke):
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, shop())
    keys = world.s3_keys(BUCKET)

    result = invoke({"dry_run": True})

    assert result["dry_run"] is True and "report" not in result
    assert (result["namespaces"], result["namespaces_failing"], result["findings_imported"]) == (4, 3, 0)
    assert world.findings() == [] and world.s3_keys(BUCKET) == keys


def test_a_dry_run_emits_no_production_metrics(world, invoke, capsys):
    """A dry run's ClustersFailed must not fire the production alarm: its EMF output holds no run metrics."""
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, shop())
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster("down", {"default": {}}), reachable=False)

    invoke({"dry_run": True})
    dry = capsys.readouterr().out
    invoke({})
    real = capsys.readouterr().out

    assert '"ClustersFailed"' in real and '"NamespacesFailing"' in real  # what the alarms and dashboard read
    assert '"ClustersFailed"' not in dry and '"NamespacesFailing"' not in dry and '"ClustersScanned"' not in dry


@pytest.mark.parametrize("event, field", [
    ({"accounts": "123456789012"}, "accounts"),
    ({"regions": ["mars-1"]}, "regions"),
    ({"clusters": [""]}, "clusters"),
    ({"dry_run": "yes"}, "dry_run"),
    ({"cluster": ["shop"]}, "cluster"),
    (["not", "an", "object"], "object"),
])
def test_bad_event_names_the_field_and_changes_nothing(world, invoke, event, field):
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, shop())
    keys = world.s3_keys(BUCKET)
    with pytest.raises(ValueError, match=field):
        invoke(event)
    assert world.findings() == [] and world.s3_keys(BUCKET) == keys


def test_missing_report_bucket_is_a_clear_error(world, invoke, monkeypatch):
    monkeypatch.delenv("REPORT_BUCKET")
    with pytest.raises(ValueError, match="REPORT_BUCKET"):
        invoke({})


def test_single_account_mode_uses_the_functions_own_credentials(world, invoke, monkeypatch):
    monkeypatch.delenv("SCAN_ROLE_NAME")
    monkeypatch.setenv("TARGET_ACCOUNTS", f"{DEFAULT_ACCOUNT},{OTHER_ACCOUNT}")
    cluster = shop()
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)

    result = invoke({})

    assert result["clusters_scanned"] == 1
    assert result["accounts_failed"] == 1 and OTHER_ACCOUNT in result["failures"][0]["target"]
    assert "SCAN_ROLE_NAME" in result["failures"][0]["error"]
    assert {r["identity"] for r in cluster.requests} == {f"arn:aws:iam::{DEFAULT_ACCOUNT}:user/moto"}


def test_organization_mode_scans_active_member_accounts(world, invoke, monkeypatch):
    org = world.client("organizations")
    org.create_organization(FeatureSet="ALL")
    member = org.create_account(Email="member@example.com", AccountName="member")["CreateAccountStatus"]
    member_id = member["AccountId"]
    monkeypatch.setenv("TARGET_ACCOUNTS", "ORGANIZATION")
    world.add_cluster(member_id, DEFAULT_REGION, Cluster("member-cluster", {"default": {}}))

    result = invoke({})

    assert result["clusters_scanned"] == 1 and result["accounts_failed"] == 0
    assert by_namespace(world.findings(member_id, DEFAULT_REGION), "member-cluster")["default"]["AwsAccountId"] \
        == member_id


def test_tokens_and_credentials_never_reach_the_logs(world, scanner_env):
    """The handler runs in its own process, as in Lambda, at DEBUG; everything it prints is searched."""
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, shop())
    broken = Cluster("broken", {"default": {}})
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, broken)
    broken.inject("namespaces", 401, times=None)
    script = ("import json; from handler.app import lambda_handler; "
              "from netpol_scan.lambda_context import LambdaContext; "
              "print(json.dumps(lambda_handler({}, LambdaContext())))")

    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "POWERTOOLS_LOG_LEVEL": "DEBUG"},
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["clusters_scanned"], result["clusters_failed"]) == (1, 1)
    logs = done.stdout + done.stderr
    assert '"cluster not scanned"' in logs and '"cluster":"shop"' in logs, "the logs were not captured"
    assert world.credentials(DEFAULT_ACCOUNT).secret_key == "testing"
    for secret in ("k8s-aws-v1.", "X-Amz-Signature", "X-Amz-Credential", "Bearer ", "SecretAccessKey",
                   "SessionToken", '"testing"'):
        assert secret not in logs


def test_exemptions_from_ssm_and_annotations_end_to_end(world, invoke, monkeypatch):
    """A configured exemption (SSM), an annotation, and one that expired: through the real handler."""
    world.client("ssm").put_parameter(Name="/eks-netpol-scanner/exemptions", Type="String", Value=json.dumps(
        {"exemptions": [
            {"cluster": "shop", "namespace": "cart", "reason": "checkout migration, SEC-1", "by": "jane@example.com",
             "until": "2999-12-31"},
            {"cluster": "shop", "namespace": "kube-*", "reason": "old waiver", "by": "bob@example.com",
             "until": "2020-01-01"}]}))
    monkeypatch.setenv("EXEMPTIONS", "ssm:/eks-netpol-scanner/exemptions")
    cluster = shop()
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).date().isoformat()
    cluster.add_namespace("vendor", annotations={"netpol-scanner.io/exempt": "vendor appliance",
                                                 "netpol-scanner.io/exempt-until": soon})
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)

    result = invoke({})

    got = by_namespace(world.findings(), "shop")
    assert statuses(got) == {"default": ("FAILED", "ACTIVE"), "kube-system": ("FAILED", "ACTIVE"),
                             "payments": ("PASSED", "ACTIVE"), "cart": ("WARNING", "ACTIVE"),
                             "vendor": ("WARNING", "ACTIVE")}
    assert result["namespaces_failing"] == 2, "exempt namespaces are not counted as failing"
    cart, vendor, expired = got["cart"]["ProductFields"], got["vendor"]["ProductFields"], got["kube-system"]
    assert (cart["eks-netpol-scanner/exemption/by"], cart["eks-netpol-scanner/exemption/reason"]) == (
        "jane@example.com", "checkout migration, SEC-1")
    assert cart["eks-netpol-scanner/exemption/until"].startswith("2999-12-31")
    assert vendor["eks-netpol-scanner/exemption/reason"] == "vendor appliance"
    assert expired["ProductFields"]["eks-netpol-scanner/exemption/state"] == "expired"
    assert "expired" in expired["Description"] and "bob@example.com" in expired["Description"]


def test_a_bad_exemptions_document_stops_the_run_before_any_write(world, invoke, monkeypatch):
    world.client("ssm").put_parameter(Name="/eks-netpol-scanner/exemptions", Type="String",
                                      Value='{"exemptions": [{"namespace": "x"}]}')
    monkeypatch.setenv("EXEMPTIONS", "ssm:/eks-netpol-scanner/exemptions")
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, shop())
    keys = world.s3_keys(BUCKET)
    with pytest.raises(ValueError, match="reason"):
        invoke({})
    assert world.findings() == [] and world.s3_keys(BUCKET) == keys


def test_a_cluster_too_slow_for_the_invocation_is_not_available_and_the_report_is_written(world, invoke):
    """The invocation has 32 s left, of which the read may take all but 26 s, and the API server takes 20 s an
    answer: the read ends at its deadline, the cluster's earlier findings stay, and the report is written."""
    import logging

    import boto3

    from handler.cluster_reader import ClusterReader
    from handler.config import ScanRequest, Settings
    from handler.run.report import Run
    from handler.run.executors import Inline
    from handler.run.scan import ScanContext, TimeBudget
    from handler.run.discover import discover
    from netpol_scan.lambda_context import LambdaContext

    cluster = shop()
    arn = world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)
    invoke({})
    before = {f["Id"]: f for f in world.findings()}

    cluster.delete_namespace("cart")  # what a finished read would archive
    cluster.inject("namespaces", None, times=None, delay_seconds=20)
    context = LambdaContext(32)
    scan_context = ScanContext.create(Settings.from_env(), boto3.Session(), logging.getLogger("test"),
                                      reader=ClusterReader(),
                                      remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000,
                                      budget=TimeBudget(start=1, after_read=26, publish_margin=2))
    summary = Inline()(scan_context, Run.start(), ScanRequest(), discover(scan_context, ScanRequest()))

    report = s3_json(world, summary["report"])
    (failure,) = report["summary"]["failures"]
    assert re.search(r"read did not finish in \d s", failure["error"]), failure
    after = {f["Id"]: f for f in world.findings()}
    assert {fid: after[fid] for fid in before} == before, "a cut-short read changed earlier findings"
    (status,) = scan_status(list(after.values()), arn)
    assert status["Compliance"]["Status"] == "NOT_AVAILABLE" and "did not finish" in status["Description"]


def test_two_overlapping_scans_of_a_cluster_leave_state_and_security_hub_agreeing(world, invoke):
    """A manual run during the scheduled one: the first reads the cluster while namespace cart still exists and
    waits on its policies; meanwhile cart goes and the second run archives it. Whichever writes the cluster's state
    second must plan again over what the first wrote, or state and Security Hub disagree (and the delta logic
    keeps them so for REFRESH_DAYS)."""
    cluster = shop()
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)
    invoke({})
    policy_lists = lambda: len(cluster.requests_to("networkpolicies$"))  # noqa: E731
    seen = policy_lists()
    cluster.add_namespace("new")  # a change both runs write to the state
    cluster.inject("networkpolicies$", None, times=1, delay_seconds=3)  # the first run's policy list waits

    first: list[dict] = []
    slow = threading.Thread(target=lambda: first.append(invoke({})))
    slow.start()
    for _ in range(300):  # until the first run has read the namespaces and is waiting for the policies
        if policy_lists() > seen:
            break
        time.sleep(0.02)
    cluster.delete_namespace("cart")
    second = invoke({})
    slow.join()

    assert first and second["findings_archived"] == 3  # cart's three namespace findings
    arn = f"arn:aws:eks:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:cluster/shop"
    state = s3_json(world, f"state/account={DEFAULT_ACCOUNT}/region={DEFAULT_REGION}/cluster=shop.json.gz")
    kept = {fid: (f["result"]["status"], f["record_state"]) for fid, f in state["findings"].items()}
    hub = {f["Id"]: (f["Compliance"]["Status"], f["RecordState"]) for f in world.findings() if f["Id"].startswith(arn)}
    assert kept == hub

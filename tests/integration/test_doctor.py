"""`netpol-scan doctor` and the `{"doctor": true}` event against the sandbox: a moto server over HTTP (behind an
STS proxy that can refuse AssumeRole), and Kubernetes API test servers over TLS that check EKS tokens, enforce
RBAC per kind and answer SelfSubjectAccessReview. Each gap is injected on its own; nothing may be written."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from handler.doctor.findings import RBAC_FILE, SCANNER_GROUP, access_of
from handler.errors import EventError
from netpol_scan.cli import main
from netpol_scan.sandbox.auto_mode import add_auto_mode
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import Cluster
from netpol_scan.sandbox.sts_proxy import StsProxy
from tests.integration.conftest import BUCKET, ROLE_NAME
from tests.integration.test_policy_engines import with_kinds

ROOT = Path(__file__).resolve().parents[2]
MEMBER = "210987654321"
OTHER_REGION = "us-east-1"
MEMBER_ROLE = f"arn:aws:iam::{MEMBER}:role/{ROLE_NAME}"
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
# What a scan of a cluster serving the Cilium kinds and DaemonSets reads (handler/cluster_reader.py,
# engine_reader.py); test_the_doctor_checks_exactly_what_a_scan_reads proves the doctor finds the same set.
CILIUM_CLUSTER_READS = {"list namespaces", "list networkpolicies.networking.k8s.io",
                        "list ciliumnetworkpolicies.cilium.io", "list ciliumclusterwidenetworkpolicies.cilium.io",
                        "get daemonsets.apps kube-system/aws-node", "get configmaps kube-system/amazon-vpc-cni",
                        "get daemonsets.apps kube-system/cilium"}


def cilium_cluster(name: str) -> Cluster:
    cluster = with_kinds(Cluster(name, {"default": {"deny": DENY_ALL}, "apps": {}}),
                         [k for k in _kinds() if k[0] in ("cilium.io", "apps")])
    cluster.add_resource_kind("cilium.io", "v2", "ciliumcidrgroups", "CiliumCIDRGroup", False)
    cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": "cilium", "namespace": "kube-system"},
                                                 "status": {"desiredNumberScheduled": 1, "numberReady": 1}})
    return cluster


def _kinds() -> list[tuple[str, str, str, str, bool]]:
    from tests.integration.test_policy_engines import KINDS

    return [*KINDS, ("apps", "v1", "daemonsets", "DaemonSet", True)]


@pytest.fixture
def sts(world: World, scanner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[StsProxy]:
    """STS through a proxy that can refuse AssumeRole; EKS tokens presigned through it are trusted like moto's."""
    with StsProxy(world.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", proxy.endpoint)
        world.verifier.sts_hosts.add(proxy.host)
        yield proxy


@pytest.fixture
def fleet(world: World, sts: StsProxy, monkeypatch: pytest.MonkeyPatch) -> World:
    """Two accounts, two Regions, Security Hub CSPM on everywhere, one cluster in each account."""
    monkeypatch.setenv("TARGET_ACCOUNTS", f"{DEFAULT_ACCOUNT},{MEMBER}")
    monkeypatch.setenv("TARGET_REGIONS", f"{DEFAULT_REGION},{OTHER_REGION}")
    for account in (DEFAULT_ACCOUNT, MEMBER):
        for region in (DEFAULT_REGION, OTHER_REGION):
            world.enable_security_hub(account, region)
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cilium_cluster("alpha"))
    world.add_cluster(MEMBER, OTHER_REGION, Cluster("shop", {"default": {}, "cart": {"deny": DENY_ALL}}))
    return world


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "--output", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def rows(report: dict[str, Any], result: str | None = None) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    return {(c["account_id"], c["region"], c["cluster"], c["check"]): c for c in report["checks"]
            if result is None or c["result"] == result}


def gaps(report: dict[str, Any]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    return {key: c for key, c in rows(report).items() if c["result"] != "ok"}


def assert_wrote_nothing(world: World) -> None:
    assert world.s3_keys(BUCKET) == []
    for account in (DEFAULT_ACCOUNT, MEMBER):
        for region in (DEFAULT_REGION, OTHER_REGION):
            assert world.findings(account, region) == []


# -- AWS side -----------------------------------------------------------------------------------------------------
def test_role_not_assumable_is_a_gap_with_the_member_role_fix(fleet, sts, capsys):
    sts.refuse(MEMBER_ROLE)

    code, report = doctor(capsys)

    assert code == 3 and sts.refusals
    gap = gaps(report)[(MEMBER, "", "", "assume role")]
    assert gap["result"] == "GAP" and "AccessDenied" in gap["detail"] and MEMBER_ROLE in gap["detail"]
    assert "aws cloudformation deploy --template-file infra/member-role.yaml" in gap["fix"]
    assert f"RoleName={ROLE_NAME}" in gap["fix"] and "ScannerRoleArn=" in gap["fix"]
    assert not [key for key in rows(report) if key[0] == MEMBER and key[1]], "a refused account has no Region rows"
    assert rows(report)[(DEFAULT_ACCOUNT, "", "", "assume role")]["result"] == "ok"
    assert rows(report)[(DEFAULT_ACCOUNT, DEFAULT_REGION, "", "list clusters")]["detail"] == "1 listed: alpha"
    assert_wrote_nothing(fleet)


def test_security_hub_not_enabled_in_one_region(world, sts, monkeypatch, capsys):
    monkeypatch.setenv("TARGET_REGIONS", f"{DEFAULT_REGION},{OTHER_REGION}")
    world.enable_security_hub(DEFAULT_ACCOUNT, DEFAULT_REGION)

    code, report = doctor(capsys)

    assert code == 3
    assert list(gaps(report)) == [(DEFAULT_ACCOUNT, OTHER_REGION, "", "Security Hub CSPM")]
    gap = gaps(report)[(DEFAULT_ACCOUNT, OTHER_REGION, "", "Security Hub CSPM")]
    assert "Security Hub CSPM is not enabled here" in gap["detail"]
    assert gap["fix"].endswith(f"aws securityhub enable-security-hub --no-enable-default-standards "
                               f"--region {OTHER_REGION}")
    assert rows(report)[(DEFAULT_ACCOUNT, DEFAULT_REGION, "", "Security Hub CSPM")]["detail"] == "enabled"
    assert rows(report)[(DEFAULT_ACCOUNT, OTHER_REGION, "", "list clusters")]["detail"] == "no clusters listed"


def test_single_account_mode_names_the_template_parameter(world, sts, monkeypatch, capsys):
    monkeypatch.delenv("SCAN_ROLE_NAME")
    monkeypatch.setenv("TARGET_ACCOUNTS", f"{DEFAULT_ACCOUNT},{MEMBER}")
    world.enable_security_hub(DEFAULT_ACCOUNT, DEFAULT_REGION)

    code, report = doctor(capsys)

    assert code == 3
    assert list(gaps(report)) == [(MEMBER, "", "", "own account")]
    assert "ScanRoleName=NetpolScannerRole" in gaps(report)[(MEMBER, "", "", "own account")]["fix"]


def test_organization_accounts_not_listable(world, sts, monkeypatch, capsys):
    monkeypatch.setenv("TARGET_ACCOUNTS", "ORGANIZATION")  # this account is in no organization

    code, report = doctor(capsys)

    assert code == 3
    ((key, gap),) = gaps(report).items()
    assert key == ("", "", "", "list accounts") and "the Organization lists no ACTIVE account" in gap["detail"]
    assert "organizations:ListAccounts" in gap["fix"]


# -- cluster side ---------------------------------------------------------------------------------------------------
def test_unreachable_endpoint(world, sts, capsys):
    world.enable_security_hub(DEFAULT_ACCOUNT, DEFAULT_REGION)
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster("private", {"default": {}}), reachable=False)

    code, report = doctor(capsys)

    assert code == 3
    assert list(gaps(report)) == [(DEFAULT_ACCOUNT, DEFAULT_REGION, "private", "endpoint")]
    gap = gaps(report)[(DEFAULT_ACCOUNT, DEFAULT_REGION, "private", "endpoint")]
    assert gap["detail"].startswith("cannot reach https://127.0.0.1:")
    assert "SubnetIds and SecurityGroupIds" in gap["fix"]


def test_token_refused_names_the_access_entry_to_create(world, sts, capsys):
    world.enable_security_hub(DEFAULT_ACCOUNT, DEFAULT_REGION)
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster("locked", {"default": {}}))
    # Every request is answered as the EKS authenticator answers a role without an access entry.
    world.server(DEFAULT_ACCOUNT, DEFAULT_REGION, "locked").cluster.inject(".", 401, times=None)

    code, report = doctor(capsys)

    assert code == 3
    assert list(gaps(report)) == [(DEFAULT_ACCOUNT, DEFAULT_REGION, "locked", "token")]
    gap = gaps(report)[(DEFAULT_ACCOUNT, DEFAULT_REGION, "locked", "token")]
    role = f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/{ROLE_NAME}"
    assert gap["detail"].startswith("token refused (HTTP 401") and role in gap["detail"]
    assert (f"aws eks create-access-entry --region {DEFAULT_REGION} --cluster-name locked --principal-arn {role} "
            "--kubernetes-groups netpol-scanner:readers") in gap["fix"]
    assert "--template-file infra/eks-access-entry.yaml" in gap["fix"]


# -- the Lambda event ----------------------------------------------------------------------------------------------
def test_doctor_event_returns_the_same_report_and_writes_nothing(fleet, sts, invoke, capsys):
    sts.refuse(MEMBER_ROLE)

    answer = invoke(json.loads((ROOT / "events" / "doctor.json").read_text()))
    capsys.readouterr()  # the function's own log lines and metrics
    code, report = doctor(capsys)

    assert code == 3
    assert answer["gaps"] == report["gaps"] and set(rows(answer)) == set(rows(report))
    assert answer["ok"] is False and (MEMBER, "", "", "assume role") in gaps(answer)
    assert "invoke it with events/doctor.json" not in gaps(answer)[(MEMBER, "", "", "assume role")]["fix"]
    assert "invoke it with events/doctor.json" in gaps(report)[(MEMBER, "", "", "assume role")]["fix"]
    assert_wrote_nothing(fleet)


@pytest.mark.parametrize(("event", "message"), [
    ({"doctor": "yes"}, "field 'doctor' must be true"),
    ({"doctor": True, "dry_run": True}, "unknown field(s) in a doctor event: dry_run"),
    ({"doctor": True, "accounts": ["1"]}, "field 'accounts' must hold 12-digit account ids"),
])
def test_bad_doctor_event(world, invoke, event, message):
    with pytest.raises(EventError, match=message.replace("(", r"\(").replace(")", r"\)")):
        invoke(event)
    assert world.s3_keys(BUCKET) == []


def test_cli_narrows_like_an_event_and_bad_input_exits_2(fleet, sts, capsys):
    code, report = doctor(capsys, "--account", MEMBER, "--region", OTHER_REGION)

    assert {key[0] for key in rows(report) if key[0]} == {MEMBER}
    assert {key[1] for key in rows(report) if key[1]} == {OTHER_REGION}
    assert report["clusters"] == 1

    assert main(["doctor", "--region", "nowhere"]) == 2
    assert "field 'regions' must hold Region names" in capsys.readouterr().err


# -- what is checked in a cluster, and the all-good case --------------------------------------------------------------
def test_the_doctor_checks_exactly_what_a_scan_reads(fleet, sts, invoke, capsys):
    """The reads a real scan makes (recorded by the API server) are the permissions the doctor asks about."""
    alpha = fleet.server(DEFAULT_ACCOUNT, DEFAULT_REGION, "alpha").cluster
    assert invoke({"accounts": [DEFAULT_ACCOUNT], "regions": [DEFAULT_REGION]})["clusters_scanned"] == 1
    scanned = {str(access) for r in alpha.requests if r["method"] == "GET" and (access := access_of(r["path"]))}
    capsys.readouterr()
    alpha.requests.clear()

    _, report = doctor(capsys)

    checked = {key[3].removeprefix("can ") for key in rows(report) if key[2] == "alpha" and key[3].startswith("can ")}
    assert scanned == CILIUM_CLUSTER_READS
    # Reading no objects, the doctor cannot see that the Cilium agent is where installs put it, nor whether a
    # policy names a CIDR group, so it also checks the lists a scan makes when they are so: the search for engine
    # agents by label across namespaces, and the CiliumCIDRGroups.
    assert checked == scanned | {"list daemonsets.apps", "list ciliumcidrgroups.cilium.io"}
    assert not [r for r in alpha.requests if r["method"] == "GET" and access_of(r["path"])], \
        "the doctor read objects; it may read discovery only"


def test_all_good(fleet, sts, capsys):
    code, report = doctor(capsys)

    assert (code, report["ok"], report["gaps"]) == (0, True, 0), gaps(report)
    assert (report["accounts"], report["regions"], report["clusters"]) == (2, 4, 2)
    assert rows(report)[(MEMBER, OTHER_REGION, "", "list clusters")]["detail"] == "1 listed: shop"
    assert rows(report)[(MEMBER, OTHER_REGION, "shop", "token")]["detail"] == f"authenticated as {MEMBER_ROLE}"
    shop = fleet.server(MEMBER, OTHER_REGION, "shop").cluster
    reviews = [r for r in shop.requests if r["method"] == "POST"]
    assert {r["path"] for r in reviews} == {"/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"}
    assert len(reviews) == len([k for k in rows(report) if k[2] == "shop" and k[3].startswith("can ")]) == 4
    assert {r["identity"] for r in shop.requests} == {f"arn:aws:sts::{MEMBER}:assumed-role/{ROLE_NAME}/eks-netpol-scanner"}
    assert_wrote_nothing(fleet)

    table_code = main(["doctor"])
    table = capsys.readouterr().out
    assert table_code == 0 and table.splitlines()[0].split() == ["ACCOUNT", "REGION", "CLUSTER", "CHECK", "RESULT",
                                                                 "DETAIL"]
    assert table.rstrip().endswith("0 gap(s) in 2 account(s), 4 Region(s), 2 cluster(s): the scanner can scan "
                                   "everything listed")


def test_a_kind_forbidden_by_rbac_names_the_missing_rule_and_that_rule_closes_the_gap(fleet, sts, capsys):
    """The cluster enforces the project's own RBAC (infra/kubernetes/rbac.yaml) without its Cilium rule; the scan
    role's identity is in the access entry's group."""
    alpha = fleet.server(DEFAULT_ACCOUNT, DEFAULT_REGION, "alpha").cluster
    documents = [d for d in yaml.safe_load_all((ROOT / RBAC_FILE).read_text()) if d]
    cluster_roles = [d for d in documents if d["kind"] == "ClusterRole"]
    for role in cluster_roles:
        role["rules"] = [r for r in role["rules"] if "cilium.io" not in r["apiGroups"]]
    alpha.rbac.apply(documents)
    alpha.rbac.add_groups(f"arn:aws:sts::{DEFAULT_ACCOUNT}:assumed-role/{ROLE_NAME}/eks-netpol-scanner", SCANNER_GROUP)

    code, report = doctor(capsys)

    assert code == 3
    found = gaps(report)
    assert list(found) == [(DEFAULT_ACCOUNT, DEFAULT_REGION, "alpha", "can list ciliumnetworkpolicies.cilium.io"),
                           (DEFAULT_ACCOUNT, DEFAULT_REGION, "alpha",
                            "can list ciliumclusterwidenetworkpolicies.cilium.io"),
                           (DEFAULT_ACCOUNT, DEFAULT_REGION, "alpha", "can list ciliumcidrgroups.cilium.io")]
    for gap in found.values():
        assert gap["result"] == "GAP"
        assert gap["detail"].startswith("forbidden")
        assert f"kubectl --context <alpha> apply -f {RBAC_FILE}" in gap["fix"]
    assert [gap["detail"].split(": ", 1)[1] for gap in found.values()] == [
        "the verdicts these policies could change are NOT_AVAILABLE"] * 2 + [
        "the verdicts of the Cilium policies that name a CIDR group are NOT_AVAILABLE"]
    rules = [yaml.safe_load(line.split("ClusterRole: ", 1)[1]) for gap in found.values()
             for line in gap["fix"].splitlines() if "ClusterRole: " in line]
    assert rules == [{"apiGroups": ["cilium.io"], "resources": ["ciliumnetworkpolicies"], "verbs": ["list"]},
                     {"apiGroups": ["cilium.io"], "resources": ["ciliumclusterwidenetworkpolicies"], "verbs": ["list"]},
                     {"apiGroups": ["cilium.io"], "resources": ["ciliumcidrgroups"], "verbs": ["list"]}]

    cluster_roles[0]["rules"] += rules  # the fix, as printed
    alpha.rbac.apply(documents)
    code, report = doctor(capsys)
    assert (code, report["gaps"]) == (0, 0), gaps(report)
    assert_wrote_nothing(fleet)


def test_a_forbidden_enforcement_object_names_a_role_in_its_namespace(fleet, sts, capsys):
    alpha = fleet.server(DEFAULT_ACCOUNT, DEFAULT_REGION, "alpha").cluster
    alpha.forbid("configmaps")  # an explicit deny, whatever RBAC grants

    code, report = doctor(capsys)

    assert code == 3
    ((key, gap),) = gaps(report).items()
    assert key[2:] == ("alpha", "can get configmaps kube-system/amazon-vpc-cni")
    assert gap["detail"].endswith("its CIS 5.3.1 enforcement evidence is unknown")
    assert gap["fix"].endswith('Role in namespace kube-system: {apiGroups: [""], resources: [configmaps], '
                              'resourceNames: [amazon-vpc-cni], verbs: [get]}')


@pytest.mark.parametrize("network_policy", [None, "DefaultDeny"])
def test_nodepools_are_checked_on_auto_mode_whatever_its_nodeclasses_say(world, sts, capsys, network_policy):
    """A scan lists the NodePools only where a NodeClass denies by default; the doctor reads no NodeClass, so it
    checks them on every Auto Mode cluster: a NodeClass changed to DefaultDeny tomorrow must not meet a 403."""
    cluster = add_auto_mode(Cluster("auto", {"default": {}}), node_classes={"default": network_policy})
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster, auto_mode=True)
    world.enable_security_hub(DEFAULT_ACCOUNT, DEFAULT_REGION)
    documents = [d for d in yaml.safe_load_all((ROOT / RBAC_FILE).read_text()) if d]
    for role in (d for d in documents if d["kind"] == "ClusterRole"):
        role["rules"] = [r for r in role["rules"] if "karpenter.sh" not in r["apiGroups"]]
    cluster.rbac.apply(documents)
    cluster.rbac.add_groups(f"arn:aws:sts::{DEFAULT_ACCOUNT}:assumed-role/{ROLE_NAME}/eks-netpol-scanner",
                            SCANNER_GROUP)

    code, report = doctor(capsys)

    assert code == 3
    ((key, gap),) = gaps(report).items()
    assert key[2:] == ("auto", "can list nodepools.karpenter.sh")
    assert "which nodes deny pods no policy selects is unknown" in gap["detail"]
    assert ("auto", "can list nodeclasses.eks.amazonaws.com") in [key[2:] for key in rows(report, "ok")]
    assert_wrote_nothing(world)

"""The doctor's pure core: paths -> permissions, observations -> checks -> fixes, the table; and that each fix
names files, parameters and groups that exist in this repository."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from handler.cluster_reader import NAMESPACES_PATH, NETWORK_POLICIES_PATH
from handler.config import ScanRequest
from handler.targets.discovery import role_of_session
from handler.doctor import doctor_request, is_doctor_event
from handler.doctor.findings import (
    ACCESS_ENTRY_FILE,
    MEMBER_ROLE_FILE,
    RBAC_FILE,
    SCANNER_GROUP,
    Access,
    AccessAnswer,
    AccountProbe,
    ClusterProbe,
    FleetProbe,
    RegionProbe,
    Result,
    access_of,
    diagnose,
    rbac_rule,
    table,
)
from handler.errors import EventError

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/NetpolScannerRole"
CILIUM = Access("cilium.io", "ciliumnetworkpolicies", "list")
AWS_NODE = Access("apps", "daemonsets", "get", "kube-system", "aws-node")


@pytest.mark.parametrize(("path", "access"), [
    (NAMESPACES_PATH, Access("", "namespaces", "list")),
    (NETWORK_POLICIES_PATH, Access("networking.k8s.io", "networkpolicies", "list")),
    ("/apis/cilium.io/v2/ciliumnetworkpolicies", CILIUM),
    ("/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node", AWS_NODE),
    ("/api/v1/namespaces/kube-system/configmaps/amazon-vpc-cni",
     Access("", "configmaps", "get", "kube-system", "amazon-vpc-cni")),
    ("/api/v1/namespaces/default", Access("", "namespaces", "get", "", "default")),
    ("/apis/eks.amazonaws.com/v1/nodeclasses/default", Access("eks.amazonaws.com", "nodeclasses", "get", "", "default")),
    ("/apis/apps/v1/namespaces/calico-system/daemonsets?labelSelector=k8s-app%3Dcalico-node",
     Access("apps", "daemonsets", "list", "calico-system")),
    ("/apis", None), ("/api", None), ("/api/v1", None), ("/apis/cilium.io", None), ("/apis/cilium.io/v2", None),
])
def test_access_of_a_read(path, access):
    assert access_of(path) == access


def test_access_names_and_review():
    assert str(CILIUM) == "list ciliumnetworkpolicies.cilium.io"
    assert str(AWS_NODE) == "get daemonsets.apps kube-system/aws-node"
    assert str(Access("", "namespaces", "list")) == "list namespaces"
    assert AWS_NODE.review() == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"group": "apps", "resource": "daemonsets", "verb": "get",
                                        "namespace": "kube-system", "name": "aws-node"}}}
    assert CILIUM.review()["spec"]["resourceAttributes"] == {"group": "cilium.io", "resource": "ciliumnetworkpolicies",
                                                             "verb": "list"}


def test_rbac_rules_are_valid_rbac():
    for access, kind in ((CILIUM, "ClusterRole"), (AWS_NODE, "Role in namespace kube-system")):
        where, _, rule = rbac_rule(access).partition(": ")
        assert where == kind
        parsed = yaml.safe_load(rule)
        assert parsed["apiGroups"] == [access.group] and parsed["resources"] == [access.resource]
        assert parsed["verbs"] == [access.verb] and parsed.get("resourceNames", [""]) == [access.name]


def fleet(*accounts: AccountProbe, role: str | None = "NetpolScannerRole", in_function: bool = True) -> FleetProbe:
    return FleetProbe(f"arn:aws:sts::{ACCOUNT}:assumed-role/scanner-fn/x", in_function, role, False,
                      accounts=accounts)


def cluster(**fields) -> ClusterProbe:
    return ClusterProbe("shop", "https://shop.example", **fields)


def one_region(*clusters: ClusterProbe, **fields) -> AccountProbe:
    return AccountProbe(ACCOUNT, ROLE, regions=(RegionProbe("eu-west-1", clusters=clusters, **fields),))


def results(diagnosis) -> list[tuple[str, str, str]]:
    return [(c.cluster, c.check, c.result.value) for c in diagnosis.checks]


def test_all_good_has_no_gaps():
    answers = tuple(AccessAnswer(a, True) for a in (CILIUM, AWS_NODE))
    diagnosis = diagnose(fleet(one_region(cluster(auth_status=200, answers=answers))))

    assert diagnosis.gaps == [] and (diagnosis.accounts, diagnosis.regions, diagnosis.clusters) == (1, 1, 1)
    assert results(diagnosis) == [
        ("", "identity", "ok"), ("", "assume role", "ok"), ("", "Security Hub CSPM", "ok"),
        ("", "list clusters", "ok"), ("shop", "endpoint", "ok"), ("shop", "token", "ok"),
        ("shop", "can list ciliumnetworkpolicies.cilium.io", "ok"),
        ("shop", "can get daemonsets.apps kube-system/aws-node", "ok")]
    assert diagnosis.to_dict()["ok"] is True


def test_each_forbidden_read_names_its_rule_and_consequence():
    answers = (AccessAnswer(Access("", "namespaces", "list"), False, "no RBAC policy matched"),
               AccessAnswer(CILIUM, False), AccessAnswer(AWS_NODE, False), AccessAnswer(AWS_NODE, None, error="HTTP 405"))
    diagnosis = diagnose(fleet(one_region(cluster(auth_status=200, answers=answers))))

    namespaces, cilium, aws_node, unknown = diagnosis.gaps
    assert namespaces.detail == "forbidden (no RBAC policy matched): the cluster cannot be scanned"
    assert cilium.detail == "forbidden: the verdicts these policies could change are NOT_AVAILABLE"
    assert aws_node.detail == "forbidden: its CIS 5.3.1 enforcement evidence is unknown"
    assert f"kubectl --context <shop> apply -f {RBAC_FILE}" in cilium.fix and SCANNER_GROUP in cilium.fix
    assert cilium.fix.endswith(rbac_rule(CILIUM)) and aws_node.fix.endswith(rbac_rule(AWS_NODE))
    assert unknown.result is Result.UNKNOWN and "selfsubjectaccessreviews" in unknown.fix


def test_a_step_that_fails_hides_the_steps_after_it():
    unreachable = diagnose(fleet(one_region(cluster(unreachable="cannot reach https://shop.example: timed out"))))
    refused = diagnose(fleet(one_region(cluster(auth_status=401, auth_message="Unauthorized"))))
    not_listed = diagnose(fleet(one_region(list_error="AccessDenied")))
    not_entered = diagnose(fleet(AccountProbe(ACCOUNT, ROLE, enter_error="cannot assume")))

    assert results(unreachable)[-1] == ("shop", "endpoint", "GAP") and "SubnetIds" in unreachable.gaps[0].fix
    assert results(refused)[-1] == ("shop", "token", "GAP")
    assert f"--principal-arn {ROLE} --kubernetes-groups {SCANNER_GROUP}" in refused.gaps[0].fix
    assert results(not_listed)[-1] == ("", "list clusters", "GAP")
    no_token = diagnose(fleet(one_region(cluster(auth_message="no token could be made: no credentials"))))
    assert results(no_token)[-1] == ("shop", "token", "unknown")
    assert no_token.gaps[0].detail == "no token could be made: no credentials"
    assert results(not_entered) == [("", "identity", "ok"), ("", "assume role", "GAP")]
    no_organization = diagnose(replace(fleet(), accounts_error="cannot list the Organization's accounts: denied"))
    assert [(g.check, g.detail) for g in no_organization.gaps] == [
        ("list accounts", "cannot list the Organization's accounts: denied")]
    no_identity = diagnose(replace(fleet(), identity_error="cannot identify the function's own account"))
    assert results(no_identity) == [("", "identity", "GAP")]


def test_security_hub_not_enabled_versus_not_allowed_to_ask():
    off = diagnose(fleet(one_region(hub_error_code="InvalidAccessException", hub_error="not subscribed")))
    denied = diagnose(fleet(one_region(hub_error_code="AccessDeniedException", hub_error="AccessDeniedException: no")))

    assert [(g.check, g.result) for g in off.gaps] == [("Security Hub CSPM", Result.GAP)]
    assert "aws securityhub enable-security-hub --no-enable-default-standards --region eu-west-1" in off.gaps[0].fix
    assert [(g.check, g.result) for g in denied.gaps] == [("Security Hub CSPM", Result.UNKNOWN)]
    assert "securityhub:DescribeHub" in denied.gaps[0].fix


def test_entering_an_account_fix_depends_on_the_mode_and_who_ran_it():
    failed = AccountProbe("210987654321", "arn:aws:iam::210987654321:role/NetpolScannerRole", enter_error="denied")
    local = diagnose(fleet(failed, in_function=False)).gaps[0]
    function = diagnose(fleet(failed)).gaps[0]
    single = diagnose(fleet(failed, role=None)).gaps[0]

    assert "invoke it with events/doctor.json" in local.fix and "events/doctor.json" not in function.fix
    assert f"--template-file {MEMBER_ROLE_FILE}" in function.fix and "RoleName=NetpolScannerRole" in function.fix
    assert single.check == "own account" and "ScanRoleName=NetpolScannerRole" in single.fix


def test_table_numbers_each_distinct_fix_once():
    answers = (AccessAnswer(CILIUM, None, error="HTTP 405"), AccessAnswer(AWS_NODE, None, error="HTTP 405"))
    text = table(diagnose(fleet(one_region(cluster(auth_status=200, answers=answers),
                                           hub_error_code="InvalidAccessException"))))

    lines = text.splitlines()
    assert lines[0].split() == ["ACCOUNT", "REGION", "CLUSTER", "CHECK", "RESULT", "DETAIL"]
    assert sum("[fix 2]" in line for line in lines) == 2 and sum("[fix 1]" in line for line in lines) == 1
    assert [line.split()[0] for line in lines if line.startswith("[")] == ["[1]", "[2]"]
    assert lines[-1] == "3 gap(s) in 1 account(s), 1 Region(s), 1 cluster(s)"


def test_role_of_session():
    assert role_of_session("arn:aws:sts::123456789012:assumed-role/scanner-fn/session") == \
        "arn:aws:iam::123456789012:role/scanner-fn"
    assert role_of_session("arn:aws-cn:sts::123456789012:assumed-role/r/s") == "arn:aws-cn:iam::123456789012:role/r"
    assert role_of_session("arn:aws:iam::123456789012:user/me") == "arn:aws:iam::123456789012:user/me"


# -- the fixes name what exists ---------------------------------------------------------------------------------
def cfn(path: str) -> dict:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(ROOT / path))


def test_fixes_name_real_files_parameters_and_the_bound_group():
    subjects = [s["name"] for doc in yaml.safe_load_all((ROOT / RBAC_FILE).read_text())
                if doc and doc["kind"] in ("ClusterRoleBinding", "RoleBinding") for s in doc["subjects"]]
    assert subjects and set(subjects) == {SCANNER_GROUP}
    assert {"RoleName", "ScannerRoleArn", "ExternalId"} <= set(cfn(MEMBER_ROLE_FILE)["Parameters"])
    assert {"ClusterName", "PrincipalArn"} <= set(cfn(ACCESS_ENTRY_FILE)["Parameters"])
    assert {"ScanRoleName", "SubnetIds", "SecurityGroupIds", "TargetAccounts"} <= set(cfn("template.yaml")["Parameters"])


def test_doctor_events():
    event = json.loads((ROOT / "events" / "doctor.json").read_text())
    assert is_doctor_event(event) and doctor_request(event) == ScanRequest()
    assert doctor_request({"doctor": True, "clusters": ["shop"]}) == ScanRequest(clusters=("shop",))
    assert not is_doctor_event({"accounts": [ACCOUNT]}) and not is_doctor_event(["doctor"])
    for bad, message in (({"doctor": 1}, "must be true"), ({"doctor": True, "dry_run": False}, "dry_run"),
                         ({"doctor": True, "regions": "eu-west-1"}, "field 'regions' must be a non-empty list")):
        with pytest.raises(EventError, match=message):
            doctor_request(bad)

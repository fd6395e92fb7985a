"""CIS Kubernetes 5.3.2 / CIS EKS 4.3.2 over hand-built snapshots, and the control registry."""
from __future__ import annotations

import re

import pytest

from handler.controls import CONTROLS, CONTROLS_BY_ID, namespace_network_policy, scan_status
from handler.controls.namespace_network_policy import MAX_EVIDENCE
from handler.evaluation import evaluate
from handler.models import (ClusterInfo, ClusterRef, ClusterSnapshot, ComplianceStatus, Namespace, NetworkPolicy)

REF = ClusterRef("123456789012", "eu-west-1", "alpha")
ASFF_LABELS = {"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"}


def snapshot(namespaces, policies=()) -> ClusterSnapshot:
    ns = tuple(n if isinstance(n, Namespace) else Namespace(n) for n in namespaces)
    return ClusterSnapshot(ClusterInfo(REF, "https://x", ""), ns, tuple(NetworkPolicy(*p) for p in policies))


def verdicts(snap: ClusterSnapshot) -> dict:
    results = namespace_network_policy.evaluate(snap)
    assert all(r.control_id == namespace_network_policy.CONTROL_ID for r in results)
    return {r.namespace: r for r in results}


def test_no_policies_fails():
    r = verdicts(snapshot(["team-a"]))["team-a"]
    assert r.status is ComplianceStatus.FAILED
    assert r.evidence == ()
    assert "team-a" in r.title and "alpha" in r.description


def test_one_policy_passes_with_its_name_as_evidence():
    r = verdicts(snapshot(["team-a"], [("team-a", "default-deny")]))["team-a"]
    assert r.status is ComplianceStatus.PASSED
    assert r.evidence == ("default-deny",)
    assert "default-deny" in r.description and " 1 " in r.description


def test_policies_in_other_namespaces_do_not_count():
    v = verdicts(snapshot(["a", "b", "c"], [("a", "p1"), ("a", "p2"), ("elsewhere", "p3")]))
    assert v["a"].status is ComplianceStatus.PASSED and v["a"].evidence == ("p1", "p2")
    assert v["b"].status is ComplianceStatus.FAILED and v["c"].status is ComplianceStatus.FAILED
    assert "elsewhere" not in v  # policies never create verdicts for namespaces that were not listed


def test_one_result_per_namespace_in_order():
    names = ["kube-system", "default", "z", "a"]
    results = namespace_network_policy.evaluate(snapshot(names))
    assert [r.namespace for r in results] == names


def test_empty_cluster_has_no_results():
    assert namespace_network_policy.evaluate(snapshot([])) == []


@pytest.mark.parametrize("policies", [(), (("gone", "p"),)])
def test_terminating_namespace_is_warning_not_failed(policies):
    r = verdicts(snapshot([Namespace("gone", terminating=True)], policies))["gone"]
    assert r.status is ComplianceStatus.WARNING
    assert "Terminating" in r.description or "deleted" in r.title


def test_evidence_capped_but_count_exact():
    count = MAX_EVIDENCE + 17
    policies = [("busy", f"policy-{i:03d}") for i in range(count)]
    r = verdicts(snapshot(["busy"], policies))["busy"]
    assert r.status is ComplianceStatus.PASSED
    assert len(r.evidence) == MAX_EVIDENCE
    assert r.evidence == tuple(sorted(name for _, name in policies))[:MAX_EVIDENCE]
    assert f"has {count} " in r.description
    assert "policy-036" not in r.description  # beyond the cap: counted, not quoted


def test_evidence_at_cap_is_complete():
    policies = [("ns", f"p{i:02d}") for i in range(MAX_EVIDENCE)]
    r = verdicts(snapshot(["ns"], policies))["ns"]
    assert len(r.evidence) == MAX_EVIDENCE and f"has {MAX_EVIDENCE} " in r.description
    assert "..." not in r.description


@pytest.mark.parametrize("control", list(CONTROLS_BY_ID.values()), ids=lambda c: c.id)
def test_every_control_is_complete(control):
    assert control.id and control.title
    assert control.severity in ASFF_LABELS and control.severity != "INFORMATIONAL"
    assert control.remediation_url.startswith("https://")
    assert control.remediation_text and len(control.remediation_text) <= 512
    assert control.requirements and all(control.requirements)
    assert control.finding_types and all(t.count("/") >= 1 for t in control.finding_types)
    assert control.generator_id.endswith(control.id)


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: c.id)
def test_evaluated_controls_have_evaluate(control):
    assert callable(control.evaluate)
    assert isinstance(control.evaluate(snapshot(["x"])), list)


def test_registry():
    assert namespace_network_policy.CONTROL in CONTROLS
    assert CONTROLS_BY_ID[scan_status.CONTROL_ID] is scan_status.CONTROL
    assert scan_status.CONTROL not in CONTROLS  # raised by the pipeline, never evaluated
    assert scan_status.CONTROL.evaluate is None
    assert len({c.id for c in CONTROLS_BY_ID.values()}) == len(CONTROLS_BY_ID)
    assert all(CONTROLS_BY_ID[c.id] is c for c in CONTROLS)


def test_requirements_name_both_benchmarks():
    reqs = namespace_network_policy.CONTROL.requirements
    assert any(re.search(r"Kubernetes.*5\.3\.2", r) for r in reqs)
    assert any(re.search(r"EKS.*4\.3\.2", r) for r in reqs)


def test_not_available_result_names_cluster_and_reason():
    r = scan_status.not_available(REF, "HTTP 403 on /api/v1/namespaces")
    assert r.status is ComplianceStatus.NOT_AVAILABLE and r.namespace is None
    assert r.control_id == scan_status.CONTROL_ID
    assert "alpha" in r.title and "HTTP 403" in r.description and str(REF) in r.description


def test_identical_policies_stamped_into_namespaces_each_name_their_own_namespace_and_policy():
    """Stamped policies (the same spec in namespace after namespace) and namespaces without any share objects in
    the evaluation (one empty coverage, one empty isolation): every finding still names its own namespace, its
    cluster and the policies of that namespace only."""
    deny_all = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    policies = [NetworkPolicy("a", "deny-a", deny_all), NetworkPolicy("b", "deny-b", dict(deny_all)),
                NetworkPolicy("b", "allow-dns", {"podSelector": {}, "policyTypes": ["Egress"],
                                                 "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})]
    snap = ClusterSnapshot(ClusterInfo(REF, "https://x", ""), (Namespace("a"), Namespace("b"), Namespace("c"),
                                                               Namespace("d")), tuple(policies))
    by = {(r.control_id, r.namespace): r for r in evaluate(snap)}
    for control in ("netpol-default-deny-ingress", "netpol-default-deny-egress", namespace_network_policy.CONTROL_ID):
        for name in "abcd":
            r = by[(control, name)]
            assert f"Namespace {name} " in r.title and f"Namespace '{name}' of EKS cluster 'alpha'" in r.description
    five32 = namespace_network_policy.CONTROL_ID
    assert by[(five32, "a")].evidence == ("deny-a",) and by[(five32, "b")].evidence == ("allow-dns", "deny-b")
    assert "deny-a" not in by[(five32, "b")].description and "deny-b" not in by[(five32, "a")].description
    assert by[("netpol-default-deny-ingress", "b")].evidence == ("deny-b",)
    assert "allow-dns (egress rule 1 admits every destination on some ports)" in \
        by[("netpol-default-deny-egress", "b")].description
    assert "allow-dns" not in by[("netpol-default-deny-egress", "a")].description
    for name in "cd":
        assert by[(five32, name)].status is ComplianceStatus.FAILED and by[(five32, name)].evidence == ()
        assert by[("netpol-default-deny-egress", name)].status is ComplianceStatus.FAILED

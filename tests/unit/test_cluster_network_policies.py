"""The cluster-wide tiered kinds and ApplicationNetworkPolicy, rule by rule (table-driven), the Admin tier's order
across policies, and what a policy not understood leaves open (pure: hand-built snapshots)."""
from __future__ import annotations

import pytest

from handler.controls import namespace_isolation, namespace_network_policy, policy_enforcement
from handler.errors import PolicyError
from handler.models import ClusterInfo, ClusterRef, ClusterSnapshot, ComplianceStatus, Namespace, NetworkPolicy
from handler.policy import ANALYZERS, Reach, analyze
from handler.policy.coverage import not_understood
from handler.policy.engines.common import ADMIN_TIER, Order

NS = Namespace("shop", labels={"team": "a"})
ANP = ("AdminNetworkPolicy", "policy.networking.k8s.io/v1alpha1")
BANP = ("BaselineAdminNetworkPolicy", "policy.networking.k8s.io/v1alpha1")
CNP = ("ClusterNetworkPolicy", "policy.networking.k8s.io/v1alpha2")
EKS = ("ClusterNetworkPolicy", "networking.k8s.aws/v1alpha1")
APP = ("ApplicationNetworkPolicy", "networking.k8s.aws/v1alpha1")
PODS, NETS = {"namespaces": {}}, {"networks": ["0.0.0.0/0"]}
A, S, N = Reach.ALL, Reach.SOME, Reach.NONE


def policy(kind_api, spec, namespace="", name="p"):
    return NetworkPolicy(namespace, name, spec, *kind_api)


def tiered(kind_api, egress=(), ingress=(), subject=None, tier="Admin", priority=1):
    spec = {"subject": subject or {"namespaces": {}}, "egress": list(egress), "ingress": list(ingress)}
    if kind_api[0] == "ClusterNetworkPolicy":
        spec["tier"] = tier
    if kind_api != BANP:
        spec["priority"] = priority
    return policy(kind_api, spec)


def row(p):
    e = analyze(p, NS)
    return (e.counts, e.ingress.reach, e.ingress.isolates, e.ingress.admits_everything, e.egress.reach,
            e.egress.isolates, e.egress.admits_everything, e.egress.passes_everything)


def deny(*peers, action="Deny", **more):
    return {"action": action, "to": list(peers), **more}


def accept(*peers, **more):
    return {"action": "Accept", "to": list(peers), **more}


CASES = [
    # egress isolation needs every pod and every address
    ("deny pods only", tiered(CNP, [deny(PODS)]), (True, N, False, False, A, False, False, False)),
    ("deny pods and /0", tiered(CNP, [deny(PODS, NETS)]), (True, N, False, False, A, True, False, False)),
    ("deny ::/0 alone", tiered(EKS, [deny({"networks": ["::/0"]})]), (True, N, False, False, A, True, False, False)),
    ("deny pods and /0 in two rules", tiered(EKS, [deny(PODS), deny(NETS)]),
     (True, N, False, False, A, True, False, False)),
    ("deny on some ports decides nothing", tiered(EKS, [deny(PODS, NETS, ports=[{"portNumber": {"port": 80}}])]),
     (True, N, False, False, A, False, False, False)),
    ("v1alpha2 protocols limit ports", tiered(CNP, [deny(PODS, NETS, protocols=[{"tcp": {"destinationPort": {
        "number": 80}}}])]), (True, N, False, False, A, False, False, False)),
    ("deny /8 is limited", tiered(CNP, [deny(PODS, {"networks": ["10.0.0.0/8"]})]),
     (True, N, False, False, A, False, False, False)),
    # first match wins
    ("accept everything first", tiered(CNP, [accept(NETS), deny(PODS, NETS)]),
     (True, N, False, False, A, False, True, False)),
    ("accept after a deny of everything is shadowed", tiered(CNP, [deny(PODS, NETS), accept(NETS)]),
     (True, N, False, False, A, True, False, False)),
    ("pass everything first", tiered(CNP, [deny(PODS, NETS, action="Pass"), deny(PODS, NETS)]),
     (True, N, False, False, A, False, False, True)),
    ("accept of a domain is an exception", tiered(EKS, [accept({"domainNames": ["*.example.com"]}), deny(PODS, NETS)]),
     (True, N, False, False, A, True, False, False)),
    ("accept of nodes is an exception", tiered(CNP, [accept({"nodes": {}}), deny(PODS, NETS)]),
     (True, N, False, False, A, True, False, False)),
    # ingress peers are pods only: a Deny of every pod isolates
    ("ingress deny every pod", tiered(CNP, ingress=[{"action": "Deny", "from": [PODS]}]),
     (True, A, True, False, N, False, False, False)),
    ("v1alpha2 pods without namespaceSelector is every namespace", tiered(CNP, ingress=[
        {"action": "Deny", "from": [{"pods": {"podSelector": {}}}]}]), (True, A, True, False, N, False, False, False)),
    ("Baseline tier passes nothing on", tiered(CNP, [deny(PODS, NETS, action="Pass")], tier="Baseline"),
     (True, N, False, False, A, False, False, False)),
    # subjects: counted where they name the namespace
    ("subject by namespace label", tiered(EKS, [deny(PODS, NETS)], subject={"namespaces": {"matchLabels": {
        "team": "a"}}}), (True, N, False, False, A, True, False, False)),
    ("subject elsewhere", tiered(EKS, [deny(PODS, NETS)], subject={"namespaces": {"matchLabels": {"team": "b"}}}),
     (False, N, False, False, N, False, False, False)),
    ("subject on pod labels alone", tiered(CNP, [deny(PODS, NETS)], subject={"pods": {"podSelector": {
        "matchLabels": {"app": "db"}}}}), (False, N, False, False, S, True, False, False)),
    ("subject on pod labels in a named namespace", tiered(EKS, [deny(PODS, NETS)], subject={"pods": {
        "namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"app": "db"}}}}),
     (True, N, False, False, S, True, False, False)),
    # ApplicationNetworkPolicy: NetworkPolicy rules, domainNames peers, no policyTypes default without rules
    ("app policyTypes both", policy(APP, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, "shop"),
     (True, A, True, False, A, True, False, False)),
    ("app no policyTypes, no rules: nothing known to be enforced", policy(APP, {"podSelector": {}}, "shop"),
     (True, N, False, False, N, False, False, False)),
    ("app domain egress", policy(APP, {"podSelector": {}, "egress": [{"to": [{"domainNames": ["a.example.com"]}]}]},
                                 "shop"), (True, N, False, False, A, True, False, False)),
    ("app egress to everywhere", policy(APP, {"podSelector": {}, "egress": [{}]}, "shop"),
     (True, N, False, False, A, True, True, False)),
]


@pytest.mark.parametrize("case, p, want", CASES, ids=[c[0] for c in CASES])
def test_semantics(case, p, want):
    assert row(p) == want


def test_every_kind_of_the_family_is_registered():
    for group, kind in [("policy.networking.k8s.io", "ClusterNetworkPolicy"), ("networking.k8s.aws",
                        "ClusterNetworkPolicy"), ("networking.k8s.aws", "ApplicationNetworkPolicy"),
                        ("policy.networking.k8s.io", "AdminNetworkPolicy")]:
        assert (group, kind) in ANALYZERS


def test_admin_priority_is_carried_and_baseline_has_none():
    assert analyze(tiered(EKS, [deny(PODS, NETS)], priority=7), NS).order == Order(ADMIN_TIER, (7,))
    assert analyze(tiered(EKS, [deny(PODS, NETS)], tier="Baseline"), NS).order is None
    assert analyze(tiered(BANP, [deny(PODS, NETS)]), NS).order is None


@pytest.mark.parametrize("spec, message", [
    ({"tier": "Platform", "priority": 1, "subject": {"namespaces": {}}}, "tier"),
    ({"tier": "Admin", "subject": {"namespaces": {}}}, "priority"),
    ({"tier": "Admin", "priority": 1, "subject": {"pods": {"podSelector": {}}}}, "namespaceSelector"),
])
def test_a_subject_or_tier_not_understood_is_a_clear_error(spec, message):
    with pytest.raises(PolicyError, match=message):
        analyze(policy(EKS, spec), NS)


@pytest.mark.parametrize("egress, why", [
    ([{"action": "Allow", "to": [PODS]}], "unknown rule action 'Allow'"),  # v1alpha1's word in a v1alpha2 policy
    ([{"action": "Deny", "to": []}], "at least one peer"),
    ([{"action": "Deny", "to": [{"bogus": {}}]}], "a peer needs one of"),
    ([{"action": "Deny", "to": [{"networks": ["10.0.0.0/33"]}]}], "bad CIDR"),
])
def test_a_rule_not_understood_leaves_only_its_direction_unknown(egress, why):
    e = analyze(tiered(CNP, egress, ingress=[{"action": "Deny", "from": [PODS]}]), NS)
    assert e.counts and e.ingress.isolates and not e.ingress.unknown
    assert e.egress.reach is Reach.ALL and why in e.egress.unknown and "ClusterNetworkPolicy p" in e.egress.unknown
    assert not e.egress.isolates


# -- across policies: the controls ----------------------------------------------------------------------------

REF = ClusterRef("123456789012", "eu-west-1", "alpha")


def snapshot(*policies, namespaces=(NS,)) -> ClusterSnapshot:
    return ClusterSnapshot(ClusterInfo(REF, "https://x", ""), tuple(namespaces), tuple(policies))


def egress_status(snap: ClusterSnapshot, namespace: str = "shop") -> ComplianceStatus:
    return {r.namespace: r.status for r in namespace_isolation.EGRESS_CONTROL.evaluate(snap)}[namespace]


ALLOW_ALL_EGRESS = NetworkPolicy("shop", "open", {"podSelector": {}, "egress": [{}]})
DENY_ALL_EGRESS = NetworkPolicy("shop", "closed", {"podSelector": {}, "policyTypes": ["Egress"]})


@pytest.mark.parametrize("policies, want", [
    ((tiered(EKS, [deny(PODS, NETS)], priority=5), ALLOW_ALL_EGRESS), ComplianceStatus.PASSED),
    ((tiered(EKS, [accept(PODS, NETS)], priority=5), DENY_ALL_EGRESS), ComplianceStatus.FAILED),
    ((tiered(EKS, [deny(PODS, NETS)], tier="Baseline"), ALLOW_ALL_EGRESS), ComplianceStatus.FAILED),
    ((tiered(EKS, [accept(PODS, NETS)], tier="Baseline"), DENY_ALL_EGRESS), ComplianceStatus.PASSED),
    ((tiered(EKS, [deny(PODS, NETS, action="Pass")], priority=1), DENY_ALL_EGRESS), ComplianceStatus.PASSED),
], ids=["admin deny over an allow-all", "admin accept over a deny", "baseline deny under an allow-all",
        "baseline accept under a deny", "admin pass to a deny"])
def test_tiers(policies, want):
    assert egress_status(snapshot(*policies)) is want


def test_within_the_admin_tier_the_lowest_priority_decides_and_accept_wins_a_tie():
    def at(priority, rules, name):
        return NetworkPolicy("", name, {"tier": "Admin", "priority": priority, "subject": {"namespaces": {}},
                                        "egress": rules}, *EKS)
    deny_all, accept_all, pass_all = [deny(PODS, NETS)], [accept(PODS, NETS)], [deny(PODS, NETS, action="Pass")]
    assert egress_status(snapshot(at(1, deny_all, "d"), at(2, accept_all, "a"))) is ComplianceStatus.PASSED
    assert egress_status(snapshot(at(2, deny_all, "d"), at(1, accept_all, "a"))) is ComplianceStatus.FAILED
    assert egress_status(snapshot(at(1, deny_all, "d"), at(1, accept_all, "a"))) is ComplianceStatus.FAILED
    assert egress_status(snapshot(at(2, deny_all, "d"), at(1, pass_all, "p"))) is ComplianceStatus.FAILED


def test_a_direction_not_understood_changes_only_what_it_could_change():
    broken = tiered(CNP, [deny({"networks": ["corp"]})], subject={"namespaces": {"matchLabels": {"team": "a"}}})
    other = Namespace("other", labels={"team": "b"})
    snap = snapshot(broken, DENY_ALL_EGRESS, namespaces=(NS, other))
    # Admin tier, over all of shop's pods: it might admit everything before the NetworkPolicy's deny.
    assert egress_status(snap) is ComplianceStatus.NOT_AVAILABLE
    assert egress_status(snap, "other") is ComplianceStatus.FAILED  # not selected there
    assert egress_status(snapshot(broken, ALLOW_ALL_EGRESS)) is ComplianceStatus.FAILED  # failed whatever it says
    ingress = {r.namespace: r.status for r in namespace_isolation.INGRESS_CONTROL.evaluate(snap)}
    assert ingress["shop"] is ComplianceStatus.FAILED  # it has no ingress rules
    counted = {r.namespace: r.status for r in namespace_network_policy.evaluate(snap)}
    assert counted == {"shop": ComplianceStatus.PASSED, "other": ComplianceStatus.FAILED}
    baseline = tiered(CNP, [deny({"networks": ["corp"]})], tier="Baseline")
    assert egress_status(snapshot(baseline, DENY_ALL_EGRESS)) is ComplianceStatus.PASSED  # cannot open over it
    assert egress_status(snapshot(baseline)) is ComplianceStatus.NOT_AVAILABLE  # it may be the deny


def test_policies_not_understood_are_counted_once_each_with_why():
    broken = tiered(CNP, [deny({"networks": ["corp"]})])
    unknown_subject = policy(EKS, {"tier": "Admin", "priority": 1, "subject": {"pods": {"podSelector": {}}}},
                             name="q")
    snap = snapshot(broken, unknown_subject, namespaces=(NS, Namespace("other")))
    found = not_understood(snap.coverage.values())
    assert sorted(found) == ["ClusterNetworkPolicy p", "ClusterNetworkPolicy q"]
    assert "bad CIDR" in found["ClusterNetworkPolicy p"] and "namespaceSelector" in found["ClusterNetworkPolicy q"]
    (finding,) = policy_enforcement.evaluate(snap)
    assert "2 network policies could not be interpreted" in finding.description
    assert not_understood(snapshot(DENY_ALL_EGRESS).coverage.values()) == {}

"""controls.base.namespace_verdicts: a namespace verdict made once per distinct (coverage, terminating) and shared
by the namespaces that have them, each result still its own namespace's."""
from __future__ import annotations

from handler.controls import namespace_isolation, namespace_network_policy
from handler.controls.base import namespace_verdicts
from handler.evaluation import evaluate
from handler.models import (ClusterInfo, ClusterRef, ClusterSnapshot, ComplianceStatus, ControlResult, Namespace,
                            NetworkPolicy)
from handler.policy.coverage import NamespaceCoverage

REF = ClusterRef("123456789012", "eu-west-1", "alpha")
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
ALLOW_ALL_INGRESS = {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}
NAMESPACE_CONTROLS = (namespace_network_policy.evaluate, namespace_isolation.INGRESS_CONTROL.evaluate,
                      namespace_isolation.EGRESS_CONTROL.evaluate)


def snapshot(namespaces: list[Namespace], policies: list[NetworkPolicy]) -> ClusterSnapshot:
    return ClusterSnapshot(ClusterInfo(REF, "https://x", ""), tuple(namespaces),
                           tuple(p for p in policies if p.namespace in {n.name for n in namespaces}))


# a and b hold the same policy (same name and spec), c another, d the same as a but is being deleted, e and f none.
NAMESPACES = [Namespace("a"), Namespace("b"), Namespace("c"), Namespace("d", terminating=True), Namespace("e"),
              Namespace("f")]
POLICIES = [NetworkPolicy("a", "default-deny", DENY_ALL), NetworkPolicy("b", "default-deny", DENY_ALL),
            NetworkPolicy("c", "open", ALLOW_ALL_INGRESS), NetworkPolicy("d", "default-deny", DENY_ALL)]


def test_verdict_made_once_per_distinct_coverage_and_terminating():
    made: list[tuple[str, NamespaceCoverage]] = []

    def verdict(namespace: Namespace, coverage: NamespaceCoverage) -> ControlResult:
        made.append((namespace.name, coverage))
        return ControlResult("c", namespace.name, ComplianceStatus.PASSED, "t", "d", (str(len(coverage.effects)),))

    results = namespace_verdicts(snapshot(NAMESPACES, POLICIES), "c", verdict)

    # "" is the shared verdict of namespaces without policies; b reuses a's, e and f the shared one.
    assert [name for name, _ in made] == ["", "a", "c", "d"]
    assert [r.namespace for r in results] == ["a", "b", "c", "d", "e", "f"]
    assert [r.evidence for r in results] == [("1",), ("1",), ("1",), ("1",), ("0",), ("0",)]


def test_shared_verdicts_say_what_each_namespace_alone_would():
    whole = snapshot(NAMESPACES, POLICIES)
    together = evaluate(whole, now="2026-12-02T00:00:00Z")
    for namespace in NAMESPACES:
        alone = evaluate(snapshot([namespace], POLICIES), now="2026-12-02T00:00:00Z")
        assert [r.to_dict() for r in together if r.namespace == namespace.name] == \
               [r.to_dict() for r in alone if r.namespace == namespace.name]


def test_namespaces_with_the_same_policies_share_one_wording_and_name_their_own_namespace():
    whole = snapshot(NAMESPACES, POLICIES)
    for control in NAMESPACE_CONTROLS:
        by_name = {r.namespace: r for r in control(whole)}
        a, b = by_name["a"], by_name["b"]
        assert a.status is b.status is ComplianceStatus.PASSED
        assert tuple(a)[2:] == tuple(b)[2:]
        assert tuple(a)[3] is tuple(b)[3]  # the one wording, made once
        assert "Namespace a " in a.title and "Namespace b " in b.title and "'b'" in b.description

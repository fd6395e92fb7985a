"""Differential oracle for networking.k8s.io/v1 NetworkPolicy: our isolation and 5.3.2 verdicts against NCA.

Hypothesis generates subject namespaces with labels and NetworkPolicies in them (podSelector {} or labelled,
policyTypes present or absent, ingress/egress rules with and without peers, namespaceSelector/podSelector peers,
ipBlock with and without except, ports), NCA computes every pod's connectivity over a universe standing for every
labelling (nca_oracle.py), and oracle_claims.py checks the claims each of our verdicts makes (listed there).

NCA reads each policy as kube-apiserver stores it (`as_stored`), because NCA 2.1.0 differs from the API server:
- with policyTypes absent it adds Egress when the `egress` key is present, even `egress: []`; kube-apiserver adds
  it only for a non-empty list. The API server always stores policyTypes, so the scanner never reads it absent
  from a cluster; we write the stored value.
- it rejects a policy with egress rules but no Egress in policyTypes (ingress likewise); kube-apiserver accepts it
  and the rules do nothing. We drop those rules.
Seeded (derandomize) and bounded: the same examples on every run.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from handler.models import ComplianceStatus
from tests.property import oracle_claims
from tests.property.nca_oracle import NAMESPACE_LABELS, POD_KEY, POD_VALUES, World, ask
from tests.property.oracle_claims import (EGRESS, INGRESS, ORACLE_SETTINGS, Kind, Regression, disagreements, ours,
                                          with_stored_types, worlds)

SUBJECTS = ("ns0", "ns1")
PEERS_KEY = {INGRESS: "from", EGRESS: "to"}


def kubernetes_policy(namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}


def kubernetes_types(spec: Mapping[str, Any]) -> list[str]:
    """policyTypes as kube-apiserver stores them: when absent, Ingress, plus Egress when there is an egress rule."""
    return list(spec.get("policyTypes") or ([INGRESS, EGRESS] if spec.get("egress") else [INGRESS]))


def as_stored(world: World) -> World:
    """The world as kube-apiserver stores it (see the module docstring): what NCA is given."""
    return with_stored_types(world, "policyTypes", kubernetes_types)


def kubernetes_peers_alone(world: World, namespace: str, direction: str) -> Iterator[dict[str, Any]]:
    """Each peer of each rule of each NetworkPolicy of the namespace that selects all of it, alone in a policy
    selecting every pod, with its rule's ports; a rule without peers is its own single peer (None)."""
    for policy in world.policies:
        spec = policy["spec"]
        if policy["metadata"].get("namespace") != namespace or spec.get("podSelector") \
                or direction not in kubernetes_types(spec):
            continue
        for rule in spec.get(direction.lower()) or ():
            bare = {k: v for k, v in rule.items() if k != PEERS_KEY[direction]}
            for peer in rule.get(PEERS_KEY[direction]) or [None]:
                alone = copy.deepcopy(dict(policy))
                alone["spec"] = {"podSelector": {}, "policyTypes": [direction],
                                 direction.lower(): [{**bare, **({PEERS_KEY[direction]: [peer]} if peer else {})}]}
                yield alone


def _deny_then(direction: str, rule: Mapping[str, Any]) -> World:
    """ns0 in default deny for `direction`, but for `rule`."""
    return World((("ns0", {}),), (kubernetes_policy("ns0", "p", {
        "podSelector": {}, "policyTypes": [direction], direction.lower(): [rule]}),))


# Found by this oracle, fixed on branch policy-fixes (64da620): both were PASSED and open to everything.
REGRESSIONS = (
    Regression("ipBlock /0 with except", _deny_then(EGRESS, {"to": [{"ipBlock": {
        "cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}), EGRESS, ComplianceStatus.PASSED),
    Regression("namespaceSelector matching every namespace without being {}", _deny_then(INGRESS, {"from": [{
        "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}}]}),
        INGRESS, ComplianceStatus.PASSED),
)
KUBERNETES = Kind(as_stored, kubernetes_peers_alone)

# -- generators --------------------------------------------------------------------------------------------------

def _expressions(keys: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    def expression(key: str) -> st.SearchStrategy[dict[str, Any]]:
        with_values = st.fixed_dictionaries({"key": st.just(key), "operator": st.sampled_from(["In", "NotIn"]),
                                             "values": st.lists(st.sampled_from(keys[key]), min_size=1,
                                                                max_size=2, unique=True)})
        without = st.fixed_dictionaries({"key": st.just(key),
                                         "operator": st.sampled_from(["Exists", "DoesNotExist"])})
        return with_values | without
    return st.sampled_from(sorted(keys)).flatmap(expression)


def _selector(keys: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    match_labels = st.dictionaries(st.sampled_from(sorted(keys)), st.just(None), min_size=1, max_size=1).flatmap(
        lambda d: st.fixed_dictionaries({k: st.sampled_from(keys[k]) for k in d}))
    return st.one_of(st.just({}), match_labels.map(lambda m: {"matchLabels": m}),
                     st.lists(_expressions(keys), min_size=1, max_size=2).map(lambda e: {"matchExpressions": e}))


POD_SELECTOR = _selector({POD_KEY: POD_VALUES})
NAMESPACE_SELECTOR = _selector({**NAMESPACE_LABELS, "kubernetes.io/metadata.name": (*SUBJECTS, "gone")})
IP_BLOCKS = st.sampled_from([
    {"cidr": "0.0.0.0/0"}, {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]},
    {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "169.254.169.254/32"]}, {"cidr": "::/0"},
    {"cidr": "::/0", "except": ["fd00::/8"]}, {"cidr": "10.0.0.0/8"}, {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]},
    {"cidr": "192.168.1.0/24"}])
PEER = st.one_of(IP_BLOCKS.map(lambda b: {"ipBlock": b}),
                 st.fixed_dictionaries({"namespaceSelector": NAMESPACE_SELECTOR},
                                       optional={"podSelector": POD_SELECTOR}),
                 st.fixed_dictionaries({"podSelector": POD_SELECTOR}))
PORTS = st.lists(st.sampled_from([{"port": 80}, {"protocol": "UDP", "port": 53}, {"port": 8000, "endPort": 8100},
                                  {"protocol": "TCP"}, {"protocol": "SCTP", "port": 9}]),
                 min_size=1, max_size=2, unique_by=str)


def _rules(peers_key: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    rule = st.fixed_dictionaries({}, optional={peers_key: st.lists(PEER, max_size=2), "ports": PORTS})
    return st.lists(rule, max_size=2)


# Half the policies select every pod of their namespace: those are the ones isolation verdicts rest on.
SPEC = st.fixed_dictionaries({"podSelector": st.just({}) | POD_SELECTOR}, optional={
    "policyTypes": st.sampled_from([[INGRESS], [EGRESS], [INGRESS, EGRESS]]),
    "ingress": _rules("from"), "egress": _rules("to")})


def _example(*specs: tuple[str, dict[str, Any]]) -> World:
    return World(tuple((name, {}) for name in SUBJECTS),
                 tuple(kubernetes_policy(ns, f"p{n}", spec) for n, (ns, spec) in enumerate(specs)))


# -- the property ------------------------------------------------------------------------------------------------

@settings(ORACLE_SETTINGS, max_examples=100)
@given(worlds(SUBJECTS, st.tuples(st.sampled_from(SUBJECTS), SPEC), kubernetes_policy))
# policyTypes absent with `egress: []`: Ingress only for kube-apiserver, Egress too for NCA as written.
@example(_example(("ns0", {"podSelector": {}, "egress": []})))
@example(_example(("ns0", {"podSelector": {}, "policyTypes": [INGRESS],
                           "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})))
@example(_example(("ns0", {"podSelector": {}, "policyTypes": [INGRESS, EGRESS]}),
                  ("ns0", {"podSelector": {"matchLabels": {POD_KEY: "web"}}, "ingress": [{}]})))
@example(_example(("ns0", {"podSelector": {}, "policyTypes": [INGRESS],
                           "ingress": [{"from": [{"namespaceSelector": {}}]}]})))
# isolation by the union of two labelled selectors: all pods isolated, no single policy isolates all
@example(_example(("ns0", {"podSelector": {"matchExpressions": [{"key": POD_KEY, "operator": "Exists"}]},
                           "policyTypes": [INGRESS]}),
                  ("ns0", {"podSelector": {"matchExpressions": [{"key": POD_KEY, "operator": "DoesNotExist"}]},
                           "policyTypes": [INGRESS]})))
# openness by the union of two peers: every namespace with team=a, and every namespace without
@example(_example(("ns0", {"podSelector": {}, "ingress": [{"from": [
    {"namespaceSelector": {"matchLabels": {"team": "a"}}},
    {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}}]}]})))
# the regressions (REGRESSIONS), checked strictly
@example(REGRESSIONS[0].world)
@example(REGRESSIONS[1].world)
def test_networkpolicy_verdicts_agree_with_nca(world: World) -> None:
    assert disagreements(world, KUBERNETES) == [], world


# -- what the property rests on ----------------------------------------------------------------------------------

@pytest.mark.parametrize("regression", REGRESSIONS, ids=[r.name for r in REGRESSIONS])
def test_the_old_verdict_of_each_regression_is_wrong_per_nca(regression: Regression) -> None:
    assert regression.old_verdict_wrong_per_nca(KUBERNETES.to_nca)


def test_nca_defaults_policy_types_by_the_egress_key_not_by_egress_rules():
    """The NCA difference `as_stored` removes, shown, so that a future NCA that fixes it is noticed."""
    written = _example(("ns0", {"podSelector": {}, "egress": []}))
    assert ask(written)[("ns0", EGRESS)].all_isolated  # NCA: Egress
    assert not ask(as_stored(written))[("ns0", EGRESS)].all_isolated  # kube-apiserver: Ingress only
    isolation, _ = ours(written)
    assert isolation[("ns0", EGRESS)].isolation is ComplianceStatus.FAILED


def test_nca_rejects_rules_of_a_direction_policy_types_leaves_out():
    written = _example(("ns0", {"podSelector": {}, "policyTypes": [INGRESS], "egress": [{}]}))
    with pytest.raises(SyntaxError, match="egress field but no"):
        ask(written)
    assert not ask(as_stored(written))[("ns0", EGRESS)].all_isolated


def test_the_oracle_sees_a_false_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: a verdict of PASSED where NCA finds pods open and not isolated is reported."""
    real = oracle_claims.ours

    def always_passed(world: World) -> tuple[dict[tuple[str, str], oracle_claims.Ours], dict[str, Any]]:
        isolation, defined = real(world)
        return {key: oracle_claims.Ours(ComplianceStatus.PASSED, ()) for key in isolation}, defined
    monkeypatch.setattr(oracle_claims, "ours", always_passed)
    found = disagreements(_example(("ns0", {"podSelector": {}, "ingress": [{}]})), KUBERNETES)
    assert any("(claim 1)" in f for f in found) and any("(claim 2)" in f for f in found)

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
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handler.models import ComplianceStatus
from tests.property.nca_oracle import NAMESPACE_LABELS, POD_KEY, POD_VALUES, UNNAMED, World, ask
from tests.property.oracle_claims import (EGRESS, INGRESS, KUBERNETES_BUGS, Kind, disagreements,
                                          kubernetes_peers_alone, kubernetes_policy, kubernetes_types, ours)

SUBJECTS = ("ns0", "ns1")


def as_stored(world: World) -> World:
    """The world as kube-apiserver stores it (see the module docstring): what NCA is given."""
    policies = []
    for policy in world.policies:
        stored = copy.deepcopy(dict(policy))
        spec = stored["spec"]
        spec["policyTypes"] = types = kubernetes_types(spec)
        for direction in (INGRESS, EGRESS):
            if direction not in types:
                spec.pop(direction.lower(), None)
        policies.append(stored)
    return World(world.namespaces, tuple(policies))


KUBERNETES = Kind(as_stored, kubernetes_peers_alone, KUBERNETES_BUGS)

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
                 st.fixed_dictionaries({"namespaceSelector": NAMESPACE_SELECTOR}, optional={"podSelector": POD_SELECTOR}),
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
NAMESPACE_LABELLING = st.fixed_dictionaries({}, optional={k: st.sampled_from((*v, UNNAMED))
                                                          for k, v in NAMESPACE_LABELS.items()})


@st.composite
def worlds(draw: st.DrawFn) -> World:
    namespaces = tuple((name, draw(NAMESPACE_LABELLING)) for name in SUBJECTS)
    placed = draw(st.lists(st.tuples(st.sampled_from(SUBJECTS), SPEC), min_size=1, max_size=3))
    policies = tuple(kubernetes_policy(namespace, f"p{number}", spec)
                     for number, (namespace, spec) in enumerate(placed))
    return World(namespaces, policies)


def _example(*specs: tuple[str, dict[str, Any]]) -> World:
    return World(tuple((name, {}) for name in SUBJECTS),
                 tuple(kubernetes_policy(ns, f"p{n}", spec) for n, (ns, spec) in enumerate(specs)))


# -- the property ------------------------------------------------------------------------------------------------

@settings(derandomize=True, max_examples=100, deadline=2000, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
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
# the known bugs' own examples (see KUBERNETES_BUGS): excused while the bug is present, checked once it is fixed
@example(KUBERNETES_BUGS[0].example)
@example(KUBERNETES_BUGS[1].example)
def test_networkpolicy_verdicts_agree_with_nca(world: World) -> None:
    assert disagreements(world, KUBERNETES) == [], world


# -- what the property rests on ----------------------------------------------------------------------------------

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


def test_the_oracle_sees_a_false_pass():
    """The comparison can fail: a verdict of PASSED where NCA finds open pods is reported."""
    from tests.property import oracle_claims
    open_world = _example(("ns0", {"podSelector": {}, "ingress": [{}]}))
    real = oracle_claims.ours

    def always_passed(world: World):
        isolation, defined = real(world)
        return {k: oracle_claims.Ours(ComplianceStatus.PASSED, ()) for k in isolation}, defined
    oracle_claims.ours = always_passed
    try:
        found = disagreements(open_world, KUBERNETES)
    finally:
        oracle_claims.ours = real
    assert any("(claim 1)" in f for f in found) and any("(claim 2)" in f for f in found)


@pytest.mark.parametrize("bug", KUBERNETES_BUGS, ids=lambda b: b.name)
def test_known_bug_example_is_open_per_nca(bug):
    """Each known bug's example is a real false PASS: NCA finds every pod of ns0 open to everything."""
    view = ask(as_stored(bug.example))[("ns0", bug.direction)]
    assert view.all_isolated and all(p.open_to_all_pods or p.open_to_all_addresses for p in view.pods)


@pytest.mark.parametrize("bug", [pytest.param(b, marks=pytest.mark.xfail(
    strict=True, reason=f"our bug, fixed by {b.fixed_by}: once it passes, delete its KUBERNETES_BUGS entry"))
    for b in KUBERNETES_BUGS], ids=lambda b: b.name)
def test_known_bug_is_fixed(bug):
    assert not bug.reproduces()

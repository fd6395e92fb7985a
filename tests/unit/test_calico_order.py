"""Calico policies of a tier are tried in turn (`order`, absent last, then name): the first that decides wins.

Source: felix/calc/policy_sorter.go (ExtractPolicyMetadata: no order is +Inf; PolKVLess: equal orders by
"name/namespace/kind"); Calico's Tier reference ("How Policy Is Evaluated"). docs/policy-semantics.md, Calico.
"""
from __future__ import annotations

import pytest

from handler.controls import namespace_isolation
from handler.models import ClusterInfo, ClusterRef, ClusterSnapshot, ComplianceStatus, Namespace, NetworkPolicy
from handler.policy import analyze

NS = Namespace("shop")
PASSED, FAILED, NOT_AVAILABLE = ComplianceStatus.PASSED, ComplianceStatus.FAILED, ComplianceStatus.NOT_AVAILABLE
DENY, ALLOW, PASS = {"action": "Deny"}, {"action": "Allow"}, {"action": "Pass"}


def calico(name, *ingress, order=None, tier=None, kind="NetworkPolicy", **more):
    spec = {"types": ["Ingress"], "ingress": list(ingress), **more}
    if order is not None:
        spec["order"] = order
    if tier is not None:
        spec["tier"] = tier
    return NetworkPolicy("" if kind == "GlobalNetworkPolicy" else "shop", name, spec, kind, "projectcalico.org/v3")


def ingress_status(*policies) -> ComplianceStatus:
    snap = ClusterSnapshot(ClusterInfo(ClusterRef("123456789012", "eu-west-1", "c"), "https://c.invalid", ""),
                           (NS,), tuple(policies))
    return namespace_isolation.INGRESS_CONTROL.evaluate(snap)[0].status


CASES = [
    ("a Deny policy before an Allow one, by name", [calico("p0", DENY), calico("p1", ALLOW)], PASSED),
    ("an Allow policy before a Deny one, by name", [calico("p0", ALLOW), calico("p1", DENY)], FAILED),
    ("order before name", [calico("a", ALLOW, order=20), calico("b", DENY, order=10)], PASSED),
    ("ordered before unordered", [calico("a", DENY), calico("b", ALLOW, order=1000)], FAILED),
    ("equal orders: by name", [calico("b", DENY, order=5), calico("a", ALLOW, order=5)], FAILED),
    ("integer and float orders compare as numbers", [calico("a", ALLOW, order=10.5), calico("b", DENY, order=2)],
     PASSED),
    ("a GlobalNetworkPolicy shares the default tier", [calico("g", DENY, order=1, kind="GlobalNetworkPolicy"),
                                                        calico("p", ALLOW, order=2)], PASSED),
    ("a Pass of everything first ends the tier: no default deny", [calico("p0", PASS), calico("p1", DENY)], FAILED),
    ("a policy without rules decides nothing: a later Allow admits", [calico("p0"), calico("p1", ALLOW)], FAILED),
    ("a policy without rules alone denies at the end of the tier", [calico("p0")], PASSED),
    ("a Deny of some sources decides nothing", [calico("p0", {"action": "Deny", "source": {"nets": ["10.0.0.0/8"]}}),
                                                calico("p1", ALLOW)], FAILED),
    ("a Deny of every pod leaves other sources to later policies",
     [calico("p0", {"action": "Deny", "source": {"namespaceSelector": "all()"}}), calico("p1", ALLOW)], FAILED),
    ("a Deny on some ports decides nothing", [calico("p0", {"action": "Deny", "protocol": "TCP"}),
                                              calico("p1", ALLOW)], FAILED),
    ("a Deny after an Allow of every pod in its policy decides nothing",
     [calico("p0", {"action": "Allow", "source": {"namespaceSelector": "all()"}}, DENY), calico("p1", DENY)], FAILED),
    ("a Deny after a Deny of every pod decides", [calico("p0", {"action": "Deny", "source": {
        "namespaceSelector": "all()"}}, DENY), calico("p1", ALLOW)], PASSED),
    ("a policy over some pods first decides nothing for all", [calico("p0", DENY, selector="app == 'x'"),
                                                               calico("p1", ALLOW)], FAILED),
    ("tiers are not ordered by the scanner: an allow-all in either fails",
     [calico("security.p0", DENY, tier="security"), calico("p1", ALLOW)], FAILED),
    ("each tier decides alone", [calico("security.p0", DENY, tier="security"), calico("p1", DENY),
                                 calico("p2", ALLOW)], PASSED),
    ("a policy not understood before the decision leaves it open",
     [calico("p0", {"action": "Bogus"}), calico("p1", DENY), calico("p2", ALLOW)], NOT_AVAILABLE),
    ("a policy not understood after the decision changes nothing",
     [calico("p0", DENY), calico("p1", {"action": "Bogus"})], PASSED),
]


@pytest.mark.parametrize(("case", "policies", "want"), CASES, ids=[c[0] for c in CASES])
def test_calico_policies_of_a_tier_decide_in_turn(case, policies, want):
    assert ingress_status(*policies) is want


def test_the_rank_is_order_absent_last_then_name_namespace_kind():
    assert analyze(calico("p", DENY, order=3), NS).order.rank == (3.0, "p/shop/NetworkPolicy")
    assert analyze(calico("g", DENY, kind="GlobalNetworkPolicy"), NS).order.rank == (float("inf"),
                                                                                     "g//GlobalNetworkPolicy")
    assert analyze(calico("p", tier="security"), NS).order.tier != analyze(calico("p"), NS).order.tier


@pytest.mark.parametrize("order", ["1", True, [1]])
def test_an_order_that_is_not_a_number_is_named(order):
    effect = analyze(calico("p", DENY, order=order), NS)
    assert "`order` must be a number" in effect.ingress.unknown

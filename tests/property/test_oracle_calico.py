"""Differential oracle for projectcalico.org/v3 NetworkPolicy and GlobalNetworkPolicy: our verdicts against NCA
(the claims: oracle_claims.py).

Generated: NetworkPolicies and GlobalNetworkPolicies (`namespaceSelector` absent or over the namespace labels,
`selector` absent, `all()` or over the pod label, `types` present or absent), ingress/egress rules with action
Allow or Deny, with or without `source`/`destination`, peers by `nets`, `notNets`, `selector`,
`namespaceSelector`, and `protocol` with `ports`. Not generated: the `projectcalico.org/name` namespace label and
`projectcalico.org/namespace` pod label (NCA 2.1.0 does not set them), `Pass` (its meaning depends on the tiers and
profiles after it), `notSelector`, `notProtocol`, `notPorts` and `tier`. `order` is generated (1, 2, 2.5 or absent).

NCA reads each policy with `types` as Calico stores it (`as_stored`): NCA 2.1.0 defaults them by the presence of
the `ingress`/`egress` keys, Calico by non-empty rule lists (egress rules only: Egress; both: both; otherwise
Ingress), and NCA rejects rules of a direction `types` leaves out, which Calico ignores. And NCA 2.1.0 orders
policies without `order` (or with equal ones) as it happens to read them, where Calico orders them by name (NCA's
own TODO in NetworkPolicy.__lt__): NCA is given `order` values in Calico's order (`calico_rank`).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from handler.models import ComplianceStatus
from handler.policy.engines import calico
from tests.property.nca_oracle import NAMESPACE_LABELS, POD_KEY, POD_VALUES, World, ask
from tests.property.oracle_claims import (EGRESS, INGRESS, ORACLE_SETTINGS, Kind, Regression, disagreements,
                                          with_stored_types, worlds)

SUBJECTS = ("ns0", "ns1")


def calico_policy(namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy in `namespace`, or a GlobalNetworkPolicy when it is ""."""
    if not namespace:
        return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": name},
                "spec": dict(spec)}
    return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}


def calico_types(spec: Mapping[str, Any]) -> list[str]:
    if spec.get("types"):
        return list(spec["types"])
    if spec.get("egress"):
        return [INGRESS, EGRESS] if spec.get("ingress") else [EGRESS]
    return [INGRESS]


def calico_rank(policy: Mapping[str, Any]) -> tuple[float, str]:
    """Felix's order of the policies of a tier: `order`, absent last, then "name/namespace/kind"."""
    order, meta = policy["spec"].get("order"), policy["metadata"]
    return (math.inf if order is None else order, f"{meta['name']}/{meta.get('namespace', '')}/{policy['kind']}")


def as_stored(world: World) -> World:
    """The world as Calico stores and orders it (see the module docstring): what NCA is given."""
    stored = with_stored_types(world, "types", calico_types)
    ranked = sorted(stored.policies, key=calico_rank)
    for rank, policy in enumerate(ranked):
        policy["spec"]["order"] = rank
    return stored


def _selects_all(spec: Mapping[str, Any]) -> bool:
    return str(spec.get("selector") or "all()").replace(" ", "") == "all()"


def calico_peers_alone(world: World, namespace: str, direction: str):
    """Each Allow rule of each policy that may select all of the namespace, alone in a policy selecting what it
    selects (a GlobalNetworkPolicy keeps its namespaceSelector, which may not select the namespace at all)."""
    for policy in world.policies:
        spec = policy["spec"]
        if policy["metadata"].get("namespace", namespace) != namespace or not _selects_all(spec) \
                or direction not in calico_types(spec):
            continue
        for rule in spec.get(direction.lower()) or ():
            if rule["action"] == "Allow":
                alone = copy.deepcopy(dict(policy))
                alone["spec"] = {k: v for k, v in spec.items() if k == "namespaceSelector"}
                alone["spec"].update({"types": [direction], direction.lower(): [rule]})
                yield alone


def _ingress(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return calico_policy("ns0", name, {"types": [INGRESS], "ingress": list(rules)})


# Found by this oracle, fixed since (docs/policy-semantics.md, "Differential oracle").
REGRESSIONS = (
    Regression("Calico rules in order: a Deny before an Allow of everything (fixed in 64da620)",
               World((("ns0", {}),), (_ingress("p", {"action": "Deny"}, {"action": "Allow"}),)),
               INGRESS, ComplianceStatus.FAILED),
    Regression("Calico policies in order: an earlier policy's Deny before another's Allow of everything",
               World((("ns0", {}),), (_ingress("p0", {"action": "Deny"}), _ingress("p1", {"action": "Allow"}))),
               INGRESS, ComplianceStatus.FAILED),
    Regression("Calico notNets (fixed in 64da620)",
               World((("ns0", {}),), (calico_policy("ns0", "p", {"types": [EGRESS], "egress": [
                   {"action": "Allow", "destination": {"notNets": ["169.254.169.254/32"]}}]}),)),
               EGRESS, ComplianceStatus.PASSED),
)
CALICO = Kind(as_stored, calico_peers_alone)

# -- generators --------------------------------------------------------------------------------------------------

WEB, DB = POD_VALUES
POD_SELECTOR = st.sampled_from([f"{POD_KEY} == '{WEB}'", f"{POD_KEY} == '{DB}'", f"has({POD_KEY})", f"!has({POD_KEY})",
                                f"{POD_KEY} != '{WEB}'", f"{POD_KEY} in {{'{WEB}', '{DB}'}}"])
NAMESPACE_SELECTOR = st.sampled_from(["all()", *(f"{k} == '{v}'" for k, vs in NAMESPACE_LABELS.items() for v in vs),
                                      "has(team)", "!has(team)", "team != 'a'"])
NETS = st.sampled_from([["0.0.0.0/0"], ["::/0"], ["10.0.0.0/8"], ["192.168.1.0/24"], ["0.0.0.0/0", "::/0"]])
ENTITY = st.one_of(
    st.fixed_dictionaries({"nets": NETS}),
    st.fixed_dictionaries({"notNets": st.sampled_from([["169.254.169.254/32"], ["10.0.0.0/8"]])}),
    st.fixed_dictionaries({"selector": POD_SELECTOR | st.just("all()")}),
    st.fixed_dictionaries({"namespaceSelector": NAMESPACE_SELECTOR}, optional={"selector": POD_SELECTOR}))


@st.composite
def _rule(draw: st.DrawFn, side: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Allow", "Deny"]))}
    if draw(st.booleans()):
        rule[side] = draw(ENTITY)
    if draw(st.booleans()):
        rule["protocol"] = draw(st.sampled_from(["TCP", "UDP"]))
        if draw(st.booleans()):
            rule.setdefault("destination", {})["ports"] = draw(st.sampled_from([[80], [53, 443], ["8000:8100"]]))
    return rule


RULES = {"selector": st.just("all()") | POD_SELECTOR, "order": st.sampled_from([1, 2, 2.5]),
         "types": st.sampled_from([[INGRESS], [EGRESS], [INGRESS, EGRESS]]),
         "ingress": st.lists(_rule("source"), max_size=2), "egress": st.lists(_rule("destination"), max_size=2)}
SPEC = st.fixed_dictionaries({}, optional=RULES)
GLOBAL_SPEC = st.fixed_dictionaries({}, optional={**RULES, "namespaceSelector": NAMESPACE_SELECTOR})
PLACED = st.tuples(st.sampled_from(SUBJECTS), SPEC) | st.tuples(st.just(""), GLOBAL_SPEC)


@settings(ORACLE_SETTINGS, max_examples=60)
@given(worlds(SUBJECTS, PLACED, calico_policy))
@example(World((("ns0", {}), ("ns1", {})), (calico_policy("ns0", "p", {"egress": []}),)))
# `order` before name, and a GlobalNetworkPolicy in the same tier as a NetworkPolicy
@example(World((("ns0", {}),), (calico_policy("ns0", "p0", {"order": 2, "ingress": [{"action": "Allow"}]}),
                               calico_policy("", "p1", {"order": 1, "ingress": [{"action": "Deny"}]}))))
# an Allow of everything after a Deny on some ports: FAILED, the Deny named as an exception (claim 3's "some")
@example(World((("ns0", {}),), (_ingress("p0", {"action": "Deny", "protocol": "TCP"}, {"action": "Allow"}),)))
@example(REGRESSIONS[0].world)
@example(REGRESSIONS[1].world)
@example(REGRESSIONS[2].world)
def test_calico_verdicts_agree_with_nca(world: World) -> None:
    assert disagreements(world, CALICO) == [], world


@pytest.mark.parametrize("regression", REGRESSIONS, ids=[r.name for r in REGRESSIONS])
def test_the_old_verdict_of_each_regression_is_wrong_per_nca(regression: Regression) -> None:
    assert regression.old_verdict_wrong_per_nca(CALICO.to_nca)


def test_nca_defaults_calico_types_by_the_keys():
    written = World((("ns0", {}),), (calico_policy("ns0", "p", {"ingress": [], "egress": [{"action": "Allow"}]}),))
    assert ask(written)[("ns0", INGRESS)].all_isolated  # NCA: the ingress key makes it Ingress too
    assert not ask(as_stored(written))[("ns0", INGRESS)].all_isolated  # Calico: egress rules only: Egress


def test_the_oracle_sees_a_covering_deny_read_as_narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Claim 3's allowance for rules before an Allow still fails a Deny of everything read as an exception."""
    monkeypatch.setattr(calico, "_covers", lambda before, later: False)
    world = copy.deepcopy(REGRESSIONS[0].world)  # fresh rule lists: the engine caches its reductions by identity
    assert any("(claim 3)" in found for found in disagreements(world, CALICO))

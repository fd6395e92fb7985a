"""Differential oracle for projectcalico.org/v3 NetworkPolicy and GlobalNetworkPolicy: our verdicts against NCA
(the claims: oracle_claims.py).

Generated: NetworkPolicies and GlobalNetworkPolicies (`namespaceSelector` absent or over the namespace labels,
`selector` absent, `all()` or over the pod label, `types` present or absent), ingress/egress rules with action
Allow or Deny, with or without `source`/`destination`, peers by `nets`, `notNets`, `selector`,
`namespaceSelector`, and `protocol` with `ports`. Not generated: the `projectcalico.org/name` namespace label and
`projectcalico.org/namespace` pod label (NCA 2.1.0 does not set them), `Pass` (its meaning depends on the tiers and
profiles after it), `notSelector`, `notProtocol`, `notPorts` and `order`.

NCA reads each policy with `types` as Calico stores it (`as_stored`): NCA 2.1.0 defaults them by the presence of
the `ingress`/`egress` keys, Calico by non-empty rule lists (egress rules only: Egress; both: both; otherwise
Ingress), and NCA rejects rules of a direction `types` leaves out, which Calico ignores. And NCA 2.1.0 orders
policies without `order` (or with equal ones) as it happens to read them, where Calico orders them by name (NCA's
own TODO in NetworkPolicy.__lt__): NCA is given `order` values in Calico's order.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from handler.models import ComplianceStatus
from tests.property.nca_oracle import NAMESPACE_LABELS, POD_KEY, POD_VALUES, World, ask
from tests.property.oracle_claims import (EGRESS, INGRESS, ORACLE_SETTINGS, Kind, KnownBug, disagreements,
                                          with_stored_types, worlds)

SUBJECTS = ("ns0", "ns1")
PEER_SIDE = {INGRESS: "source", EGRESS: "destination"}


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


def as_stored(world: World) -> World:
    """The world as Calico stores and orders it (see the module docstring): what NCA is given."""
    stored = with_stored_types(world, "types", calico_types)
    ranked = sorted(stored.policies, key=lambda p: p["metadata"]["name"])
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
                yield alone, rule.get(PEER_SIDE[direction])


def _actions(policies: tuple[Mapping[str, Any], ...], direction: str) -> list[str]:
    return [r["action"] for p in policies for r in p["spec"].get(direction) or ()]


def _deny_before_allow(world: World, peer: Mapping[str, Any] | None) -> bool:
    return any(_deny_then_allow(_actions((p,), d)) for p in world.policies for d in ("ingress", "egress"))


def _earlier_policy_denies(world: World, peer: Mapping[str, Any] | None) -> bool:
    in_order = tuple(sorted(world.policies, key=lambda p: p["metadata"]["name"]))
    return any(_deny_then_allow(_actions(in_order, d)) for d in ("ingress", "egress"))


def _deny_then_allow(actions: list[str]) -> bool:
    return "Deny" in actions and "Allow" in actions[actions.index("Deny"):]


def _not_nets(world: World, peer: Mapping[str, Any] | None) -> bool:
    return bool(peer and peer.get("notNets"))


CALICO_BUGS = (
    KnownBug("Calico rules in order: a Deny before an Allow of everything", "fixed on branch policy-fixes "
             "(64da620)",
             World((("ns0", {}),), (calico_policy("ns0", "p", {"types": [INGRESS], "ingress": [
                 {"action": "Deny"}, {"action": "Allow"}]}),)),
             INGRESS, _deny_before_allow, buggy=ComplianceStatus.FAILED),
    KnownBug("Calico policies in order: a Deny in an earlier policy before another's Allow of everything",
             "not fixed on any branch yet: issue 9 names rule order inside a policy, and the policies of a tier are "
             "ordered too, by `order` then name",
             World((("ns0", {}),), tuple(
                 calico_policy("ns0", name, {"types": [INGRESS], "ingress": [{"action": action}]})
                 for name, action in (("p0", "Deny"), ("p1", "Allow")))),
             INGRESS, _earlier_policy_denies, buggy=ComplianceStatus.FAILED),
    KnownBug("Calico notNets", "fixed on branch policy-fixes (64da620)",
             World((("ns0", {}),), (calico_policy("ns0", "p", {"types": [EGRESS], "egress": [
                 {"action": "Allow", "destination": {"notNets": ["169.254.169.254/32"]}}]}),)),
             EGRESS, _not_nets),
)
CALICO = Kind(as_stored, calico_peers_alone, CALICO_BUGS)

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


RULES = {"selector": st.just("all()") | POD_SELECTOR,
         "types": st.sampled_from([[INGRESS], [EGRESS], [INGRESS, EGRESS]]),
         "ingress": st.lists(_rule("source"), max_size=2), "egress": st.lists(_rule("destination"), max_size=2)}
SPEC = st.fixed_dictionaries({}, optional=RULES)
GLOBAL_SPEC = st.fixed_dictionaries({}, optional={**RULES, "namespaceSelector": NAMESPACE_SELECTOR})
PLACED = st.tuples(st.sampled_from(SUBJECTS), SPEC) | st.tuples(st.just(""), GLOBAL_SPEC)


@settings(ORACLE_SETTINGS, max_examples=60)
@given(worlds(SUBJECTS, PLACED, calico_policy))
@example(World((("ns0", {}), ("ns1", {})), (calico_policy("ns0", "p", {"egress": []}),)))
@example(CALICO_BUGS[0].example)
@example(CALICO_BUGS[1].example)
@example(CALICO_BUGS[2].example)
def test_calico_verdicts_agree_with_nca(world: World) -> None:
    assert disagreements(world, CALICO) == [], world


def test_nca_defaults_calico_types_by_the_keys():
    written = World((("ns0", {}),), (calico_policy("ns0", "p", {"ingress": [], "egress": [{"action": "Allow"}]}),))
    assert ask(written)[("ns0", INGRESS)].all_isolated  # NCA: the ingress key makes it Ingress too
    assert not ask(as_stored(written))[("ns0", INGRESS)].all_isolated  # Calico: egress rules only: Egress

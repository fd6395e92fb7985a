"""projectcalico.org/v3 (and crd.projectcalico.org/v1) NetworkPolicy and GlobalNetworkPolicy (pure)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from handler.errors import PolicyError
from handler.models import EMPTY, Namespace, NetworkPolicy
from handler.policy.calico_selector import compile_selector
from handler.policy.engines.common import (CALICO_TIER, EGRESS, INACTIVE, INGRESS, Direction, Effect, Order,
                                           Peer, Scope, _any_namespace_label, _by_identity, _direction, _effect, _guarded,
                                           _names_namespace, _namespace_labels, _Rule, _whole_internet)
from handler.policy.selectors import PRESENT, UNKNOWN, Reach, Resolver, all_of

CALICO_NAME_LABEL = "projectcalico.org/name"  # Calico's automatic label of every namespace: its name
ACTIONS = ("Allow", "Deny", "Pass", "Log")
OWN_END = {"source": "destination", "destination": "source"}  # the end of a rule that is the selected pod
PORT_MATCHES = ("protocol", "notProtocol", "icmp", "notICMP", "http")
PORTS = ("ports", "notPorts")  # at either end
ENDPOINT_MATCHES = ("nets", "notNets", "selector", "notSelector", "namespaceSelector", "serviceAccounts", "services")


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    spec = policy.spec
    if spec.get("preDNAT") or spec.get("doNotTrack"):
        return _effect(policy, False, INACTIVE, INACTIVE)  # host endpoints only
    reach = _calico_reach(spec, namespace)
    types = spec.get("types") or _default_calico_types(spec)
    counts = bool(policy.namespace) or _names_namespace(reach, lambda ns: _calico_reach(spec, ns))
    ingress = _guarded(policy, reach, lambda: _calico_direction(reach, INGRESS in types, spec.get("ingress"),
                                                                "source", bool(policy.namespace)))
    egress = _guarded(policy, reach, lambda: _calico_direction(reach, EGRESS in types, spec.get("egress"),
                                                               "destination", bool(policy.namespace)))
    return _effect(policy, counts, ingress, egress, _order(policy))


def _order(policy: NetworkPolicy) -> Order:
    """Felix sorts the policies of a tier by `order`, absent last (+Inf), ties broken by "name/namespace/kind"
    (felix/calc/policy_sorter.go, ExtractPolicyMetadata and PolKVLess); the tier is `spec.tier`, else default."""
    order = policy.spec.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))):
        raise PolicyError(f"`order` must be a number, got {order!r}")
    tier = policy.spec.get("tier") or "default"
    return Order(CALICO_TIER + str(tier), (math.inf if order is None else float(order),
                                           f"{policy.name}/{policy.namespace}/{policy.kind}"))


def _calico_reach(spec: Mapping[str, Any], namespace: Namespace) -> Reach:
    namespaces = compile_selector(spec.get("namespaceSelector"))(_calico_namespace_resolver(namespace))
    endpoints = compile_selector(spec.get("selector"))(_calico_endpoint_resolver(namespace))
    accounts = Reach.SOME if spec.get("serviceAccountSelector") else Reach.ALL
    return all_of((namespaces, endpoints, accounts))


def _calico_namespace_resolver(namespace: Namespace | None) -> Resolver:
    """A namespace's labels for a namespaceSelector, Calico's `projectcalico.org/name` among them; of a namespace
    the scanner knows nothing of (None), the two name labels every namespace carries."""
    if namespace is None:
        return lambda key: PRESENT if key == CALICO_NAME_LABEL else _any_namespace_label(key)
    labels = {**_namespace_labels(namespace), CALICO_NAME_LABEL: namespace.name}
    return lambda key: labels.get(key)


def _calico_endpoint_resolver(namespace: Namespace | None) -> Resolver:
    """An endpoint's labels for a selector: `projectcalico.org/namespace` and `pcns.<namespace label>` are known
    of `namespace`'s pods (or present on a pod of any namespace, None); the rest are pod labels."""
    namespace_label = _calico_namespace_resolver(namespace)

    def resolve(key: str) -> Any:
        if key == "projectcalico.org/namespace":
            return namespace.name if namespace else PRESENT
        if key.startswith("pcns."):
            return namespace_label(key[len("pcns."):])
        return UNKNOWN
    return resolve


ANY_NAMESPACE, ANY_ENDPOINT = _calico_namespace_resolver(None), _calico_endpoint_resolver(None)


def _default_calico_types(spec: Mapping[str, Any]) -> list[str]:
    # Calico: egress rules only -> Egress; egress and ingress rules -> both; otherwise Ingress.
    if spec.get("egress"):
        return [INGRESS, EGRESS] if spec.get("ingress") else [EGRESS]
    return [INGRESS]


class _Match(NamedTuple):
    """What traffic one rule matches, as far as isolation needs it."""

    peer: Peer  # the other end: source of an ingress rule, destination of an egress rule
    all_ports: bool  # no protocol, port, ICMP or HTTP match, positive or negated
    whole: bool  # nothing narrows it but its peer's scope: no exception, no match on the pod's own end


UNREACHED = _Rule(Scope.LIMITED, False, allows=False)  # a rule no traffic gets to, or one that decides nothing


def _calico_direction(reach: Reach, active: bool, rules: Sequence[Any] | None, peer_key: str,
                      namespaced: bool) -> Direction:
    if not active:
        return INACTIVE
    every_pod = _ordered_rules(rules or (), peer_key, namespaced)  # the same in every namespace: reduced once
    return every_pod._replace(reach=reach, isolates=every_pod.isolates and reach is not Reach.NONE)


@_by_identity
def _ordered_rules(rules: Sequence[Any], peer_key: str, namespaced: bool) -> Direction:
    """The direction as it is for pods the policy selects. Rules in order, the first match wins: an Allow admits
    what no earlier Deny or Pass took; a Pass hands what it matches to the next tier (or to the profile, which
    allows), so a Pass of every source on all ports leaves the pods without default deny here; whatever no rule
    matches is denied at the end of the tier. A Deny of everything before any rule of every pod on all ports
    decides for the rest of the tier (`denies_everything`): later policies of the tier get nothing."""
    name = "ingress" if peer_key == "source" else "egress"
    reduced: list[_Rule] = []
    earlier: list[tuple[_Match, str]] = []  # the Deny and Pass rules before, and what they take, for the finding
    passes = denies = wide_before = False
    for number, rule in enumerate(rules, 1):
        action = rule.get("action")
        if action not in ACTIONS:
            raise PolicyError(f"{name} rule {number}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
        match = _calico_match(rule, peer_key, namespaced)
        if action == "Log" or any(_covers(before, match) for before, _ in earlier):
            reduced.append(UNREACHED)
            continue
        wide = match.peer.scope >= Scope.ALL_PODS and match.all_ports
        if action == "Allow":
            taken = tuple(what for _, what in earlier)
            reduced.append(_Rule(match.peer.scope, match.all_ports, excepted=match.peer.excepted + taken))
        else:
            reduced.append(UNREACHED)
            passes = passes or (action == "Pass" and wide)
            denies = denies or (action == "Deny" and not wide_before and match.whole and match.all_ports
                                and match.peer.scope is Scope.EVERYWHERE)
            earlier.append((match, f"what {name} rule {number} {'denies' if action == 'Deny' else 'passes'}"))
        wide_before = wide_before or (wide and action != "Deny")  # an Allow or Pass of every pod came first
    return _direction(Reach.ALL, not passes, reduced, name)._replace(passes_everything=passes,
                                                                     denies_everything=denies)


def _covers(before: _Match, later: _Match) -> bool:
    """An earlier rule that matches all the traffic of a later one leaves it nothing."""
    return before.whole and before.all_ports and before.peer.scope >= later.peer.scope >= Scope.ALL_PODS


def _calico_match(rule: Mapping[str, Any], peer_key: str, namespaced: bool) -> _Match:
    peer, own = rule.get(peer_key) or EMPTY, rule.get(OWN_END[peer_key]) or EMPTY
    # map over dict.get, not generators: this runs for every rule of a global policy in every namespace
    all_ports = not (any(map(rule.get, PORT_MATCHES)) or any(map(peer.get, PORTS)) or any(map(own.get, PORTS)))
    reached = _calico_peer(peer, namespaced)
    whole = not (reached.excepted or rule.get("ipVersion") or any(map(own.get, ENDPOINT_MATCHES)))
    return _Match(reached, all_ports, whole)


def _calico_peer(peer: Mapping[str, Any], namespaced: bool) -> Peer:
    """The positive matches of an EntityRule are ANDed (none: every address); `notNets` and `notSelector` take
    some out, which the finding names but which never narrow the scope (as an ipBlock's `except`)."""
    excepted = tuple(map(str, peer.get("notNets") or ()))
    if peer.get("notSelector"):
        excepted += (f"endpoints matching {peer['notSelector']}",)
    scopes = []
    if peer.get("nets"):
        scopes.append(Scope.EVERYWHERE if any(_whole_internet(n) for n in peer["nets"]) else Scope.LIMITED)
    # Any selector field of a namespaced policy's rule, notSelector too, keeps it to the policy's namespace unless
    # it has a namespaceSelector (libcalico-go updateprocessors/rules.go, getEndpointSelector).
    if peer.get("selector") or peer.get("namespaceSelector") or (namespaced and peer.get("notSelector")):
        scopes.append(_calico_endpoints_scope(peer, namespaced))
    if peer.get("serviceAccounts") or peer.get("services"):
        scopes.append(Scope.LIMITED)
    return Peer(min(scopes, default=Scope.EVERYWHERE), excepted)


def _calico_endpoints_scope(peer: Mapping[str, Any], namespaced: bool) -> Scope:
    """Every pod of the cluster when the selectors hold for a pod of any namespace: `all()`, `global()` as an
    endpoint selector, `has(projectcalico.org/name)` as a namespace selector..."""
    if peer.get("namespaceSelector"):
        namespaces = compile_selector(peer["namespaceSelector"], rule_namespace_selector=True)(ANY_NAMESPACE)
    else:
        namespaces = Reach.NONE if namespaced else Reach.ALL  # own namespace only, or all of them
    endpoints = compile_selector(peer.get("selector"))(ANY_ENDPOINT)
    return Scope.ALL_PODS if all_of((namespaces, endpoints)) is Reach.ALL else Scope.LIMITED

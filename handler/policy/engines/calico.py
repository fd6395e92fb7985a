"""projectcalico.org/v3 (and crd.projectcalico.org/v1) NetworkPolicy and GlobalNetworkPolicy (pure)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from handler.models import Namespace, NetworkPolicy
from handler.policy.calico_selector import compile_selector
from handler.policy.engines.common import (EGRESS, INACTIVE, INGRESS, Direction, Effect, Scope, _direction,
                                           _effect, _guarded, _names_namespace, _namespace_labels, _Rule,
                                           _whole_internet)
from handler.policy.selectors import UNKNOWN, Reach, Resolver, all_of


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
    return _effect(policy, counts, ingress, egress)


def _calico_reach(spec: Mapping[str, Any], namespace: Namespace) -> Reach:
    labels = {**_namespace_labels(namespace), "projectcalico.org/name": namespace.name}
    namespaces = compile_selector(spec.get("namespaceSelector"))(lambda key: labels.get(key))
    endpoints = compile_selector(spec.get("selector"))(_calico_endpoint_resolver(namespace))
    accounts = Reach.SOME if spec.get("serviceAccountSelector") else Reach.ALL
    return all_of((namespaces, endpoints, accounts))


def _calico_endpoint_resolver(namespace: Namespace) -> Resolver:
    labels = _namespace_labels(namespace)

    def resolve(key: str) -> Any:
        if key == "projectcalico.org/namespace":
            return namespace.name
        if key.startswith("pcns."):
            return labels.get(key[len("pcns."):])
        return UNKNOWN
    return resolve


def _default_calico_types(spec: Mapping[str, Any]) -> list[str]:
    # Calico: egress rules only -> Egress; egress and ingress rules -> both; otherwise Ingress.
    if spec.get("egress"):
        return [INGRESS, EGRESS] if spec.get("ingress") else [EGRESS]
    return [INGRESS]


def _calico_direction(reach: Reach, active: bool, rules: Sequence[Any] | None, peer_key: str,
                      namespaced: bool) -> Direction:
    if not active:
        return INACTIVE
    reduced = [_calico_rule(rule, peer_key, namespaced) for rule in rules or ()]
    return _direction(reach, True, reduced, "ingress" if peer_key == "source" else "egress")


def _calico_rule(rule: Mapping[str, Any], peer_key: str, namespaced: bool) -> _Rule:
    peer = rule.get(peer_key) or {}
    ports_side = rule.get("destination") or {}
    all_ports = not (rule.get("protocol") or ports_side.get("ports") or rule.get("icmp") or rule.get("http"))
    return _Rule(_calico_scope(peer, namespaced), all_ports, allows=rule.get("action") == "Allow")


def _calico_scope(peer: Mapping[str, Any], namespaced: bool) -> Scope:
    narrowing = {k: v for k, v in peer.items() if k not in ("ports", "notPorts")}
    if not narrowing:
        return Scope.EVERYWHERE
    if set(narrowing) == {"nets"} and any(_whole_internet(n) for n in narrowing["nets"]):
        return Scope.EVERYWHERE
    selector, namespaces = narrowing.get("selector"), narrowing.get("namespaceSelector")
    every_endpoint = selector is None or _is_all(selector)
    # In a namespaced policy a bare selector stays in the policy's namespace; in a global one it spans them all.
    every_namespace = _is_all(namespaces) if namespaced else namespaces is None or _is_all(namespaces)
    if set(narrowing) <= {"selector", "namespaceSelector"} and every_endpoint and every_namespace:
        return Scope.ALL_PODS
    return Scope.LIMITED


def _is_all(selector: str | None) -> bool:
    return selector is not None and selector.replace(" ", "") in ("all()", "")

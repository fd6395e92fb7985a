"""cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy: what one policy does to one namespace."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.models import Namespace, NetworkPolicy
from handler.policy.engines.common import (INACTIVE, Direction, Effect, Scope, _direction, _effect, _guarded, _merge,
                                           _names_namespace, _namespace_labels, _Rule, _whole_internet)
from handler.policy.selectors import UNKNOWN, Reach, Resolver, is_empty, selector_reach

CILIUM_NAMESPACE_KEY = "io.kubernetes.pod.namespace"
CILIUM_NAMESPACE_LABELS = "io.cilium.k8s.namespace.labels."


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    rules = list(policy.spec.get("specs") or ()) or [policy.spec]
    # A namespaced policy only ever selects endpoints of its own namespace, whatever its selector says.
    resolve = _cilium_resolver(namespace)
    clusterwide = policy.namespace == ""
    selecting = [(rule, _cilium_reach(rule, resolve)) for rule in rules if _selects_pods(rule)]
    # A rule that cannot be interpreted leaves open only the direction it is in, for the pods it selects.
    ingress = [_guarded(policy, reach, lambda rule=rule, reach=reach: _cilium_direction(
        rule, reach, clusterwide, "ingress", "fromEndpoints", "fromEntities", ("fromCIDR", "fromCIDRSet")))
        for rule, reach in selecting]
    egress = [_guarded(policy, reach, lambda rule=rule, reach=reach: _cilium_direction(
        rule, reach, clusterwide, "egress", "toEndpoints", "toEntities", ("toCIDR", "toCIDRSet")))
        for rule, reach in selecting]
    reach = max((d.reach for d in ingress + egress), default=Reach.NONE)
    counts = not clusterwide or _names_namespace(
        reach, lambda ns: max((_cilium_reach(r, _cilium_resolver(ns)) for r in rules if _selects_pods(r)),
                              default=Reach.NONE))
    return _effect(policy, counts, _merge(ingress), _merge(egress))


def _selects_pods(rule: Mapping[str, Any]) -> bool:
    return "nodeSelector" not in rule  # host policies select nodes, not pods


def _cilium_reach(rule: Mapping[str, Any], resolve: Resolver) -> Reach:
    return selector_reach(rule.get("endpointSelector") or {}, resolve)


def _cilium_resolver(namespace: Namespace) -> Resolver:
    def resolve(key: str) -> Any:
        source, _, bare = key.rpartition(":")
        if source == "reserved":
            return None  # reserved identities (host, health, world...) are never pods
        if bare == CILIUM_NAMESPACE_KEY:
            return namespace.name
        if bare.startswith(CILIUM_NAMESPACE_LABELS):
            return _namespace_labels(namespace).get(bare[len(CILIUM_NAMESPACE_LABELS):])
        return UNKNOWN
    return resolve


def _cilium_direction(rule: Mapping[str, Any], reach: Reach, clusterwide: bool, name: str,
                      endpoints_key: str, entities_key: str, cidr_keys: tuple[str, str]) -> Direction:
    allows, denies = rule.get(name) or [], rule.get(f"{name}Deny") or []
    if not allows and not denies:
        return INACTIVE
    default_deny = (rule.get("enableDefaultDeny") or {}).get(name, True) is not False
    reduced = [_cilium_rule(r, clusterwide, endpoints_key, entities_key, cidr_keys) for r in allows]
    return _direction(reach, default_deny, reduced, name)


def _cilium_rule(rule: Mapping[str, Any], clusterwide: bool, endpoints_key: str, entities_key: str,
                 cidr_keys: tuple[str, str]) -> _Rule:
    entities = {str(e).lower() for e in rule.get(entities_key) or ()}
    cidrs = [c for c in rule.get(cidr_keys[0]) or ()] + [c.get("cidr") for c in rule.get(cidr_keys[1]) or ()
                                                          if not c.get("except")]
    endpoints = rule.get(endpoints_key)
    has_peer = bool(entities or cidrs or endpoints or any(k.startswith(("from", "to")) and k != "toPorts"
                                                          for k in rule))
    all_ports = not rule.get("toPorts") and not rule.get("icmps")
    if not has_peer:
        # No L3 peer: with toPorts it admits every source on those ports; an empty rule `{}` admits nothing.
        return _Rule(Scope.EVERYWHERE, False, allows=not all_ports)
    scope = Scope.LIMITED
    if "all" in entities or any(_whole_internet(c) for c in cidrs):
        scope = Scope.EVERYWHERE
    elif "cluster" in entities or (clusterwide and any(is_empty(e) for e in endpoints or ())):
        scope = Scope.ALL_PODS  # in a namespaced policy, fromEndpoints {} means its own namespace only
    return _Rule(scope, all_ports)

"""cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy: what one policy does to one namespace."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from handler.errors import PolicyError
from handler.models import CidrGroup, Namespace, NetworkPolicy
from handler.policy.engines.common import (INACTIVE, LIMITED, Direction, Effect, Peer, Scope, _any_namespace_label,
                                           _cidr_peer, _direction, _effect, _guarded, _merge, _names_namespace,
                                           _namespace_labels, _Rule, _widest)
from handler.policy.selectors import PRESENT, UNKNOWN, Reach, Resolver, matches, selector_reach

CILIUM_NAMESPACE_KEY = "io.kubernetes.pod.namespace"
CILIUM_NAMESPACE_LABELS = "io.cilium.k8s.namespace.labels."
# The keys that name the pod's namespace in a selector (Cilium: podPrefixLbl, podAnyPrefixLbl, and no source).
NAMESPACE_KEYS = {CILIUM_NAMESPACE_KEY, f"k8s:{CILIUM_NAMESPACE_KEY}", f"any:{CILIUM_NAMESPACE_KEY}"}
SECTIONS = ("ingress", "ingressDeny", "egress", "egressDeny")
CIDR_SETS = ("fromCIDRSet", "toCIDRSet")


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    rules = [rule for rule in _rules(policy.spec) if _selects_pods(rule)]
    # A namespaced policy only ever selects endpoints of its own namespace, whatever its selector says.
    resolve = _cilium_resolver(namespace)
    clusterwide = policy.namespace == ""
    groups = policy.cidr_groups
    selecting = [(rule, _cilium_reach(rule, resolve)) for rule in rules]
    # A rule that cannot be interpreted leaves open only the direction it is in, for the pods it selects.
    ingress = [_guarded(policy, reach, lambda rule=rule, reach=reach: _cilium_direction(
        rule, reach, clusterwide, groups, "ingress", "fromEndpoints", "fromEntities", ("fromCIDR", "fromCIDRSet")))
        for rule, reach in selecting]
    egress = [_guarded(policy, reach, lambda rule=rule, reach=reach: _cilium_direction(
        rule, reach, clusterwide, groups, "egress", "toEndpoints", "toEntities", ("toCIDR", "toCIDRSet")))
        for rule, reach in selecting]
    reach = max((d.reach for d in ingress + egress), default=Reach.NONE)
    counts = not clusterwide or _names_namespace(
        reach, lambda ns: max((_cilium_reach(r, _cilium_resolver(ns)) for r in rules), default=Reach.NONE))
    return _effect(policy, counts, _merge(ingress), _merge(egress))


def _rules(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """`spec` and `specs` both apply when an object has both, as Cilium parses them (the reader keeps `specs`
    inside `spec`); a `spec` that holds nothing but `specs` is no rule."""
    own = {key: value for key, value in spec.items() if key != "specs"}
    return ([own] if own or not spec.get("specs") else []) + list(spec.get("specs") or ())


def names_cidr_groups(spec: Mapping[str, Any]) -> bool:
    """Whether any rule of the policy refers to CiliumCIDRGroups (`cidrGroupRef`, `cidrGroupSelector`). Asked
    while reading: parts of a malformed spec are passed over here, and reported by `analyze`."""
    return any("cidrGroupRef" in entry or "cidrGroupSelector" in entry for entry in _cidr_set_entries(spec))


def _cidr_set_entries(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for rule in [spec, *_mappings(spec.get("specs"))]:
        for section in SECTIONS:
            for peer_rule in _mappings(rule.get(section)):
                for key in CIDR_SETS:
                    yield from _mappings(peer_rule.get(key))


def _mappings(items: Any) -> list[Mapping[str, Any]]:
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def _selects_pods(rule: Mapping[str, Any]) -> bool:
    return "nodeSelector" not in rule  # host policies select nodes, not pods


def _cilium_reach(rule: Mapping[str, Any], resolve: Resolver) -> Reach:
    return selector_reach(rule.get("endpointSelector") or {}, resolve)


def _cilium_resolver(namespace: Namespace | None) -> Resolver:
    """Endpoint labels as far as the scanner knows them: those of `namespace`'s pods, or (None) of a pod of any
    namespace, which carries its namespace's name whatever it is."""
    labels = _namespace_labels(namespace) if namespace else {}

    def resolve(key: str) -> Any:
        source, _, bare = key.rpartition(":")
        if source == "reserved":
            return None  # reserved identities (host, health, world...) are never pods
        if bare == CILIUM_NAMESPACE_KEY:
            return namespace.name if namespace else PRESENT
        if bare.startswith(CILIUM_NAMESPACE_LABELS):
            label = bare[len(CILIUM_NAMESPACE_LABELS):]
            return labels.get(label) if namespace else _any_namespace_label(label)
        return UNKNOWN
    return resolve


ANY_POD = _cilium_resolver(None)


def _cilium_direction(rule: Mapping[str, Any], reach: Reach, clusterwide: bool,
                      groups: Mapping[str, CidrGroup] | None, name: str, endpoints_key: str, entities_key: str,
                      cidr_keys: tuple[str, str]) -> Direction:
    allows, denies = rule.get(name) or [], rule.get(f"{name}Deny") or []
    if not allows and not denies:
        return INACTIVE
    default_deny = (rule.get("enableDefaultDeny") or {}).get(name, True) is not False
    try:
        reduced = [_cilium_rule(r, clusterwide, groups, endpoints_key, entities_key, cidr_keys) for r in allows]
    except PolicyError as error:
        raise PolicyError(f"{name}: {error}") from error
    return _direction(reach, default_deny, reduced, name)


def _cilium_rule(rule: Mapping[str, Any], clusterwide: bool, groups: Mapping[str, CidrGroup] | None,
                 endpoints_key: str, entities_key: str, cidr_keys: tuple[str, str]) -> _Rule:
    entities = {str(e).lower() for e in rule.get(entities_key) or ()}
    endpoints = rule.get(endpoints_key) or ()
    has_peer = bool(entities or endpoints or any(k.startswith(("from", "to")) and k != "toPorts" for k in rule))
    all_ports = not rule.get("toPorts") and not rule.get("icmps")
    if not has_peer:
        # No L3 peer: with toPorts it admits every source on those ports; an empty rule `{}` admits nothing.
        return _Rule(Scope.EVERYWHERE, False, allows=not all_ports)
    peers = [Peer(Scope.EVERYWHERE) if "all" in entities else Peer(Scope.ALL_PODS) if "cluster" in entities
             else LIMITED]
    peers += [_endpoint_peer(selector, clusterwide) for selector in endpoints]
    peers += [_cidr_peer(cidr) for cidr in rule.get(cidr_keys[0]) or ()]
    peers += [peer for entry in rule.get(cidr_keys[1]) or () for peer in _cidr_set_peers(entry, groups)]
    widest = _widest(peers)
    return _Rule(widest.scope, all_ports, excepted=widest.excepted)


def _endpoint_peer(selector: Mapping[str, Any], clusterwide: bool) -> Peer:
    """Every pod of the cluster when the selector holds for a pod of any namespace. In a namespaced policy Cilium
    adds `k8s:io.kubernetes.pod.namespace=<its namespace>` unless the selector names that key itself, so `{}`
    there is its own namespace only."""
    if not clusterwide and not _names_namespace_key(selector or {}):
        return LIMITED
    return Peer(Scope.ALL_PODS) if selector_reach(selector or {}, ANY_POD) is Reach.ALL else LIMITED


def _names_namespace_key(selector: Mapping[str, Any]) -> bool:
    keys = [*(selector.get("matchLabels") or {}), *(e.get("key") for e in selector.get("matchExpressions") or ())]
    return any(str(key) in NAMESPACE_KEYS for key in keys)


def _cidr_set_peers(entry: Mapping[str, Any], groups: Mapping[str, CidrGroup] | None) -> list[Peer]:
    """One CIDRRule: a `cidr` with its `except`, or the CIDRs of the CiliumCIDRGroups it names (Cilium supports
    no `except` with a group)."""
    if "cidr" in entry:
        return [_cidr_peer(entry["cidr"], entry.get("except"))]
    if groups is None:
        raise PolicyError(f"{_group_reference(entry)}: the cluster's CiliumCIDRGroups could not be read "
                          "(the kind is not served, or RBAC forbids listing it)")
    if "cidrGroupRef" in entry:
        group = groups.get(str(entry["cidrGroupRef"]))
        if group is None:  # Cilium would match no address; a typo is more likely than intent: say so
            raise PolicyError(f"{_group_reference(entry)}: no CiliumCIDRGroup of that name")
        named = [group]
    elif "cidrGroupSelector" in entry:
        named = [g for g in groups.values() if matches(entry["cidrGroupSelector"], g.labels)]
    else:
        raise PolicyError(f"a CIDR rule needs cidr, cidrGroupRef or cidrGroupSelector, got {dict(entry)!r}")
    return [_cidr_peer(cidr) for group in named for cidr in group.cidrs]


def _group_reference(entry: Mapping[str, Any]) -> str:
    if "cidrGroupRef" in entry:
        return f"cidrGroupRef {entry['cidrGroupRef']!r}"
    return f"cidrGroupSelector {entry.get('cidrGroupSelector')!r}"

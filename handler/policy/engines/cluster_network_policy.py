"""policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy (pure)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from handler.errors import PolicyError
from handler.models import Namespace, NetworkPolicy
from handler.policy.engines.common import (INACTIVE, Direction, Effect, Scope, _direction, _effect,
                                           _namespace_labels, _pod_labels, _Rule, _whole_internet)
from handler.policy.selectors import Reach, all_of, is_empty, selector_reach


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    spec = policy.spec
    reach = _admin_reach(spec.get("subject") or {}, namespace)
    baseline = policy.kind == "BaselineAdminNetworkPolicy"
    return _effect(policy, reach is not Reach.NONE,
                   _admin_direction(reach, spec.get("ingress"), "from", baseline, "ingress"),
                   _admin_direction(reach, spec.get("egress"), "to", baseline, "egress"))


def _admin_reach(subject: Mapping[str, Any], namespace: Namespace) -> Reach:
    labels = _namespace_labels(namespace)
    if "namespaces" in subject:
        return selector_reach(subject["namespaces"] or {}, lambda key: labels.get(key))
    pods = _pods_peer(subject)
    return all_of((selector_reach(pods["namespaceSelector"] or {}, lambda key: labels.get(key)),
                   selector_reach(pods.get("podSelector") or {}, _pod_labels)))


def _admin_direction(reach: Reach, rules: Sequence[Any] | None, peers_key: str, baseline: bool,
                     name: str) -> Direction:
    if not rules or reach is Reach.NONE:
        return INACTIVE
    reduced = [_Rule(max((_admin_peer_scope(p) for p in rule.get(peers_key) or ()), default=Scope.LIMITED),
                     not rule.get("ports"), allows=rule.get("action") == "Allow") for rule in rules]
    # No implicit deny here: only a Deny rule for every pod on every port isolates.
    isolates = any(r.scope >= Scope.ALL_PODS and r.all_ports for rule, r in zip(rules, reduced)
                   if rule.get("action") == "Deny")
    direction = _direction(reach, isolates, reduced, name)
    return Direction(direction.reach, direction.isolates, direction.open_rules, direction.admits_everything,
                     opens_over_isolation=not baseline)


def _admin_peer_scope(peer: Mapping[str, Any]) -> Scope:
    if "networks" in peer:
        return Scope.EVERYWHERE if any(_whole_internet(n) for n in peer["networks"] or ()) else Scope.LIMITED
    if "namespaces" in peer:
        return Scope.ALL_PODS if is_empty(peer["namespaces"] or {}) else Scope.LIMITED
    pods = _pods_peer(peer)
    if is_empty(pods["namespaceSelector"] or {}) and is_empty(pods.get("podSelector") or {}):
        return Scope.ALL_PODS
    return Scope.LIMITED


def _pods_peer(holder: Mapping[str, Any]) -> Mapping[str, Any]:
    """`pods` of a subject or peer; its namespaceSelector is required by the CRD schema."""
    pods = holder.get("pods")
    if not isinstance(pods, Mapping) or "namespaceSelector" not in pods:
        raise PolicyError(f"`pods` needs a namespaceSelector (the CRD requires one), got {pods!r}")
    return pods

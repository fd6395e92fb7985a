"""networking.k8s.io/v1 NetworkPolicy: what one policy does to the pods of its own namespace (pure)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from handler.models import Namespace, NetworkPolicy
from handler.policy.engines.common import (EGRESS, INACTIVE, INGRESS, Direction, Effect, Scope, _direction,
                                           _effect, _guarded, _pod_labels, _Rule, _whole_internet)
from handler.policy.selectors import Reach, is_empty, selector_reach


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    return namespaced_effect(policy, _default_k8s_types)


def namespaced_effect(policy: NetworkPolicy, default_types: Callable[[Mapping[str, Any]], list[str]]) -> Effect:
    """A NetworkPolicy-shaped spec (podSelector, policyTypes, ingress `from`, egress `to`) in its own namespace."""
    spec = policy.spec
    reach = selector_reach(spec.get("podSelector") or {}, _pod_labels)
    types = spec.get("policyTypes") or default_types(spec)
    return _effect(policy, True,
                   _guarded(policy, reach, lambda: _k8s_direction(reach, INGRESS in types, spec.get("ingress"),
                                                                  "from", "ingress")),
                   _guarded(policy, reach, lambda: _k8s_direction(reach, EGRESS in types, spec.get("egress"),
                                                                  "to", "egress")))


def _default_k8s_types(spec: Mapping[str, Any]) -> list[str]:
    # kube-apiserver's defaulting: Ingress always; Egress only when there are egress rules (`egress: []` is none).
    return [INGRESS, EGRESS] if spec.get("egress") else [INGRESS]


def _k8s_direction(reach: Reach, active: bool, rules: Sequence[Any] | None, peers_key: str, name: str) -> Direction:
    if not active:
        return INACTIVE
    reduced = [_Rule(_k8s_scope(rule.get(peers_key)), not rule.get("ports")) for rule in rules or ()]
    return _direction(reach, True, reduced, name)


def _k8s_scope(peers: Sequence[Mapping[str, Any]] | None) -> Scope:
    if not peers:  # no `from`/`to`: every source or destination
        return Scope.EVERYWHERE
    return max(map(_k8s_peer_scope, peers), default=Scope.LIMITED)


def _k8s_peer_scope(peer: Mapping[str, Any]) -> Scope:
    block = peer.get("ipBlock")
    if block is not None:
        return Scope.EVERYWHERE if _whole_internet(block.get("cidr"), block.get("except")) else Scope.LIMITED
    namespaces = peer.get("namespaceSelector")
    # namespaceSelector {} alone, or with podSelector {}: every pod of every namespace.
    if namespaces is not None and is_empty(namespaces) and is_empty(peer.get("podSelector") or {}):
        return Scope.ALL_PODS
    return Scope.LIMITED

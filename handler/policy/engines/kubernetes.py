"""networking.k8s.io/v1 NetworkPolicy: what one policy does to the pods of its own namespace (pure)."""
from __future__ import annotations

import marshal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from handler.models import Namespace, NetworkPolicy
from handler.policy.engines.common import (EGRESS, INACTIVE, INGRESS, LIMITED, Direction, Effect, Peer, Scope,
                                           _any_namespace_label, _cidr_peer, _direction, _effect, _guarded,
                                           _pod_labels, _Rule, _widest)
from handler.policy.selectors import Reach, all_of, selector_reach


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    """A large cluster's namespaces hold the same few policies (a chart's default deny, its DNS egress): a policy's
    effect rests on its name and spec alone, so it is made once for them all (most of an evaluation's time was
    analysing the same spec again, bench/scan_one_cluster.py). Not when a direction could not be interpreted: the
    reason names the policy's namespace."""
    try:  # marshal: 5x faster than repr, and equal bytes are equal JSON values
        key = (policy.api_version, policy.name, marshal.dumps(policy.spec))
    except ValueError:  # not plain JSON values (a spec made in code): analysed each time
        return namespaced_effect(policy, _default_k8s_types)
    effect = _ANALYZED.get(key)
    if effect is None:
        effect = namespaced_effect(policy, _default_k8s_types)
        if not (effect.ingress.unknown or effect.egress.unknown):
            if len(_ANALYZED) >= MAX_ANALYZED:
                _ANALYZED.clear()
            _ANALYZED[key] = effect
    return effect


MAX_ANALYZED = 4096  # distinct (name, spec) pairs kept; a cluster's namespaces rarely hold more
_ANALYZED: dict[tuple[str, str, bytes], Effect] = {}


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
    return _direction(reach, True, [_k8s_rule(rule, peers_key) for rule in rules or ()], name)


def _k8s_rule(rule: Mapping[str, Any], peers_key: str) -> _Rule:
    peer = _k8s_peers(rule.get(peers_key))
    return _Rule(peer.scope, not rule.get("ports"), excepted=peer.excepted)


def _k8s_peers(peers: Sequence[Mapping[str, Any]] | None) -> Peer:
    if not peers:  # no `from`/`to`: every source or destination
        return Peer(Scope.EVERYWHERE)
    return _widest(map(_k8s_peer, peers))


def _k8s_peer(peer: Mapping[str, Any]) -> Peer:
    block = peer.get("ipBlock")
    if block is not None:
        return _cidr_peer(block.get("cidr"), block.get("except"))
    namespaces = peer.get("namespaceSelector")
    if namespaces is None:  # podSelector alone: the policy's own namespace
        return LIMITED
    # Every pod of the cluster when the selectors hold for any pod of any namespace: `{}`, and also
    # `kubernetes.io/metadata.name Exists`, which kube-apiserver makes true of every namespace.
    every = all_of((selector_reach(namespaces, _any_namespace_label),
                    selector_reach(peer.get("podSelector") or {}, _pod_labels)))
    return Peer(Scope.ALL_PODS) if every is Reach.ALL else LIMITED

"""One pure analyzer per policy API, and the one table that says which analyzer reads which kind.

A new kind is a new module here with an `analyze(policy, namespace) -> Effect` and one line in ANALYZERS.
"""
from __future__ import annotations

from handler.errors import PolicyError
from handler.models import Namespace, NetworkPolicy
from handler.policy.engines import application_network_policy, calico, cilium, cluster_network_policy, kubernetes
from handler.policy.engines.common import (EGRESS, INGRESS, UNINTERPRETABLE, Analyzer, Direction, Effect, _effect,
                                           label, why)
from handler.policy.selectors import Reach

ANALYZERS: dict[tuple[str, str], Analyzer] = {
    ("networking.k8s.io", "NetworkPolicy"): kubernetes.analyze,
    ("cilium.io", "CiliumNetworkPolicy"): cilium.analyze,
    ("cilium.io", "CiliumClusterwideNetworkPolicy"): cilium.analyze,
    ("projectcalico.org", "NetworkPolicy"): calico.analyze,
    ("projectcalico.org", "GlobalNetworkPolicy"): calico.analyze,
    ("crd.projectcalico.org", "NetworkPolicy"): calico.analyze,
    ("crd.projectcalico.org", "GlobalNetworkPolicy"): calico.analyze,
    ("policy.networking.k8s.io", "AdminNetworkPolicy"): cluster_network_policy.analyze,
    ("policy.networking.k8s.io", "BaselineAdminNetworkPolicy"): cluster_network_policy.analyze,
    ("policy.networking.k8s.io", "ClusterNetworkPolicy"): cluster_network_policy.analyze,
    ("networking.k8s.aws", "ClusterNetworkPolicy"): cluster_network_policy.analyze,
    ("networking.k8s.aws", "ApplicationNetworkPolicy"): application_network_policy.analyze,
}

__all__ = ["ANALYZERS", "EGRESS", "INGRESS", "Direction", "Effect", "analyze", "label"]


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect | None:
    """The policy's effect on `namespace`, or None when it cannot apply there (a namespaced policy elsewhere)."""
    group = policy.api_version.split("/")[0]
    analyzer = ANALYZERS.get((group, policy.kind))
    if analyzer is None:
        raise PolicyError(f"{label(policy)}: no semantics for {policy.api_version} {policy.kind}")
    if policy.namespace and policy.namespace != namespace.name:
        return None
    try:
        return analyzer(policy, namespace)
    except UNINTERPRETABLE as error:
        if not policy.namespace:  # which namespaces it reaches is unknown: the caller records the error
            raise PolicyError(f"{label(policy)}: {why(error)}") from error
        # A namespaced policy exists in its namespace whatever its selector says: it counts for 5.3.2 there; what
        # it does to the namespace's pods is unknown, and may concern all of them.
        unknown = Direction(Reach.ALL, unknown=f"{label(policy)}: {why(error)}")
        return _effect(policy, True, unknown, unknown)

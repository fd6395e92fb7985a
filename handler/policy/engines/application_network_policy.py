"""networking.k8s.aws/v1alpha1 ApplicationNetworkPolicy (EKS): a NetworkPolicy with `domainNames` egress peers.

Sources (aws/amazon-network-policy-controller-k8s): api/v1alpha1/applicationnetworkpolicy_types.go (the spec is
NetworkPolicy's podSelector, policyTypes, ingress, with egress peers that may hold `domainNames` instead of
selectors or an ipBlock) and pkg/resolvers/applicationnetworkpolicy_resolver.go (resolved like a NetworkPolicy
of the same namespace; policyTypes passed through as written).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.models import Namespace, NetworkPolicy
from handler.policy.engines.common import EGRESS, INGRESS, Effect
from handler.policy.engines.kubernetes import namespaced_effect


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    return namespaced_effect(policy, _types_by_rules)


def _types_by_rules(spec: Mapping[str, Any]) -> list[str]:
    # The CRD sets no default for policyTypes (its field description says it follows the rules present) and the
    # controller passes it through, so only a direction with rules is known to be enforced when it is absent.
    return [t for t, key in ((INGRESS, "ingress"), (EGRESS, "egress")) if spec.get(key)]

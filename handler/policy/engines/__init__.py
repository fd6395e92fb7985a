"""One pure analyzer per policy API, and the one table that says which kinds are read and which analyzer reads each.

A new kind is a new module here with an `analyze(policy, namespace) -> Effect` and one line in POLICY_APIS; the
reader lists what the table names (handler/engine_reader.py), and infra/kubernetes/rbac.yaml must grant its list
(tests/integration/test_cluster_rbac.py reads every kind of the table through a server enforcing that file).
"""
from __future__ import annotations

from typing import NamedTuple

from handler.errors import PolicyError
from handler.models import Namespace, NetworkPolicy
from handler.policy.engines import application_network_policy, calico, cilium, cluster_network_policy, kubernetes
from handler.policy.engines.common import (EGRESS, INGRESS, UNINTERPRETABLE, Analyzer, Direction, Effect, _effect,
                                           label, why)
from handler.policy.selectors import Reach


class PolicyApi(NamedTuple):
    """A policy kind the scanner reads: where it is served and what decides its effect. `version` None: the group's
    preferred version. `spec_alone`: a policy of the kind (namespaced) does the same to its namespace whatever the
    namespace's labels, so it can be analysed as soon as it is read (analyze_alone)."""

    group: str
    plural: str
    kind: str
    version: str | None
    analyzer: Analyzer
    spec_alone: bool = False


# policy.networking.k8s.io serves two APIs at two versions, read side by side: v1alpha1 AdminNetworkPolicy and
# BaselineAdminNetworkPolicy, v1alpha2 ClusterNetworkPolicy (network-policy-api v0.2).
POLICY_APIS = (
    PolicyApi("networking.k8s.io", "networkpolicies", "NetworkPolicy", "v1", kubernetes.analyze, spec_alone=True),
    PolicyApi("cilium.io", "ciliumnetworkpolicies", "CiliumNetworkPolicy", None, cilium.analyze),
    PolicyApi("cilium.io", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", None, cilium.analyze),
    PolicyApi("projectcalico.org", "networkpolicies", "NetworkPolicy", None, calico.analyze),
    PolicyApi("projectcalico.org", "globalnetworkpolicies", "GlobalNetworkPolicy", None, calico.analyze),
    PolicyApi("crd.projectcalico.org", "networkpolicies", "NetworkPolicy", None, calico.analyze),
    PolicyApi("crd.projectcalico.org", "globalnetworkpolicies", "GlobalNetworkPolicy", None, calico.analyze),
    PolicyApi("policy.networking.k8s.io", "adminnetworkpolicies", "AdminNetworkPolicy", "v1alpha1",
              cluster_network_policy.analyze),
    PolicyApi("policy.networking.k8s.io", "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", "v1alpha1",
              cluster_network_policy.analyze),
    PolicyApi("policy.networking.k8s.io", "clusternetworkpolicies", "ClusterNetworkPolicy", "v1alpha2",
              cluster_network_policy.analyze),
    PolicyApi("networking.k8s.aws", "clusternetworkpolicies", "ClusterNetworkPolicy", "v1alpha1",
              cluster_network_policy.analyze),
    PolicyApi("networking.k8s.aws", "applicationnetworkpolicies", "ApplicationNetworkPolicy", "v1alpha1",
              application_network_policy.analyze, spec_alone=True),
)
ANALYZERS: dict[tuple[str, str], Analyzer] = {(api.group, api.kind): api.analyzer for api in POLICY_APIS}
_SPEC_ALONE = {(api.group, api.kind): api.analyzer for api in POLICY_APIS if api.spec_alone}

__all__ = ["ANALYZERS", "POLICY_APIS", "PolicyApi", "EGRESS", "INGRESS", "Direction", "Effect", "analyze",
           "analyze_alone", "label"]


def analyze_alone(policy: NetworkPolicy) -> Effect | None:
    """The effect of a namespaced policy on its own namespace without reading the namespace, for the kinds whose
    effect rests on the policy alone (PolicyApi.spec_alone); None for any other policy."""
    analyzer = _SPEC_ALONE.get((policy.api_version.split("/")[0], policy.kind))
    if analyzer is None or not policy.namespace:
        return None
    return _analyze_with(analyzer, policy, Namespace(policy.namespace))


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect | None:
    """The policy's effect on `namespace`, or None when it cannot apply there (a namespaced policy elsewhere)."""
    analyzer = ANALYZERS.get((policy.api_version.split("/")[0], policy.kind))
    if analyzer is None:
        raise PolicyError(f"{label(policy)}: no semantics for {policy.api_version} {policy.kind}")
    if policy.namespace and policy.namespace != namespace.name:
        return None
    return _analyze_with(analyzer, policy, namespace)


def _analyze_with(analyzer: Analyzer, policy: NetworkPolicy, namespace: Namespace) -> Effect:
    try:
        return analyzer(policy, namespace)
    except UNINTERPRETABLE as error:
        if not policy.namespace:  # which namespaces it reaches is unknown: the caller records the error
            raise PolicyError(f"{label(policy)}: {why(error)}") from error
        # A namespaced policy exists in its namespace whatever its selector says: it counts for 5.3.2 there; what
        # it does to the namespace's pods is unknown, and may concern all of them.
        unknown = Direction(Reach.ALL, unknown=f"{label(policy)}: {why(error)}")
        return _effect(policy, True, unknown, unknown)

"""EKS access policies associated with access entries: fixed allow rules that EKS authorizes beside RBAC, for the
whole cluster or for some namespaces. AmazonEKSViewPolicy mirrors Kubernetes' user-facing `view` ClusterRole (EKS
user guide, "Review access policy permissions"): read access to the built-in workload, network and config kinds,
never Secrets, and no custom resources at all (so no Cilium, Calico, AdminNetworkPolicy or ClusterNetworkPolicy)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from netpol_scan.sandbox.kube_api.identity import canonical_arn
from netpol_scan.sandbox.kube_api.rbac import ALL, Attributes, Decision, PolicyRule

READ = ("get", "list", "watch")
VIEW_RULES = (
    PolicyRule(READ, ("",), ("configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status",
                             "pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
                             "services", "services/status", "bindings", "events", "limitranges", "namespaces/status",
                             "pods/log", "pods/status", "replicationcontrollers/status", "resourcequotas",
                             "resourcequotas/status", "namespaces")),
    PolicyRule(READ, ("discovery.k8s.io",), ("endpointslices",)),
    PolicyRule(READ, ("apps",), ("controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
                                 "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
                                 "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status")),
    PolicyRule(READ, ("autoscaling",), ("horizontalpodautoscalers", "horizontalpodautoscalers/status")),
    PolicyRule(READ, ("batch",), ("cronjobs", "cronjobs/status", "jobs", "jobs/status")),
    PolicyRule(READ, ("policy",), ("poddisruptionbudgets", "poddisruptionbudgets/status")),
    PolicyRule(READ, ("networking.k8s.io",), ("ingresses", "ingresses/status", "networkpolicies")),
)
ACCESS_POLICIES: dict[str, tuple[PolicyRule, ...]] = {
    "AmazonEKSViewPolicy": VIEW_RULES,
    "AmazonEKSClusterAdminPolicy": (PolicyRule((ALL,), (ALL,), (ALL,)), PolicyRule((ALL,), non_resource_urls=(ALL,))),
}
POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/"


@dataclass(frozen=True)
class Association:
    policy: str
    namespaces: frozenset[str]  # empty: the whole cluster

    def covers(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces


class AccessPolicies:
    """The access policies associated with each principal (an IAM role's ARN covers every session of it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._associations: dict[str, list[Association]] = {}

    def associate(self, principal_arn: str, policy: str, namespaces: tuple[str, ...] = ()) -> None:
        name = policy.removeprefix(POLICY_ARN)
        if name not in ACCESS_POLICIES:
            raise ValueError(f"unknown access policy {policy!r}; known: {sorted(ACCESS_POLICIES)}")
        with self._lock:
            self._associations.setdefault(principal_arn, []).append(Association(name, frozenset(namespaces)))

    def rules_for(self, user: str, namespace: str) -> list[PolicyRule]:
        with self._lock:
            associations = self._associations.get(user, []) + self._associations.get(canonical_arn(user), [])
        return [rule for a in associations if a.covers(namespace) for rule in ACCESS_POLICIES[a.policy]]

    def decide(self, user: str, request: Attributes) -> Decision:
        allowed = any(rule.allows(request) for rule in self.rules_for(user, request.namespace))
        return Decision(allowed, "allowed by an EKS access policy" if allowed else "")

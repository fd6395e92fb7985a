"""CIS Kubernetes 5.3.2 / CIS Amazon EKS 4.3.2: every namespace has a NetworkPolicy defined.

A namespace passes when at least one networking.k8s.io/v1 NetworkPolicy exists in it. Without one, every pod
in it accepts traffic from, and sends traffic to, anything in the cluster network. Namespaces being deleted
are reported as such (WARNING), not as failures.
"""
from __future__ import annotations

from collections import defaultdict

from handler.controls.base import Control
from handler.models import ClusterSnapshot, ComplianceStatus, ControlResult, Namespace

CONTROL_ID = "cis-k8s-5.3.2"
MAX_EVIDENCE = 20  # policy names quoted in a finding; the count is always exact


def evaluate(snapshot: ClusterSnapshot) -> list[ControlResult]:
    policies_by_namespace: dict[str, list[str]] = defaultdict(list)
    for policy in snapshot.policies:
        policies_by_namespace[policy.namespace].append(policy.name)
    cluster = snapshot.cluster.ref.name
    return [_verdict(ns, sorted(policies_by_namespace.get(ns.name, ())), cluster) for ns in snapshot.namespaces]


def _verdict(namespace: Namespace, policies: list[str], cluster: str) -> ControlResult:
    where = f"Namespace '{namespace.name}' of EKS cluster '{cluster}'"
    if namespace.terminating:
        return ControlResult(
            CONTROL_ID, namespace.name, ComplianceStatus.WARNING,
            title=f"Namespace {namespace.name} is being deleted; network policy check not applicable",
            description=f"{where} is Terminating. It is not counted as failing; its finding is archived "
                        "once the namespace is gone.",
            evidence=tuple(policies[:MAX_EVIDENCE]))
    if policies:
        shown = ", ".join(policies[:MAX_EVIDENCE]) + (" ..." if len(policies) > MAX_EVIDENCE else "")
        return ControlResult(
            CONTROL_ID, namespace.name, ComplianceStatus.PASSED,
            title=f"Namespace {namespace.name} has network policies defined",
            description=f"{where} has {len(policies)} networking.k8s.io/v1 NetworkPolicy object(s): {shown}. "
                        "CIS Kubernetes 5.3.2 / CIS EKS 4.3.2 require at least one.",
            evidence=tuple(policies[:MAX_EVIDENCE]))
    return ControlResult(
        CONTROL_ID, namespace.name, ComplianceStatus.FAILED,
        title=f"Namespace {namespace.name} has no network policy",
        description=f"{where} has no NetworkPolicy. Until one selects its pods, every pod in it accepts "
                    "connections from, and opens connections to, any pod or address the cluster network "
                    "reaches, so one compromised workload can move laterally to it or from it "
                    "(CIS Kubernetes 5.3.2 / CIS EKS 4.3.2).")


CONTROL = Control(
    id=CONTROL_ID,
    title="All namespaces have network policies defined",
    severity="MEDIUM",
    requirements=("CIS Kubernetes Benchmark v1.10.0/5.3.2", "CIS Amazon EKS Benchmark v1.7.0/4.3.2"),
    remediation_text="Create a NetworkPolicy in the namespace, starting with a default-deny policy "
                     "(podSelector {} with policyTypes Ingress and Egress) and then policies that allow the "
                     "traffic its workloads need. On EKS, enable network policy enforcement (VPC CNI "
                     "enableNetworkPolicy, Calico or Cilium) or the policies have no effect.",
    remediation_url="https://kubernetes.io/docs/concepts/services-networking/network-policies/",
    evaluate=evaluate,
)

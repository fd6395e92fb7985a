"""The cluster's own finding when it could not be scanned: Compliance.Status NOT_AVAILABLE, with the reason.

It is not a CIS control and is never evaluated over a snapshot; the pipeline raises it when a cluster read
fails and archives it once the cluster scans again. While it is active, the cluster's earlier namespace
findings stay exactly as they were: a cluster that could not be read never makes its namespaces look fixed.
"""
from __future__ import annotations

from handler.controls import namespace_network_policy
from handler.controls.base import Control
from handler.models import ClusterRef, ComplianceStatus, ControlResult

CONTROL_ID = "cluster-scan"


def not_available(cluster: ClusterRef, reason: str) -> ControlResult:
    return ControlResult(
        CONTROL_ID, None, ComplianceStatus.NOT_AVAILABLE,
        title=f"EKS cluster {cluster.name} could not be scanned for network policies",
        description=f"The scanner could not read EKS cluster '{cluster.name}' ({cluster}): {reason}. Its "
                    "namespace findings keep their last known state until a scan succeeds, so namespaces "
                    "created or changed since then are not assessed.")


CONTROL = Control(
    id=CONTROL_ID,
    title="EKS cluster could be scanned",
    severity="MEDIUM",
    # The requirements it keeps from being assessed.
    requirements=namespace_network_policy.CONTROL.requirements,
    remediation_text="Make the cluster readable by the scanner: its endpoint must be reachable from the "
                     "function, and the scan role needs the read-only ClusterRole of infra/kubernetes/rbac.yaml, "
                     "through an EKS access entry (infra/eks-access-entry.yaml) or an aws-auth mapping to the "
                     "group netpol-scanner:readers.",
    remediation_url="https://docs.aws.amazon.com/eks/latest/userguide/access-entries.html",
)

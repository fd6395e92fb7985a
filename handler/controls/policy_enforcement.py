"""CIS Kubernetes 5.3.1 / CIS Amazon EKS 4.3.1: the CNI in use supports (enforces) network policies.

One finding per cluster. PASSED when something enforces NetworkPolicy: the vpc-cni add-on with
enableNetworkPolicy, the aws-node DaemonSet's network policy agent switched on with the amazon-vpc-cni
controller, on EKS Auto Mode that controller alone (when no node outside Auto Mode runs aws-node without its
agent), or a running Calico or Cilium agent, in whichever namespace. FAILED when every source was read and none
enforces.
NOT_AVAILABLE when none was found enforcing and a DaemonSet or the ConfigMap could not be read (the reason is in
the finding); a failed eks:DescribeAddon alone is only mentioned, since the add-on configures those objects.
"""
from __future__ import annotations

from handler.controls.base import Control, EvaluationOptions
from handler.models import ClusterSnapshot, ComplianceStatus, ControlResult, EnforcementEvidence
from handler.policy.coverage import not_understood

CONTROL_ID = "cis-k8s-5.3.1"
MAX_NOT_UNDERSTOOD = 5  # policies quoted; the count is exact
NOT_ENFORCED = ("Nothing enforces network policies on this cluster (CIS 5.3.1 / EKS 4.3.1 FAILED), so its "
                "policies have no effect until the VPC CNI network policy agent, Calico or Cilium runs (on EKS Auto "
                "Mode: until ConfigMap kube-system/amazon-vpc-cni sets enable-network-policy-controller: \"true\").")


def evidence(snapshot: ClusterSnapshot) -> EnforcementEvidence:
    return snapshot.cluster.vpc_cni_addon + snapshot.enforcement


def status(snapshot: ClusterSnapshot) -> ComplianceStatus:
    """The DaemonSets and ConfigMap decide: the add-on configures exactly those, so a DescribeAddon that failed
    only leaves a shortcut unused; an unreadable DaemonSet leaves the question open."""
    if evidence(snapshot).engines:
        return ComplianceStatus.PASSED
    return ComplianceStatus.NOT_AVAILABLE if snapshot.enforcement.unknown else ComplianceStatus.FAILED


def evaluate(snapshot: ClusterSnapshot, options: EvaluationOptions = EvaluationOptions()) -> list[ControlResult]:
    found, verdict = evidence(snapshot), status(snapshot)
    cluster = snapshot.cluster.ref.name
    if verdict is ComplianceStatus.PASSED:
        title = f"EKS cluster {cluster} enforces network policies"
        text = f"Network policies of EKS cluster '{cluster}' are enforced by: {'; '.join(found.engines)}."
    elif verdict is ComplianceStatus.FAILED:
        title = f"EKS cluster {cluster} does not enforce network policies"
        text = (f"No engine enforces network policies on EKS cluster '{cluster}': {'; '.join(found.absent)}. "
                "NetworkPolicy objects are accepted by the API server but do nothing."
                + (f" Not read: {'; '.join(found.unknown)}." if found.unknown else ""))
    else:
        title = f"Network policy enforcement of EKS cluster {cluster} could not be determined"
        text = (f"No enforcing engine was found on EKS cluster '{cluster}', but some evidence could not be read: "
                f"{'; '.join(found.unknown)}. Seen: {'; '.join(found.absent) or 'nothing'}.")
    return [ControlResult(CONTROL_ID, None, verdict, title, text + _not_understood(snapshot), evidence=found.engines)]


def _not_understood(snapshot: ClusterSnapshot) -> str:
    """The cluster's finding counts the policies the scanner could not interpret: their namespaces' verdicts may be
    NOT_AVAILABLE, and nothing else says so once per cluster."""
    policies = not_understood(snapshot.coverage.values())
    if not policies:
        return ""
    shown = "; ".join(list(policies.values())[:MAX_NOT_UNDERSTOOD]) + (" ..." if len(policies) > MAX_NOT_UNDERSTOOD
                                                                       else "")
    return (f" {len(policies)} network policies could not be interpreted; the namespace verdicts they could change "
            f"are NOT_AVAILABLE: {shown}.")


CONTROL = Control(
    id=CONTROL_ID,
    title="The CNI in use enforces network policies",
    severity="HIGH",  # without enforcement every namespace's policies, and every other control, are moot
    requirements=("CIS Kubernetes Benchmark v1.10.0/5.3.1", "CIS Amazon EKS Benchmark v1.7.0/4.3.1"),
    remediation_text="Enable network policy in the Amazon VPC CNI add-on (configuration value "
                     "{\"enableNetworkPolicy\": \"true\"}), or run Calico or Cilium as the policy engine; on EKS "
                     "Auto Mode set enable-network-policy-controller: \"true\" in ConfigMap "
                     "kube-system/amazon-vpc-cni. The scan role needs the reads in infra/kubernetes/rbac.yaml.",
    remediation_url="https://docs.aws.amazon.com/eks/latest/userguide/cni-network-policy-configure.html",
    evaluate=evaluate,
)

"""CIS Kubernetes 5.3.2 / CIS Amazon EKS 4.3.2: every namespace has a network policy defined.

A namespace passes when at least one policy is defined for it: a networking.k8s.io/v1 NetworkPolicy in it, or,
where the cluster serves them, a CiliumNetworkPolicy, Calico NetworkPolicy or ApplicationNetworkPolicy in it (one
the scanner cannot interpret included: it exists there), or a CiliumClusterwideNetworkPolicy, Calico
GlobalNetworkPolicy, (Baseline)AdminNetworkPolicy or ClusterNetworkPolicy whose selectors name it
(handler/policy/engines/). With EvaluationOptions.networking_k8s_io_only, only NetworkPolicies count.
Namespaces being deleted are reported as such (WARNING), not as failures. A namespace with no policy found while
some policy kind could not be read is NOT_AVAILABLE, never FAILED: the unread policies may be its.
Every finding says when nothing enforces the policies on the cluster (CIS 5.3.1).
"""
from __future__ import annotations

from typing import NamedTuple

from handler.controls import policy_enforcement
from handler.controls.base import Control, EvaluationOptions, namespace_verdicts, where
from handler.models import ClusterSnapshot, ComplianceStatus, ControlResult, Namespace, PodDefault
from handler.policy import Effect
from handler.policy.coverage import NamespaceCoverage

CONTROL_ID = "cis-k8s-5.3.2"
MAX_EVIDENCE = 20  # policy names quoted in a finding; the count is always exact
KUBERNETES_GROUP = "networking.k8s.io"
UNPROTECTED = ("Until one selects its pods, every pod in it accepts connections from, and opens connections to, any "
               "pod or address the cluster network reaches, so one compromised workload can move laterally to it or "
               "from it")


def evaluate(snapshot: ClusterSnapshot, options: EvaluationOptions = EvaluationOptions()) -> list[ControlResult]:
    cluster = snapshot.cluster.ref.name
    enforced = policy_enforcement.status(snapshot) is not ComplianceStatus.FAILED
    not_enforced = "" if enforced else f" {policy_enforcement.NOT_ENFORCED}"
    pods = snapshot.unselected_pods
    risk = (f"Its pods are isolated by the nodes alone ({pods.reason}); a policy of its own keeps them isolated on "
            "any node" if pods.default is PodDefault.DENY else UNPROTECTED)
    # The wordings of namespaces being deleted or without a policy: one each for the whole cluster.
    terminating, none_defined = _Terminating(cluster), _NoneDefined(cluster, risk, not_enforced)
    return namespace_verdicts(snapshot, CONTROL_ID, lambda ns, coverage: _verdict(
        ns, coverage, snapshot.unreadable, cluster, options, not_enforced, terminating, none_defined))


def _counted(effects: tuple[Effect, ...], options: EvaluationOptions) -> list[str]:
    return sorted(e.short_name for e in effects
                  if e.counts and (e.api_group == KUBERNETES_GROUP or not options.networking_k8s_io_only))


def _verdict(namespace: Namespace, coverage: NamespaceCoverage, unreadable: tuple[str, ...], cluster: str,
             options: EvaluationOptions, not_enforced: str, terminating: _Terminating,
             none_defined: _NoneDefined) -> ControlResult:
    """`not_enforced` ends every description but a Terminating namespace's when no engine enforces policies. The
    texts are made when read (models.Wording)."""
    policies = _counted(coverage.effects, options) if coverage.effects else []  # none, in most namespaces
    evidence = tuple(policies[:MAX_EVIDENCE])
    if namespace.terminating:
        return ControlResult.worded(CONTROL_ID, namespace.name, ComplianceStatus.WARNING, terminating, evidence)
    if policies:
        kinds = "networking.k8s.io/v1 NetworkPolicy" if options.networking_k8s_io_only else "network policy"
        return ControlResult.worded(CONTROL_ID, namespace.name, ComplianceStatus.PASSED,
                                    _Defined(cluster, len(policies), kinds, not_enforced), evidence)
    unknown = () if options.networking_k8s_io_only else unreadable + coverage.errors
    if unknown:
        return ControlResult.worded(CONTROL_ID, namespace.name, ComplianceStatus.NOT_AVAILABLE,
                                    _Unknown(cluster, unknown, not_enforced))
    return ControlResult.worded(CONTROL_ID, namespace.name, ComplianceStatus.FAILED, none_defined)


class _Terminating(NamedTuple):
    cluster: str

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace} is being deleted; network policy check not applicable"

    def description(self, result: ControlResult) -> str:
        return (f"{where(result, self.cluster)} is Terminating. It is not counted as failing; its finding is "
                "archived once the namespace is gone.")


class _Defined(NamedTuple):
    cluster: str
    count: int  # the policies counted; the result's evidence names the first MAX_EVIDENCE
    kinds: str
    not_enforced: str

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace} has network policies defined"

    def description(self, result: ControlResult) -> str:
        shown = ", ".join(result.evidence) + (" ..." if self.count > MAX_EVIDENCE else "")
        return (f"{where(result, self.cluster)} has {self.count} {self.kinds} object(s) defined for it: {shown}. "
                f"CIS Kubernetes 5.3.2 / CIS EKS 4.3.2 require at least one.{self.not_enforced}")


class _Unknown(NamedTuple):
    cluster: str
    unknown: tuple[str, ...]  # the policy kinds not read and the policies not interpreted, with why
    not_enforced: str

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace}: network policies could not all be read"

    def description(self, result: ControlResult) -> str:
        return (f"{where(result, self.cluster)} has no policy the scanner could read, but some could not be read "
                f"or interpreted, and they may be its: {'; '.join(self.unknown)}. Grant the scan role list on "
                f"those kinds (infra/kubernetes/rbac.yaml).{self.not_enforced}")


class _NoneDefined(NamedTuple):
    cluster: str
    risk: str
    not_enforced: str

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace} has no network policy"

    def description(self, result: ControlResult) -> str:
        return (f"{where(result, self.cluster)} has no NetworkPolicy. {self.risk} (CIS Kubernetes 5.3.2 / CIS EKS "
                f"4.3.2).{self.not_enforced}")


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
    namespace_local=True,
)

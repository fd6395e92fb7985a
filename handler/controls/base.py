"""What a control is: its metadata and a pure evaluation over a cluster snapshot."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from handler.models import ClusterSnapshot, ControlResult, Namespace
from handler.policy.coverage import NOTHING, NamespaceCoverage


CIS_HARDENING_TYPE = "Software and Configuration Checks/Industry and Regulatory Standards/CIS Host Hardening Benchmarks"


def where(result: ControlResult, cluster: str) -> str:
    """How a namespace verdict's description names its namespace (models.Wording)."""
    return f"Namespace '{result.namespace}' of EKS cluster '{cluster}'"


NamespaceVerdict = Callable[[Namespace, NamespaceCoverage], ControlResult]


def namespace_verdicts(snapshot: ClusterSnapshot, control_id: str, verdict: NamespaceVerdict) -> list[ControlResult]:
    """Every namespace's result, `verdict` made once per distinct (coverage, terminating) and shared but for the
    name: a large cluster's namespaces hold the same few policies (a baseline chart's), and making each verdict
    again was most of an isolation control's time (bench/scan_one_cluster.py). So `verdict` may depend on a
    namespace through its name and `terminating` alone, and put the name nowhere but in the result's namespace
    (wordings take it from the result). The verdict of namespaces no policy applies to has its texts made once
    around the name (ControlResult.same_but_for_name)."""
    coverage = snapshot.coverage
    shared = {(NOTHING, False): verdict(Namespace(""), NOTHING).same_but_for_name()[2:]}
    results = []
    for namespace in snapshot.namespaces:
        key = (coverage[namespace.name], namespace.terminating)
        rest = shared.get(key)
        if rest is None:
            rest = shared[key] = verdict(namespace, key[0])[2:]
        # Made as the named tuple's _make makes it, without its generated __new__'s argument handling (every
        # field is here, from a result): 0.3-0.5 µs instead of 0.8, 12 ms of the bench cluster's 30,000 results.
        results.append(_new_tuple(ControlResult, (control_id, namespace.name) + rest))
    return results


_new_tuple = tuple.__new__


@dataclass(frozen=True)
class EvaluationOptions:
    """Settings that change what a control concludes; built from config.Settings."""

    networking_k8s_io_only: bool = False  # CIS 5.3.2 counts networking.k8s.io NetworkPolicies alone


Evaluate = Callable[[ClusterSnapshot, EvaluationOptions], list[ControlResult]]


@dataclass(frozen=True)
class Control:
    """A check's metadata beside its evaluation, so that adding a control touches nothing else.

    `severity` is the ASFF Severity.Label of a FAILED result; passed and informational results are
    INFORMATIONAL, as AWS's own controls report them.
    """

    id: str
    title: str
    severity: str
    requirements: tuple[str, ...]  # ASFF Compliance.RelatedRequirements
    remediation_text: str
    remediation_url: str
    # None for findings the pipeline raises itself (a cluster's scan status) rather than evaluates.
    evaluate: Evaluate | None = None
    # Each namespace's result rests on that namespace and the cluster's policies and facts alone, so the
    # namespaces can be evaluated a page at a time as they are read (evaluation.Evaluation); otherwise the
    # control is evaluated once, over the whole snapshot.
    namespace_local: bool = False
    finding_types: tuple[str, ...] = (CIS_HARDENING_TYPE,)  # ASFF Types

    @property
    def generator_id(self) -> str:
        return f"eks-netpol-scanner/{self.id}"

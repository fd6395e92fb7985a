"""Every policy's effect on every namespace of a snapshot, computed once and shared by the controls."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from handler.errors import PolicyError
from handler.models import ClusterSnapshot, Namespace, NetworkPolicy
from handler.policy.engines import Effect, analyze, analyze_alone


class NamespaceCoverage(NamedTuple):  # one per namespace with policies: a named tuple, as models.py says why
    effects: tuple[Effect, ...] = ()  # policies that can apply to the namespace's pods
    errors: tuple[str, ...] = ()  # policies that could not be interpreted, with why


NOTHING = NamespaceCoverage()  # of every namespace no policy can apply to: most, in a large cluster


def namespace_coverage(snapshot: ClusterSnapshot) -> dict[str, NamespaceCoverage]:
    return PolicyIndex(snapshot.policies).coverage(snapshot.namespaces)


class AnalysedAsRead:
    """The effects of the policies that can be analysed without their namespace (engines.analyze_alone), each
    analysed as it is read: a scan reads the policies while the server makes its pages of namespaces, and their
    analysis is then done by the time the namespaces are evaluated (bench/scan_one_cluster.py)."""

    def __init__(self) -> None:
        # By the policy object's id; each entry holds its policy, so that the id is not another object's.
        self._effects: dict[int, tuple[NetworkPolicy, Effect]] = {}

    def add(self, policy: NetworkPolicy) -> None:
        effect = analyze_alone(policy)
        if effect is not None:
            self._effects[id(policy)] = (policy, effect)

    def effect(self, policy: NetworkPolicy) -> Effect | None:
        """The effect of `policy` (that very object) when it was added, else None."""
        found = self._effects.get(id(policy))
        return found[1] if found is not None and found[0] is policy else None


class PolicyIndex:
    """A cluster's policies by the namespace they are in, each with its effect when `analysed` knows it, the
    cluster-wide ones apart: made once, and asked for each page of namespaces as it is read
    (evaluation.Evaluation)."""

    def __init__(self, policies: Iterable[NetworkPolicy], analysed: AnalysedAsRead | None = None) -> None:
        self.namespaced: dict[str, list[tuple[NetworkPolicy, Effect | None]]] = defaultdict(list)
        self.clusterwide: list[tuple[NetworkPolicy, Effect | None]] = []
        for policy in policies:
            (self.namespaced[policy.namespace] if policy.namespace else self.clusterwide).append(
                (policy, analysed.effect(policy) if analysed is not None else None))

    def coverage(self, namespaces: Iterable[Namespace]) -> dict[str, NamespaceCoverage]:
        namespaced, clusterwide = self.namespaced, self.clusterwide
        return {namespace.name: _coverage(namespace, namespaced.get(namespace.name, []) + clusterwide)
                if clusterwide or namespace.name in namespaced else NOTHING for namespace in namespaces}


def _coverage(namespace: Namespace, policies: list[tuple[NetworkPolicy, Effect | None]]) -> NamespaceCoverage:
    effects, errors = [], []
    for policy, effect in policies:
        if effect is None:
            try:
                effect = analyze(policy, namespace)
            except PolicyError as error:
                errors.append(str(error))
                continue
        if effect is not None:
            effects.append(effect)
    return NamespaceCoverage(tuple(effects), tuple(errors))


def not_understood(coverages: Iterable[NamespaceCoverage]) -> dict[str, str]:
    """Every policy the analysis could not interpret, wholly or in one direction, in any namespace: its label ->
    why (the first reason seen). For the run's summary and the cluster's finding."""
    found: dict[str, str] = {}
    for coverage in coverages:
        if coverage is NOTHING:
            continue
        reasons = list(coverage.errors) + [d.unknown for e in coverage.effects for d in (e.ingress, e.egress)
                                           if d.unknown]
        for reason in reasons:
            found.setdefault(reason.split(": ", 1)[0], reason)
    return found

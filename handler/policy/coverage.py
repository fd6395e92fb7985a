"""Every policy's effect on every namespace of a snapshot, computed once and shared by the controls."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from handler.errors import PolicyError
from handler.models import ClusterSnapshot, Namespace, NetworkPolicy
from handler.policy.engines import Effect, analyze


class NamespaceCoverage(NamedTuple):  # one per namespace with policies: a named tuple, as models.py says why
    effects: tuple[Effect, ...] = ()  # policies that can apply to the namespace's pods
    errors: tuple[str, ...] = ()  # policies that could not be interpreted, with why


NOTHING = NamespaceCoverage()  # of every namespace no policy can apply to: most, in a large cluster


def namespace_coverage(snapshot: ClusterSnapshot) -> dict[str, NamespaceCoverage]:
    return PolicyIndex(snapshot.policies).coverage(snapshot.namespaces)


class PolicyIndex:
    """A cluster's policies by the namespace they are in, the cluster-wide ones apart: made once, and asked for
    each page of namespaces as it is read (evaluation.Evaluation)."""

    def __init__(self, policies: Iterable[NetworkPolicy]) -> None:
        self.namespaced: dict[str, list[NetworkPolicy]] = defaultdict(list)
        self.clusterwide: list[NetworkPolicy] = []
        for policy in policies:
            (self.namespaced[policy.namespace] if policy.namespace else self.clusterwide).append(policy)

    def coverage(self, namespaces: Iterable[Namespace]) -> dict[str, NamespaceCoverage]:
        namespaced, clusterwide = self.namespaced, self.clusterwide
        return {namespace.name: _coverage(namespace, namespaced.get(namespace.name, []) + clusterwide)
                if clusterwide or namespace.name in namespaced else NOTHING for namespace in namespaces}


def _coverage(namespace: Namespace, policies: list[NetworkPolicy]) -> NamespaceCoverage:
    effects, errors = [], []
    for policy in policies:
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

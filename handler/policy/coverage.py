"""Every policy's effect on every namespace of a snapshot, computed once and shared by the controls."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from handler.errors import PolicyError
from handler.models import ClusterSnapshot, NetworkPolicy
from handler.policy.semantics import Effect, analyze


@dataclass(frozen=True)
class NamespaceCoverage:
    effects: tuple[Effect, ...] = ()  # policies that can apply to the namespace's pods
    errors: tuple[str, ...] = ()  # policies that could not be interpreted, with why


def namespace_coverage(snapshot: ClusterSnapshot) -> dict[str, NamespaceCoverage]:
    namespaced: dict[str, list[NetworkPolicy]] = defaultdict(list)
    clusterwide: list[NetworkPolicy] = []
    for policy in snapshot.policies:
        (namespaced[policy.namespace] if policy.namespace else clusterwide).append(policy)
    coverage = {}
    for namespace in snapshot.namespaces:
        effects, errors = [], []
        for policy in namespaced.get(namespace.name, []) + clusterwide:
            try:
                effect = analyze(policy, namespace)
            except PolicyError as error:
                errors.append(str(error))
                continue
            if effect is not None:
                effects.append(effect)
        coverage[namespace.name] = NamespaceCoverage(tuple(effects), tuple(errors))
    return coverage

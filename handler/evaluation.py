"""Evaluation of one snapshot: every control, then the exemptions. Pure once the exemptions are loaded.

A scan evaluates a cluster while it is read (Evaluation, given the namespaces page by page); `evaluate` takes a
whole snapshot at once. Both give the same results in the same order, by the same code."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from handler import exemptions
from handler.config import DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS, Settings
from handler.controls import CONTROLS, EvaluationOptions
from handler.models import ClusterSnapshot, ControlResult, Namespace, NetworkPolicy
from handler.policy.coverage import AnalysedAsRead, NamespaceCoverage, PolicyIndex

if TYPE_CHECKING:  # boto3 is imported by what makes the session: `netpol-scan cluster` evaluates without it
    import boto3


@dataclass(frozen=True)
class Evaluator:
    options: EvaluationOptions = EvaluationOptions()
    exemptions: tuple[exemptions.Exemption, ...] = ()
    annotation_max_days: int = DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS

    @classmethod
    def from_settings(cls, settings: Settings, session: boto3.Session) -> Evaluator:
        """Loads the exemptions once; a bad EXEMPTIONS document raises ConfigError here, before any write."""
        namespace_controls = [c.id for c in CONTROLS]
        return cls(EvaluationOptions(networking_k8s_io_only=settings.networking_k8s_io_only),
                   exemptions.load(settings.exemptions_source, session, settings.default_region, namespace_controls),
                   settings.annotation_exemption_max_days)

    def evaluate(self, snapshot: ClusterSnapshot, now: str | None = None) -> list[ControlResult]:
        evaluation = Evaluation(self)
        evaluation.begin(snapshot)
        return evaluation.finish(snapshot, now).results


class Evaluated(NamedTuple):
    snapshot: ClusterSnapshot  # the snapshot read, with the coverage its evaluation computed
    results: list[ControlResult]


class Evaluation:
    """One cluster's evaluation, made as it is read (cluster_reader.ClusterAsRead): each NetworkPolicy analysed as
    it arrives, the namespace controls over each page of namespaces as it arrives, then, once the read is whole,
    the cluster's own controls and the exemptions. A namespace control's result on a namespace rests on that
    namespace and the cluster's policies and facts alone (Control.namespace_local), so the results are those of
    the whole snapshot, in the same order."""

    def __init__(self, evaluator: Evaluator) -> None:
        self._evaluator = evaluator
        self._read_so_far: ClusterSnapshot | None = None
        self._analysed = AnalysedAsRead()
        self._index = PolicyIndex(())
        self.restart()

    def policies_read(self, policies: Sequence[NetworkPolicy]) -> None:
        """Policies as they are read: those whose namespace's labels do not matter are analysed now, while the
        server still makes the pages of namespaces."""
        for policy in policies:
            self._analysed.add(policy)

    def begin(self, read_so_far: ClusterSnapshot) -> None:
        """Everything the read found but the namespaces."""
        self._read_so_far, self._index = read_so_far, PolicyIndex(read_so_far.policies, self._analysed)
        self._analysed = AnalysedAsRead()  # the index holds the effects now
        self.restart()

    def add(self, namespaces: Sequence[Namespace]) -> None:
        assert self._read_so_far is not None, "begin() first"
        coverage = self._index.coverage(namespaces)
        page = replace(self._read_so_far, namespaces=tuple(namespaces), coverage_as_read=coverage)
        for control in _NAMESPACE_LOCAL:
            self._results[control.id].extend(control.evaluate(page, self._evaluator.options))
        self._coverage.update(coverage)

    def restart(self) -> None:
        self._coverage: dict[str, NamespaceCoverage] = {}
        self._results: dict[str, list[ControlResult]] = {control.id: [] for control in _NAMESPACE_LOCAL}

    def finish(self, snapshot: ClusterSnapshot, now: str | None = None) -> Evaluated:
        """The results for `snapshot`, the whole read. Namespaces not given page by page are evaluated now."""
        if len(self._coverage) != len(snapshot.namespaces) or self._read_so_far is None:
            self.begin(snapshot)
            self.add(snapshot.namespaces)
        snapshot = replace(snapshot, coverage_as_read=self._coverage)
        options = self._evaluator.options
        results = [r for control in CONTROLS if control.evaluate
                   for r in (self._results[control.id] if control.namespace_local
                             else control.evaluate(snapshot, options))]
        now = now or dt.datetime.now(dt.timezone.utc).isoformat()
        return Evaluated(snapshot, exemptions.apply(results, snapshot.cluster.ref, snapshot.namespaces,
                                                    self._evaluator.exemptions, now,
                                                    self._evaluator.annotation_max_days))


_NAMESPACE_LOCAL = tuple(control for control in CONTROLS if control.evaluate and control.namespace_local)


def evaluate(snapshot: ClusterSnapshot, evaluator: Evaluator = Evaluator(), now: str | None = None) -> list[ControlResult]:
    return evaluator.evaluate(snapshot, now)

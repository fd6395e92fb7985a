"""Evaluation of one snapshot: every control, then the exemptions. Pure once the exemptions are loaded."""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from handler import exemptions
from handler.config import DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS, Settings
from handler.controls import CONTROLS, EvaluationOptions
from handler.models import ClusterSnapshot, ControlResult

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
        with _collector_paused():
            results = [r for control in CONTROLS if control.evaluate
                       for r in control.evaluate(snapshot, self.options)]
            now = now or dt.datetime.now(dt.timezone.utc).isoformat()
            return exemptions.apply(results, snapshot.cluster.ref, snapshot.namespaces, self.exemptions, now,
                                    self.annotation_max_days)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Evaluation makes tens of thousands of small objects and no reference cycles (reference counting frees
    them all), while each pass of the cyclic collector walks the whole snapshot: pausing it took a sixth off the
    evaluation of a 10,000-namespace cluster (bench/scan_one_cluster.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def evaluate(snapshot: ClusterSnapshot, evaluator: Evaluator = Evaluator(), now: str | None = None) -> list[ControlResult]:
    return evaluator.evaluate(snapshot, now)

"""Scans kubeconfig contexts with the Lambda's own reader and controls, and writes nothing anywhere."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from handler.cluster_reader import ClusterReader
from handler.controls import CONTROLS_BY_ID, scan_status
from handler.errors import ClusterReadError
from handler.models import ClusterInfo, ClusterRef, ClusterSnapshot, ComplianceStatus, ControlResult
from handler.evaluation import Evaluation, Evaluator
from netpol_scan.kubeconfig import Context, Kubeconfig, KubeconfigError, api_client

# ASFF Severity.Label, lowest first: `--fail-on` compares FAILED results' severities with these.
SEVERITIES = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")
NEVER = "NONE"  # `--fail-on NONE`: no severity fails the command


@dataclass
class ContextScan:
    """One context's outcome: the snapshot and results, or why it could not be read."""

    context: Context
    endpoint: str = ""
    snapshot: ClusterSnapshot | None = None
    results: list[ControlResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ref(self) -> ClusterRef:
        return self.context.ref or ClusterRef("", "", self.context.cluster or self.context.name)

    def failing(self, threshold: str) -> list[ControlResult]:
        """FAILED results whose control's severity is at least `threshold`."""
        if threshold == NEVER:
            return []
        floor = SEVERITIES.index(threshold)
        return [r for r in self.results if r.status is ComplianceStatus.FAILED
                and SEVERITIES.index(CONTROLS_BY_ID[r.control_id].severity) >= floor]


def scan_contexts(kubeconfig: Kubeconfig, contexts: list[Context], reader: ClusterReader, concurrency: int,
                  done: Callable[[ContextScan], None] = lambda _: None) -> list[ContextScan]:
    """Every context, `concurrency` at a time, in the order given; `done` is told of each as it finishes."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(scan_context, kubeconfig, c, reader): i for i, c in enumerate(contexts)}
        scans: list[ContextScan | None] = [None] * len(contexts)
        for future in as_completed(futures):
            scans[futures[future]] = future.result()
            done(future.result())
    return [s for s in scans if s is not None]


def scan_context(kubeconfig: Kubeconfig, context: Context, reader: ClusterReader) -> ContextScan:
    scan = ContextScan(context)
    try:
        api = api_client(kubeconfig, context)
    except KubeconfigError as error:
        scan.error = str(error)
        return scan
    scan.endpoint = api.configuration.host
    evaluation = Evaluation(Evaluator())  # the namespaces evaluated as they are read, as the Lambda scans
    try:
        snapshot = reader.read_with(ClusterInfo(scan.ref, scan.endpoint, ca_data=""), api, as_read=evaluation)
    except ClusterReadError as error:
        scan.error = str(error)
        return scan
    scan.snapshot, scan.results = evaluation.finish(snapshot)
    return scan


def asff_findings(scans: Iterable[ContextScan], now: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
    """The findings the Lambda would import for these results, at one time (no state: CreatedAt is now), made
    one at a time as they are consumed."""
    from handler.asff import build_finding, cluster_resource  # only -o asff builds findings

    stamp = (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for scan in scans:
        results = [scan_status.not_available(scan.ref, scan.error)] if scan.error else scan.results
        resource = cluster_resource(ClusterInfo(scan.ref, scan.endpoint, ca_data=""))
        for result in results:
            yield build_finding(result, CONTROLS_BY_ID[result.control_id], scan.ref, resource, created_at=stamp,
                                updated_at=stamp)

"""A run and its report: the run's identity, each cluster's outcome, the totals, and the report written to S3.

The same report, with the same fields, for an inline run and a fanned-out one (whose results the last worker, or
the next run past the deadline, reads back from the run's folder)."""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from handler.config import ScanRequest
from handler.models import ClusterRef
from handler.publish.s3 import ReportStore
from handler.publish.securityhub import Rejection, rejections_by_target


@dataclass(frozen=True)
class Run:
    run_id: str
    started_at: str  # ISO 8601 UTC with milliseconds: every UpdatedAt of the run

    @property
    def date(self) -> str:
        return self.started_at[:10]

    @classmethod
    def start(cls, now: dt.datetime | None = None) -> Run:
        now = now or dt.datetime.now(dt.timezone.utc)
        stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}", stamp)


@dataclass
class ClusterOutcome:
    """What happened to one cluster in this run; what the report and the logs say about it."""

    cluster: ClusterRef
    result: str  # "scanned", "failed" (could not be read) or "deleted" (gone from its account)
    error: str | None = None
    namespaces: int = 0
    namespaces_failing: int = 0
    namespaces_terminating: int = 0
    policies_not_understood: int = 0  # wholly or in one direction: their verdicts may be NOT_AVAILABLE
    findings: int = 0
    findings_imported: int = 0
    findings_archived: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    findings_key: str | None = None
    api_requests: int = 0
    securityhub_calls: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "account_id": c.account_id, "region": c.region, "cluster": c.name, "cluster_arn": c.arn,
            "result": self.result, "error": self.error, "namespaces": self.namespaces,
            "namespaces_failing": self.namespaces_failing, "namespaces_terminating": self.namespaces_terminating,
            "policies_not_understood": self.policies_not_understood,
            "findings": self.findings, "findings_imported": self.findings_imported,
            "findings_archived": self.findings_archived,
            "findings_rejected": [r.__dict__ for r in self.rejected], "findings_key": self.findings_key,
            "api_requests": self.api_requests, "securityhub_calls": self.securityhub_calls,
            "seconds": round(self.seconds, 3),
        }


class RunScope(Protocol):
    """What a run report needs of its targets: Targets inline, a fan-out run's manifest afterwards."""

    failures: list[dict[str, str]]
    clusters_not_found: list[str]


def finish_report(store: ReportStore, run: Run, request: ScanRequest, scope: RunScope,
                  clusters: list[dict[str, Any]]) -> dict[str, Any]:
    """The run summary, also written to S3 with every cluster's result (unless a dry run), once: WriteConflict
    when the report exists already."""
    summary = summarize(clusters, scope.failures)
    if scope.clusters_not_found:
        summary["clusters_not_found"] = scope.clusters_not_found
    summary.update(run_id=run.run_id, dry_run=request.dry_run, seconds=round(_seconds_since(run), 3))
    if not request.dry_run:
        report = {"run_id": run.run_id, "started_at": run.started_at, "finished_at": _now(),
                  "scope": {"accounts": list(request.accounts), "regions": list(request.regions),
                            "clusters": list(request.clusters)},
                  "summary": summary, "clusters": clusters, "accounts_failed": scope.failures}
        summary["report"] = store.write_report(run.date, run.run_id, report)
    return summary


def summarize(clusters: list[dict[str, Any]], account_failures: list[dict[str, str]]) -> dict[str, Any]:
    """Totals over cluster results (ClusterOutcome.to_dict(), as kept in reports and fan-out results)."""
    scanned = [c for c in clusters if c["result"] == "scanned"]
    failed = [c for c in clusters if c["result"] == "failed"]
    return {
        "clusters_scanned": len(scanned),
        "clusters_failed": len(failed),
        "clusters_deleted": sum(c["result"] == "deleted" for c in clusters),
        "namespaces": sum(c["namespaces"] for c in scanned),
        "namespaces_failing": sum(c["namespaces_failing"] for c in scanned),
        "namespaces_failing_by_account": _by_account(scanned, "namespaces_failing"),
        "namespaces_terminating": sum(c["namespaces_terminating"] for c in scanned),
        # .get: a cluster result written before the count existed (a fan-out in flight across an update)
        "policies_not_understood": sum(c.get("policies_not_understood", 0) for c in scanned),
        "findings": sum(c["findings"] for c in clusters),
        "findings_imported": sum(c["findings_imported"] for c in clusters),
        "findings_archived": sum(c["findings_archived"] for c in clusters),
        "findings_rejected": sum(len(c["findings_rejected"]) for c in clusters),
        "findings_rejected_by_target": rejections_by_target(clusters),
        "accounts_failed": len(account_failures),
        "failures": [{"cluster": f"{c['account_id']}/{c['region']}/{c['cluster']}", "error": c["error"]}
                     for c in failed]
                    + [{"target": f"{f['account_id']}/{f['region']}", "error": f["error"]} for f in account_failures],
    }


def _by_account(clusters: list[dict[str, Any]], key: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for cluster in clusters:
        totals[cluster["account_id"]] = totals.get(cluster["account_id"], 0) + cluster[key]
    return dict(sorted(totals.items()))


def _seconds_since(run: Run) -> float:
    started = dt.datetime.fromisoformat(run.started_at.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.timezone.utc) - started).total_seconds()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

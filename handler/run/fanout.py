"""Fan-out for large fleets: one message per cluster, one worker per message, still one run.

The scheduled function discovers targets as always, then writes the run's manifest and sends one message per
cluster task. Workers (handler/worker.py, through handler/run/executors.py) scan and publish one cluster each and
record its result under the run; the worker that records the last result (or the next scheduled run, once the
run's deadline has passed) writes the run report, with the same fields as an inline run, listing clusters that
never finished as failed.

    fleet/run=<run id>/manifest.json                                      what the run expects
    fleet/run=<run id>/progress.json                                      clusters finished, of how many
    fleet/run=<run id>/clusters/account=<id>/region=<r>/cluster=<n>.json  one result per finished cluster

Each worker counts its cluster in progress.json with a conditional write (If-Match on the ETag it read, again on
a conflict), so that finding out whether it was the last costs two small requests, not a listing of the run's
results: O(n) requests over a run of n clusters, not n^2/2 listed keys. The results are listed once, for the
report. A task delivered again (its result recorded already) is not counted twice: that rare case counts by
listing.

Transports (handler/run/executors.py): SQS (a FIFO queue whose message groups bound how many workers publish into
one account and Region at once, so that Security Hub's 10 calls/s per account and Region hold across workers),
or `local`: the same worker code called in this process, for the sandbox and for checks without SQS.
"""
from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from handler.config import ScanRequest
from handler.errors import PublishError, WriteConflict
from handler.publish.s3 import ReportStore, only_over, report_key_of
from handler.run.discover import Targets
from handler.run.report import Run, finish_report
from handler.run.scan import ClusterTask, ScanContext

FLEET_PREFIX = "fleet/"
PROGRESS_ATTEMPTS = 20  # conditional increments of progress.json; each conflict means another worker counted


@dataclass
class RunManifest:
    """What a fanned-out run expects; enough to write its report from the results alone."""

    run_id: str
    started_at: str
    deadline: str
    tasks: list[list[Any]]  # [account_id, region, cluster, deleted]
    scope: dict[str, list[str]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    clusters_not_found: list[str] = field(default_factory=list)

    @property
    def run(self) -> Run:
        return Run(self.run_id, self.started_at)

    @property
    def request(self) -> ScanRequest:
        return ScanRequest(accounts=tuple(self.scope.get("accounts", ())), regions=tuple(self.scope.get("regions", ())),
                           clusters=tuple(self.scope.get("clusters", ())))


@dataclass(frozen=True)
class Progress:
    """How many of a run's clusters have a result, of how many, and until when the run waits for the rest."""

    finished: int
    expected: int
    deadline: str

    def complete(self, now: dt.datetime | None = None) -> bool:
        return self.finished >= self.expected or (now or _utcnow()) >= _parse(self.deadline)


class FleetStore:
    """Manifests, progress and per-cluster results of fanned-out runs, in the report bucket."""

    def __init__(self, reports: ReportStore) -> None:
        self.reports = reports

    def put_manifest(self, manifest: RunManifest) -> None:
        self.reports.put_json(f"{_run_prefix(manifest.run_id)}manifest.json", asdict(manifest))
        self.reports.put_json(_progress_key(manifest.run_id), asdict(Progress(0, len(manifest.tasks),
                                                                                manifest.deadline)))

    def manifest(self, run_id: str) -> RunManifest:
        return RunManifest(**self.reports.get_json(f"{_run_prefix(run_id)}manifest.json"))

    def put_result(self, run_id: str, result: dict[str, Any]) -> bool:
        """Records a cluster's result; True the first time, False when a later delivery replaced it."""
        key = (f"{_run_prefix(run_id)}clusters/account={result['account_id']}/region={result['region']}/"
               f"cluster={result['cluster']}.json")
        try:
            self.reports.put_json(key, result, IfNoneMatch="*")
            return True
        except WriteConflict:
            self.reports.put_json(key, result)
            return False

    def count_finished(self, run_id: str) -> Progress | None:
        """Adds one to the run's finished clusters; None for a run without progress.json (written before it)."""
        for _ in range(PROGRESS_ATTEMPTS):
            data, etag = self.reports.get_json_versioned(_progress_key(run_id))
            if data is None:
                return None
            progress = Progress(**{**data, "finished": data["finished"] + 1})
            try:
                self.reports.put_json(_progress_key(run_id), asdict(progress), **only_over(etag))
                return progress
            except WriteConflict:
                time.sleep(random.uniform(0.05, 0.25))  # apart from the workers that won, so that one wins next
        raise PublishError(f"{_progress_key(run_id)} kept changing: {PROGRESS_ATTEMPTS} attempts to count a result")

    def written_summary(self, run_id: str) -> dict[str, Any] | None:
        """The summary of a run's report when a worker wrote it already (the local transport runs them all)."""
        report, _ = self.reports.get_json_versioned(report_key_of(run_id))
        if report is None:
            return None
        return {**report["summary"], "report": report_key_of(run_id), "mode": "fan-out"}

    def results(self, run_id: str) -> list[dict[str, Any]]:
        return [self.reports.get_json(key) for key in self.reports.keys(f"{_run_prefix(run_id)}clusters/")]

    def result_count(self, run_id: str) -> int:
        return len(self.reports.keys(f"{_run_prefix(run_id)}clusters/"))

    def open_run_ids(self) -> list[str]:
        """Runs whose report has not been written. One listing entry per run folder, not per cluster result."""
        run_ids = [folder[len(f"{FLEET_PREFIX}run="):-1] for folder in self.reports.folders(FLEET_PREFIX)]
        return [r for r in run_ids if not self.reports.exists(report_key_of(r))]


def _run_prefix(run_id: str) -> str:
    return f"{FLEET_PREFIX}run={run_id}/"


def _progress_key(run_id: str) -> str:
    return f"{_run_prefix(run_id)}progress.json"


# -- the coordinator's side -----------------------------------------------------------------------------------
def fan_out(context: ScanContext, run: Run, request: ScanRequest, targets: Targets,
            send: Callable[[list[ClusterTask]], None]) -> dict[str, Any]:
    """Writes the manifest and hands one task per cluster to the transport. Returns the run report when the
    transport ran the tasks already (local), else a summary that says the run was queued."""
    fleet = FleetStore(context.store)
    finalize_overdue(fleet)
    deadline = _stamp(_parse(run.started_at) + dt.timedelta(minutes=context.settings.run_deadline_minutes))
    tasks = targets.cluster_tasks(run)
    fleet.put_manifest(RunManifest(
        run.run_id, run.started_at, deadline, [[t.account_id, t.region, t.cluster, t.deleted] for t in tasks],
        {"accounts": list(request.accounts), "regions": list(request.regions), "clusters": list(request.clusters)},
        targets.failures, targets.clusters_not_found))
    send(tasks)
    report = finalize(fleet, run.run_id) or fleet.written_summary(run.run_id)
    if report is not None:
        return report
    return {"clusters_scanned": 0, "clusters_failed": 0, "namespaces": 0, "namespaces_failing": 0,
            "findings_imported": 0, "accounts_failed": len(targets.failures), "clusters_queued": len(tasks),
            "run_id": run.run_id, "dry_run": False, "mode": "queue", "report_pending": True,
            "report": report_key_of(run.run_id)}


def record(fleet: FleetStore, run_id: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """A worker's end of a task: records its cluster's result, and writes the run's report when that was the
    last one (the report, else None)."""
    first = fleet.put_result(run_id, result)
    progress = fleet.count_finished(run_id) if first else None
    if progress is not None and not progress.complete():
        return None
    return finalize(fleet, run_id, counted=progress is not None)


def finalize(fleet: FleetStore, run_id: str, now: dt.datetime | None = None,
             counted: bool = False) -> dict[str, Any] | None:
    """The run's report, once every task has a result or the deadline has passed (`counted`: the caller knows
    so already); None before that, and None when another worker wrote it (the report is written once, so its
    metrics are emitted once)."""
    manifest = fleet.manifest(run_id)
    if (not counted and fleet.result_count(run_id) < len(manifest.tasks)
            and (now or _utcnow()) < _parse(manifest.deadline)):
        return None
    results = {(r["account_id"], r["region"], r["cluster"]): r for r in fleet.results(run_id)}
    clusters = [results.get((a, r, c)) or _never_finished(a, r, c, manifest.deadline)
                for a, r, c, _ in manifest.tasks]
    try:
        summary = finish_report(fleet.reports, manifest.run, manifest.request, manifest, clusters)
    except WriteConflict:
        return None  # another worker finished the run at the same time and wrote its one report
    summary["mode"] = "fan-out"
    return summary


def finalize_overdue(fleet: FleetStore) -> None:
    """Reports earlier runs whose deadline passed with tasks unfinished (their messages were lost or expired)."""
    for run_id in fleet.open_run_ids():
        finalize(fleet, run_id)


def _never_finished(account_id: str, region: str, cluster: str, deadline: str) -> dict[str, Any]:
    return {"account_id": account_id, "region": region, "cluster": cluster, "result": "failed",
            "error": f"never finished before the run's deadline ({deadline})", "namespaces": 0,
            "namespaces_failing": 0, "namespaces_terminating": 0, "findings": 0, "findings_imported": 0,
            "findings_archived": 0, "findings_rejected": [], "findings_key": None}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

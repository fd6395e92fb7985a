"""Fan-out for large fleets: one message per cluster, one worker per message, still one run.

The scheduled function discovers targets as always, then writes the run's manifest and sends one message per
cluster task. Workers (handler/worker.py, through handler/run/executors.py) scan and publish one cluster each and
record its result under the run; the worker that records the last result (or the next scheduled run, once the
run's deadline has passed) writes the run report, with the same fields as an inline run, listing clusters that
never finished as failed.

    fleet/run=<run id>/manifest.json                                      what the run expects
    fleet/run=<run id>/progress/layout.json                               how many shards, and the run's deadline
    fleet/run=<run id>/progress/shard=<k>.json                            the clusters of shard k finished, of how many
    fleet/run=<run id>/progress/complete.json                             the shards whose clusters all finished
    fleet/run=<run id>/clusters/account=<id>/region=<r>/cluster=<n>.json  one result per finished cluster

Finding out whether a worker's cluster was the run's last costs a few small requests, not a listing of the run's
results: O(n) requests over a run of n clusters, not n^2/2 listed keys. Each worker adds its cluster to its
progress shard (a hash of the cluster picks one of ceil(n / PROGRESS_SHARD_SIZE) shards) with a conditional write
(If-Match on the ETag it read, again after a backoff on a conflict); the worker that completes a shard adds the
shard to complete.json the same way, and the one that completes that writes the report. One counter for the whole
run was contended by every worker at once: at 50 workers of a second or two a cluster more counts arrive than
one object takes conditional writes, so counts failed after their attempts and their clusters were scanned
again. A shard holds at most about PROGRESS_SHARD_SIZE names, so each write stays small. Both levels are sets, not
counts: a task delivered again (its count failed, or its deletion) is counted once, whatever happened before.
Every worker reads layout.json, which never changes and stays small; only the S workers that complete a shard
touch complete.json (S names of shards at most): O(n) requests and O(n + S^2) bytes a run, S = n / 50. The
results are listed once, for the report.

Transports (handler/run/executors.py): SQS (a FIFO queue whose message groups bound how many workers publish into
one account and Region at once, so that Security Hub's 10 calls/s per account and Region hold across workers),
or `local`: the same worker code called in this process, for the sandbox and for checks without SQS.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
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
from handler.run.stages import CPU

FLEET_PREFIX = "fleet/"
PROGRESS_SHARD_SIZE = 50  # clusters counted in one progress object (on average: a hash spreads them)
PROGRESS_ATTEMPTS = 20  # conditional writes of one progress object; each conflict means another worker counted
PROGRESS_BACKOFF_SECONDS = (0.05, 2.0)  # the first retry's and the longest wait (full jitter, doubling): 31 s at most


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
    """Whether all of a run's clusters have a result, and until when the run waits for the rest."""

    all_finished: bool
    deadline: str

    def complete(self, now: dt.datetime | None = None) -> bool:
        return self.all_finished or (now or _utcnow()) >= _parse(self.deadline)


class FleetStore:
    """Manifests, progress and per-cluster results of fanned-out runs, in the report bucket."""

    def __init__(self, reports: ReportStore) -> None:
        self.reports = reports

    def put_manifest(self, manifest: RunManifest) -> None:
        """Writes the manifest and the progress shards, each empty and expecting its clusters (an empty shard is
        complete from the start)."""
        self.reports.put_json(f"{_run_prefix(manifest.run_id)}manifest.json", asdict(manifest))
        shards = max(1, math.ceil(len(manifest.tasks) / PROGRESS_SHARD_SIZE))
        expected = [0] * shards
        for account_id, region, cluster, _ in manifest.tasks:
            expected[shard_of(_task_name(account_id, region, cluster), shards)] += 1
        for shard, count in enumerate(expected):
            self.reports.put_json(_shard_key(manifest.run_id, shard), {"expected": count, "finished": []})
        self.reports.put_json(_complete_key(manifest.run_id),
                              {"complete": [k for k, count in enumerate(expected) if not count]})
        self.reports.put_json(_layout_key(manifest.run_id), {"shards": shards, "deadline": manifest.deadline})

    def manifest(self, run_id: str) -> RunManifest:
        return RunManifest(**self.reports.get_json(f"{_run_prefix(run_id)}manifest.json"))

    def put_result(self, run_id: str, result: dict[str, Any]) -> None:
        """Records a cluster's result (a later delivery's replaces it)."""
        key = (f"{_run_prefix(run_id)}clusters/account={result['account_id']}/region={result['region']}/"
               f"cluster={result['cluster']}.json")
        self.reports.put_json(key, result)

    def count_finished(self, run_id: str, result: dict[str, Any]) -> Progress | None:
        """Counts a cluster as finished, once however often it is counted; None for a run without progress
        shards (written before them: its report waits for a listing of the results)."""
        layout, _ = self.reports.get_json_versioned(_layout_key(run_id))
        if layout is None:
            return None
        name = _task_name(result["account_id"], result["region"], result["cluster"])
        shard = shard_of(name, layout["shards"])
        counted = self._add(_shard_key(run_id, shard), name)
        if counted is None or len(counted["finished"]) < counted["expected"]:
            return Progress(False, layout["deadline"])
        complete = self._add(_complete_key(run_id), shard, field_name="complete")
        return Progress(complete is not None and len(complete["complete"]) >= layout["shards"], layout["deadline"])

    def _add(self, key: str, item: str | int, field_name: str = "finished") -> dict[str, Any] | None:
        """Adds `item` to the set under `field_name` of a progress object, with conditional writes; the object as
        written (or as read, when it held the item already), None when there is no such object."""
        for attempt in range(PROGRESS_ATTEMPTS):
            data, etag = self.reports.get_json_versioned(key)
            if data is None or item in data[field_name]:
                return data
            data[field_name] = sorted([*data[field_name], item])
            try:
                self.reports.put_json(key, data, **only_over(etag))
                return data
            except WriteConflict:
                # Full jitter, doubling: the workers that lost spread out, so that one of them wins next.
                first, longest = PROGRESS_BACKOFF_SECONDS
                time.sleep(random.uniform(0, min(longest, first * 2 ** attempt)))
        raise PublishError(f"{key} kept changing: {PROGRESS_ATTEMPTS} attempts to count a result")

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


def _shard_key(run_id: str, shard: int) -> str:
    return f"{_run_prefix(run_id)}progress/shard={shard}.json"


def _layout_key(run_id: str) -> str:
    return f"{_run_prefix(run_id)}progress/layout.json"


def _complete_key(run_id: str) -> str:
    return f"{_run_prefix(run_id)}progress/complete.json"


def _task_name(account_id: str, region: str, cluster: str) -> str:
    return f"{account_id}/{region}/{cluster}"


def shard_of(task_name: str, shards: int) -> int:
    """The progress shard that counts a cluster: the same in the coordinator and every worker."""
    return int(hashlib.sha256(task_name.encode()).hexdigest()[:8], 16) % shards


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
    with CPU.stage("result"):
        fleet.put_result(run_id, result)
    with CPU.stage("progress"):
        progress = fleet.count_finished(run_id, result)
    if progress is not None and not progress.complete():
        return None
    with CPU.stage("finalize"):
        return finalize(fleet, run_id, counted=progress is not None)


def finalize(fleet: FleetStore, run_id: str, now: dt.datetime | None = None,
             counted: bool = False) -> dict[str, Any] | None:
    """The run's report, once every task has a result or the deadline has passed (`counted`: the caller knows
    so already); None before that, and None when another worker wrote it (the report is written once, so its
    metrics are emitted once)."""
    if fleet.reports.exists(report_key_of(run_id)):  # a task delivered again after the run was reported
        return None
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

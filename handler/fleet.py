"""Fan-out for large fleets: one message per cluster, one worker per message, still one run.

The scheduled function discovers targets as always, then writes the run's manifest and sends one message per
cluster task. Workers (handler/worker.py) scan and publish one cluster each and record its result under the run;
the worker that records the last result (or the next scheduled run, once the run's deadline has passed) writes
the run report, with the same fields as an inline run, listing clusters that never finished as failed.

    fleet/run=<run id>/manifest.json                                      what the run expects
    fleet/run=<run id>/progress.json                                      clusters finished, of how many
    fleet/run=<run id>/clusters/account=<id>/region=<r>/cluster=<n>.json  one result per finished cluster

Each worker counts its cluster in progress.json with a conditional write (If-Match on the ETag it read, again on
a conflict), so that finding out whether it was the last costs two small requests, not a listing of the run's
results: O(n) requests over a run of n clusters, not n^2/2 listed keys. The results are listed once, for the
report. A task delivered again (its result recorded already) is not counted twice: that rare case counts by
listing.

Transports: SQS (a FIFO queue whose message groups bound how many workers publish into one account and Region
at once, so that Security Hub's 10 calls/s per account and Region hold across workers), or `local`: the same
worker code called in this process, for the sandbox and for checks without SQS.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from handler.config import ACCOUNT_ID, CLUSTER_NAME, REGION, RUN_ID, TIMESTAMP, ScanRequest, Settings
from handler.errors import PublishError, ScannerError, WriteConflict
from handler.pipeline import Scanner, Targets
from handler.publish.s3 import ReportStore, only_over, report_key_of
from handler.report import Run, finish_report

FLEET_PREFIX = "fleet/"
SQS_BATCH = 10
PROGRESS_ATTEMPTS = 20  # conditional increments of progress.json; each conflict means another worker counted


class TaskError(ScannerError, ValueError):
    """Raised when a queue message is not a cluster task this scanner wrote."""


@dataclass(frozen=True)
class ClusterTask:
    """The body of one queue message: which cluster, in which run."""

    run_id: str
    started_at: str
    account_id: str
    region: str
    cluster: str
    deleted: bool = False

    @property
    def run(self) -> Run:
        return Run(self.run_id, self.started_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, body: str) -> ClusterTask:
        try:
            data = json.loads(body)
            task = cls(**data)
        except (ValueError, TypeError) as error:
            raise TaskError(f"not a cluster task: {body[:200]!r}") from error
        bad = [name for name, pattern in TASK_FIELDS
               if not isinstance(getattr(task, name), str) or not pattern.fullmatch(getattr(task, name))]
        if bad or not isinstance(task.deleted, bool):
            raise TaskError(f"cluster task with malformed field(s) {', '.join(bad) or 'deleted'}: {body[:200]!r}")
        return task


# A message is checked with the event's patterns: its fields become AssumeRole ARNs and S3 keys.
TASK_FIELDS = (("run_id", RUN_ID), ("started_at", TIMESTAMP), ("account_id", ACCOUNT_ID), ("region", REGION),
               ("cluster", CLUSTER_NAME))


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
def fan_out(scanner: Scanner, run: Run, request: ScanRequest, targets: Targets,
            send: Callable[[list[ClusterTask]], None]) -> dict[str, Any]:
    """Writes the manifest and hands one task per cluster to the transport. Returns the run report when the
    transport ran the tasks already (local), else a summary that says the run was queued."""
    fleet = FleetStore(scanner.store)
    finalize_overdue(scanner, fleet)
    deadline = _stamp(_parse(run.started_at) + dt.timedelta(minutes=scanner.settings.run_deadline_minutes))
    tasks = [ClusterTask(run.run_id, run.started_at, t.account_id, t.region, name, deleted)
             for t, name, deleted in targets.tasks]
    fleet.put_manifest(RunManifest(
        run.run_id, run.started_at, deadline, [[t.account_id, t.region, t.cluster, t.deleted] for t in tasks],
        {"accounts": list(request.accounts), "regions": list(request.regions), "clusters": list(request.clusters)},
        targets.failures, targets.clusters_not_found))
    send(tasks)
    report = finalize(scanner, fleet, run.run_id) or fleet.written_summary(run.run_id)
    if report is not None:
        return report
    return {"clusters_scanned": 0, "clusters_failed": 0, "namespaces": 0, "namespaces_failing": 0,
            "findings_imported": 0, "accounts_failed": len(targets.failures), "clusters_queued": len(tasks),
            "run_id": run.run_id, "dry_run": False, "mode": "queue", "report_pending": True,
            "report": report_key_of(run.run_id)}


def record(scanner: Scanner, fleet: FleetStore, run_id: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """A worker's end of a task: records its cluster's result, and writes the run's report when that was the
    last one (the report, else None)."""
    first = fleet.put_result(run_id, result)
    progress = fleet.count_finished(run_id) if first else None
    if progress is not None and not progress.complete():
        return None
    return finalize(scanner, fleet, run_id, counted=progress is not None)


def finalize(scanner: Scanner, fleet: FleetStore, run_id: str, now: dt.datetime | None = None,
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
        summary = finish_report(scanner.store, manifest.run, manifest.request, manifest, clusters)
    except WriteConflict:
        return None  # another worker finished the run at the same time and wrote its one report
    summary["mode"] = "fan-out"
    return summary


def finalize_overdue(scanner: Scanner, fleet: FleetStore) -> None:
    """Reports earlier runs whose deadline passed with tasks unfinished (their messages were lost or expired)."""
    for run_id in fleet.open_run_ids():
        finalize(scanner, fleet, run_id)


def _never_finished(account_id: str, region: str, cluster: str, deadline: str) -> dict[str, Any]:
    return {"account_id": account_id, "region": region, "cluster": cluster, "result": "failed",
            "error": f"never finished before the run's deadline ({deadline})", "namespaces": 0,
            "namespaces_failing": 0, "namespaces_terminating": 0, "findings": 0, "findings_imported": 0,
            "findings_archived": 0, "findings_rejected": [], "findings_key": None}


# -- transports -----------------------------------------------------------------------------------------------
class SqsSender:
    """Sends tasks to the scan queue, ten a call. On a FIFO queue, message groups `<account>/<region>/<k>` with
    k < workers_per_account bound the workers that publish into one account and Region at a time."""

    def __init__(self, sqs: Any, queue_url: str, workers_per_account: int) -> None:
        self.sqs, self.queue_url = sqs, queue_url
        self.fifo = queue_url.endswith(".fifo")
        self.workers_per_account = workers_per_account

    def __call__(self, tasks: list[ClusterTask]) -> None:
        for start in range(0, len(tasks), SQS_BATCH):
            entries = [self._entry(i, task) for i, task in enumerate(tasks[start:start + SQS_BATCH])]
            self._send(entries)

    def _entry(self, index: int, task: ClusterTask) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": str(index), "MessageBody": task.to_json()}
        if self.fifo:
            digest = hashlib.sha256(f"{task.run_id}/{task.account_id}/{task.region}/{task.cluster}".encode())
            shard = int(digest.hexdigest()[:8], 16) % self.workers_per_account
            entry["MessageGroupId"] = f"{task.account_id}/{task.region}/{shard}"
            entry["MessageDeduplicationId"] = digest.hexdigest()
        return entry

    def _send(self, entries: list[dict[str, Any]]) -> None:
        for _ in range(3):
            try:
                failed = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries).get("Failed", [])
            except (ClientError, BotoCoreError) as error:
                raise PublishError(f"cannot send scan tasks to {self.queue_url}: {error}") from error
            failed_ids = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in failed_ids]
            if not entries:
                return
        raise PublishError(f"SQS kept refusing {len(entries)} scan task(s): {failed}")


class LocalSender:
    """Runs each task through the worker's own record handling, in this process, as its final attempt."""

    def __init__(self, handle_batch: Callable[[dict[str, Any]], dict[str, Any]], settings: Settings) -> None:
        self.handle_batch = handle_batch
        self.settings = settings

    def __call__(self, tasks: Iterable[ClusterTask]) -> None:
        with ThreadPoolExecutor(max_workers=self.settings.cluster_concurrency) as pool:
            list(pool.map(lambda task: self.handle_batch(sqs_event([task], self.settings.max_receives)), tasks))


def sqs_event(tasks: Iterable[ClusterTask], receive_count: int, queue_arn: str = "arn:aws:sqs:local:000000000000:scan",
              ) -> dict[str, Any]:
    """Lambda's SQS event for these tasks, as the event source mapping delivers them."""
    return {"Records": [{
        "messageId": f"local-{i}-{task.cluster}", "receiptHandle": "local", "body": task.to_json(),
        "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "0",
                       "SenderId": "local", "ApproximateFirstReceiveTimestamp": "0"},
        "messageAttributes": {}, "md5OfBody": hashlib.md5(task.to_json().encode()).hexdigest(),
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "local"}
        for i, task in enumerate(tasks)]}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

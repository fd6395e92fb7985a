"""One scan run: discover targets, read each cluster, evaluate, build findings, publish. Data flows one way.

Per-cluster and per-account failures are recorded and never abort the run; only what makes the whole run
meaningless (no identity, no report) raises, so that Lambda's error metric and retries see it.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3

from handler import discovery
from handler.asff import cluster_resource
from handler.auth import TokenSource
from handler.cluster_reader import ClusterReader
from handler.config import ScanRequest, Settings
from handler.controls import CONTROLS
from handler.errors import ClusterReadError, DiscoveryError, PublishError
from handler.models import ClusterRef, ClusterSnapshot, ComplianceStatus, ControlResult
from handler.publish.s3 import GzipJsonLines, ReportStore
from handler.publish.securityhub import RateLimiter, Rejection, SecurityHubPublisher, client_config
from handler.state import ClusterState, Plan, plan_deleted, plan_scanned, plan_unreadable

# A cluster is not started with less time than this left: its findings would be half-published.
MIN_SECONDS_PER_CLUSTER = 45.0


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
    findings: int = 0
    findings_imported: int = 0
    findings_archived: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    findings_key: str | None = None
    api_requests: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "account_id": c.account_id, "region": c.region, "cluster": c.name, "cluster_arn": c.arn,
            "result": self.result, "error": self.error, "namespaces": self.namespaces,
            "namespaces_failing": self.namespaces_failing, "namespaces_terminating": self.namespaces_terminating,
            "findings": self.findings, "findings_imported": self.findings_imported,
            "findings_archived": self.findings_archived,
            "findings_rejected": [r.__dict__ for r in self.rejected], "findings_key": self.findings_key,
            "api_requests": self.api_requests, "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class RegionTarget:
    """One account and Region, with the clients that act in it (built up front, in one thread)."""

    account_id: str
    region: str
    partition: str
    eks: Any
    tokens: TokenSource
    publisher: SecurityHubPublisher


@dataclass
class Targets:
    tasks: list[tuple[RegionTarget, str, bool]] = field(default_factory=list)  # (target, cluster, deleted)
    failures: list[dict[str, str]] = field(default_factory=list)
    clusters_named: set[str] = field(default_factory=set)


class Scanner:
    """Runs a scan with injected collaborators, so that tests drive it against real local servers."""

    def __init__(self, settings: Settings, base_session: boto3.Session, reader: ClusterReader,
                 logger: logging.Logger | Any, remaining_seconds: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.base = base_session
        self.reader = reader
        self.log = logger
        self.remaining_seconds = remaining_seconds or (lambda: float("inf"))
        self.store = ReportStore(base_session.client("s3", region_name=settings.default_region,
                                                     config=discovery.AWS_CALLS), settings.report_bucket)

    def run(self, request: ScanRequest, run: Run) -> dict[str, Any]:
        started = time.monotonic()
        own = discovery.own_identity(self.base, self.settings.default_region)
        targets = self._discover(request, own)
        with ThreadPoolExecutor(max_workers=self.settings.cluster_concurrency) as pool:
            outcomes = list(pool.map(lambda task: self._cluster(run, request.dry_run, *task), targets.tasks))
        summary = summarize(outcomes, targets.failures)
        missing = sorted(set(request.clusters) - targets.clusters_named)
        if missing:
            summary["clusters_not_found"] = missing
        summary.update(run_id=run.run_id, dry_run=request.dry_run, seconds=round(time.monotonic() - started, 3))
        if not request.dry_run:
            report = {"run_id": run.run_id, "started_at": run.started_at, "finished_at": _now(),
                      "scope": {"accounts": list(request.accounts), "regions": list(request.regions),
                                "clusters": list(request.clusters)},
                      "summary": summary, "clusters": [o.to_dict() for o in outcomes],
                      "accounts_failed": targets.failures}
            summary["report"] = self.store.write_report(run.date, run.run_id, report)
        return summary

    # -- discovery ------------------------------------------------------------------------------------
    def _discover(self, request: ScanRequest, own: discovery.Identity) -> Targets:
        targets = Targets()
        regions = discovery.target_regions(self.settings, request)
        for account_id in discovery.target_accounts(self.base, self.settings, request, own):
            try:
                session = discovery.account_session(self.base, self.settings, own, account_id)
            except DiscoveryError as error:
                self._target_failed(targets, account_id, "*", error)
                continue
            for region in regions:
                try:
                    self._discover_region(targets, request, session, own.partition, account_id, region)
                except (DiscoveryError, PublishError) as error:
                    self._target_failed(targets, account_id, region, error)
        return targets

    def _discover_region(self, targets: Targets, request: ScanRequest, session: boto3.Session, partition: str,
                         account_id: str, region: str) -> None:
        eks = session.client("eks", region_name=region, config=discovery.AWS_CALLS)
        listed = discovery.cluster_names(eks, account_id, region)
        wanted = [n for n in listed if not request.clusters or n in request.clusters]
        targets.clusters_named.update(wanted)
        # Only a scan of the whole account and Region may conclude that a cluster is gone.
        gone = [] if request.names_clusters else sorted(set(self.store.known_clusters(account_id, region))
                                                        - set(listed))
        if not wanted and not gone:
            return
        hub = session.client("securityhub", region_name=region, config=client_config())
        target = RegionTarget(account_id, region, partition, eks, TokenSource(session, region),
                              SecurityHubPublisher(hub, RateLimiter()))
        targets.tasks.extend((target, name, False) for name in wanted)
        targets.tasks.extend((target, name, True) for name in gone)

    def _target_failed(self, targets: Targets, account_id: str, region: str, error: Exception) -> None:
        targets.failures.append({"account_id": account_id, "region": region, "error": str(error)})
        self.log.error("target not scanned", extra={"account_id": account_id, "region": region,
                                                    "error": str(error)})

    # -- one cluster ----------------------------------------------------------------------------------
    def _cluster(self, run: Run, dry_run: bool, target: RegionTarget, name: str, deleted: bool) -> ClusterOutcome:
        started = time.monotonic()
        ref = ClusterRef(target.account_id, target.region, name, target.partition)
        try:
            outcome = self._deleted(run, dry_run, target, ref) if deleted else self._scan(run, dry_run, target, ref)
        except PublishError as error:
            outcome = ClusterOutcome(ref, "failed", error=f"publishing failed: {error}")
        except Exception as error:  # a defect must cost one cluster, not the whole fleet's run
            self.log.exception("cluster task failed", extra={"cluster": str(ref)})
            outcome = ClusterOutcome(ref, "failed", error=f"internal error: {type(error).__name__}: {error}")
        outcome.seconds = time.monotonic() - started
        self._log(outcome)
        return outcome

    def _scan(self, run: Run, dry_run: bool, target: RegionTarget, ref: ClusterRef) -> ClusterOutcome:
        if self.remaining_seconds() < MIN_SECONDS_PER_CLUSTER:
            return ClusterOutcome(ref, "failed", error="not started: the run was running out of time")
        previous = self.store.load_state(ref)
        resource = None
        try:
            info = discovery.describe_cluster(target.eks, ref)
            resource = cluster_resource(info)
            snapshot = self.reader.read(info, target.tokens.token(ref.name))
        except (ClusterReadError, DiscoveryError) as error:
            return self._publish(run, dry_run, target, previous,
                                 plan_unreadable(previous, ref, resource, str(error), run.started_at),
                                 ClusterOutcome(ref, "failed", error=str(error)))
        results = evaluate(snapshot)
        outcome = ClusterOutcome(ref, "scanned", api_requests=snapshot.api_requests, **_counts(snapshot, results))
        return self._publish(run, dry_run, target, previous,
                             plan_scanned(previous, ref, resource, results, run.started_at), outcome)

    def _deleted(self, run: Run, dry_run: bool, target: RegionTarget, ref: ClusterRef) -> ClusterOutcome:
        previous = self.store.load_state(ref)
        if previous is None:
            return ClusterOutcome(ref, "deleted")
        return self._publish(run, dry_run, target, previous, plan_deleted(previous, run.started_at),
                             ClusterOutcome(ref, "deleted"))

    def _publish(self, run: Run, dry_run: bool, target: RegionTarget, previous: ClusterState | None, plan: Plan,
                 outcome: ClusterOutcome) -> ClusterOutcome:
        outcome.findings_archived = plan.archived
        if dry_run:
            outcome.findings = sum(1 for _ in plan.findings())  # built, so a dry run proves they can be
            return outcome
        outcome.findings = len(plan.send_ids)
        if not plan.send_ids:
            return outcome
        written = GzipJsonLines()
        imported = target.publisher.import_findings(written.tee(plan.findings()))
        outcome.findings_imported, outcome.rejected = imported.imported, imported.rejected
        self.store.save_state(plan.settle(previous, [r.finding_id for r in imported.rejected]))
        outcome.findings_key = self.store.write_findings(outcome.cluster, run.date, run.run_id, written)
        return outcome

    def _log(self, outcome: ClusterOutcome) -> None:
        record = outcome.to_dict()
        record["findings_rejected"] = len(outcome.rejected)
        if outcome.result == "failed":
            self.log.warning("cluster not scanned", extra=record)
        else:
            self.log.info(f"cluster {outcome.result}", extra=record)
        for rejection in outcome.rejected[:20]:
            self.log.error("finding rejected by Security Hub", extra={"finding_id": rejection.finding_id,
                                                                      "error_code": rejection.error_code,
                                                                      "error_message": rejection.error_message})


def evaluate(snapshot: ClusterSnapshot) -> list[ControlResult]:
    return [result for control in CONTROLS if control.evaluate for result in control.evaluate(snapshot)]


def _counts(snapshot: ClusterSnapshot, results: Iterable[ControlResult]) -> dict[str, int]:
    failing = {r.namespace for r in results if r.namespace is not None and r.status is ComplianceStatus.FAILED}
    return {"namespaces": len(snapshot.namespaces), "namespaces_failing": len(failing),
            "namespaces_terminating": sum(ns.terminating for ns in snapshot.namespaces)}


def summarize(outcomes: list[ClusterOutcome], account_failures: list[dict[str, str]]) -> dict[str, Any]:
    scanned = [o for o in outcomes if o.result == "scanned"]
    failed = [o for o in outcomes if o.result == "failed"]
    return {
        "clusters_scanned": len(scanned),
        "clusters_failed": len(failed),
        "clusters_deleted": sum(o.result == "deleted" for o in outcomes),
        "namespaces": sum(o.namespaces for o in scanned),
        "namespaces_failing": sum(o.namespaces_failing for o in scanned),
        "namespaces_terminating": sum(o.namespaces_terminating for o in scanned),
        "findings": sum(o.findings for o in outcomes),
        "findings_imported": sum(o.findings_imported for o in outcomes),
        "findings_archived": sum(o.findings_archived for o in outcomes),
        "findings_rejected": sum(len(o.rejected) for o in outcomes),
        "accounts_failed": len(account_failures),
        "failures": [{"cluster": str(o.cluster), "error": o.error} for o in failed]
                    + [{"target": f"{f['account_id']}/{f['region']}", "error": f["error"]} for f in account_failures],
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

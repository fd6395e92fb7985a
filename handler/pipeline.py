"""One scan run: discover targets, read each cluster, evaluate, build findings, publish. Data flows one way.

Per-cluster and per-account failures are recorded and never abort the run; only what makes the whole run
meaningless (no identity, no report) raises, so that Lambda's error metric and retries see it.
"""
from __future__ import annotations

import copy
import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3

from handler import discovery
from handler.asff import cluster_resource, encoded_findings, plan_findings
from handler.cluster_reader import ClusterReader
from handler.clients import Clients, RegionTarget
from handler.config import ScanRequest, Settings
from handler.controls import namespace_network_policy
from handler.evaluation import Evaluator
from handler.errors import ClusterReadError, DiscoveryError, PublishError, ScannerError, WriteConflict
from handler.models import ClusterRef, ClusterSnapshot, ComplianceStatus, ControlResult
from handler.policy.coverage import not_understood
from handler.publish.s3 import GzipJsonLines, ReportStore, StoredState
from handler.publish.securityhub import CALLS_PER_SECOND
from handler.report import ClusterOutcome, Run, finish_report
from handler.state import ClusterState, Plan, plan_deleted, plan_scanned, plan_unreadable

STATE_WRITE_ATTEMPTS = 5  # plans over a state another run wrote meanwhile; more means something keeps writing it


@dataclass(frozen=True)
class TimeBudget:
    """How a cluster's scan shares the invocation's remaining time. A cluster is not started with less than
    `start` seconds left; its read must end with `after_read` seconds left (to publish a NOT_AVAILABLE finding and
    write the run report); its findings are not published without `publish_margin` seconds beyond what importing
    them all takes: a cluster is scanned whole or tried again, never half-published, and the report is written."""

    start: float = 45.0
    after_read: float = 30.0
    publish_margin: float = 15.0


@dataclass
class Targets:
    tasks: list[tuple[RegionTarget, str, bool]] = field(default_factory=list)  # (target, cluster, deleted)
    failures: list[dict[str, str]] = field(default_factory=list)
    clusters_named: set[str] = field(default_factory=set)
    clusters_not_found: list[str] = field(default_factory=list)


class OutOfTime(ScannerError):
    """Raised before a cluster is read or published when the invocation has too little time left for it."""


class Scanner:
    """Runs a scan with injected collaborators, so that tests drive it against real local servers."""

    def __init__(self, settings: Settings, base_session: boto3.Session, reader: ClusterReader,
                 logger: logging.Logger | Any, remaining_seconds: Callable[[], float] | None = None,
                 calls_per_second: float = CALLS_PER_SECOND, budget: TimeBudget = TimeBudget()) -> None:
        self.settings = settings
        self.budget = budget
        self.base = base_session
        self.reader = reader
        self.log = logger
        self.remaining_seconds = remaining_seconds or (lambda: float("inf"))
        self.calls_per_second = calls_per_second
        self.refresh = dt.timedelta(days=settings.refresh_days)
        self.clients = Clients(base_session, settings, calls_per_second)
        self.store = ReportStore(base_session.client("s3", region_name=settings.default_region,
                                                     config=discovery.AWS_CALLS), settings.report_bucket)
        # Exemptions are loaded once per invocation, and a bad document raises here, before anything is written.
        self.evaluator = Evaluator.from_settings(settings, base_session)

    def with_clock(self, remaining_seconds: Callable[[], float]) -> Scanner:
        """This scanner for one invocation: the same clients, store and exemptions, that invocation's clock (a warm
        worker's scanner serves many invocations; it is never changed for one)."""
        scanner = copy.copy(self)
        scanner.remaining_seconds = remaining_seconds
        return scanner

    @functools.cached_property
    def targeted_accounts(self) -> frozenset[str]:
        """What a queue message may name: listed once per warm worker (an organization's listing is paged)."""
        return frozenset(discovery.targeted_accounts(self.base, self.settings, self.clients.own))

    def scan_inline(self, run: Run, request: ScanRequest, targets: Targets) -> dict[str, Any]:
        """Scans every target in this invocation, on CLUSTER_CONCURRENCY threads, and writes the run report."""
        def scan(task: tuple[RegionTarget, str, bool]) -> ClusterOutcome:
            try:
                return self.scan_cluster(run, request.dry_run, *task)
            except OutOfTime as error:
                ref = ClusterRef(task[0].account_id, task[0].region, task[1], task[0].partition)
                return self._logged(ClusterOutcome(ref, "failed", error=f"not scanned: {error}"))

        with ThreadPoolExecutor(max_workers=self.settings.cluster_concurrency) as pool:
            outcomes = list(pool.map(scan, targets.tasks))
        return finish_report(self.store, run, request, targets, [o.to_dict() for o in outcomes])

    # -- discovery ------------------------------------------------------------------------------------
    def discover(self, request: ScanRequest) -> Targets:
        """Every target cluster, found account by account in parallel (AssumeRole, then ListClusters per Region):
        a fleet of a hundred account-Regions is listed in seconds, not minutes."""
        accounts = discovery.target_accounts(self.base, self.settings, request, self.clients.own)
        regions = discovery.target_regions(self.settings, request)
        self.clients.sessions  # noqa: B018 - made here, in one thread: it creates clients from the base session
        with ThreadPoolExecutor(max_workers=self.settings.cluster_concurrency) as pool:
            found = list(pool.map(lambda account_id: self._discover_account(request, account_id, regions), accounts))
        targets = Targets()
        for part in found:
            targets.tasks += part.tasks
            targets.failures += part.failures
            targets.clusters_named |= part.clusters_named
        targets.clusters_not_found = sorted(set(request.clusters) - targets.clusters_named)
        return targets

    def _discover_account(self, request: ScanRequest, account_id: str, regions: list[str]) -> Targets:
        targets = Targets()
        try:
            session = self.clients.sessions.session(account_id)
        except DiscoveryError as error:
            self._target_failed(targets, account_id, "*", error)
            return targets
        for region in regions:
            try:
                self._discover_region(targets, request, session, account_id, region)
            except (DiscoveryError, PublishError) as error:
                self._target_failed(targets, account_id, region, error)
        return targets

    def _discover_region(self, targets: Targets, request: ScanRequest, session: boto3.Session, account_id: str,
                         region: str) -> None:
        target = self.clients.region_target(session, account_id, region)
        listed = discovery.cluster_names(target.eks, account_id, region)
        wanted = [n for n in listed if not request.clusters or n in request.clusters]
        targets.clusters_named.update(wanted)
        # Only a scan of the whole account and Region may conclude that a cluster is gone.
        gone = [] if request.names_clusters else sorted(set(self.store.known_clusters(account_id, region))
                                                        - set(listed))
        targets.tasks.extend((target, name, False) for name in wanted)
        targets.tasks.extend((target, name, True) for name in gone)

    def _target_failed(self, targets: Targets, account_id: str, region: str, error: Exception) -> None:
        targets.failures.append({"account_id": account_id, "region": region, "error": str(error)})
        self.log.error("target not scanned", extra={"account_id": account_id, "region": region,
                                                    "error": str(error)})

    # -- one cluster ----------------------------------------------------------------------------------
    def scan_cluster(self, run: Run, dry_run: bool, target: RegionTarget, name: str, deleted: bool,
                     failure_note: str = "") -> ClusterOutcome:
        """One cluster, read and published, or archived when deleted. Errors cost this cluster only; OutOfTime
        is raised before anything is published, so that the cluster can be tried again whole."""
        started = time.monotonic()
        ref = ClusterRef(target.account_id, target.region, name, target.partition)
        try:
            if deleted:
                outcome = self._deleted(run, dry_run, target, ref)
            else:
                outcome = self._scan(run, dry_run, target, ref, failure_note)
        except OutOfTime:
            raise
        except PublishError as error:
            outcome = ClusterOutcome(ref, "failed", error=f"publishing failed: {error}")
        except Exception as error:  # a defect must cost one cluster, not the whole fleet's run
            self.log.exception("cluster task failed", extra={"cluster": str(ref)})
            outcome = ClusterOutcome(ref, "failed", error=f"internal error: {type(error).__name__}: {error}")
        outcome.seconds = time.monotonic() - started
        return self._logged(outcome)

    def _scan(self, run: Run, dry_run: bool, target: RegionTarget, ref: ClusterRef,
              failure_note: str) -> ClusterOutcome:
        self._require_time(self.budget.start, "not started")
        stored = self.store.load_state(ref)
        resource = None
        try:
            info = discovery.describe_cluster(target.eks, ref)
            resource = cluster_resource(info)
            snapshot = self.reader.read(info, target.tokens.token(ref.name), self._read_deadline())
        except (ClusterReadError, DiscoveryError) as error:
            reason = f"{error}{failure_note}"
            return self._publish(run, dry_run, target, stored, ClusterOutcome(ref, "failed", error=reason),
                                 lambda previous: plan_unreadable(previous, ref, resource, reason, run.started_at,
                                                                  self.refresh))
        results = self.evaluator.evaluate(snapshot, run.started_at)
        outcome = ClusterOutcome(ref, "scanned", api_requests=snapshot.api_requests, **_counts(snapshot, results))
        return self._publish(run, dry_run, target, stored, outcome,
                             lambda previous: plan_scanned(previous, ref, resource, results, run.started_at,
                                                           self.refresh))

    def _read_deadline(self) -> float | None:
        """When a read must be over (time.monotonic()), or None when the invocation has no time limit."""
        seconds = self.remaining_seconds() - self.budget.after_read
        return None if math.isinf(seconds) else time.monotonic() + seconds

    def _require_time(self, seconds: float, what: str) -> None:
        if self.remaining_seconds() < seconds:
            raise OutOfTime(f"{what}: less than {seconds:.0f} s of the invocation left")

    def _deleted(self, run: Run, dry_run: bool, target: RegionTarget, ref: ClusterRef) -> ClusterOutcome:
        stored = self.store.load_state(ref)
        if stored.state is None:
            return ClusterOutcome(ref, "deleted")
        return self._publish(run, dry_run, target, stored, ClusterOutcome(ref, "deleted"),
                             lambda previous: plan_deleted(previous, ref, run.started_at))

    def _publish(self, run: Run, dry_run: bool, target: RegionTarget, stored: StoredState, outcome: ClusterOutcome,
                 plan_over: Callable[[ClusterState | None], Plan]) -> ClusterOutcome:
        """Publishes the plan made over the state read; when another run wrote that state in the meantime, plans
        again over what it wrote and publishes the difference, so that state and Security Hub end up agreeing."""
        for _ in range(STATE_WRITE_ATTEMPTS):
            plan = plan_over(stored.state)
            outcome.findings_archived = plan.archived
            if dry_run:
                outcome.findings = sum(1 for f in plan_findings(plan) if f["Id"] in plan.send_ids)  # built, to prove it
                return outcome
            outcome.findings = len(plan.send_ids)
            if not plan.report_ids and not (plan.forget and stored.etag):
                return outcome
            try:
                return self._publish_plan(run, target, stored, plan, outcome)
            except WriteConflict:
                self.log.info("state written by another run: planning again", extra={"cluster": str(outcome.cluster)})
                stored = self.store.load_state(outcome.cluster)
        raise PublishError(f"the state of {outcome.cluster} kept changing under this run "
                           f"({STATE_WRITE_ATTEMPTS} attempts)")

    def _publish_plan(self, run: Run, target: RegionTarget, stored: StoredState, plan: Plan,
                      outcome: ClusterOutcome) -> ClusterOutcome:
        # Publishing is not started without the time to finish it, at this scanner's share of Security Hub's rate
        # (a batch of 100 a call), with room for retries.
        self._require_time(self.budget.publish_margin + len(plan.send_ids) / 100 / self.calls_per_second * 2,
                           "not published")
        written = GzipJsonLines()
        imported = target.publisher.import_encoded(
            (f, line) for f, line in written.tee(encoded_findings(plan)) if f["Id"] in plan.send_ids)
        outcome.findings_imported += imported.imported
        outcome.rejected = imported.rejected
        settled = plan.settle(stored.state, [r.finding_id for r in imported.rejected])
        if settled is None:
            self.store.delete_state(outcome.cluster, stored)
        elif settled != stored.state:  # an unchanged cluster's state is not written again
            self.store.save_state(settled, stored)
        if plan.report_ids:
            outcome.findings_key = self.store.write_findings(outcome.cluster, run.date, run.run_id, written)
        return outcome

    def _logged(self, outcome: ClusterOutcome) -> ClusterOutcome:
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
        return outcome


def _counts(snapshot: ClusterSnapshot, results: Iterable[ControlResult]) -> dict[str, int]:
    # Failing means FAILED on CIS 5.3.2; the other controls' verdicts are in their own findings.
    failing = {r.namespace for r in results if r.namespace is not None and r.status is ComplianceStatus.FAILED
               and r.control_id == namespace_network_policy.CONTROL_ID}
    return {"namespaces": len(snapshot.namespaces), "namespaces_failing": len(failing),
            "namespaces_terminating": sum(ns.terminating for ns in snapshot.namespaces),
            "policies_not_understood": len(not_understood(snapshot.coverage.values()))}

"""One cluster, read -> evaluate -> plan -> publish: `scan_cluster(context, task) -> ClusterOutcome`.

The same function for every executor (inline, SQS worker, local). What it needs is handed to it in a ScanContext
(clients, reader, evaluator, store, time budget, clock), made once and never changed: an invocation gets its own
copy with its own clock. Errors cost the cluster only; OutOfTime is raised before anything is published, so that
the cluster can be tried again whole.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import boto3

from handler import collector
from handler.asff import cluster_resource, encoded_findings, plan_findings
from handler.cluster_reader import ClusterReader, ReadLimits
from handler.config import ACCOUNT_ID, CLUSTER_NAME, REGION, RUN_ID, TIMESTAMP, Settings
from handler.controls import namespace_network_policy
from handler.errors import ClusterReadError, DiscoveryError, PublishError, ScannerError, WriteConflict
from handler.evaluation import Evaluation, Evaluator
from handler.models import ClusterRef, ClusterSnapshot, ComplianceStatus, ControlResult, Namespace, NetworkPolicy
from handler.policy.coverage import not_understood
from handler.publish.s3 import GzipJsonLines, ReportStore, StoredState
from handler.publish.securityhub import CALLS_PER_SECOND
from handler.run.report import ClusterOutcome, Run
from handler.run.stages import CPU
from handler.state import ClusterState, Plan, plan_deleted, plan_scanned, plan_unreadable
from handler.targets import discovery
from handler.targets.clients import Clients, RegionTarget

STATE_WRITE_ATTEMPTS = 5  # plans over a state another run wrote meanwhile; more means something keeps writing it


class OutOfTime(ScannerError):
    """Raised before a cluster is read or published when the invocation has too little time left for it."""


class TaskError(ScannerError, ValueError):
    """Raised when a queue message is not a cluster task this scanner wrote."""


@dataclass(frozen=True)
class TimeBudget:
    """How a cluster's scan shares the invocation's remaining time. A cluster is not started with less than
    `start` seconds left; its read must end with `after_read` seconds left (to publish a NOT_AVAILABLE finding and
    write the run report); its findings are not published without `publish_margin` seconds beyond what importing
    them all takes: a cluster is scanned whole or tried again, never half-published, and the report is written."""

    start: float = 45.0
    after_read: float = 30.0
    publish_margin: float = 15.0


@dataclass(frozen=True)
class ClusterTask:
    """One cluster of one run: what every executor runs, and the body of a fan-out's queue message."""

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


def _unlimited() -> float:
    return float("inf")


@dataclass(frozen=True)
class ScanContext:
    """What scanning a cluster needs, made once (a warm worker keeps it across invocations) and never changed:
    `with_clock` and `for_run` give a copy for one invocation or run."""

    settings: Settings
    clients: Clients
    reader: ClusterReader
    evaluator: Evaluator
    store: ReportStore
    log: logging.Logger | Any
    budget: TimeBudget = TimeBudget()
    remaining_seconds: Callable[[], float] = _unlimited
    dry_run: bool = False
    failure_note: str = ""  # added to a failed cluster's reason (the same words on every attempt)

    @classmethod
    def create(cls, settings: Settings, base_session: boto3.Session, log: logging.Logger | Any,
               reader: ClusterReader | None = None, calls_per_second: float = CALLS_PER_SECOND,
               **options: Any) -> ScanContext:
        """The context of a run or a warm worker; `reader` defaults to one with the settings' limits."""
        reader = reader or ClusterReader(ReadLimits(page_size=settings.page_size,
                                                    connect_timeout=settings.connect_timeout,
                                                    read_timeout=settings.read_timeout))
        store = ReportStore(base_session.client("s3", region_name=settings.default_region,
                                                config=discovery.AWS_CALLS), settings.report_bucket)
        # Exemptions are loaded once, and a bad document raises here, before anything is written.
        return cls(settings, Clients(base_session, settings, calls_per_second), reader,
                   Evaluator.from_settings(settings, base_session), store, log, **options)

    def with_clock(self, remaining_seconds: Callable[[], float]) -> ScanContext:
        return dataclasses.replace(self, remaining_seconds=remaining_seconds)

    def for_run(self, dry_run: bool) -> ScanContext:
        return dataclasses.replace(self, dry_run=dry_run)

    @property
    def refresh(self) -> dt.timedelta:
        return dt.timedelta(days=self.settings.refresh_days)


def scan_cluster(context: ScanContext, task: ClusterTask) -> ClusterOutcome:
    """One cluster, read and published, or archived when deleted; the outcome is logged."""
    started, cpu_before = time.monotonic(), CPU.snapshot()
    ref = ClusterRef(task.account_id, task.region, task.cluster, context.clients.own.partition)
    try:
        with CPU.stage("clients"):
            target = context.clients.target_for(task.account_id, task.region)
    except DiscoveryError as error:  # the account's role could not be assumed
        return logged(context, ClusterOutcome(ref, "failed", error=f"{error}{context.failure_note}"), cpu_before)
    try:
        # Paused for the whole scan: its snapshot and results are freed when _scan returns, before the collector
        # would walk them (handler/collector.py).
        with collector.paused():
            outcome = (_deleted(context, task.run, target, ref) if task.deleted
                       else _scan(context, task.run, target, ref))
    except OutOfTime:
        raise
    except PublishError as error:
        outcome = ClusterOutcome(ref, "failed", error=f"publishing failed: {error}")
    except Exception as error:  # a defect must cost one cluster, not the whole fleet's run
        context.log.exception("cluster task failed", extra={"cluster": str(ref)})
        outcome = ClusterOutcome(ref, "failed", error=f"internal error: {type(error).__name__}: {error}")
    outcome.seconds = time.monotonic() - started
    return logged(context, outcome, cpu_before)


def _scan(context: ScanContext, run: Run, target: RegionTarget, ref: ClusterRef) -> ClusterOutcome:
    _require_time(context, context.budget.start, "not started")
    with CPU.stage("state_read"):
        stored = context.store.load_state(ref)
    resource = None
    try:
        with CPU.stage("describe"):
            info = discovery.describe_cluster(target.eks, ref)
            resource = cluster_resource(info)
        with CPU.stage("clients"):  # made on the account and Region's first cluster
            tokens = target.tokens
        with CPU.stage("token"):
            token = tokens.token(ref.name)
        evaluation = Evaluation(context.evaluator)
        with CPU.stage("read"):
            snapshot = context.reader.read(info, token, _read_deadline(context), _Evaluating(evaluation))
    except (ClusterReadError, DiscoveryError) as error:
        reason = f"{error}{context.failure_note}"
        return _publish(context, run, target, stored, ClusterOutcome(ref, "failed", error=reason),
                        lambda previous: plan_unreadable(previous, ref, resource, reason, run.started_at,
                                                         context.refresh))
    with CPU.stage("evaluate"):
        snapshot, results = evaluation.finish(snapshot, run.started_at)
    outcome = ClusterOutcome(ref, "scanned", api_requests=snapshot.api_requests, **counts(snapshot, results))
    return _publish(context, run, target, stored, outcome,
                    lambda previous: plan_scanned(previous, ref, resource, results, run.started_at, context.refresh))


class _Evaluating:
    """The cluster's evaluation, given its policies and namespaces as they are read (cluster_reader.ClusterAsRead),
    its CPU charged to the "evaluate" stage rather than to the read it happens in."""

    def __init__(self, evaluation: Evaluation) -> None:
        self.evaluation = evaluation

    def policies_read(self, policies: Sequence[NetworkPolicy]) -> None:
        with CPU.stage("evaluate"):
            self.evaluation.policies_read(policies)

    def begin(self, read_so_far: ClusterSnapshot) -> None:
        with CPU.stage("evaluate"):
            self.evaluation.begin(read_so_far)

    def add(self, namespaces: Sequence[Namespace]) -> None:
        with CPU.stage("evaluate"):
            self.evaluation.add(namespaces)

    def restart(self) -> None:
        self.evaluation.restart()


def _read_deadline(context: ScanContext) -> float | None:
    """When a read must be over (time.monotonic()), or None when the invocation has no time limit."""
    seconds = context.remaining_seconds() - context.budget.after_read
    return None if math.isinf(seconds) else time.monotonic() + seconds


def _require_time(context: ScanContext, seconds: float, what: str) -> None:
    if context.remaining_seconds() < seconds:
        raise OutOfTime(f"{what}: less than {seconds:.0f} s of the invocation left")


def _deleted(context: ScanContext, run: Run, target: RegionTarget, ref: ClusterRef) -> ClusterOutcome:
    with CPU.stage("state_read"):
        stored = context.store.load_state(ref)
    if stored.state is None:
        return ClusterOutcome(ref, "deleted")
    return _publish(context, run, target, stored, ClusterOutcome(ref, "deleted"),
                    lambda previous: plan_deleted(previous, ref, run.started_at))


def _publish(context: ScanContext, run: Run, target: RegionTarget, stored: StoredState, outcome: ClusterOutcome,
             plan_over: Callable[[ClusterState | None], Plan]) -> ClusterOutcome:
    """Publishes the plan made over the state read; when another run wrote that state in the meantime, plans
    again over what it wrote and publishes the difference, so that state and Security Hub end up agreeing."""
    for _ in range(STATE_WRITE_ATTEMPTS):
        with CPU.stage("plan"):
            plan = plan_over(stored.state)
        outcome.findings_archived = plan.archived
        if context.dry_run:
            outcome.findings = sum(1 for f in plan_findings(plan) if f["Id"] in plan.send_ids)  # built, to prove it
            return outcome
        outcome.findings = len(plan.send_ids)
        if not plan.report_ids and not (plan.forget and stored.etag):
            return outcome
        try:
            return _publish_plan(context, run, target, stored, plan, outcome)
        except WriteConflict:
            context.log.info("state written by another run: planning again", extra={"cluster": str(outcome.cluster)})
            with CPU.stage("state_read"):
                stored = context.store.load_state(outcome.cluster)
    raise PublishError(f"the state of {outcome.cluster} kept changing under this run "
                       f"({STATE_WRITE_ATTEMPTS} attempts)")


def _publish_plan(context: ScanContext, run: Run, target: RegionTarget, stored: StoredState, plan: Plan,
                  outcome: ClusterOutcome) -> ClusterOutcome:
    # Publishing is not started without the time to finish it, at this context's share of Security Hub's rate
    # (a batch of 100 a call), with room for retries.
    _require_time(context, context.budget.publish_margin
                  + len(plan.send_ids) / 100 / context.clients.calls_per_second * 2, "not published")
    with CPU.stage("clients"):
        publisher = target.publisher
    written = GzipJsonLines()
    findings = written.tee(CPU.each("asff", encoded_findings(plan)))
    with CPU.stage("hub"):  # the client's side of the calls; building and compressing the findings are their own
        imported = publisher.import_encoded(
            (f, line) for f, line in CPU.each("findings_file", findings) if f["Id"] in plan.send_ids)
    outcome.findings_imported += imported.imported
    outcome.securityhub_calls += imported.calls
    outcome.rejected = imported.rejected
    with CPU.stage("plan"):
        settled = plan.settle(stored.state, [r.finding_id for r in imported.rejected])
    with CPU.stage("state_write"):
        if settled is None:
            context.store.delete_state(outcome.cluster, stored)
        elif settled != stored.state:  # an unchanged cluster's state is not written again
            context.store.save_state(settled, stored)
    if plan.report_ids:
        with CPU.stage("findings_file"):
            outcome.findings_key = context.store.write_findings(outcome.cluster, run.date, run.run_id, written)
    return outcome


def logged(context: ScanContext, outcome: ClusterOutcome, cpu_before: dict[str, float] | None = None,
           ) -> ClusterOutcome:
    """Logs the outcome, with the CPU seconds its scan spent per stage since `cpu_before` (handler/run/stages.py)."""
    record = outcome.to_dict()
    record["findings_rejected"] = len(outcome.rejected)
    if cpu_before is not None:
        record["cpu_seconds"] = CPU.since(cpu_before)
    if outcome.result == "failed":
        context.log.warning("cluster not scanned", extra=record)
    else:
        context.log.info(f"cluster {outcome.result}", extra=record)
    for rejection in outcome.rejected[:20]:
        context.log.error("finding rejected by Security Hub", extra={"finding_id": rejection.finding_id,
                                                                     "error_code": rejection.error_code,
                                                                     "error_message": rejection.error_message})
    return outcome


def counts(snapshot: ClusterSnapshot, results: Iterable[ControlResult]) -> dict[str, int]:
    # Failing means FAILED on CIS 5.3.2; the other controls' verdicts are in their own findings.
    failing = {r.namespace for r in results if r.namespace is not None and r.status is ComplianceStatus.FAILED
               and r.control_id == namespace_network_policy.CONTROL_ID}
    return {"namespaces": len(snapshot.namespaces), "namespaces_failing": len(failing),
            "namespaces_terminating": sum(ns.terminating for ns in snapshot.namespaces),
            "policies_not_understood": len(not_understood(snapshot.coverage.values()))}

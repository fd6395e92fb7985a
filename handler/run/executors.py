"""Inline, SQS and local: interchangeable executors of the same cluster tasks, each run by `scan_cluster`.

- Inline: the scheduled function scans every task on CLUSTER_CONCURRENCY threads and writes the run report.
- SQS: the scheduled function writes the run's manifest (handler/run/fanout.py) and sends one message per task; the
  worker (handler/worker.py) hands each delivered record to `process_event`, which scans it, records its result
  under the run, and writes the report when it recorded the last one.
- Local: the fan-out's tasks handed to that same record handling in this process (the sandbox, checks without SQS).

Per record of an SQS event (Powertools batch processing, so one failed record does not fail the others):
- too little time left in the invocation: the record fails before anything is published, and SQS redelivers it;
- the cluster could not be read: its NOT_AVAILABLE finding is published (it says which attempt this was) and
  the record fails, so SQS tries again; on the last receive the result is recorded as failed and the record
  fails once more, which sends the message to the dead-letter queue;
- a failed record is made visible again after a short backoff (30 s, 2 min, 8 min; at once after the last
  attempt, so that SQS moves it to the dead-letter queue), not after the queue's VisibilityTimeout: the rest of
  its FIFO message group waits while it is invisible.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from handler.config import RETRY_BACKOFF_SECONDS, ScanRequest, Settings, require_targeted
from handler.errors import PublishError, ScannerError
from handler.models import ClusterRef
from handler.observability import logger, record_metrics
from handler.publish.securityhub import CALLS_PER_SECOND
from handler.run import fanout
from handler.run.discover import Targets
from handler.run.report import ClusterOutcome, Run, finish_report, summarize
from handler.run.scan import ClusterTask, OutOfTime, ScanContext, logged, scan_cluster
from handler.targets.discovery import AWS_CALLS

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

SQS_BATCH = 10


class Executor(Protocol):
    fans_out: bool  # the tasks go to workers, who write the report; else the summary is this run's report

    def __call__(self, context: ScanContext, run: Run, request: ScanRequest, targets: Targets) -> dict[str, Any]:
        """Runs (or hands on) every task of the run; the run summary."""


def executor_for(settings: Settings, session: boto3.Session, request: ScanRequest, targets: Targets) -> Executor:
    """How this run's cluster tasks are run. A dry run is always inline: fanning out writes the run's manifest
    and results."""
    mode = settings.fleet_mode
    if request.dry_run or mode == "inline" or not targets.tasks:
        return Inline()
    if mode == "local":
        context = worker_context(settings, session)
        return FanOut(LocalSender(lambda event: process_event(context, event), settings))
    if mode == "queue" or (settings.scan_queue_url and len(targets.tasks) > settings.fanout_threshold):
        sqs = session.client("sqs", region_name=settings.default_region, config=AWS_CALLS)
        return FanOut(SqsSender(sqs, settings.scan_queue_url or "", settings.workers_per_account))
    return Inline()


class Inline:
    """Scans every task in this invocation, on CLUSTER_CONCURRENCY threads, and writes the run report."""

    fans_out = False

    def __call__(self, context: ScanContext, run: Run, request: ScanRequest, targets: Targets) -> dict[str, Any]:
        context = context.for_run(request.dry_run)

        def scan(task: ClusterTask) -> ClusterOutcome:
            try:
                return scan_cluster(context, task)
            except OutOfTime as error:
                ref = ClusterRef(task.account_id, task.region, task.cluster, context.clients.own.partition)
                return logged(context, ClusterOutcome(ref, "failed", error=f"not scanned: {error}"))

        with ThreadPoolExecutor(max_workers=context.settings.cluster_concurrency) as pool:
            outcomes = list(pool.map(scan, targets.cluster_tasks(run)))
        return finish_report(context.store, run, request, targets, [o.to_dict() for o in outcomes])


class FanOut:
    """Writes the run's manifest and hands one task per cluster to `send` (SQS, or the worker code in this
    process)."""

    fans_out = True

    def __init__(self, send: Callable[[list[ClusterTask]], None]) -> None:
        self.send = send

    def __call__(self, context: ScanContext, run: Run, request: ScanRequest, targets: Targets) -> dict[str, Any]:
        return fanout.fan_out(context, run, request, targets, self.send)


# -- the fan-out's transports -----------------------------------------------------------------------------------
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


# -- the worker's end: one record, one task ---------------------------------------------------------------------
class RetryLater(ScannerError):
    """Raised for a record that failed on an attempt before the last: SQS delivers it again."""


class GaveUp(ScannerError):
    """Raised for a record that failed on its last attempt: SQS moves it to the dead-letter queue."""


def worker_context(settings: Settings, session: boto3.Session) -> ScanContext:
    """A worker's context, whose Security Hub share is 1/k of an account's rate: k workers may publish into one
    account and Region at once (the FIFO queue's message groups bound them). A failed cluster's reason says that
    it is tried again, in the same words on every attempt: a finding that changed with each retry would be
    imported each time."""
    note = (f" (the fan-out worker tries a cluster {settings.max_receives} times; a task that keeps failing goes "
            "to the dead-letter queue)")
    return ScanContext.create(settings, session, logger,
                              calls_per_second=CALLS_PER_SECOND / settings.workers_per_account, failure_note=note)


def process_event(context: ScanContext, event: dict[str, Any], lambda_context: LambdaContext | None = None,
                  backoff: Backoff | None = None) -> dict[str, Any]:
    """Lambda's partial batch response for an SQS event: the ids of the records to deliver again, each after
    `backoff` (None: the queue's visibility timeout; the local transport's records are final attempts)."""
    # Imported here: the batch utilities (with pydantic's models) are a third of the scheduled function's cold
    # import, and only the worker and the local fan-out need them (the worker loads them at init).
    from aws_lambda_powertools.utilities.batch import (BatchProcessor, EventType, SqsFifoPartialProcessor,
                                                       process_partial_response)

    records = event.get("Records", [])
    fifo = any(str(r.get("eventSourceARN", "")).endswith(".fifo") for r in records)
    # On a FIFO queue a failed record holds back the rest of its message group, in order, and only that group.
    processor = SqsFifoPartialProcessor(skip_group_on_error=True) if fifo else BatchProcessor(EventType.SQS)
    # A cluster that could not be scanned is a result, not an error of the function: SQS retries the record,
    # and the dead-letter queue (and its alarm) takes it in the end.
    processor.raise_on_entire_batch_failure = False
    return process_partial_response(event=event, record_handler=lambda record: _handle(context, record, backoff),
                                    processor=processor, context=lambda_context)


class Backoff:
    """Sets when a failed record is delivered again: ChangeMessageVisibility on the scan queue, by attempt."""

    def __init__(self, sqs: Any, queue_url: str, max_receives: int) -> None:
        self.sqs, self.queue_url, self.max_receives = sqs, queue_url, max_receives

    @classmethod
    def for_queue(cls, settings: Settings, session: boto3.Session) -> Backoff | None:
        if not settings.scan_queue_url:
            return None
        sqs = session.client("sqs", region_name=settings.default_region, config=AWS_CALLS)
        return cls(sqs, settings.scan_queue_url, settings.max_receives)

    def after_failure(self, record: SQSRecord) -> None:
        attempt = int(record.attributes.approximate_receive_count)
        seconds = 0 if attempt >= self.max_receives else retry_backoff_seconds(attempt)
        try:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=record.receipt_handle,
                                               VisibilityTimeout=seconds)
        except (ClientError, BotoCoreError) as error:  # the record still fails: SQS retries it, later
            logger.warning("cannot shorten the visibility of a failed task",
                           extra={"message_id": record.message_id, "error": str(error)})


def retry_backoff_seconds(attempt: int) -> int:
    return RETRY_BACKOFF_SECONDS[min(attempt, len(RETRY_BACKOFF_SECONDS)) - 1]


def _handle(context: ScanContext, record: SQSRecord, backoff: Backoff | None) -> None:
    try:
        handle_record(context, record)
    except Exception:
        if backoff is not None:
            backoff.after_failure(record)
        raise


def handle_record(context: ScanContext, record: SQSRecord) -> None:
    task = ClusterTask.from_json(record.body)
    require_targeted([task.account_id], context.clients.targeted_accounts, context.settings)  # before AssumeRole
    attempt, attempts = int(record.attributes.approximate_receive_count), context.settings.max_receives
    logger.append_keys(run_id=task.run_id, cluster=f"{task.account_id}/{task.region}/{task.cluster}")
    outcome = scan_cluster(context, task)
    if outcome.result == "failed" and attempt < attempts:
        raise RetryLater(f"attempt {attempt} of {attempts} failed, to be tried again: {outcome.error}")
    if outcome.result == "failed":
        outcome.error = f"gave up after attempt {attempt} of {attempts}; the task goes to the dead-letter queue: " \
                        f"{outcome.error}"
    result = outcome.to_dict()
    record_metrics(summarize([result], []))
    report = fanout.record(fanout.FleetStore(context.store), task.run_id, result)
    if report is not None:
        logger.info("run finished", extra={k: v for k, v in report.items() if k != "failures"})
        record_metrics({"seconds": report["seconds"]})
    if outcome.result == "failed":
        raise GaveUp(outcome.error)

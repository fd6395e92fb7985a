"""The fan-out worker: an SQS event source delivers cluster tasks; each is scanned and published whole.

Per record (Powertools batch processing, so one failed record does not fail the others):
- too little time left in the invocation: the record fails before anything is published, and SQS redelivers it;
- the cluster could not be read: its NOT_AVAILABLE finding is published (it says which attempt this was) and
  the record fails, so SQS tries again; on the last receive the result is recorded as failed and the record
  fails once more, which sends the message to the dead-letter queue;
- a failed record is made visible again after a short backoff (30 s, 2 min, 8 min; at once after the last
  attempt, so that SQS moves it to the dead-letter queue), not after the queue's VisibilityTimeout: the rest of
  its FIFO message group waits while it is invisible;
- otherwise the result is recorded under the run, and the worker that records the last result writes the
  run's report.
"""
from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from aws_lambda_powertools.utilities.batch import (BatchProcessor, EventType, SqsFifoPartialProcessor,
                                                   process_partial_response)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler import fleet
from handler.cluster_reader import ClusterReader, ReadLimits
from handler.config import RETRY_BACKOFF_SECONDS, Settings, require_targeted
from handler.discovery import AWS_CALLS
from handler.errors import DiscoveryError, ScannerError
from handler.observability import logger, metrics, record_metrics, tracer
from handler.pipeline import Scanner
from handler.report import ClusterOutcome, summarize
from handler.models import ClusterRef
from handler.publish.securityhub import CALLS_PER_SECOND


class RetryLater(ScannerError):
    """Raised for a record that failed on an attempt before the last: SQS delivers it again."""


class GaveUp(ScannerError):
    """Raised for a record that failed on its last attempt: SQS moves it to the dead-letter queue."""


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scanner, backoff = _warm_scanner()
    clock = scanner.with_clock(lambda: context.get_remaining_time_in_millis() / 1000)
    return process_event(clock, event, context, backoff)


# A warm execution environment keeps its Scanner: the identity, the account sessions and their clients (and
# their rate limiters) are made once, not per message. Rebuilt when its settings or the AWS SDK's environment
# (credentials, endpoints) change, and well before the assumed roles' credentials (3,600 s) expire; not for
# _X_AMZN_TRACE_ID, which Lambda sets anew for every invocation.
SCANNER_LIFETIME_SECONDS = 1800
_warm: tuple[float, Hashable, Scanner, Backoff | None] | None = None


def _warm_scanner() -> tuple[Scanner, Backoff | None]:
    global _warm
    settings = Settings.from_env()
    key = (settings, frozenset((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    if _warm is None or _warm[1] != key or time.monotonic() - _warm[0] > SCANNER_LIFETIME_SECONDS:
        session = boto3.Session()
        _warm = (time.monotonic(), key, worker_scanner(settings, session), Backoff.for_queue(settings, session))
    return _warm[2], _warm[3]


def worker_scanner(settings: Settings, session: boto3.Session, remaining_seconds: Any = None) -> Scanner:
    """A Scanner whose Security Hub share is 1/k of an account's rate: k workers may publish into one account
    and Region at once (the FIFO queue's message groups bound them)."""
    reader = ClusterReader(ReadLimits(page_size=settings.page_size, connect_timeout=settings.connect_timeout,
                                      read_timeout=settings.read_timeout))
    return Scanner(settings, session, reader, logger, remaining_seconds=remaining_seconds,
                   calls_per_second=CALLS_PER_SECOND / settings.workers_per_account)


def process_event(scanner: Scanner, event: dict[str, Any], context: LambdaContext | None = None,
                  backoff: Backoff | None = None) -> dict[str, Any]:
    """Lambda's partial batch response for an SQS event: the ids of the records to deliver again, each after
    `backoff` (None: the queue's visibility timeout; the local transport's records are final attempts)."""
    records = event.get("Records", [])
    fifo = any(str(r.get("eventSourceARN", "")).endswith(".fifo") for r in records)
    # On a FIFO queue a failed record holds back the rest of its message group, in order, and only that group.
    processor = SqsFifoPartialProcessor(skip_group_on_error=True) if fifo else BatchProcessor(EventType.SQS)
    # A cluster that could not be scanned is a result, not an error of the function: SQS retries the record,
    # and the dead-letter queue (and its alarm) takes it in the end.
    processor.raise_on_entire_batch_failure = False
    return process_partial_response(event=event, record_handler=lambda record: _handle(scanner, record, backoff),
                                    processor=processor, context=context)


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


def _handle(scanner: Scanner, record: SQSRecord, backoff: Backoff | None) -> None:
    try:
        handle_record(scanner, record)
    except Exception:
        if backoff is not None:
            backoff.after_failure(record)
        raise


def handle_record(scanner: Scanner, record: SQSRecord) -> None:
    task = fleet.ClusterTask.from_json(record.body)
    require_targeted([task.account_id], scanner.targeted_accounts, scanner.settings)  # before any AssumeRole
    attempt, attempts = int(record.attributes.approximate_receive_count), scanner.settings.max_receives
    last = attempt >= attempts
    # The same words on every attempt: a finding that changed with each retry would be imported each time.
    note = (f" (the fan-out worker tries a cluster {attempts} times; a task that keeps failing goes to the "
            "dead-letter queue)")
    logger.append_keys(run_id=task.run_id, cluster=f"{task.account_id}/{task.region}/{task.cluster}")
    try:
        target = scanner.clients.target_for(task.account_id, task.region)
    except DiscoveryError as error:
        ref = ClusterRef(task.account_id, task.region, task.cluster, scanner.clients.own.partition)
        outcome = ClusterOutcome(ref, "failed", error=f"{error}{note}")
    else:
        outcome = scanner.scan_cluster(task.run, False, target, task.cluster, task.deleted, failure_note=note)
    if outcome.result == "failed" and not last:
        raise RetryLater(f"attempt {attempt} of {attempts} failed, to be tried again: {outcome.error}")
    if outcome.result == "failed":
        outcome.error = f"gave up after attempt {attempt} of {attempts}; the task goes to the dead-letter queue: " \
                        f"{outcome.error}"
    result = outcome.to_dict()
    record_metrics(summarize([result], []))
    report = fleet.record(scanner, fleet.FleetStore(scanner.store), task.run_id, result)
    if report is not None:
        logger.info("run finished", extra={k: v for k, v in report.items() if k != "failures"})
        record_metrics({"seconds": report["seconds"]})
    if outcome.result == "failed":
        raise GaveUp(outcome.error)

"""Lambda entry point of the scheduled (and manual) scan: event parsing and wiring; the work is in pipeline.py,
and in fleet.py when the run fans out to workers."""
from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler import doctor, fleet
from handler.cluster_reader import ClusterReader, ReadLimits
from handler.config import ScanRequest, Settings
from handler.discovery import AWS_CALLS
from handler.observability import logger, metrics, record_metrics, tracer
from handler.pipeline import Run, Scanner, Targets


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Scans the targeted EKS clusters; returns the run summary. Bad settings or events raise before any write."""
    settings = Settings.from_env()
    if doctor.is_doctor_event(event):  # a check of what the scan can reach; it writes nothing
        diagnosis = doctor.run_doctor(settings, doctor.doctor_request(event), boto3.Session(), in_function=True)
        logger.info("doctor finished", extra={"gaps": len(diagnosis.gaps)})
        return diagnosis.to_dict()
    request = ScanRequest.from_event(event)
    run = Run.start()
    logger.set_correlation_id(run.run_id)
    logger.info("scan started", extra={"dry_run": request.dry_run, "accounts": list(request.accounts),
                                       "regions": list(request.regions), "clusters": list(request.clusters)})
    session = boto3.Session()
    remaining = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
    reader = ClusterReader(ReadLimits(page_size=settings.page_size, connect_timeout=settings.connect_timeout,
                                      read_timeout=settings.read_timeout))
    scanner = Scanner(settings, session, reader, logger, remaining_seconds=remaining)
    targets = scanner.discover(request)
    send = _fan_out_transport(settings, session, request, targets)
    if send is None:
        summary = scanner.scan_inline(run, request, targets)
        if not request.dry_run:  # a dry run's failures must not reach the production metrics and alarms
            record_metrics(summary)
    else:
        summary = fleet.fan_out(scanner, run, request, targets, send)
        record_metrics({"accounts_failed": len(targets.failures)})
    logger.info("scan finished", extra={k: v for k, v in summary.items() if k != "failures"})
    return summary


def _fan_out_transport(settings: Settings, session: boto3.Session, request: ScanRequest,
                       targets: Targets) -> fleet.SqsSender | fleet.LocalSender | None:
    """How this run's cluster tasks travel, or None to scan them inline. A dry run is always inline: fanning
    out writes the run's manifest and results."""
    mode = settings.fleet_mode
    if request.dry_run or mode == "inline" or not targets.tasks:
        return None
    if mode == "local":
        # Imported here: the worker's batch utilities (with pydantic's models) are a third of the cold import,
        # and only the local fan-out needs them in this function.
        from handler import worker

        scanner = worker.worker_scanner(settings, session)
        return fleet.LocalSender(lambda event: worker.process_event(scanner, event), settings)
    if mode == "queue" or (settings.scan_queue_url and len(targets.tasks) > settings.fanout_threshold):
        sqs = session.client("sqs", region_name=settings.default_region, config=AWS_CALLS)
        return fleet.SqsSender(sqs, settings.scan_queue_url or "", settings.workers_per_account)
    return None

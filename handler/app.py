"""Lambda entry point of the scheduled (and manual) scan: event parsing and wiring. The targets are found by
handler/run/discover.py; an executor (handler/run/executors.py: inline, or fanned out to workers over SQS or in this
process) runs one task per cluster with handler/run/scan.py."""
from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler import doctor
from handler.config import ScanRequest, Settings
from handler.observability import logger, metrics, record_metrics, tracer
from handler.run.discover import discover
from handler.run.executors import executor_for
from handler.run.report import Run
from handler.run.scan import ScanContext


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
# Powertools prints its ColdStart metric with single_metric, whatever POWERTOOLS_METRICS_DISABLED says.
@metrics.log_metrics(capture_cold_start_metric=not is_metrics_disabled())
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
    scan_context = ScanContext.create(settings, session, logger,
                                      remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    targets = discover(scan_context, request)
    execute = executor_for(settings, session, request, targets)
    summary = execute(scan_context, run, request, targets)
    if execute.fans_out:
        record_metrics({"accounts_failed": len(targets.failures)})
    elif not request.dry_run:  # a dry run's failures must not reach the production metrics and alarms
        record_metrics(summary)
    logger.info("scan finished", extra={k: v for k, v in summary.items() if k != "failures"})
    return summary

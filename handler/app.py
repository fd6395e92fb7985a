"""Lambda entry point: Powertools observability, event parsing and wiring; the work is in pipeline.py."""
from __future__ import annotations

import gc
import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.cluster_reader import ClusterReader, ReadLimits
from handler.config import DEFAULT_METRICS_NAMESPACE, DEFAULT_SERVICE_NAME, ScanRequest, Settings
from handler.pipeline import Run, Scanner

# What was imported lives as long as the execution environment: take it out of the collector's sight, so that
# collecting a scan's short-lived objects does not walk all of botocore and kubernetes each time.
gc.freeze()

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE_NAME)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_METRICS_NAMESPACE)
tracer = Tracer()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Scans the targeted EKS clusters; returns the run summary. Bad settings or events raise before any write."""
    settings = Settings.from_env()
    request = ScanRequest.from_event(event)
    run = Run.start()
    logger.set_correlation_id(run.run_id)
    logger.info("scan started", extra={"dry_run": request.dry_run, "accounts": list(request.accounts),
                                       "regions": list(request.regions), "clusters": list(request.clusters)})
    reader = ClusterReader(ReadLimits(page_size=settings.page_size, connect_timeout=settings.connect_timeout,
                                      read_timeout=settings.read_timeout))
    scanner = Scanner(settings, boto3.Session(), reader, logger,
                      remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    summary = scanner.run(request, run)
    _record_metrics(summary)
    logger.info("scan finished", extra={k: v for k, v in summary.items() if k != "failures"})
    return summary


def _record_metrics(summary: dict[str, Any]) -> None:
    for name, key in (("ClustersScanned", "clusters_scanned"), ("ClustersFailed", "clusters_failed"),
                      ("AccountsFailed", "accounts_failed"), ("NamespacesScanned", "namespaces"),
                      ("NamespacesFailing", "namespaces_failing"), ("FindingsImported", "findings_imported"),
                      ("FindingsRejected", "findings_rejected")):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=summary.get(key, 0))
    metrics.add_metric(name="ScanDuration", unit=MetricUnit.Seconds, value=summary.get("seconds", 0))

"""Powertools Logger, Metrics and Tracer, shared by the scheduled function and the fan-out worker."""
from __future__ import annotations

import gc
import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from handler.config import DEFAULT_METRICS_NAMESPACE, DEFAULT_SERVICE_NAME

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE_NAME
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_METRICS_NAMESPACE,
                  service=SERVICE)
# The AWS SDK's calls are what the traces show. Tracer() alone patches every library the X-Ray SDK knows that is
# installed: requests (which the kubernetes client brings and the scanner never calls: about 70 ms of a cold
# start, docs/benchmarks.md section 2) and sqlite3 among them.
TRACED_MODULES = ("botocore",)
tracer = Tracer(patch_modules=TRACED_MODULES)

# What was imported lives as long as the execution environment: take it out of the collector's sight, so that
# collecting a scan's short-lived objects does not walk all of botocore each time. The kubernetes client comes
# later, with the first cluster read: its 16,000 objects add about 4 ms to a full collection, which is rare.
gc.freeze()

SUMMARY_METRICS = (("ClustersScanned", "clusters_scanned"), ("ClustersFailed", "clusters_failed"),
                   ("AccountsFailed", "accounts_failed"), ("NamespacesScanned", "namespaces"),
                   ("NamespacesFailing", "namespaces_failing"), ("FindingsImported", "findings_imported"),
                   ("FindingsRejected", "findings_rejected"))


def record_metrics(summary: dict[str, Any]) -> None:
    """EMF metrics from a run summary, or from one cluster's summary in a fan-out worker (CloudWatch sums)."""
    for name, key in SUMMARY_METRICS:
        if key in summary:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=summary[key])
    if "seconds" in summary:
        metrics.add_metric(name="ScanDuration", unit=MetricUnit.Seconds, value=summary["seconds"])
    # The dashboard's "failing namespaces by account": one more dimension, so a metric of its own. single_metric
    # prints whatever POWERTOOLS_METRICS_DISABLED says, unlike Metrics.flush_metrics: ask the same question here.
    if is_metrics_disabled():
        return
    for account, failing in summary.get("namespaces_failing_by_account", {}).items():
        with single_metric(name="NamespacesFailing", unit=MetricUnit.Count, value=failing,
                           namespace=metrics.namespace, default_dimensions={"service": SERVICE}) as metric:
            metric.add_dimension(name="account", value=account)

"""Lambda entry point of the fan-out worker: an SQS event source delivers cluster tasks; each is scanned and
published whole by the SQS executor (handler/run/executors.py), with a scan context kept warm across invocations.
"""
from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import Any

import boto3
from aws_lambda_powertools.utilities import batch  # noqa: F401 - the record handling's, loaded at init, not per message
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.config import Settings
from handler.observability import logger, metrics, tracer
from handler.run.executors import Backoff, process_event, worker_context
from handler.run.scan import ScanContext


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scan_context, backoff = _warm_context()
    clock = scan_context.with_clock(lambda: context.get_remaining_time_in_millis() / 1000)
    return process_event(clock, event, context, backoff)


# A warm execution environment keeps its scan context: the identity, the account sessions and their clients (and
# their rate limiters) are made once, not per message. Rebuilt when its settings or the AWS SDK's environment
# (credentials, endpoints) change, and well before the assumed roles' credentials (3,600 s) expire; not for
# _X_AMZN_TRACE_ID, which Lambda sets anew for every invocation.
CONTEXT_LIFETIME_SECONDS = 1800
_warm: tuple[float, Hashable, ScanContext, Backoff | None] | None = None


def _warm_context() -> tuple[ScanContext, Backoff | None]:
    global _warm
    settings = Settings.from_env()
    key = (settings, frozenset((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    if _warm is None or _warm[1] != key or time.monotonic() - _warm[0] > CONTEXT_LIFETIME_SECONDS:
        session = boto3.Session()
        _warm = (time.monotonic(), key, worker_context(settings, session), Backoff.for_queue(settings, session))
    return _warm[2], _warm[3]

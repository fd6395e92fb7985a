"""The doctor: why is my fleet not scanned? `netpol-scan doctor`, or the manual event `{"doctor": true}`.

For every target account and Region of the scanner's settings: can the scan role be assumed, is Security Hub
CSPM enabled, which clusters are listed; for every cluster: is the endpoint reachable, is the token accepted
(access entry), and which of the reads a scan makes are allowed (SelfSubjectAccessReview); for each gap, the
fix. It only reads: no S3 object, no finding, no Kubernetes object is written.

probe.py makes the calls and returns facts; findings.py (pure) turns them into checks and fixes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3

from handler.config import ScanRequest, Settings
from handler.doctor.findings import Diagnosis, diagnose, table
from handler.doctor.probe import examine
from handler.errors import EventError

EVENT_FIELD = "doctor"
# A scan's event fields that narrow the doctor's targets too; dry_run has no meaning for what never writes.
NARROWING_FIELDS = frozenset({"accounts", "regions", "clusters", "source"})


def is_doctor_event(event: Any) -> bool:
    return isinstance(event, Mapping) and EVENT_FIELD in event


def doctor_request(event: Mapping[str, Any]) -> ScanRequest:
    """The targets of a doctor event: `{"doctor": true}`, optionally narrowed like a scan's event."""
    if event.get(EVENT_FIELD) is not True:
        raise EventError(f"field '{EVENT_FIELD}' must be true, got {event.get(EVENT_FIELD)!r}")
    others = {k: v for k, v in event.items() if k != EVENT_FIELD}
    unknown = sorted(map(str, set(others) - NARROWING_FIELDS))
    if unknown:
        raise EventError(f"unknown field(s) in a doctor event: {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(NARROWING_FIELDS | {EVENT_FIELD}))}")
    return ScanRequest.from_event(others)


def run_doctor(settings: Settings, request: ScanRequest, session: boto3.Session, in_function: bool) -> Diagnosis:
    return diagnose(examine(settings, request, session, in_function))


__all__ = ["Diagnosis", "doctor_request", "is_doctor_event", "run_doctor", "table"]

"""BatchImportFindings within Security Hub's limits, and nothing dropped on the way.

Limits: at most 100 findings and 6 MB a call, 10 calls a second per account and Region (burst 30). Throttled
calls are retried by botocore's adaptive retry mode (see `client_config`); findings that come back in
FailedFindings with a transient error are retried here; the rest are reported, never silently lost.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

MAX_BATCH_FINDINGS = 100
MAX_BATCH_BYTES = 6 * 1024 * 1024 - 64 * 1024  # below 6 MB, leaving room for the request envelope
MAX_FINDING_BYTES = 240 * 1024
CALLS_PER_SECOND = 10.0
FINDING_ATTEMPTS = 4
# Rejections that the same finding sent again cannot fix: report them at once.
PERMANENT_ERRORS = frozenset({"InvalidInput", "InvalidInputException", "InvalidAccess", "InvalidAccessException",
                              "AccessDenied", "AccessDeniedException", "ValidationException", "TooLarge"})


def client_config() -> Config:
    """Adaptive retries: client-side rate limiting and backoff on ThrottlingException / TooManyRequests.

    botocore's parameter validation is off for this client: it cost about 46 µs a finding (a tenth of a fleet
    scan's CPU), and the findings are built to the Security Hub model by asff.py, whose tests validate them
    against that model."""
    return Config(retries={"mode": "adaptive", "max_attempts": 10}, connect_timeout=10, read_timeout=60,
                  parameter_validation=False)


class RateLimiter:
    """Spaces calls so that one account and Region stays under Security Hub's rate, across threads."""

    def __init__(self, per_second: float = CALLS_PER_SECOND, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)


@dataclass(frozen=True)
class Rejection:
    finding_id: str
    error_code: str
    error_message: str


@dataclass
class ImportOutcome:
    imported: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    calls: int = 0


class SecurityHubPublisher:
    """Imports findings into one account and Region with that account's own Security Hub client."""

    def __init__(self, client: Any, limiter: RateLimiter | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._limiter = limiter or RateLimiter()
        self._sleep = sleep

    def import_findings(self, findings: Iterable[dict[str, Any]]) -> ImportOutcome:
        return self.import_sized((finding, _size(finding)) for finding in findings)

    def import_sized(self, sized: Iterable[tuple[dict[str, Any], int]]) -> ImportOutcome:
        """Imports findings, each with its encoded size, as they come, a batch at a time; each batch's transient
        failures are retried before the next batch is built, so memory holds one batch, not the cluster's."""
        outcome = ImportOutcome()
        for batch in _batches(_within_limit(sized, outcome)):
            pending = batch
            for attempt in range(FINDING_ATTEMPTS):
                if attempt:
                    self._sleep(min(2.0 ** attempt * 0.5, 8.0))
                pending = self._send(pending, outcome, last_attempt=attempt == FINDING_ATTEMPTS - 1)
                if not pending:
                    break
        return outcome

    def _send(self, batch: list[dict[str, Any]], outcome: ImportOutcome, last_attempt: bool) -> list[dict[str, Any]]:
        """Sends one batch; returns the findings worth sending again."""
        self._limiter.wait()
        outcome.calls += 1
        try:
            response = self._client.batch_import_findings(Findings=batch)
        except ClientError as error:
            err = error.response.get("Error", {})
            failed = [{"Id": f["Id"], "ErrorCode": err.get("Code", "ClientError"),
                       "ErrorMessage": err.get("Message", str(error))} for f in batch]
        except BotoCoreError as error:
            failed = [{"Id": f["Id"], "ErrorCode": type(error).__name__, "ErrorMessage": str(error)} for f in batch]
        else:
            failed = response.get("FailedFindings", [])
            outcome.imported += response.get("SuccessCount", len(batch) - len(failed))
        by_id = {f["Id"]: f for f in batch}
        retry = []
        for failure in failed:
            code = failure.get("ErrorCode", "Unknown")
            if last_attempt or code in PERMANENT_ERRORS or failure.get("Id") not in by_id:
                outcome.rejected.append(Rejection(failure.get("Id", "?"), code, failure.get("ErrorMessage", "")))
            else:
                retry.append(by_id[failure["Id"]])
        return retry


def batches(findings: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive batches of at most 100 findings and about 6 MB."""
    return _batches((finding, _size(finding)) for finding in findings)


def _batches(sized: Iterable[tuple[dict[str, Any], int]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    total = 0
    for finding, size in sized:
        if batch and (len(batch) == MAX_BATCH_FINDINGS or total + size > MAX_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(finding)
        total += size
    if batch:
        yield batch


def _within_limit(sized: Iterable[tuple[dict[str, Any], int]],
                  outcome: ImportOutcome) -> Iterator[tuple[dict[str, Any], int]]:
    """A finding over Security Hub's 240 KB is rejected here, never sent."""
    for finding, size in sized:
        if size > MAX_FINDING_BYTES:
            outcome.rejected.append(Rejection(finding["Id"], "TooLarge", f"over {MAX_FINDING_BYTES} bytes"))
        else:
            yield finding, size


def _size(finding: dict[str, Any]) -> int:
    return len(json.dumps(finding, separators=(",", ":")).encode())

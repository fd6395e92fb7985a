"""BatchImportFindings within Security Hub's limits, and nothing dropped on the way.

Limits: at most 100 findings and 6 MB a call, 10 calls a second per account and Region (burst 30). Throttled
calls are retried by botocore's adaptive retry mode (see `client_config`); findings that come back in
FailedFindings with a transient error are retried here; the rest are reported, never silently lost.

Each finding is JSON-encoded once (for the S3 file and the 240 KB check), and those bytes are the request body:
botocore's serializer would walk the Security Hub model for every finding to write the same JSON, about 108 µs
a finding, a third of a fleet scan's CPU. `hub_client` makes a client that sends such prebuilt bodies.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from handler.publish import compact_json

MAX_BATCH_FINDINGS = 100
MAX_BATCH_BYTES = 6 * 1024 * 1024 - 64 * 1024  # below 6 MB, leaving room for the request envelope
MAX_FINDING_BYTES = 240 * 1024
CALLS_PER_SECOND = 10.0
FINDING_ATTEMPTS = 4
# Rejections that the same finding sent again cannot fix: report them at once.
PERMANENT_ERRORS = frozenset({"InvalidInput", "InvalidInputException", "InvalidAccess", "InvalidAccessException",
                              "AccessDenied", "AccessDeniedException", "ValidationException", "TooLarge"})


EncodedFinding = tuple[dict[str, Any], bytes]  # a finding and its JSON encoding
_BODY = "netpol_scanner_body"  # where a prebuilt body waits in botocore's request context


def hub_client(session: Any, region: str) -> Any:
    """A Security Hub client with `client_config` that sends an EncodedBatch's prebuilt body (botocore events:
    the parameters are swapped before serialization, the body after it; signing and retries are botocore's)."""
    client = session.client("securityhub", region_name=region, config=client_config())
    client.meta.events.register("before-parameter-build.securityhub.BatchImportFindings", _hold_body)
    client.meta.events.register("before-call.securityhub.BatchImportFindings", _use_body)
    return client


class EncodedBatch(list):
    """Findings for one call, with the request body made from their encodings. Without `hub_client`'s hooks it
    is a plain list of findings, which botocore serializes itself."""

    def __init__(self, encoded: list[EncodedFinding]) -> None:
        super().__init__(finding for finding, _ in encoded)
        self.body = b'{"Findings":[' + b",".join(line for _, line in encoded) + b"]}"


def _hold_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    findings = params.get("Findings")
    if isinstance(findings, EncodedBatch):
        context[_BODY] = findings.body
        params["Findings"] = []  # nothing left for the serializer to walk


def _use_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if _BODY in context:
        params["body"] = context[_BODY]


def client_config() -> Config:
    """Adaptive retries: client-side rate limiting and backoff on ThrottlingException / TooManyRequests.

    botocore's parameter validation is off for this client: with a prebuilt body it would only see the empty
    placeholder (and reject it: Findings has a minimum of 1), and without one it cost about 46 µs a finding. The
    findings are built to the Security Hub model by asff.py, whose tests validate them against that model."""
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


SECURITY_HUB_NOT_ENABLED = "Security Hub CSPM is not enabled here"


def rejection_reason(error_code: str, error_message: str) -> str:
    """Why Security Hub refused a finding, in words. Security Hub CSPM switched off in the account and Region is
    the usual cause (InvalidAccessException: "Account ... is not subscribed to AWS Security Hub"), and the one an
    operator can fix at once."""
    if error_code.startswith("InvalidAccess") and any(words in error_message.lower()
                                                      for words in ("not subscribed", "not enabled")):
        return (f"{SECURITY_HUB_NOT_ENABLED}: enable it in this account and Region (aws securityhub "
                "enable-security-hub); the findings are sent again on the next run")
    return f"{error_code}: {error_message}"


def rejections_by_target(clusters: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per account and Region, how many findings Security Hub refused and why (from cluster results as kept in
    run reports, whose rejections are Rejection.__dict__)."""
    targets: dict[str, dict[str, Any]] = {}
    for cluster in clusters:
        for rejection in cluster["findings_rejected"]:
            target = targets.setdefault(f"{cluster['account_id']}/{cluster['region']}",
                                        {"findings_rejected": 0, "why": []})
            target["findings_rejected"] += 1
            why = rejection_reason(rejection.get("error_code", "Unknown"), rejection.get("error_message", ""))
            if why not in target["why"]:
                target["why"].append(why)
    return [{"target": name, **targets[name]} for name in sorted(targets)]


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
        return self.import_encoded((finding, compact_json(finding)) for finding in findings)

    def import_encoded(self, encoded: Iterable[EncodedFinding]) -> ImportOutcome:
        """Imports findings, each with its JSON encoding, as they come, a batch at a time; each batch's transient
        failures are retried before the next batch is built, so memory holds one batch, not the cluster's."""
        outcome = ImportOutcome()
        for batch in batches(_within_limit(encoded, outcome)):
            pending = batch
            for attempt in range(FINDING_ATTEMPTS):
                if attempt:
                    self._sleep(min(2.0 ** attempt * 0.5, 8.0))
                pending = self._send(pending, outcome, last_attempt=attempt == FINDING_ATTEMPTS - 1)
                if not pending:
                    break
        return outcome

    def _send(self, batch: list[EncodedFinding], outcome: ImportOutcome, last_attempt: bool) -> list[EncodedFinding]:
        """Sends one batch; returns the findings worth sending again."""
        self._limiter.wait()
        outcome.calls += 1
        try:
            response = self._client.batch_import_findings(Findings=EncodedBatch(batch))
        except ClientError as error:
            err = error.response.get("Error", {})
            failed = [{"Id": f["Id"], "ErrorCode": err.get("Code", "ClientError"),
                       "ErrorMessage": err.get("Message", str(error))} for f, _ in batch]
        except BotoCoreError as error:
            failed = [{"Id": f["Id"], "ErrorCode": type(error).__name__, "ErrorMessage": str(error)}
                      for f, _ in batch]
        else:
            failed = response.get("FailedFindings", [])
            outcome.imported += response.get("SuccessCount", len(batch) - len(failed))
        by_id = {f["Id"]: (f, line) for f, line in batch}
        retry = []
        for failure in failed:
            code = failure.get("ErrorCode", "Unknown")
            if last_attempt or code in PERMANENT_ERRORS or failure.get("Id") not in by_id:
                outcome.rejected.append(Rejection(failure.get("Id", "?"), code, failure.get("ErrorMessage", "")))
            else:
                retry.append(by_id[failure["Id"]])
        return retry


def batches(encoded: Iterable[EncodedFinding]) -> Iterator[list[EncodedFinding]]:
    """Consecutive batches of at most 100 findings and about 6 MB of encoded JSON."""
    batch: list[EncodedFinding] = []
    total = 0
    for finding, line in encoded:
        if batch and (len(batch) == MAX_BATCH_FINDINGS or total + len(line) + 1 > MAX_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append((finding, line))
        total += len(line) + 1  # and its comma
    if batch:
        yield batch


def _within_limit(encoded: Iterable[EncodedFinding], outcome: ImportOutcome) -> Iterator[EncodedFinding]:
    """A finding over Security Hub's 240 KB is rejected here, never sent."""
    for finding, line in encoded:
        if len(line) > MAX_FINDING_BYTES:
            outcome.rejected.append(Rejection(finding["Id"], "TooLarge", f"over {MAX_FINDING_BYTES} bytes"))
        else:
            yield finding, line

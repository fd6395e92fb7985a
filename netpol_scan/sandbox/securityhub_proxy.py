"""A Security Hub that throttles and rejects on demand: an HTTP proxy in front of the moto server.

moto accepts every finding, so on its own it cannot show what the scanner does when Security Hub says no. Point
the scanner's Security Hub client at this proxy (`AWS_ENDPOINT_URL_SECURITYHUB`) and it forwards everything to
moto, except that BatchImportFindings calls can be answered 429 TooManyRequestsException, and chosen findings
can be held back from moto and reported in FailedFindings instead, as the real service does.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netpol_scan.sandbox.relay import Answer, Relay

IMPORT_PATH = "/findings/import"
JSON = {"Content-Type": "application/json"}


@dataclass
class ImportCall:
    at: float
    findings: int
    status: int
    rejected: list[str] = field(default_factory=list)


class SecurityHubProxy(Relay):
    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.calls: list[ImportCall] = []
        self._throttle = 0
        self._reject: Callable[[dict[str, Any]], str | None] = lambda finding: None
        self._not_enabled: set[tuple[str, str]] = set()

    def __enter__(self) -> SecurityHubProxy:
        return super().__enter__()

    def throttle(self, calls: int) -> None:
        """The next `calls` BatchImportFindings calls are answered 429 TooManyRequestsException."""
        with self.lock:
            self._throttle = calls

    def reject(self, error_code_for: Callable[[dict[str, Any]], str | None]) -> None:
        """Findings for which `error_code_for` returns a code are not imported, and come back in FailedFindings."""
        with self.lock:
            self._reject = error_code_for

    def disable(self, account: str, region: str) -> None:
        """Security Hub CSPM is off in this account and Region: imports there fail whole, as AWS answers them."""
        with self.lock:
            self._not_enabled.add((account, region))

    def is_enabled(self, account: str, region: str) -> bool:
        with self.lock:
            return (account, region) not in self._not_enabled

    def take_throttle(self) -> bool:
        with self.lock:
            if self._throttle > 0:
                self._throttle -= 1
                return True
            return False

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        if path.split("?")[0] != IMPORT_PATH or method != "POST":
            return None
        arrived = time.monotonic()
        findings = json.loads(body).get("Findings", [])
        account, region = _signed_scope(headers, findings)
        if not self.is_enabled(account, region):
            self._record(arrived, len(findings), 403)
            message = json.dumps({"message": f"Account {account} is not subscribed to AWS Security Hub"}).encode()
            return 403, {**JSON, "x-amzn-ErrorType": "InvalidAccessException"}, message
        if self.take_throttle():
            self._record(arrived, len(findings), 429)
            return 429, {**JSON, "x-amzn-ErrorType": "TooManyRequestsException"}, b'{"message": "Rate exceeded"}'
        with self.lock:
            decide = self._reject
        failed = [{"Id": f["Id"], "ErrorCode": code, "ErrorMessage": "rejected by the test proxy"}
                  for f in findings if (code := decide(f))]
        rejected = {f["Id"] for f in failed}
        forwarded = [f for f in findings if f["Id"] not in rejected]
        answer = {"FailedCount": 0, "SuccessCount": 0, "FailedFindings": []}
        if forwarded:
            status, _, raw = self.forward("POST", path, headers, json.dumps({"Findings": forwarded}).encode())
            if status != 200:
                self._record(arrived, len(findings), status)
                return status, JSON, raw
            answer = json.loads(raw)
        answer["FailedFindings"] = answer.get("FailedFindings", []) + failed
        answer["FailedCount"] = answer.get("FailedCount", 0) + len(failed)
        self._record(arrived, len(findings), 200, sorted(rejected))
        return 200, JSON, json.dumps(answer).encode()

    def _record(self, arrived: float, findings: int, status: int, rejected: list[str] | None = None) -> None:
        with self.lock:
            self.calls.append(ImportCall(arrived, findings, status, rejected or []))


def _signed_scope(headers: dict[str, str], findings: list[dict[str, Any]]) -> tuple[str, str]:
    """The account (of the findings) and the Region (of the SigV4 credential scope) an import is made in."""
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scope = authorization.partition("Credential=")[2].split(",")[0].split("/")
    region = scope[2] if len(scope) > 2 else ""
    return (findings[0].get("AwsAccountId", "") if findings else ""), region

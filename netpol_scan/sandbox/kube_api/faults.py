"""Faults on demand: throttling, server errors and delays for the next requests whose path matches."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from netpol_scan.sandbox.kube_api.errors import STATUS_REASONS, ApiError


@dataclass
class Fault:
    pattern: re.Pattern[str]
    status: int | None
    times: int | None  # None: every matching request
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float | None = None
    reason: str | None = None

    def error(self) -> ApiError:
        """The Status answer of this fault, with the details kube-apiserver gives for 429 and 410."""
        details = None
        if self.status == 429 and "Retry-After" in self.headers:
            details = {"retryAfterSeconds": int(self.headers["Retry-After"])}
        elif self.status == 410:
            details = {}
        return ApiError(self.status or 500, reason=self.reason, details=details, headers=self.headers)


class Faults:
    """The faults waiting for requests, first injected first matched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def inject(self, path_regex: str, status: int | None, times: int | None = 1,
               headers: dict[str, str] | None = None, delay_seconds: float | None = None,
               body_reason: str | None = None) -> Fault:
        if status is not None and status not in STATUS_REASONS:
            raise ValueError(f"unsupported fault status {status}; known: {sorted(STATUS_REASONS)}")
        if status is None and not delay_seconds:
            raise ValueError("a fault needs a status or a delay")
        fault = Fault(re.compile(path_regex), status, times, dict(headers or {}), delay_seconds, body_reason)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, path: str) -> Fault | None:
        """The first fault matching `path`, used up once its `times` are spent."""
        with self._lock:
            for fault in self._faults:
                if fault.pattern.search(path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

"""A Security Hub that throttles and rejects on demand: an HTTP proxy in front of the moto server.

moto accepts every finding, so on its own it cannot show what the scanner does when Security Hub says no. Point
the scanner's Security Hub client at this proxy (`AWS_ENDPOINT_URL_SECURITYHUB`) and it forwards everything to
moto, except that BatchImportFindings calls can be answered 429 TooManyRequestsException, and chosen findings
can be held back from moto and reported in FailedFindings instead, as the real service does.
"""
from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

IMPORT_PATH = "/findings/import"


@dataclass
class ImportCall:
    at: float
    findings: int
    status: int
    rejected: list[str] = field(default_factory=list)


class SecurityHubProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.lock = threading.Lock()
        self.calls: list[ImportCall] = []
        self._throttle = 0
        self._reject: Callable[[dict[str, Any]], str | None] = lambda finding: None
        self._not_enabled: set[tuple[str, str]] = set()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SecurityHubProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

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

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "connection")}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    proxy: SecurityHubProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def do_PATCH(self) -> None:
        self._relay()

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] == IMPORT_PATH and self.command == "POST":
            return self._import(body)
        status, headers, answer = self.proxy.forward(self.command, self.path, dict(self.headers), body)
        self._send(status, answer, headers.get("Content-Type", "application/json"))

    def _import(self, body: bytes) -> None:
        arrived = time.monotonic()
        request = json.loads(body)
        findings = request.get("Findings", [])
        account, region = _signed_scope(self.headers.get("Authorization", ""), findings)
        if not self.proxy.is_enabled(account, region):
            self._record(arrived, len(findings), 403)
            message = f"Account {account} is not subscribed to AWS Security Hub"
            return self._send(403, json.dumps({"message": message}).encode(), "application/json",
                              {"x-amzn-ErrorType": "InvalidAccessException"})
        if self.proxy.take_throttle():
            self._record(arrived, len(findings), 429)
            return self._send(429, json.dumps({"message": "Rate exceeded"}).encode(), "application/json",
                              {"x-amzn-ErrorType": "TooManyRequestsException"})
        with self.proxy.lock:
            decide = self.proxy._reject
        failed = [{"Id": f["Id"], "ErrorCode": code, "ErrorMessage": "rejected by the test proxy"}
                  for f in findings if (code := decide(f))]
        rejected = {f["Id"] for f in failed}
        forwarded = [f for f in findings if f["Id"] not in rejected]
        answer = {"FailedCount": 0, "SuccessCount": 0, "FailedFindings": []}
        if forwarded:
            status, _, raw = self.proxy.forward("POST", self.path, dict(self.headers),
                                                json.dumps({"Findings": forwarded}).encode())
            if status != 200:
                self._record(arrived, len(findings), status)
                return self._send(status, raw, "application/json")
            answer = json.loads(raw)
        answer["FailedFindings"] = answer.get("FailedFindings", []) + failed
        answer["FailedCount"] = answer.get("FailedCount", 0) + len(failed)
        self._record(arrived, len(findings), 200, sorted(rejected))
        self._send(200, json.dumps(answer).encode(), "application/json")

    def _record(self, arrived: float, findings: int, status: int, rejected: list[str] | None = None) -> None:
        with self.proxy.lock:
            self.proxy.calls.append(ImportCall(arrived, findings, status, rejected or []))

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _signed_scope(authorization: str, findings: list[dict[str, Any]]) -> tuple[str, str]:
    """The account (of the findings) and the Region (of the SigV4 credential scope) an import is made in."""
    scope = authorization.partition("Credential=")[2].split(",")[0].split("/")
    region = scope[2] if len(scope) > 2 else ""
    return (findings[0].get("AwsAccountId", "") if findings else ""), region

"""An STS that refuses to let the scanner into chosen roles: an HTTP proxy in front of the moto server.

moto lets anyone assume any role, even one that does not exist, so on its own it cannot show what happens when a
member role is missing or does not trust the scanner. Point the STS client at this proxy (`AWS_ENDPOINT_URL_STS`)
and it forwards everything to moto, except AssumeRole into a refused role ARN, which it answers as STS does: 403
AccessDenied, "... is not authorized to perform: sts:AssumeRole on resource: <role ARN>".
"""
from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ACCESS_DENIED = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: sts:AssumeRole \
on resource: {role}</Message></Error>
  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"""


class StsProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.lock = threading.Lock()
        self._refused: set[str] = set()
        self.refusals: list[str] = []  # role ARNs refused, in order
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def host(self) -> str:
        """host:port, as it appears in the presigned URLs of EKS tokens made through this proxy."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StsProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def refuse(self, role_arn: str) -> None:
        """AssumeRole into `role_arn` is answered AccessDenied from now on."""
        with self.lock:
            self._refused.add(role_arn)

    def refused_role(self, body: bytes) -> str | None:
        form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
        role = form.get("RoleArn", "")
        with self.lock:
            if form.get("Action") == "AssumeRole" and role in self._refused:
                self.refusals.append(role)
                return role
        return None

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "connection")}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type") or "text/xml", response.read()
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    proxy: StsProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        role = self.proxy.refused_role(body) if self.command == "POST" else None
        if role is not None:
            status, content_type, answer = 403, "text/xml", ACCESS_DENIED.format(role=role).encode()
        else:
            status, content_type, answer = self.proxy.forward(self.command, self.path, dict(self.headers), body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

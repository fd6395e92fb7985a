"""An STS that refuses to let the scanner into chosen roles: an HTTP proxy in front of the moto server.

moto lets anyone assume any role, even one that does not exist, so on its own it cannot show what happens when a
member role is missing or does not trust the scanner. Point the STS client at this proxy (`AWS_ENDPOINT_URL_STS`)
and it forwards everything to moto, except AssumeRole into a refused role ARN, which it answers as STS does: 403
AccessDenied, "... is not authorized to perform: sts:AssumeRole on resource: <role ARN>". EKS tokens presigned
through it name its host: add `host` to the token verifier's STS hosts.
"""
from __future__ import annotations

from urllib.parse import parse_qs

from netpol_scan.sandbox.relay import Answer, Relay

ACCESS_DENIED = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: sts:AssumeRole \
on resource: {role}</Message></Error>
  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"""


class StsProxy(Relay):
    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._refused: set[str] = set()
        self.refusals: list[str] = []  # role ARNs refused, in order

    def __enter__(self) -> StsProxy:
        return super().__enter__()

    def refuse(self, role_arn: str) -> None:
        """AssumeRole into `role_arn` is answered AccessDenied from now on."""
        with self.lock:
            self._refused.add(role_arn)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
        role = form.get("RoleArn", "")
        with self.lock:
            if method != "POST" or form.get("Action") != "AssumeRole" or role not in self._refused:
                return None
            self.refusals.append(role)
        return 403, {"Content-Type": "text/xml"}, ACCESS_DENIED.format(role=role).encode()

"""EKS bearer-token verification: what aws-iam-authenticator checks, with the STS signature check done locally."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
MAX_TOKEN_BYTES = 4096
MAX_EXPIRES_SECONDS = 900
TOKEN_LIFETIME = dt.timedelta(minutes=15)
CLOCK_SKEW = dt.timedelta(minutes=1)
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
ALLOWED_QUERY = frozenset({
    "action", "version", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
    "x-amz-security-token", "x-amz-signature", "x-amz-signedheaders",
})

# access key id -> (secret access key, session token or None, identity ARN), or None when unknown
SecretLookup = Callable[[str], "tuple[str, str | None, str] | None"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one token: the caller's ARN, or why the token was refused."""

    identity: str | None
    reason: str = ""


class _Refused(Exception):
    pass


class EksTokenVerifier:
    """Checks EKS bearer tokens like the EKS authenticator, then re-computes the STS signature locally.

    The real authenticator forwards the presigned URL to STS, which checks the signature; the moto server does
    not, so the signature is re-computed here with the secret moto issued, over `x-k8s-aws-id: <cluster>`.
    """

    def __init__(self, sts_hosts: set[str], secret_for: SecretLookup,
                 clock: Callable[[], dt.datetime] | None = None):
        self.sts_hosts = sts_hosts
        self.secret_for = secret_for
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def identity(self, authorization_header: str | None, cluster_name: str) -> str | None:
        return self.verify(authorization_header, cluster_name).identity

    def verify(self, authorization_header: str | None, cluster_name: str) -> Verdict:
        try:
            return Verdict(self._check(authorization_header, cluster_name))
        except _Refused as refused:
            return Verdict(None, str(refused))

    def _check(self, authorization_header: str | None, cluster_name: str) -> str:
        parts = urlsplit(_presigned_url(authorization_header))
        if parts.netloc not in self.sts_hosts:
            raise _Refused(f"unexpected hostname {parts.netloc!r} in pre-signed URL")
        if parts.path not in ("", "/"):
            raise _Refused("unexpected path in pre-signed URL")
        params = _query_params(parts.query)
        if params.get("action") != "GetCallerIdentity":
            raise _Refused("unexpected action parameter in pre-signed URL")
        if CLUSTER_ID_HEADER not in params.get("x-amz-signedheaders", "").split(";"):
            raise _Refused(f"client did not sign the {CLUSTER_ID_HEADER} header in the pre-signed URL")
        self._check_time(params)
        return self._check_signature(parts, params, cluster_name)

    def _check_time(self, params: dict[str, str]) -> None:
        try:
            expires = int(params["x-amz-expires"])
            signed_at = dt.datetime.strptime(params["x-amz-date"], SIGV4_TIMESTAMP).replace(tzinfo=dt.timezone.utc)
        except (KeyError, ValueError):
            raise _Refused("missing or malformed X-Amz-Date / X-Amz-Expires") from None
        if not 0 < expires <= MAX_EXPIRES_SECONDS:
            raise _Refused(f"X-Amz-Expires {expires} is outside 1..{MAX_EXPIRES_SECONDS}")
        now = self.clock()
        if now > signed_at + TOKEN_LIFETIME:
            raise _Refused("X-Amz-Date parameter is expired (15 minute expiration)")
        if signed_at > now + CLOCK_SKEW:
            raise _Refused("X-Amz-Date parameter is in the future")

    def _check_signature(self, parts: Any, params: dict[str, str], cluster_name: str) -> str:
        if params.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
            raise _Refused("unexpected X-Amz-Algorithm")
        scope = params.get("x-amz-credential", "").split("/")
        if len(scope) != 5 or scope[3] != "sts" or scope[4] != "aws4_request":
            raise _Refused("malformed X-Amz-Credential")
        access_key, _day, region = scope[:3]
        found = self.secret_for(access_key)
        if found is None:
            raise _Refused("unknown access key")
        secret, session_token, arn = found
        if params.get("x-amz-security-token") != session_token:
            raise _Refused("security token does not match the access key")
        unsigned = "&".join(p for p in parts.query.split("&") if p.split("=")[0].lower() != "x-amz-signature")
        url = f"{parts.scheme}://{parts.netloc}/?{unsigned}"
        expected = _signature(url, cluster_name, Credentials(access_key, secret, session_token), region,
                              params["x-amz-date"], int(params["x-amz-expires"]))
        if not hmac.compare_digest(expected, params.get("x-amz-signature", "")):
            raise _Refused("signature does not match (wrong cluster, secret or tampered URL)")
        return arn


def _presigned_url(authorization_header: str | None) -> str:
    if not authorization_header or not authorization_header.startswith("Bearer "):
        raise _Refused("no bearer token")
    token = authorization_header[len("Bearer "):].strip()
    if len(token) > MAX_TOKEN_BYTES:
        raise _Refused("token is too large")
    if not token.startswith(TOKEN_PREFIX):
        raise _Refused(f"token is missing expected {TOKEN_PREFIX!r} prefix")
    encoded = token[len(TOKEN_PREFIX):]
    # The authenticator uses base64.RawURLEncoding: padding and the standard alphabet are errors.
    if not re.fullmatch(r"[A-Za-z0-9_-]*", encoded):
        raise _Refused("token is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _Refused("token does not decode to a URL") from None


def _query_params(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key.lower() not in ALLOWED_QUERY:
            raise _Refused(f"non-allowlisted query parameter {key!r}")
        if len(values) != 1 or key.lower() in params:
            raise _Refused(f"query parameter {key!r} with multiple values not supported")
        params[key.lower()] = values[0]
    return params


def _signature(url: str, cluster_name: str, credentials: Credentials, region: str, timestamp: str,
               expires: int) -> str:
    """SigV4 query signature of a GET of `url` (all auth parameters but the signature already in it)."""
    request = AWSRequest(method="GET", url=url, headers={CLUSTER_ID_HEADER: cluster_name})
    request.context["timestamp"] = timestamp
    auth = SigV4QueryAuth(credentials, "sts", region, expires=expires)
    return auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)


def presigned_token(credentials: Credentials, sts_host: str, cluster_name: str, region: str,
                    signed_at: dt.datetime, expires: int = 60, scheme: str = "http") -> str:
    """An EKS token signed at a chosen time (botocore's presigner always signs "now"): for expiry tests."""
    timestamp = signed_at.astimezone(dt.timezone.utc).strftime(SIGV4_TIMESTAMP)
    params = {
        "Action": "GetCallerIdentity", "Version": "2011-06-15", "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{credentials.access_key}/{timestamp[:8]}/{region}/sts/aws4_request",
        "X-Amz-Date": timestamp, "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": f"host;{CLUSTER_ID_HEADER}",
    }
    if credentials.token:
        params["X-Amz-Security-Token"] = credentials.token
    url = f"{scheme}://{sts_host}/?{percent_encode_sequence(params)}"
    url += "&X-Amz-Signature=" + _signature(url, cluster_name, credentials, region, timestamp, expires)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


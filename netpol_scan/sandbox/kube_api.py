"""The project's Kubernetes API test server: the part of kube-apiserver that a NetworkPolicy scanner reads.

It serves one in-memory `Cluster` over TLS with its own CA and answers the way kube-apiserver does wherever a
scanner depends on it: EKS bearer-token authentication (checked first, 401 Status), discovery, lists with
limit/continue paging (continue tokens that expire with 410 like after etcd compaction), label and field
selectors, metadata-only and Table views, single-object GETs, RBAC refusals (403 with kube-apiserver's message)
and faults on demand (throttling, server errors, delays). Every request is recorded with the caller's identity.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import copy
import datetime as dt
import hmac
import ipaddress
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Re-exported: tests import them from here, as from the sandbox branch's kube_api package.
from netpol_scan.sandbox.rbac import Attributes, Decision, Rbac  # noqa: F401

# --------------------------------------------------------------------------------------------------------------
# EKS token verification (what aws-iam-authenticator checks, with the STS signature check done locally)
# --------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------
# API errors, as kube-apiserver's metav1.Status
# --------------------------------------------------------------------------------------------------------------

EXPIRED_CONTINUE_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list."
)
# Reason and message kube-apiserver (or client-go, for 502 which only a proxy sends) gives each status code.
STATUS_REASONS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    406: ("NotAcceptable", "only the following media types are accepted: application/json"),
    410: ("Expired", EXPIRED_CONTINUE_MESSAGE),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected fault"),
    502: ("InternalError", 'an error on the server ("Bad Gateway") has prevented the request from succeeding'),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


class ApiError(Exception):
    """An error answer: a Status body with the given code, reason and message."""

    def __init__(self, code: int, message: str | None = None, reason: str | None = None,
                 details: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        default_reason, default_message = STATUS_REASONS[code]
        super().__init__(message or default_message)
        self.code, self.reason = code, reason or default_reason
        self.message = message or default_message
        self.details, self.headers = details, headers or {}

    def status(self) -> dict[str, Any]:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


# --------------------------------------------------------------------------------------------------------------
# Resource kinds, objects and selectors
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResourceKind:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    builtin: bool = False  # built-in lists omit apiVersion/kind on items; CRD (unstructured) lists keep them

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The resource as kube-apiserver names it in messages: `networkpolicies.networking.k8s.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> dict[str, Any]:
        entry = {"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                 "kind": self.kind, "verbs": ["get", "list"]}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry


NAMESPACES = ResourceKind("", "v1", "namespaces", "Namespace", False, ("ns",), builtin=True)
NETWORK_POLICIES = ResourceKind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",),
                                builtin=True)


class _Store:
    """Objects of one kind, with their keys kept sorted like etcd keys ("<namespace>/<name>" or "<name>")."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.keys: list[str] = []

    def put(self, key: str, obj: dict[str, Any]) -> None:
        if key not in self.objects:
            bisect.insort(self.keys, key)
        self.objects[key] = obj

    def pop(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            del self.keys[bisect.bisect_left(self.keys, key)]

    def span(self, namespace: str | None) -> tuple[int, int]:
        """Index range of the keys in `namespace` ("/" + 1 is "0", so `ns0` bounds the `ns/` prefix)."""
        if namespace is None:
            return 0, len(self.keys)
        return bisect.bisect_left(self.keys, namespace + "/"), bisect.bisect_left(self.keys, namespace + "0")


def _key(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


_REQUIREMENT = re.compile(
    r"^\s*(?P<not>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)|\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$")


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A predicate for a labelSelector (=, ==, !=, in, notin, exists, !exists); ApiError 400 when malformed."""
    requirements = [_requirement(part) for part in re.split(r",(?![^(]*\))", selector) if part.strip()]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def _requirement(text: str) -> Callable[[dict[str, str]], bool]:
    match = _REQUIREMENT.match(text)
    if not match or (match["not"] and (match["op"] or match["setop"])):
        raise ApiError(400, f"unable to parse requirement: {text.strip()!r}")
    key, op = match["key"], match["op"] or match["setop"]
    if op is None:
        return (lambda labels: key not in labels) if match["not"] else (lambda labels: key in labels)
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == match["value"]
    if op == "!=":
        return lambda labels: labels.get(key) != match["value"]
    values = {v.strip() for v in match["values"].split(",")}
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def field_matcher(selector: str, kind: ResourceKind) -> Callable[[dict[str, Any]], bool]:
    """A predicate for a fieldSelector over the fields kube-apiserver supports for namespaces and policies."""
    getters: dict[str, Callable[[dict[str, Any]], str]] = {
        "metadata.name": lambda obj: obj["metadata"]["name"],
        "metadata.namespace": lambda obj: obj["metadata"].get("namespace", ""),
    }
    if kind == NAMESPACES:
        getters["status.phase"] = lambda obj: obj.get("status", {}).get("phase", "")
    tests = []
    for part in filter(None, (p.strip() for p in selector.split(","))):
        match = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise ApiError(400, f"invalid selector: '{selector}'; can't understand '{part}'")
        if match[1] not in getters:
            raise ApiError(400, f'"{match[1]}" is not a known field selector: only "'
                                + '", "'.join(sorted(getters)) + '"')
        getter, negate, value = getters[match[1]], match[2] == "!=", match[3]
        tests.append(lambda obj, g=getter, n=negate, v=value: (g(obj) == v) != n)
    return lambda obj: all(test(obj) for test in tests)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------------------------
# Cluster state
# --------------------------------------------------------------------------------------------------------------

@dataclass
class Fault:
    pattern: re.Pattern[str]
    status: int | None
    times: int | None  # None: every matching request
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    metadata: dict[str, Any]


class Cluster:
    """In-memory state of one cluster. Mutate it from tests at any time: everything is guarded by `lock`."""

    def __init__(self, name: str, namespaces: dict[str, dict[str, dict[str, Any]]] | None = None,
                 kubernetes_version: str = "1.31"):
        self.name = name
        self.kubernetes_version = kubernetes_version
        self.lock = threading.RLock()
        self.requests: list[dict[str, Any]] = []
        self.continue_token_lifetime_pages: int | None = None  # continue tokens of later pages answer 410
        self._kinds: dict[tuple[str, str], ResourceKind] = {}
        self._stores: dict[tuple[str, str], _Store] = {}
        self._faults: list[Fault] = []
        self._forbidden: set[str] = set()
        self.rbac = Rbac()  # off until roles and bindings are applied
        self._revision = 1000
        self._compacted = 0  # continue tokens older than this revision are gone, as after etcd compaction
        for kind in (NAMESPACES, NETWORK_POLICIES):
            self._register(kind)
        for namespace, policies in (namespaces or {}).items():
            self.add_namespace(namespace)
            for policy_name, spec in policies.items():
                self.add_policy(namespace, policy_name, spec)

    # -- kinds and objects -------------------------------------------------------------------------------------
    def add_resource_kind(self, group: str, version: str, plural: str, kind: str, namespaced: bool,
                          short_names: Iterable[str] = ()) -> ResourceKind:
        """Serves a custom kind (as a CRD would), e.g. cilium.io/v2 ciliumnetworkpolicies; discovery lists it."""
        resource = ResourceKind(group, version, plural, kind, namespaced, tuple(short_names))
        with self.lock:
            self._register(resource)
        return resource

    def _register(self, kind: ResourceKind) -> None:
        self._kinds[(kind.group, kind.plural)] = kind
        self._stores.setdefault((kind.group, kind.plural), _Store())

    def kinds(self) -> list[ResourceKind]:
        with self.lock:
            return list(self._kinds.values())

    def kind_of(self, group_version: str, plural: str) -> ResourceKind | None:
        group, _, version = group_version.rpartition("/")
        with self.lock:
            kind = self._kinds.get((group, plural))
        return kind if kind and kind.version == version else None

    def add_object(self, group_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Adds or replaces an object (a copy is stored); fills apiVersion, kind, uid, resourceVersion."""
        kind = self.kind_of(group_version, plural)
        if kind is None:
            raise KeyError(f"no resource kind {plural} in {group_version}: add_resource_kind first")
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace") if kind.namespaced else None
        if kind.namespaced != bool(namespace):
            raise ValueError(f"{kind.kind} {meta.get('name')!r}: namespace is required iff the kind is namespaced")
        with self.lock:
            store = self._stores[(kind.group, kind.plural)]
            previous = store.objects.get(_key(namespace, meta["name"]), {}).get("metadata", {})
            meta.setdefault("uid", previous.get("uid", str(uuid.uuid4())))
            meta.setdefault("creationTimestamp", previous.get("creationTimestamp", _now()))
            meta["resourceVersion"] = self._bump()
            obj.update({"apiVersion": kind.group_version, "kind": kind.kind})
            store.put(_key(namespace, meta["name"]), obj)
        return obj

    def delete_object(self, group_version: str, plural: str, name: str, namespace: str | None = None) -> None:
        kind = self.kind_of(group_version, plural)
        if kind is None:
            raise KeyError(f"no resource kind {plural} in {group_version}")
        with self.lock:
            self._stores[(kind.group, kind.plural)].pop(_key(namespace, name))
            self._bump()

    def get_object(self, kind: ResourceKind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self.lock:
            return self._stores[(kind.group, kind.plural)].objects.get(_key(namespace, name))

    def add_namespace(self, name: str, labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None, terminating: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}
        if annotations:
            meta["annotations"] = dict(annotations)
        if terminating:
            meta["deletionTimestamp"] = _now()
        status = {"phase": "Terminating" if terminating else "Active"}
        return self.add_object("v1", "namespaces", {"metadata": meta, "spec": {"finalizers": ["kubernetes"]},
                                                    "status": status})

    def delete_namespace(self, name: str) -> None:
        """Deletes the namespace and every namespaced object in it, of every kind."""
        with self.lock:
            self._stores[("", "namespaces")].pop(name)
            for (group, plural), store in self._stores.items():
                if self._kinds[(group, plural)].namespaced:
                    start, end = store.span(name)
                    for key in store.keys[start:end]:
                        store.pop(key)
            self._bump()

    def add_policy(self, namespace: str, name: str, spec: dict[str, Any],
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
        meta = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
        return self.add_object("networking.k8s.io/v1", "networkpolicies", {"metadata": meta, "spec": spec})

    def delete_policy(self, namespace: str, name: str) -> None:
        self.delete_object("networking.k8s.io/v1", "networkpolicies", name, namespace)

    @property
    def resource_version(self) -> str:
        with self.lock:
            return str(self._revision)

    def _bump(self) -> str:
        self._revision += 1
        return str(self._revision)

    # -- faults, RBAC, compaction --------------------------------------------------------------------------------
    def inject(self, path_regex: str, status: int | None, times: int | None = 1,
               headers: dict[str, str] | None = None, delay_seconds: float | None = None,
               body_reason: str | None = None) -> Fault:
        """Answers the next `times` requests whose path matches (re.search) with `status` (None: answer normally)
        after sleeping `delay_seconds`. Checked after authentication, before anything else."""
        if status is not None and status not in STATUS_REASONS:
            raise ValueError(f"unsupported fault status {status}; known: {sorted(STATUS_REASONS)}")
        if status is None and not delay_seconds:
            raise ValueError("a fault needs a status or a delay")
        fault = Fault(re.compile(path_regex), status, times, dict(headers or {}), delay_seconds, body_reason)
        with self.lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.pattern.search(path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def forbid(self, plural: str) -> None:
        """RBAC denies every verb on this resource (e.g. "networkpolicies") to every caller."""
        with self.lock:
            self._forbidden.add(plural)

    def allow(self, plural: str) -> None:
        with self.lock:
            self._forbidden.discard(plural)

    def is_forbidden(self, plural: str) -> bool:
        with self.lock:
            return plural in self._forbidden

    def denies(self, user: str, verb: str, kind: ResourceKind, namespace: str | None, name: str | None) -> bool:
        """Whether this request is refused: a forbidden kind, or one the applied RBAC does not allow the caller."""
        with self.lock:
            if kind.plural in self._forbidden:
                return True
        request = Attributes(verb, True, kind.group, kind.plural, "", namespace or "", name or "")
        return not self.rbac.decide(user, request).allowed

    def expire_continue_tokens(self) -> None:
        """Every continue token issued so far answers 410 Expired, as after an etcd compaction."""
        with self.lock:
            self._compacted = int(self._bump())

    # -- reading -----------------------------------------------------------------------------------------------
    def list_page(self, kind: ResourceKind, namespace: str | None, limit: int, continue_token: str | None,
                  label_selector: str | None, field_selector: str | None) -> Page:
        """One page of a list, in etcd key order, continuing after the last key the token names."""
        labels = label_matcher(label_selector) if label_selector else None
        fields = field_matcher(field_selector, kind) if field_selector else None
        with self.lock:
            store = self._stores[(kind.group, kind.plural)]
            start, end = store.span(namespace)
            revision, page_number = self._revision, 0
            if continue_token:
                revision, after, page_number = self._decode_continue(continue_token)
                start = max(start, bisect.bisect_left(store.keys, after))
            items, position = [], start
            while position < end and not (0 < limit <= len(items)):
                obj = store.objects[store.keys[position]]
                position += 1
                if (labels is None or labels(obj["metadata"].get("labels", {}))) and (fields is None or fields(obj)):
                    items.append(obj)
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if position < end:
            metadata["continue"] = _encode_continue(revision, store.keys[position - 1] + "\x00", page_number + 1)
            if labels is None and fields is None:  # kube-apiserver cannot count what a selector would keep
                metadata["remainingItemCount"] = end - position
        return Page(items, metadata)

    def _decode_continue(self, token: str) -> tuple[int, str, int]:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            revision, after, page = int(decoded["rv"]), str(decoded["start"]), int(decoded.get("p", 0))
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            raise ApiError(400, f"invalid continue token: {error}") from None
        lifetime = self.continue_token_lifetime_pages
        if revision < self._compacted or (lifetime is not None and page >= lifetime):
            raise ApiError(410, details={})
        return revision, after, page

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def requests_to(self, path_regex: str) -> list[dict[str, Any]]:
        """The recorded requests whose path matches (re.search), oldest first."""
        with self.lock:
            return [r for r in self.requests if re.search(path_regex, r["path"])]


def _encode_continue(revision: int, start: str, page: int) -> str:
    # kube-apiserver's format (base64url JSON of version, revision and the next key) plus a page counter.
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start, "p": page}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --------------------------------------------------------------------------------------------------------------
# Views: full objects, metadata only, Table
# --------------------------------------------------------------------------------------------------------------

def _as_item(kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any]:
    if kind.builtin:
        return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return obj


def _metadata_only(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def _age(timestamp: str) -> str:
    created = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    seconds = int((dt.datetime.now(dt.timezone.utc) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _pod_selector(spec: dict[str, Any]) -> str:
    selector = spec.get("podSelector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        values = ",".join(expression.get("values") or [])
        parts.append(f"{expression['key']} {expression['operator'].lower()} ({values})")
    return ",".join(parts) or "<none>"


def _table(kind: ResourceKind, objects: list[dict[str, Any]], metadata: dict[str, Any],
           include_object: str) -> dict[str, Any]:
    columns = [("Name", "string", "name")]
    extra: Callable[[dict[str, Any]], list[str]] = lambda obj: []
    if kind == NAMESPACES:
        columns.append(("Status", "string", ""))
        extra = lambda obj: [obj.get("status", {}).get("phase", "")]
    elif kind == NETWORK_POLICIES:
        columns.append(("Pod-Selector", "string", ""))
        extra = lambda obj: [_pod_selector(obj.get("spec", {}))]
    columns.append(("Age", "string", ""))
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [obj["metadata"]["name"], *extra(obj),
                                         _age(obj["metadata"]["creationTimestamp"])]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _metadata_only(obj)
        rows.append(row)
    definitions = [{"name": n, "type": t, "format": f, "description": n, "priority": 0} for n, t, f in columns]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": definitions, "rows": rows}


def negotiate(accept: str | None, single: bool) -> str:
    """The view the Accept header asks for: "json", "Table", "PartialObjectMetadata" or "...List"; else 406."""
    metadata_view = "PartialObjectMetadata" if single else "PartialObjectMetadataList"
    for media in (accept or "*/*").split(","):
        media_type, *raw_params = [p.strip() for p in media.split(";")]
        params = dict(p.split("=", 1) for p in raw_params if "=" in p)
        if media_type not in ("application/json", "application/*", "*/*"):
            continue
        view = params.get("as")
        if view is None:
            return "json"
        if params.get("g") == "meta.k8s.io" and params.get("v") == "v1" and view in ("Table", metadata_view):
            return view
    raise ApiError(406)


# --------------------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def generate_tls() -> TlsMaterial:
    """A fresh EC P-256 CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kubernetes-{uuid.uuid4().hex[:8]}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return TlsMaterial(ca.public_bytes(pem), cert.public_bytes(pem), key_pem)


def _server_context(tls: TlsMaterial) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain only reads files; they are deleted once loaded.
    with tempfile.TemporaryDirectory() as directory:
        cert_file, key_file = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        with open(cert_file, "wb") as out:
            out.write(tls.cert_pem)
        with open(key_file, "wb") as out:
            out.write(tls.key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


class _TlsHttpServer(ThreadingHTTPServer):
    """Handshakes in each connection's thread (a stalled client cannot block accept) and can drop live
    connections on stop, so that clients with pooled keep-alive connections see the server go away."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext):
        super().__init__(("127.0.0.1", 0), handler)
        self.context = context
        self.connections: set[ssl.SSLSocket] = set()
        self.connections_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add 40 ms per answer.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request.settimeout(_Handler.timeout)  # a client that never completes the handshake frees its thread
        with self.context.wrap_socket(request, server_side=True) as connection:
            with self.connections_lock:
                self.connections.add(connection)
            try:
                self.RequestHandlerClass(connection, client_address, self)
            finally:
                with self.connections_lock:
                    self.connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # handshake failures and clients that hang up (read-timeout tests) are expected here

    def drop_connections(self) -> None:
        with self.connections_lock:
            for connection in list(self.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class KubeApiServer:
    """Serves one Cluster on https://127.0.0.1:<ephemeral port> with a fresh CA."""

    def __init__(self, cluster: Cluster, verifier: EksTokenVerifier, poll_interval: float = 0.05):
        self.cluster = cluster
        self.verifier = verifier
        tls = generate_tls()
        self.ca_pem = tls.ca_pem
        handler = type("BoundHandler", (_Handler,), {"api": self})
        self._httpd = _TlsHttpServer(handler, _server_context(tls))
        # A short poll interval keeps stop() quick: it waits for serve_forever's next poll. Hundreds of servers
        # (a fleet benchmark) want a long one: each poll is a wake-up that costs CPU.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(poll_interval,),
                                        name=f"kube-api-{cluster.name}", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def ca_data(self) -> str:
        """Base64 of the CA PEM, as EKS DescribeCluster returns it in certificateAuthority.data."""
        return base64.b64encode(self.ca_pem).decode()

    def start(self) -> KubeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    api: KubeApiServer
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    timeout = 60  # idle keep-alive connections end, so their threads do too

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))  # keep the connection in step
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        cluster = self.api.cluster
        identity = self.api.verifier.identity(self.headers.get("Authorization"), cluster.name)
        entry = {"method": method, "path": parts.path, "query": query, "identity": identity,
                 "accept": self.headers.get("Accept", ""), "status": None}
        cluster.record(entry)
        try:
            code, body = self._answer(method, parts.path, query, identity)
            headers: dict[str, str] = {}
        except ApiError as error:
            code, body, headers = error.code, error.status(), error.headers
        entry["status"] = code
        self._send(code, body, headers)

    def _answer(self, method: str, path: str, query: dict[str, str], identity: str | None) -> tuple[int, Any]:
        if identity is None:  # kube-apiserver authenticates before routing, authorizing or anything else
            raise ApiError(401)
        fault = self.api.cluster.take_fault(path)
        if fault and fault.delay_seconds:
            time.sleep(fault.delay_seconds)
        if fault and fault.status is not None:
            raise _fault_error(fault)
        if method != "GET":
            raise ApiError(405)  # the scanner only reads; this server has no write verbs
        return 200, _Router(self.api.cluster, identity, query, self.headers.get("Accept")).get(path)

    def _send(self, code: int, body: Any, headers: dict[str, str]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            self.close_connection = True  # the client gave up (e.g. its read timeout fired during a delay)


def _fault_error(fault: Fault) -> ApiError:
    details = None
    if fault.status == 429 and "Retry-After" in fault.headers:
        details = {"retryAfterSeconds": int(fault.headers["Retry-After"])}
    elif fault.status == 410:
        details = {}
    return ApiError(fault.status or 500, reason=fault.reason, details=details, headers=fault.headers)


class _Router:
    """Answers one authenticated GET: discovery, lists and single objects."""

    def __init__(self, cluster: Cluster, identity: str, query: dict[str, str], accept: str | None):
        self.cluster, self.identity, self.query, self.accept = cluster, identity, query, accept

    def get(self, path: str) -> Any:
        segments = [s for s in path.split("/") if s]
        if segments == ["version"]:
            return self._version()
        if segments == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]}
        if segments == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()}
        if len(segments) == 2 and segments[0] == "apis":
            return self._group(segments[1])
        if len(segments) >= 2 and segments[0] == "api":
            return self._resources(segments[1], segments[2:])
        if len(segments) >= 3 and segments[0] == "apis":
            return self._resources(f"{segments[1]}/{segments[2]}", segments[3:])
        raise ApiError(404, details={})

    def _version(self) -> dict[str, str]:
        major, minor = self.cluster.kubernetes_version.split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": f"v{self.cluster.kubernetes_version}.0-eks-test",
                "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"}

    def _groups(self) -> list[dict[str, Any]]:
        groups: dict[str, list[str]] = {}
        for kind in self.cluster.kinds():
            if kind.group and kind.version not in groups.setdefault(kind.group, []):
                groups[kind.group].append(kind.version)
        return [_api_group(name, versions) for name, versions in groups.items()]

    def _group(self, name: str) -> dict[str, Any]:
        group = next((g for g in self._groups() if g["name"] == name), None)
        if group is None:
            raise ApiError(404, details={})
        return {"kind": "APIGroup", "apiVersion": "v1", **group}

    def _resources(self, group_version: str, rest: list[str]) -> Any:
        kinds = [k for k in self.cluster.kinds() if k.group_version == group_version]
        if not kinds:
            raise ApiError(404, details={})
        if not rest:
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                    "resources": [k.discovery() for k in kinds]}
        namespace, plural, name = _resource_path(rest)
        kind = self.cluster.kind_of(group_version, plural)
        if kind is None or (namespace is not None and not kind.namespaced) or (
                namespace is None and name is not None and kind.namespaced):
            raise ApiError(404, details={})
        self._authorize(kind, "list" if name is None else "get", namespace, name)
        return self._list(kind, namespace) if name is None else self._get(kind, namespace, name)

    def _authorize(self, kind: ResourceKind, verb: str, namespace: str | None, name: str | None) -> None:
        if not self.cluster.denies(self.identity, verb, kind, namespace, name):
            return
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        reason = (f'User "{self.identity}" cannot {verb} resource "{kind.plural}" in API group "{kind.group}" '
                  f"{scope}")
        subject = f'{kind.qualified} "{name}"' if name else kind.qualified
        details = {"kind": kind.plural, **({"group": kind.group} if kind.group else {}),
                   **({"name": name} if name else {})}
        raise ApiError(403, f"{subject} is forbidden: {reason}", details=details)

    def _list(self, kind: ResourceKind, namespace: str | None) -> dict[str, Any]:
        if self.query.get("watch") in ("1", "true"):
            raise ApiError(405, "watch is not supported by this test server")
        view = negotiate(self.accept, single=False)
        try:
            limit = int(self.query.get("limit") or 0)
        except ValueError:
            raise ApiError(400, f"invalid limit {self.query['limit']!r}") from None
        page = self.cluster.list_page(kind, namespace, limit, self.query.get("continue") or None,
                                      self.query.get("labelSelector"), self.query.get("fieldSelector"))
        if view == "Table":
            return _table(kind, page.items, page.metadata, self.query.get("includeObject", "Metadata"))
        if view == "PartialObjectMetadataList":
            return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": page.metadata,
                    "items": [_metadata_only(obj) for obj in page.items]}
        return {"kind": f"{kind.kind}List", "apiVersion": kind.group_version, "metadata": page.metadata,
                "items": [_as_item(kind, obj) for obj in page.items]}

    def _get(self, kind: ResourceKind, namespace: str | None, name: str) -> dict[str, Any]:
        view = negotiate(self.accept, single=True)
        obj = self.cluster.get_object(kind, name, namespace)
        if obj is None:
            details = {"name": name, **({"group": kind.group} if kind.group else {}), "kind": kind.plural}
            raise ApiError(404, f'{kind.qualified} "{name}" not found', details=details)
        if view == "Table":
            return _table(kind, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                          self.query.get("includeObject", "Metadata"))
        return _metadata_only(obj) if view == "PartialObjectMetadata" else obj


def _resource_path(rest: list[str]) -> tuple[str | None, str, str | None]:
    """(namespace, plural, name) of the path after the group version; 404 for anything else (subresources)."""
    if len(rest) in (3, 4) and rest[0] == "namespaces":
        return rest[1], rest[2], rest[3] if len(rest) == 4 else None
    if len(rest) in (1, 2):
        return None, rest[0], rest[1] if len(rest) == 2 else None
    raise ApiError(404, details={})


def _api_group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}

"""Reads one cluster's namespaces and NetworkPolicies into a ClusterSnapshot, completely or not at all.

Lists go across all namespaces in pages of at most 500 (limit/continue), two list calls per 500 objects at
most, never one request per namespace. Namespaces are asked as metadata-only lists, and responses are parsed
as plain JSON: the kubernetes client's models cost 5x the time for data this scan does not need
(REFERENCE.md). The client is configured in memory: endpoint, the CA from DescribeCluster, a bearer token;
TLS verification is always on.

The two lists are read at once, each in a thread of the session's and over a connection of its own, while the
calling thread reads discovery, other engines' policies and the enforcement evidence; and each list asks for its
next page as soon as a page gives its continue token, so that the server makes a page while the client converts
the last. Each list still has one request in flight at a time, in order. The policies and the namespaces are
handed to whoever takes them as they arrive (ClusterAsRead: the scan analyses and evaluates them meanwhile).
Whatever thread a fault happens in, the read fails as a whole, and the session's threads end before the client is
closed.

Faults, as kube-apiserver reports them:
- 410 Gone on a continue token (etcd compacted past it): the list starts again, a bounded number of times;
- 429 Too Many Requests: wait for Retry-After (capped), then retry;
- 5xx and timeouts: a few retries with backoff;
- anything else, or retries exhausted: ClusterReadError, so the cluster is reported unreadable and its
  earlier findings are left as they were.

A read may be given a deadline (the invocation's remaining time, less what publishing and the report need):
it is checked before every request and every wait, and caps each request's timeouts and each Retry-After wait,
so that a slow cluster ends as unreadable ("read did not finish in N s") while there is time to say so.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import urllib3

from handler import engine_reader
from handler.errors import ClusterReadError, ForbiddenError
from handler.models import (EMPTY, EXEMPT_ANNOTATION, EXEMPT_UNTIL_ANNOTATION, ClusterInfo, ClusterSnapshot, Namespace,
                            NetworkPolicy)
from handler.run.stages import CPU

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, Configuration

NAMESPACES_PATH = "/api/v1/namespaces"
NETWORK_POLICIES_PATH = "/apis/networking.k8s.io/v1/networkpolicies"
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
JSON = "application/json"
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
MAX_LIST_RESTARTS = 3
MAX_RETRY_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class ReadLimits:
    page_size: int = 500
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    attempts: int = 4  # per request, for 429, 5xx and timeouts


class _ContinueExpired(Exception):
    """410 Gone for a continue token: the list must start over."""


class _NotFound(Exception):
    """404 for a single object: it does not exist."""


class ClusterReader:
    """Reads clusters through the kubernetes client's HTTP stack, one in-memory configuration per cluster."""

    def __init__(self, limits: ReadLimits | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limits = limits or ReadLimits()
        self._sleep = sleep

    def read(self, cluster: ClusterInfo, token: str, deadline: float | None = None,
             as_read: ClusterAsRead | None = None) -> ClusterSnapshot:
        """An EKS cluster, trusted through the CA from DescribeCluster and entered with an EKS token; finished
        by `deadline` (time.monotonic()) or ClusterReadError. `as_read` is given the policies and the namespaces
        as they arrive."""
        if not cluster.endpoint.startswith("https://"):
            raise ClusterReadError(f"endpoint of {cluster.ref} is not https: {cluster.endpoint!r}")
        return self.read_with(cluster, api_client(cluster, token, self.limits), deadline, as_read)

    def read_with(self, cluster: ClusterInfo, api: ApiClient, deadline: float | None = None,
                  as_read: ClusterAsRead | None = None) -> ClusterSnapshot:
        """Any cluster, through a client configured elsewhere (a kubeconfig context, for `netpol-scan cluster`):
        the same lists, paging and fault handling. Closes the client."""
        with _Session(cluster, api, self.limits, self._sleep, deadline) as session:
            snapshot = read_snapshot(cluster, session, as_read)
        CPU.charge(session.cpu_elsewhere)
        return snapshot


class ClusterAsRead(Protocol):
    """What takes a cluster as it is read (evaluation.Evaluation): `policies_read` with each page of NetworkPolicies;
    `begin` with everything the read found but the namespaces, once it is read; `add` with each page's namespaces;
    `restart` when the list of namespaces starts over (a continue token expired), so that what was added is
    dropped. A list of policies that starts over gives its policies again, as new objects; only those of the
    snapshot given to `begin` count. A read that fails raises ClusterReadError whatever was given."""

    def policies_read(self, policies: Sequence[NetworkPolicy]) -> None: ...

    def begin(self, read_so_far: ClusterSnapshot) -> None: ...

    def add(self, namespaces: Sequence[Namespace]) -> None: ...

    def restart(self) -> None: ...


class ListInProgress:
    """A list read in another thread (Reads.list_all_meanwhile): its pages as they are converted, RESTARTED when it
    starts over, and then all of its items (or the error that ended it)."""

    def __init__(self, pages: Iterable[list[Any] | object], items: Callable[[], list[Any]]) -> None:
        self.pages, self.items = pages, items

    @classmethod
    def done(cls, items: list[Any]) -> ListInProgress:
        return cls([items], lambda: items)


RESTARTED = object()  # in ListInProgress.pages: the list starts over from its first page


class Reads(Protocol):
    """What reading a snapshot asks of a session: lists, single objects, and the count of requests made.
    `every_read`: make the reads that depend on what earlier reads found too (the doctor plans with it)."""

    requests: int
    every_read: bool

    def list_all(self, path: str, accept: str, convert: Callable[[Mapping[str, Any]], Any] | None = None, *,
                 label_selector: str | None = None) -> list[Any]: ...

    def list_all_meanwhile(self, path: str, accept: str,
                           convert: Callable[[Mapping[str, Any]], Any]) -> ListInProgress:
        """list_all, read while the caller goes on with other reads."""

    def get_object(self, path: str) -> Mapping[str, Any] | None: ...


def read_snapshot(cluster: ClusterInfo, session: Reads, as_read: ClusterAsRead | None = None) -> ClusterSnapshot:
    """Every read of a scan through `session`: the reader's own, or one that only notes what would be read
    (`netpol-scan doctor` checks RBAC for exactly these reads).

    The namespaces and the policies are listed in two other threads while this one reads what else the cluster
    runs (engine_reader: API discovery, other engines' policies, the CIS 5.3.1 evidence): on a real cluster each
    read's round trips hide behind the others', and on a busy server one list's pages are made while the client
    parses the other's. `as_read` is given the NetworkPolicies page by page once the rest is read (while the
    namespaces' pages are still being made), then the namespaces page by page as they arrive, so that a cluster
    is evaluated while its last pages are on their way (bench/scan_one_cluster.py)."""
    strings: dict[str, str] = {}  # of this read's namespaces (_namespace)
    namespaces = session.list_all_meanwhile(NAMESPACES_PATH, METADATA_ONLY, lambda item: _namespace(item, strings))
    policies = session.list_all_meanwhile(NETWORK_POLICIES_PATH, JSON, _policy)
    engines = engine_reader.read_engines(session, cluster.auto_mode)
    for page in policies.pages:
        # A list that starts over gives its policies again, as new objects: only those of the list's end count.
        if as_read is not None and page is not RESTARTED:
            as_read.policies_read(page)  # type: ignore[arg-type]  # a page, not RESTARTED
    read_so_far = ClusterSnapshot(cluster, (), tuple(policies.items()) + engines.policies,
                                  unreadable=engines.unreadable, enforcement=engines.enforcement,
                                  unselected_pods=engines.unselected_pods)
    if as_read is not None:
        as_read.begin(read_so_far)
        for page in namespaces.pages:
            if page is RESTARTED:
                as_read.restart()
            else:
                as_read.add(page)  # type: ignore[arg-type]  # a page, not RESTARTED
    return dataclasses.replace(read_so_far, namespaces=tuple(namespaces.items()), api_requests=session.requests)


_KUBERNETES_IMPORT = threading.Lock()


def api_client(cluster: ClusterInfo, token: str, limits: ReadLimits) -> ApiClient:
    """A kubernetes ApiClient for an EKS cluster, built in memory: no kubeconfig, no files."""
    # Imported when a cluster is first read, not with this module: any import from the kubernetes package runs its
    # __init__, which loads the kubeconfig loader, dynamic client, watch and stream (oauthlib, requests, yaml,
    # websocket), and the scheduled function that fans out to workers reads no cluster (docs/benchmarks.md, 2).
    # Under a lock: the package's modules import each other in a cycle (kubernetes.client.api_client -> kubernetes
    # -> config -> kubernetes.client), and clusters read in parallel threads that import it for the first time at
    # once deadlock on its module locks (_DeadlockError) or find it half made (ImportError).
    with _KUBERNETES_IMPORT:
        from kubernetes.client import ApiClient, Configuration

    config = Configuration(host=cluster.endpoint)
    config.verify_ssl = True
    config.ca_cert_data = _ca_pem(cluster)
    config.api_key = {"BearerToken": token}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    return ApiClient(tune_transport(config))


def tune_transport(config: Configuration) -> Configuration:
    """The reader's transport settings, for a configuration built here or loaded from a kubeconfig."""
    # Connection errors get two quick retries in urllib3; status-based retries are ours (Retry-After, 410).
    config.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, redirect=0, backoff_factor=0.2,
                                   respect_retry_after_header=False, raise_on_status=False)
    config.connection_pool_maxsize = 3  # the two lists and the other reads at once (read_snapshot)
    return config


def _ca_pem(cluster: ClusterInfo) -> str:
    try:
        pem = base64.b64decode(cluster.ca_data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise ClusterReadError(f"certificateAuthority.data of {cluster.ref} is not base64 PEM") from error
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ClusterReadError(f"certificateAuthority.data of {cluster.ref} holds no PEM certificate")
    return pem


class _Session:
    """One cluster's reads: request counting, retries and paging over a single ApiClient."""

    every_read = False

    def __init__(self, cluster: ClusterInfo, api: ApiClient, limits: ReadLimits, sleep: Callable[[float], None],
                 deadline: float | None = None):
        self.cluster, self.api, self.limits, self._sleep = cluster, api, limits, sleep
        self.requests = 0
        self._deadline = math.inf if deadline is None else deadline
        self._allowed = self._deadline - time.monotonic()
        self._lock = threading.Lock()  # two lists are read at once, each with a page fetched ahead
        self._stopped = threading.Event()  # the session ended: a list still being read ends at its next request
        self._meanwhile = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cluster-list")
        # A page ahead for each list: the two read meanwhile, and one the calling thread reads (other engines').
        self._fetcher = ThreadPoolExecutor(max_workers=3, thread_name_prefix="cluster-page")
        self.cpu_elsewhere = 0.0  # CPU seconds of the session's threads, for the caller's stage ledger

    def _left(self) -> float:
        """Seconds left before the deadline; ClusterReadError once there are none, or once the session ended."""
        if self._stopped.is_set():
            raise ClusterReadError("the read ended before this list did")
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._late()
        return left

    def _late(self) -> ClusterReadError:
        return ClusterReadError(f"read did not finish in {max(self._allowed, 0):.0f} s (the time this invocation "
                                "could give it)")

    def _wait(self, seconds: float) -> None:
        """A wait before a retry, unless it would outlast the deadline: then the read ends now."""
        if seconds >= self._left():
            raise self._late()
        self._sleep(seconds)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._meanwhile.shutdown()  # a list still running (the read failed elsewhere) ends at its next request
        self._fetcher.shutdown()
        self.api.close()

    def list_all(self, path: str, accept: str, convert: Callable[[Mapping[str, Any]], Any] | None = None, *,
                 label_selector: str | None = None) -> list[Any]:
        """Every item of a list (those `label_selector` selects, when given), page by page, each made into what
        `convert` makes of it as its page arrives (the rest of a page is freed once it is converted: less memory,
        and less of it to take from the system); restarts from the first page when a continue token
        expires."""
        return self._list(path, accept, convert, [("labelSelector", label_selector)] if label_selector else [])

    def list_all_meanwhile(self, path: str, accept: str,
                           convert: Callable[[Mapping[str, Any]], Any]) -> ListInProgress:
        pages: queue.SimpleQueue[list[Any] | object] = queue.SimpleQueue()

        def read() -> list[Any]:
            try:
                return self._list(path, accept, convert, [], pages)
            finally:
                pages.put(_LISTED)

        return ListInProgress(iter(pages.get, _LISTED), self._meanwhile.submit(self._timed, read).result)

    def _timed(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work` in one of the session's threads, its CPU added to cpu_elsewhere."""
        started = time.thread_time()
        try:
            return work(*args)
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self.cpu_elsewhere += spent

    def _list(self, path: str, accept: str, convert: Callable[[Mapping[str, Any]], Any] | None,
              selector: list[tuple[str, Any]], pages: queue.SimpleQueue[list[Any] | object] | None = None,
              ) -> list[Any]:
        for restart in range(MAX_LIST_RESTARTS + 1):
            if restart and pages is not None:
                pages.put(RESTARTED)
            try:
                return self._pages(path, accept, convert, selector, pages)
            except _ContinueExpired:
                continue
        raise ClusterReadError(f"{path}: the list kept expiring (410 Gone) after {MAX_LIST_RESTARTS} restarts")

    def get_object(self, path: str) -> Mapping[str, Any] | None:
        """One object, or None when it does not exist (404)."""
        try:
            return self._get(path, [], JSON)
        except _NotFound:
            return None

    def _pages(self, path: str, accept: str, convert: Callable[[Mapping[str, Any]], Any] | None,
               selector: list[tuple[str, Any]], pages: queue.SimpleQueue[list[Any] | object] | None) -> list[Any]:
        """A list's pages, each asked for as soon as the one before gives its continue token, and converted while
        the server makes the next: one request in flight at a time, in order, and at most two pages held."""
        items: list[Any] = []
        pending: Future[Mapping[str, Any]] | None = self._fetch_ahead(path, self._query(selector, None), accept)
        try:
            while pending is not None:
                page = pending.result()
                token = (page.get("metadata") or {}).get("continue")
                pending = self._fetch_ahead(path, self._query(selector, token), accept) if token else None
                converted = self._converted(page, convert)
                del page  # freed before the next page is waited for: two parsed pages at most
                items.extend(converted)
                if pages is not None:
                    pages.put(converted)
            return items
        finally:
            if pending is not None:  # conversion failed with a request in flight: it ends before the client closes
                wait([pending])

    def _query(self, selector: list[tuple[str, Any]], token: str | None) -> list[tuple[str, Any]]:
        return [*selector, ("limit", self.limits.page_size)] + ([("continue", token)] if token else [])

    def _fetch_ahead(self, path: str, query: list[tuple[str, Any]], accept: str) -> Future[Mapping[str, Any]]:
        """A page fetched (retries, deadline and all) by the session's fetching threads, returned once its request
        is sent: the calling thread waits for that, or the fetching thread would wait for the GIL until the
        caller's next blocking call, and the server would get the request only when its answer was wanted."""
        sent = threading.Event()
        future = self._fetcher.submit(self._timed, self._get, path, query, accept, sent)
        future.add_done_callback(lambda _: sent.set())  # a fetch that ends before sending (deadline) frees us too
        sent.wait()
        return future

    def _converted(self, page: Mapping[str, Any], convert: Callable[[Mapping[str, Any]], Any] | None) -> list[Any]:
        page_items = page.get("items") or ()
        try:
            return list(page_items if convert is None else map(convert, page_items))
        except (KeyError, TypeError, AttributeError) as error:
            raise ClusterReadError(f"malformed list item from {self.cluster.endpoint}: {error!r}") from error

    def _get(self, path: str, query: list[tuple[str, Any]], accept: str,
             sent: threading.Event | None = None) -> Mapping[str, Any]:
        """`sent` is set once the first attempt's request is on its way."""
        for attempt in range(1, self.limits.attempts + 1):
            status, headers, body = self._request(path, query, accept, sent)
            if status == 200:
                return _decode(body, path)
            if status == 404 and not query:  # a single object (get_object); lists of known kinds never 404
                raise _NotFound()
            if status == 410 and any(k == "continue" for k, _ in query):
                raise _ContinueExpired()
            if attempt < self.limits.attempts and status == 429:
                self._wait(_retry_after(headers))
                continue
            if attempt < self.limits.attempts and (status in RETRYABLE_STATUS or status == 0):
                self._wait(min(0.25 * 2 ** attempt, 4.0))
                continue
            if status == 403:
                raise ForbiddenError(_explain(status, path, body))
            raise ClusterReadError(_explain(status, path, body))
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _request(self, path: str, query: list[tuple[str, Any]], accept: str,
                 sent: threading.Event | None = None) -> tuple[int, Mapping[str, str], bytes]:
        """One GET, its timeouts capped by the deadline. Status 0 stands for a read timeout, which is retried like
        a 5xx (unless the deadline has passed)."""
        left = self._left()
        with self._lock:  # and one token refresh at a time, for a kubeconfig's exec plugin
            self.requests += 1
            request = self.api.param_serialize("GET", path, query_params=query, header_params={"Accept": accept},
                                               auth_settings=["BearerToken"])
        if sent is not None:
            sent.set()
        try:
            response = self.api.call_api(*request, _request_timeout=(min(self.limits.connect_timeout, left),
                                                                     min(self.limits.read_timeout, left)))
            body = response.read()
        except urllib3.exceptions.HTTPError as error:
            # urllib3 wraps a read timeout in MaxRetryError once its own (zero) read retries are used up.
            if isinstance(getattr(error, "reason", error), urllib3.exceptions.ReadTimeoutError):
                self._left()
                return 0, {}, b""
            raise ClusterReadError(f"cannot reach {self.cluster.endpoint}: {_reason(error)}") from error
        except OSError as error:
            raise ClusterReadError(f"cannot reach {self.cluster.endpoint}: {_reason(error)}") from error
        return response.status, response.getheaders() or {}, body


_LISTED = object()  # the end of a ListInProgress's pages


def _namespace(item: Mapping[str, Any], strings: dict[str, str] | None = None) -> Namespace:
    """`strings`, kept across a read, makes equal label values one string: JSON parsing makes a string of each,
    and a cluster's namespaces repeat theirs (team, environment, managed-by), and the metadata.name label is the
    name: 1.8 of the 5 MB that 10,000 namespaces held (bench/scan_one_cluster.py). A value equal to the name is
    made the name without a look-up: it is unique, so `strings` stays as small as the cluster's repeated values."""
    meta = item.get("metadata") or {}
    # Metadata-only lists carry no status: kube-apiserver sets deletionTimestamp when phase turns Terminating.
    terminating = bool(meta.get("deletionTimestamp")) or (item.get("status") or EMPTY).get("phase") == "Terminating"
    name, labels = meta["name"], meta.get("labels") or EMPTY
    if strings is not None:
        one = strings.setdefault
        for key, value in labels.items():  # no key is added: the dict may change as it is walked
            labels[key] = name if value == name else one(value, value)
    return Namespace(name, labels, _read_annotations(meta.get("annotations")), terminating)


def _read_annotations(annotations: Mapping[str, str] | None) -> Mapping[str, str]:
    """The annotations a verdict can depend on (an exemption's); a namespace with neither shares EMPTY."""
    if not annotations or (EXEMPT_ANNOTATION not in annotations and EXEMPT_UNTIL_ANNOTATION not in annotations):
        return EMPTY
    return {key: annotations[key] for key in (EXEMPT_ANNOTATION, EXEMPT_UNTIL_ANNOTATION) if key in annotations}


def _policy(item: Mapping[str, Any]) -> NetworkPolicy:
    meta = item.get("metadata") or {}
    return NetworkPolicy(meta["namespace"], meta["name"], item.get("spec") or EMPTY)


def _decode(body: bytes, path: str) -> Mapping[str, Any]:
    try:
        page = json.loads(body)
    except ValueError as error:
        raise ClusterReadError(f"{path}: the response is not JSON") from error
    if not isinstance(page, Mapping):
        raise ClusterReadError(f"{path}: the response is not a list object")
    return page


def _retry_after(headers: Mapping[str, str]) -> float:
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), "1")
    try:
        seconds = float(raw)
    except ValueError:
        return 1.0  # an HTTP date, or garbage: wait a little and try again
    return 1.0 if math.isnan(seconds) else min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _explain(status: int, path: str, body: bytes) -> str:
    """A reason an operator can act on, from the Status object kube-apiserver returns."""
    if status == 0:
        return f"{path}: timed out reading the response"
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    hint = {401: "the token was refused: does the scan role have an EKS access entry (or aws-auth mapping)?",
            403: "forbidden: the scan role needs get and list on namespaces and networking.k8s.io "
                 "networkpolicies: apply infra/kubernetes/rbac.yaml and map the role to netpol-scanner:readers"
            }.get(status, "")
    return f"HTTP {status} on {path}" + (f": {message}" if message else "") + (f" ({hint})" if hint else "")


def _reason(error: BaseException) -> str:
    reason = str(getattr(error, "reason", None) or error)
    # urllib3 prefixes "HTTPSConnection(host=..., port=...): "; the endpoint is already in the message.
    return reason.split("): ", 1)[-1][:300]

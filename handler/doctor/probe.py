"""The doctor's edges: every call it makes, all of them reads, turned into the plain facts findings.py judges.

The targets are the scanner's own (discovery.py: the same settings, accounts, Regions, roles and clients); each
cluster is entered as a scan enters it (DescribeCluster's endpoint and CA, an EKS token from auth.py); what is
checked in it is what `cluster_reader.read_snapshot` would read there: it runs against a session that answers
discovery from the cluster and notes every other read instead of making it. Each noted read is then asked with a
SelfSubjectAccessReview, which every authenticated identity may create. Nothing is written anywhere.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import boto3
import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from handler.cluster_reader import ListInProgress, ReadLimits, api_client, read_snapshot
from handler.config import ScanRequest, Settings
from handler.doctor.findings import (
    Access,
    AccessAnswer,
    AccountProbe,
    ClusterProbe,
    FleetProbe,
    RegionProbe,
    access_of,
)
from handler.errors import ClusterReadError, DiscoveryError
from handler.models import ClusterInfo, ClusterRef
from handler.targets import discovery
from handler.targets.auth import TokenSource

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
JSON = "application/json"


def examine(settings: Settings, request: ScanRequest, base: boto3.Session, in_function: bool) -> FleetProbe:
    """Every target account, Region and cluster of the settings (narrowed by `request`), as the scan sees them."""
    fleet = FleetProbe(identity="", in_function=in_function, scan_role_name=settings.scan_role_name,
                       external_id=bool(settings.scan_role_external_id))
    try:
        own = discovery.own_identity(base, settings.default_region)
    except DiscoveryError as error:
        return replace(fleet, identity_error=str(error))
    fleet = replace(fleet, identity=own.arn)
    try:
        accounts = discovery.target_accounts(base, settings, request, own)
    except DiscoveryError as error:
        return replace(fleet, accounts_error=str(error))
    sessions = discovery.AccountSessions(base, settings, own)
    limits = ReadLimits(connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout)
    regions = discovery.target_regions(settings, request)
    # Accounts are entered on one pool, clusters checked on another: an account's thread never waits for a
    # cluster, so neither pool can fill up with threads waiting for the other.
    with ThreadPoolExecutor(settings.cluster_concurrency) as account_pool, \
            ThreadPoolExecutor(settings.cluster_concurrency) as cluster_pool:
        entered = list(account_pool.map(
            lambda account: _account(sessions, account, regions, request, cluster_pool, limits), accounts))
        return replace(fleet, accounts=tuple(finish() for finish in entered))


def _account(sessions: discovery.AccountSessions, account_id: str, regions: list[str], request: ScanRequest,
             pool: ThreadPoolExecutor, limits: ReadLimits) -> Callable[[], AccountProbe]:
    """Enters the account and lists its clusters; the clusters are checked on `pool`. Returns what waits for them
    and makes the account's probe."""
    principal = sessions.role_arn(account_id)
    try:
        session = sessions.session(account_id)
    except DiscoveryError as error:
        probe = AccountProbe(account_id, principal, enter_error=str(error))
        return lambda: probe
    pending = [_region(session, account_id, region, request, pool, limits) for region in regions]
    return lambda: AccountProbe(account_id, principal, regions=tuple(finish() for finish in pending))


def _region(session: boto3.Session, account_id: str, region: str, request: ScanRequest, pool: ThreadPoolExecutor,
            limits: ReadLimits) -> Callable[[], RegionProbe]:
    hub_code, hub_error = _security_hub(session, region)
    eks = session.client("eks", region_name=region, config=discovery.AWS_CALLS)
    try:
        names = discovery.cluster_names(eks, account_id, region)
    except DiscoveryError as error:
        probe = RegionProbe(region, hub_code, hub_error, list_error=str(error))
        return lambda: probe
    tokens = TokenSource(session, region)  # made here, in one thread; tokens are then made on the pool
    clusters: list[Future[ClusterProbe]] = [
        pool.submit(_cluster, eks, tokens, ClusterRef(account_id, region, name), limits)
        for name in names if not request.clusters or name in request.clusters]
    return lambda: RegionProbe(region, hub_code, hub_error, clusters=tuple(c.result() for c in clusters))


def _security_hub(session: boto3.Session, region: str) -> tuple[str, str]:
    """DescribeHub's error code and message, or ("", "") when Security Hub CSPM is enabled here."""
    try:
        session.client("securityhub", region_name=region, config=discovery.AWS_CALLS).describe_hub()
    except ClientError as error:
        err = error.response.get("Error", {})
        return err.get("Code", "ClientError"), f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}"
    except BotoCoreError as error:
        return type(error).__name__, str(error)
    return "", ""


def _cluster(eks: Any, tokens: TokenSource, ref: ClusterRef, limits: ReadLimits) -> ClusterProbe:
    try:
        info = discovery.describe_cluster(eks, ref)
    except DiscoveryError as error:
        return ClusterProbe(ref.name, describe_error=str(error))
    if not info.endpoint.startswith("https://"):
        return ClusterProbe(ref.name, info.endpoint, describe_error=f"the endpoint is not https: {info.endpoint!r}")
    try:
        token = tokens.token(ref.name)
    except (ClientError, BotoCoreError) as error:
        return ClusterProbe(ref.name, info.endpoint, auth_message=f"no token could be made: {error}")
    try:
        api = api_client(info, token, limits)
    except ClusterReadError as error:  # certificateAuthority.data is no PEM: TLS cannot be verified
        return ClusterProbe(ref.name, info.endpoint, unreachable=str(error))
    with api:
        return _examine_cluster(info, _Kube(api, info.endpoint, limits))


def _examine_cluster(info: ClusterInfo, kube: _Kube) -> ClusterProbe:
    name, endpoint = info.ref.name, info.endpoint
    try:
        status, body = kube.call("GET", "/apis")
        if status != 200:
            return ClusterProbe(name, endpoint, auth_status=status, auth_message=_message(body))
        accesses = planned_reads(info, kube)
    except _Unreachable as error:
        return ClusterProbe(name, endpoint, unreachable=str(error))
    except _DiscoveryFailed as error:
        return ClusterProbe(name, endpoint, auth_status=error.status, auth_message=str(error))
    return ClusterProbe(name, endpoint, auth_status=200, answers=tuple(kube.review(a) for a in accesses))


def planned_reads(info: ClusterInfo, kube: _Kube) -> list[Access]:
    """The permissions a scan of this cluster uses, in the order it reads: found by running the reader itself."""
    session = _NotingSession(kube)
    read_snapshot(info, session)
    return list(dict.fromkeys(session.accesses))


class _Unreachable(Exception):
    """No HTTP answer from the endpoint: connection refused or timed out, name not found, certificate not trusted."""


class _DiscoveryFailed(Exception):
    """A discovery document answered with an error status, so what a scan reads here is not known."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _NotingSession:
    """A session for `read_snapshot` that reads discovery from the cluster (it decides which kinds are read) and
    answers every other read as empty, noting the permission it needs. Reads that only some contents call for
    (NodePools, CiliumCIDRGroups) are made too: the empty answers would otherwise hide them."""

    every_read = True

    def __init__(self, kube: _Kube) -> None:
        self.kube = kube
        self.accesses: list[Access] = []
        self.requests = 0

    def list_all(self, path: str, accept: str, convert: Callable[[Mapping[str, Any]], Any] | None = None, *,
                 label_selector: str | None = None) -> list[Any]:
        self._note(path)
        return []

    def list_all_meanwhile(self, path: str, accept: str,
                           convert: Callable[[Mapping[str, Any]], Any]) -> ListInProgress:
        return ListInProgress.done(self.list_all(path, accept, convert))

    def get_object(self, path: str) -> Mapping[str, Any] | None:
        if access_of(path) is not None:
            self._note(path)
            return None
        status, body = self.kube.call("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise _DiscoveryFailed(status, f"GET {path} answered HTTP {status}: {_message(body)}")
        return body

    def _note(self, path: str) -> None:
        access = access_of(path)
        if access is None:
            raise ValueError(f"{path} is discovery, not a read of objects")
        self.accesses.append(access)


class _Kube:
    """Requests to one API server through the reader's client (its TLS trust, token and timeouts)."""

    def __init__(self, api: ApiClient, endpoint: str, limits: ReadLimits) -> None:
        self.api, self.endpoint = api, endpoint
        self.timeout = (limits.connect_timeout, limits.read_timeout)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Accept": JSON, **({"Content-Type": JSON} if body is not None else {})}
        request = self.api.param_serialize(method, path, header_params=headers, body=body,
                                           auth_settings=["BearerToken"])
        try:
            response = self.api.call_api(*request, _request_timeout=self.timeout)
            raw = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as error:
            reason = str(getattr(error, "reason", None) or error).split("): ", 1)[-1][:300]
            raise _Unreachable(f"cannot reach {self.endpoint}: {reason}") from error
        try:
            return response.status, json.loads(raw) if raw else {}
        except ValueError:
            return response.status, {}

    def review(self, access: Access) -> AccessAnswer:
        """Asks the API server whether the caller may do `access` (SelfSubjectAccessReview)."""
        try:
            status, body = self.call("POST", ACCESS_REVIEWS, access.review())
        except _Unreachable as error:
            return AccessAnswer(access, None, error=str(error))
        answer = body.get("status") if isinstance(body, Mapping) else None
        if status not in (200, 201) or not isinstance(answer, Mapping):
            return AccessAnswer(access, None, error=f"HTTP {status}: {_message(body)}")
        return AccessAnswer(access, bool(answer.get("allowed")), reason=str(answer.get("reason") or ""))


def _message(body: Any) -> str:
    return str(body.get("message") or "") if isinstance(body, Mapping) else ""

"""The clients that act in target accounts and Regions, made once per scan context (a warm worker keeps it across
invocations) and shared by its threads (as Prowler's provider owns the sessions and regional clients, so that a
check never builds one).

Clients are made under one lock: boto3 sessions are not thread-safe, and one account's session serves all its
Regions."""
from __future__ import annotations

import functools
import threading

import boto3

from handler.config import Settings
from handler.publish.securityhub import RateLimiter, SecurityHubPublisher, hub_client
from handler.targets import discovery
from handler.targets.auth import TokenSource

_CLIENT_CREATION = threading.Lock()


class RegionTarget:
    """One account and Region, with the clients that act in it. The EKS client is made at once (discovery lists
    clusters with it); the token and Security Hub clients when a cluster is first scanned here, so that a run that
    only fans out does not build them for every account and Region. Shared by the threads of a run: boto3
    sessions are not thread-safe (and one account's session serves all its Regions), so clients are made under
    one lock."""

    def __init__(self, account_id: str, region: str, partition: str, session: boto3.Session,
                 calls_per_second: float) -> None:
        self.account_id, self.region, self.partition = account_id, region, partition
        self._session, self._calls_per_second = session, calls_per_second
        self._tokens: TokenSource | None = None
        self._publisher: SecurityHubPublisher | None = None
        with _CLIENT_CREATION:
            self.eks = session.client("eks", region_name=region, config=discovery.AWS_CALLS)

    @property
    def tokens(self) -> TokenSource:
        with _CLIENT_CREATION:  # checked under the lock: every thread must get the same one
            if self._tokens is None:
                self._tokens = TokenSource(self._session, self.region)
            return self._tokens

    @property
    def publisher(self) -> SecurityHubPublisher:
        with _CLIENT_CREATION:  # one publisher, so one rate limiter, for all the threads publishing here
            if self._publisher is None:
                self._publisher = SecurityHubPublisher(hub_client(self._session, self.region),
                                                       RateLimiter(self._calls_per_second))
            return self._publisher


class Clients:
    """The function's identity, the target accounts' sessions, and a RegionTarget per account and Region."""

    def __init__(self, base: boto3.Session, settings: Settings, calls_per_second: float) -> None:
        self.base, self.settings, self.calls_per_second = base, settings, calls_per_second
        self._targets: dict[tuple[str, str], RegionTarget] = {}

    @functools.cached_property
    def own(self) -> discovery.Identity:
        return discovery.own_identity(self.base, self.settings.default_region)

    @functools.cached_property
    def targeted_accounts(self) -> frozenset[str]:
        """What a queue message may name: listed once per warm worker (an organization's listing is paged)."""
        return frozenset(discovery.targeted_accounts(self.base, self.settings, self.own))

    @functools.cached_property
    def sessions(self) -> discovery.AccountSessions:
        return discovery.AccountSessions(self.base, self.settings, self.own)

    def region_target(self, session: boto3.Session, account_id: str, region: str) -> RegionTarget:
        """The clients that act in one account and Region, made once and shared by its clusters' threads."""
        key = (account_id, region)
        if key not in self._targets:
            self._targets[key] = RegionTarget(account_id, region, self.own.partition, session,
                                              self.calls_per_second)
        return self._targets[key]

    def target_for(self, account_id: str, region: str) -> RegionTarget:
        """A worker's way in: the account's session, then the same clients as in discovery."""
        if (account_id, region) not in self._targets:
            return self.region_target(self.sessions.session(account_id), account_id, region)
        return self._targets[(account_id, region)]

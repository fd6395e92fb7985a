"""One cluster as the test server serves it: its objects, the faults waiting for requests, who may call it (EKS
access entries) and do what (RBAC, EKS access policies, forbid), and the log of every request with the caller's
identity."""
from __future__ import annotations

import re
from typing import Any, Iterable

from netpol_scan.sandbox.kube_api.access_policies import AccessPolicies
from netpol_scan.sandbox.kube_api.faults import Fault, Faults
from netpol_scan.sandbox.kube_api.identity import canonical_arn
from netpol_scan.sandbox.kube_api.rbac import Attributes, Decision, PolicyRule, Rbac
from netpol_scan.sandbox.kube_api.resources import REVIEWS
from netpol_scan.sandbox.kube_api.store import ObjectStore


class Cluster(ObjectStore):
    """In-memory state of one cluster. Mutate it from tests at any time: everything is guarded by `lock`."""

    def __init__(self, name: str, namespaces: dict[str, dict[str, dict[str, Any]]] | None = None,
                 kubernetes_version: str = "1.31"):
        super().__init__()
        self.name = name
        self.kubernetes_version = kubernetes_version
        self.requests: list[dict[str, Any]] = []
        self._faults = Faults()
        self._forbidden: set[str] = set()
        self.rbac = Rbac()
        self._access_entries: set[str] | None = None  # None: every identity the token verifier accepts
        self.access_policies = AccessPolicies()
        for review in REVIEWS:
            self.serve(review)
        for namespace, policies in (namespaces or {}).items():
            self.add_namespace(namespace)
            for policy_name, spec in policies.items():
                self.add_policy(namespace, policy_name, spec)

    # -- faults --------------------------------------------------------------------------------------------------
    def inject(self, path_regex: str, status: int | None, times: int | None = 1,
               headers: dict[str, str] | None = None, delay_seconds: float | None = None,
               body_reason: str | None = None) -> Fault:
        """Answers the next `times` requests whose path matches (re.search) with `status` (None: answer normally)
        after sleeping `delay_seconds`. Checked after authentication, before anything else."""
        return self._faults.inject(path_regex, status, times, headers, delay_seconds, body_reason)

    def clear_faults(self) -> None:
        self._faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        return self._faults.take(path)

    # -- authentication ---------------------------------------------------------------------------------------------
    def add_access_entry(self, principal_arn: str, groups: Iterable[str] = ()) -> None:
        """An EKS access entry: from the first one on, only the principals of access entries authenticate (any
        other valid token gets 401, as on EKS), each in its `groups` (kubernetesGroups), and RBAC is on. An IAM
        role's ARN admits every session of the role."""
        with self.lock:
            self._access_entries = (self._access_entries or set()) | {principal_arn}
        self.rbac.add_groups(principal_arn, *groups)
        self.rbac.apply([])

    def associate_access_policy(self, principal_arn: str, policy: str, namespaces: Iterable[str] = ()) -> None:
        """Associates an EKS access policy (name or ARN, e.g. AmazonEKSViewPolicy) with the principal's access
        entry, for the cluster or only `namespaces`; ValueError when the principal has no access entry."""
        with self.lock:
            if principal_arn not in (self._access_entries or set()):
                raise ValueError(f"no access entry for {principal_arn}: add_access_entry first")
        self.access_policies.associate(principal_arn, policy, tuple(namespaces))

    def authenticated(self, identity: str | None) -> str | None:
        """The identity when the cluster admits it, else None (401)."""
        with self.lock:
            entries = self._access_entries
        if identity is None or entries is None or canonical_arn(identity) in entries or identity in entries:
            return identity
        return None

    # -- RBAC ------------------------------------------------------------------------------------------------------
    def forbid(self, plural: str) -> None:
        """Every verb on this resource (e.g. "networkpolicies") is denied to every caller, whatever `rbac` grants
        (an explicit deny, as from an authorization webhook)."""
        with self.lock:
            self._forbidden.add(plural)

    def allow(self, plural: str) -> None:
        with self.lock:
            self._forbidden.discard(plural)

    def denies_anything(self) -> bool:
        with self.lock:
            return bool(self._forbidden)

    def decide(self, user: str, request: Attributes) -> Decision:
        """The authorizers in order: an explicit deny first, then RBAC, then EKS access policies."""
        with self.lock:
            if request.resource_request and request.resource in self._forbidden:
                return Decision(False, denied=True)
        decision = self.rbac.decide(user, request)
        if decision.allowed:
            return decision
        by_policy = self.access_policies.decide(user, request)
        return by_policy if by_policy.allowed else decision

    def rules_for(self, user: str, namespace: str) -> tuple[list[PolicyRule], str]:
        """The rules RBAC and access policies grant the identity in `namespace`, and RBAC's evaluation error."""
        rules, error = self.rbac.rules_for(user, namespace)
        return rules + self.access_policies.rules_for(user, namespace), error

    # -- the request log -------------------------------------------------------------------------------------------
    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def requests_to(self, path_regex: str) -> list[dict[str, Any]]:
        """The recorded requests whose path matches (re.search), oldest first."""
        with self.lock:
            return [r for r in self.requests if re.search(path_regex, r["path"])]

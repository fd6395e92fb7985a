"""One cluster as the test server serves it: its objects, the faults waiting for requests, RBAC, and the log of
every request with the caller's identity."""
from __future__ import annotations

import re
from typing import Any

from netpol_scan.sandbox.kube_api.faults import Fault, Faults
from netpol_scan.sandbox.kube_api.rbac import Attributes, Decision, Rbac
from netpol_scan.sandbox.kube_api.resources import SELF_SUBJECT_ACCESS_REVIEWS
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
        self._register(SELF_SUBJECT_ACCESS_REVIEWS)
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

    # -- RBAC ------------------------------------------------------------------------------------------------------
    def forbid(self, plural: str) -> None:
        """Every verb on this resource (e.g. "networkpolicies") is denied to every caller, whatever `rbac` grants
        (an explicit deny, as from an authorization webhook)."""
        with self.lock:
            self._forbidden.add(plural)

    def allow(self, plural: str) -> None:
        with self.lock:
            self._forbidden.discard(plural)

    def decide(self, user: str, request: Attributes) -> Decision:
        """The authorizers in kube-apiserver's order: an explicit deny first, then RBAC."""
        with self.lock:
            if request.resource_request and request.resource in self._forbidden:
                return Decision(False, denied=True)
        return self.rbac.decide(user, request)

    # -- the request log -------------------------------------------------------------------------------------------
    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def requests_to(self, path_regex: str) -> list[dict[str, Any]]:
        """The recorded requests whose path matches (re.search), oldest first."""
        with self.lock:
            return [r for r in self.requests if re.search(path_regex, r["path"])]

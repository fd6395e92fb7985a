"""RBAC for the test API server: Roles, ClusterRoles and their bindings, evaluated as kube-apiserver's RBAC
authorizer does for resource requests (the scanner's get and list).

A cluster starts without RBAC: every authenticated identity may read everything. `apply` loads roles and bindings
(as `yaml.safe_load_all` reads infra/kubernetes/rbac.yaml) and switches RBAC on; from then on a request is allowed
only when a binding of one of the caller's groups (`add_groups`: an EKS access entry's kubernetesGroups) grants it.
A ClusterRoleBinding applies everywhere, a RoleBinding in its namespace only; a rule with resourceNames allows only
requests naming one of them (a list never does). RBAC has no deny rules.

The names and signatures (Rbac.apply, add_groups, decide; Attributes; Decision) are the sandbox branch's, whose
fuller authorizer (non-resource URLs, self-subject reviews) replaces this one when both are merged.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Attributes:
    """What a request asks for, as kube-apiserver's RequestInfo gives it to the authorizer."""

    verb: str
    resource_request: bool
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""  # "" is the cluster scope (and every namespace, for a cluster-wide list)
    name: str = ""
    path: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    denied: bool = False


@dataclass(frozen=True)
class _Grant:
    """One rule of a bound role, and where the binding applies (None: everywhere)."""

    rule: Mapping[str, Any]
    namespace: str | None
    groups: frozenset[str]

    def allows(self, request: Attributes) -> bool:
        rule = self.rule
        if self.namespace is not None and request.namespace != self.namespace:
            return False
        if rule.get("resourceNames") and request.name not in rule["resourceNames"]:
            return False
        return all("*" in (rule.get(key) or ()) or value in (rule.get(key) or ())
                   for key, value in (("verbs", request.verb), ("apiGroups", request.group),
                                      ("resources", request.resource)))


class Rbac:
    """Roles, bindings and the groups of each identity; `decide` answers like the RBAC authorizer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roles: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
        self._bindings: list[Mapping[str, Any]] = []
        self._groups: dict[str, set[str]] = {}
        self.enforced = False

    def apply(self, documents: Iterable[Mapping[str, Any] | None]) -> None:
        with self._lock:
            for document in (d for d in documents if d):
                meta = document["metadata"]
                if document["kind"] in ("Role", "ClusterRole"):
                    key = (document["kind"], meta.get("namespace", "") if document["kind"] == "Role" else "",
                           meta["name"])
                    self._roles[key] = list(document.get("rules") or ())
                else:
                    self._bindings.append(document)
            self.enforced = True

    def add_groups(self, user: str, *groups: str) -> None:
        with self._lock:
            self._groups.setdefault(user, set()).update(groups)

    def decide(self, user: str, request: Attributes) -> Decision:
        with self._lock:
            if not self.enforced:
                return Decision(True, "RBAC is off")
            groups = self._groups.get(user, set())
            allowed = any(grant.allows(request) for grant in self._grants() if grant.groups & groups)
        return Decision(allowed, "" if allowed else "no RBAC binding allows it")

    def _grants(self) -> Iterable[_Grant]:
        for binding in self._bindings:
            ref, meta = binding["roleRef"], binding["metadata"]
            namespace = meta.get("namespace", "") if binding["kind"] == "RoleBinding" else None
            groups = frozenset(s["name"] for s in binding.get("subjects") or () if s.get("kind") == "Group")
            role_namespace = namespace if ref["kind"] == "Role" else ""
            for rule in self._roles.get((ref["kind"], role_namespace or "", ref["name"]), ()):
                yield _Grant(rule, namespace, groups)

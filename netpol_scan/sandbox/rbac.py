"""Kubernetes RBAC for the test API server: Roles, ClusterRoles and their bindings to groups, evaluated as
kube-apiserver's RBAC authorizer does for the requests the scanner makes (get and list of resources).

A ClusterRole bound by a ClusterRoleBinding applies everywhere; a Role (or ClusterRole) bound by a RoleBinding
applies in the binding's namespace only. A rule with resourceNames allows only requests naming one of them (a
list never does). Everything not allowed is denied: RBAC has no deny rules.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Grant:
    """One rule, where it applies: namespace None = cluster-wide (and in every namespace)."""

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str]
    namespace: str | None

    def allows(self, verb: str, group: str, resource: str, namespace: str | None, name: str | None) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        if self.resource_names and name not in self.resource_names:
            return False
        return (_matches(self.verbs, verb) and _matches(self.api_groups, group)
                and _matches(self.resources, resource))


def _matches(allowed: frozenset[str], value: str) -> bool:
    return "*" in allowed or value in allowed


class RbacAuthorizer:
    """What callers in `groups` may do under these RBAC objects (dicts, as `yaml.safe_load_all` reads them)."""

    def __init__(self, documents: Iterable[Mapping[str, Any]], groups: Iterable[str]) -> None:
        documents = [d for d in documents if d]
        roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d.get("rules") or []
                 for d in documents if d["kind"] in ("Role", "ClusterRole")}
        wanted = set(groups)
        self.grants: list[Grant] = []
        for binding in (d for d in documents if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
            if not any(s.get("kind") == "Group" and s.get("name") in wanted for s in binding.get("subjects") or ()):
                continue
            ref = binding["roleRef"]
            namespace = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
            role_namespace = namespace if ref["kind"] == "Role" else None
            for rule in roles.get((ref["kind"], role_namespace, ref["name"]), []):
                self.grants.append(Grant(frozenset(rule.get("apiGroups") or ()), frozenset(rule.get("resources") or ()),
                                         frozenset(rule.get("verbs") or ()), frozenset(rule.get("resourceNames") or ()),
                                         namespace))

    def allows(self, verb: str, group: str, resource: str, namespace: str | None, name: str | None) -> bool:
        return any(g.allows(verb, group, resource, namespace, name) for g in self.grants)

"""RBAC as kube-apiserver's RBAC authorizer decides it: ClusterRoles and Roles (apiGroups, resources, verbs,
resourceNames, nonResourceURLs), bound to users and groups by ClusterRoleBindings (everywhere) and RoleBindings
(in their namespace only), with the bootstrap bindings that let every authenticated identity read discovery and
create SelfSubjectAccessReviews.

A cluster starts without RBAC: every authenticated identity may do everything (the cluster creator's admin
access, and what every test written before RBAC expects). The first role or binding applied switches RBAC on;
from then on a request is allowed only when a binding grants it. The identity's groups stand for an EKS access
entry's `kubernetesGroups`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

AUTHENTICATED = "system:authenticated"
ALL = "*"


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
    path: str = ""  # non-resource requests only

    def forbidden_message(self, user: str) -> str:
        """kube-apiserver's `forbiddenMessage`: the text after "... is forbidden: "."""
        if not self.resource_request:
            return f'User "{user}" cannot {self.verb} path "{self.path}"'
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        scope = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        return f'User "{user}" cannot {self.verb} resource "{resource}" in API group "{self.group}" {scope}'


@dataclass(frozen=True)
class PolicyRule:
    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, rule: Mapping[str, Any]) -> PolicyRule:
        return cls(frozenset(rule.get("verbs") or ()), frozenset(rule.get("apiGroups") or ()),
                   frozenset(rule.get("resources") or ()), frozenset(rule.get("resourceNames") or ()),
                   tuple(rule.get("nonResourceURLs") or ()))

    def allows(self, request: Attributes) -> bool:
        if request.verb not in self.verbs and ALL not in self.verbs:
            return False
        if not request.resource_request:
            return any(url == request.path or url == ALL or (url.endswith("*") and request.path.startswith(url[:-1]))
                       for url in self.non_resource_urls)
        return ((request.group in self.api_groups or ALL in self.api_groups) and self._resource_matches(request)
                and (not self.resource_names or request.name in self.resource_names))

    def _resource_matches(self, request: Attributes) -> bool:
        combined = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
        return (ALL in self.resources or combined in self.resources
                or (bool(request.subresource) and f"*/{request.subresource}" in self.resources))


@dataclass(frozen=True)
class Subject:
    kind: str  # User or Group (ServiceAccounts never call this server)
    name: str


@dataclass(frozen=True)
class Binding:
    kind: str  # ClusterRoleBinding or RoleBinding
    name: str
    namespace: str  # "" for a ClusterRoleBinding
    role_kind: str  # ClusterRole or Role
    role_name: str
    subjects: tuple[Subject, ...]

    def describe(self, subject: Subject) -> str:
        """How the RBAC authorizer names the binding that allowed a request (its `reason`)."""
        name = f"{self.name}/{self.namespace}" if self.namespace else self.name
        return f'{self.kind} "{name}" of {self.role_kind} "{self.role_name}" to {subject.kind} "{subject.name}"'


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    denied: bool = False  # an explicit deny (RBAC never gives one; the server's forbid() does)


# kube-apiserver's bootstrap policy, the part every authenticated identity gets (plugin/pkg/auth/authorizer/rbac/
# bootstrappolicy): discovery and version, and creating the reviews that ask what one may do.
BOOTSTRAP_ROLES: dict[str, tuple[PolicyRule, ...]] = {
    "system:discovery": (PolicyRule(frozenset({"get"}), non_resource_urls=(
        "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
        "/version", "/version/")),),
    "system:basic-user": (PolicyRule(frozenset({"create"}), frozenset({"authorization.k8s.io"}),
                                     frozenset({"selfsubjectaccessreviews", "selfsubjectrulesreviews"})),),
}


class RbacError(ValueError):
    """An RBAC document this server cannot load (not a role or binding, or malformed)."""


class Rbac:
    """Roles, bindings and the groups of each identity; `decide` answers like the RBAC authorizer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roles: dict[tuple[str, str, str], tuple[PolicyRule, ...]] = {
            ("ClusterRole", "", name): rules for name, rules in BOOTSTRAP_ROLES.items()}
        self._bindings: list[Binding] = [
            Binding("ClusterRoleBinding", name, "", "ClusterRole", name, (Subject("Group", AUTHENTICATED),))
            for name in BOOTSTRAP_ROLES]
        self._groups: dict[str, set[str]] = {}
        self.enforced = False

    def apply(self, documents: Iterable[Mapping[str, Any] | None]) -> None:
        """Loads ClusterRole, Role, ClusterRoleBinding and RoleBinding documents (as from yaml.safe_load_all;
        None, an empty document, is skipped) and switches RBAC on. Nothing is loaded when one is not valid."""
        parsed = [_parse(document) for document in documents if document]
        with self._lock:
            for item in parsed:
                if isinstance(item, Binding):
                    self._bindings = [b for b in self._bindings if (b.kind, b.namespace, b.name) !=
                                      (item.kind, item.namespace, item.name)] + [item]
                else:
                    key, rules = item
                    self._roles[key] = rules
            self.enforced = True

    def add_groups(self, user: str, *groups: str) -> None:
        """The identity is in these groups (an EKS access entry's kubernetesGroups)."""
        with self._lock:
            self._groups.setdefault(user, set()).update(groups)

    def bind_cluster_role(self, user: str, role: str) -> None:
        """A ClusterRoleBinding of `role` to the identity as a User (switches RBAC on)."""
        self.apply([{"kind": "ClusterRoleBinding", "metadata": {"name": f"{role}:{user}"},
                     "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": [{"kind": "User", "name": user}]}])

    def decide(self, user: str, request: Attributes) -> Decision:
        if not self.enforced:
            return Decision(True)
        with self._lock:
            groups = self._groups.get(user, set()) | {AUTHENTICATED}
            errors: list[str] = []
            for binding in self._bindings:
                if binding.namespace and binding.namespace != request.namespace:
                    continue  # a RoleBinding grants only in its own namespace, never at the cluster scope
                subject = next((s for s in binding.subjects if (s.kind, s.name) in
                                {("User", user), *(("Group", g) for g in groups)}), None)
                if subject is None:
                    continue
                rules = self._roles.get((binding.role_kind, binding.namespace if binding.role_kind == "Role"
                                         else "", binding.role_name))
                if rules is None:
                    errors.append(_missing_role(binding))
                elif any(rule.allows(request) for rule in rules):
                    return Decision(True, f"RBAC: allowed by {binding.describe(subject)}")
        return Decision(False, f"RBAC: [{', '.join(errors)}]" if len(errors) > 1 else
                        f"RBAC: {errors[0]}" if errors else "")


def _missing_role(binding: Binding) -> str:
    where = "clusterrole" if binding.role_kind == "ClusterRole" else "role"
    return f'{where}.rbac.authorization.k8s.io "{binding.role_name}" not found'


def _parse(document: Mapping[str, Any]) -> Binding | tuple[tuple[str, str, str], tuple[PolicyRule, ...]]:
    kind, meta = document.get("kind"), document.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace") or ""
    if kind not in ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding") or not name:
        raise RbacError(f"not an RBAC role or binding with a name: kind {kind!r}, name {name!r}")
    if kind.startswith("Cluster") == bool(namespace):
        raise RbacError(f"{kind} {name!r}: a namespace is required for Role and RoleBinding only")
    try:
        if kind in ("ClusterRole", "Role"):
            return (kind, namespace, name), tuple(PolicyRule.parse(rule) for rule in document.get("rules") or ())
        ref = document["roleRef"]
        subjects = tuple(Subject(s["kind"], s["name"]) for s in document.get("subjects") or ())
    except (KeyError, TypeError, AttributeError) as error:
        raise RbacError(f"{kind} {name!r} is malformed: {error!r}") from None
    if ref.get("kind") not in ("ClusterRole", "Role") or (kind == "ClusterRoleBinding" and ref["kind"] == "Role"):
        raise RbacError(f"{kind} {name!r}: roleRef.kind {ref.get('kind')!r} cannot be bound here")
    return Binding(kind, name, namespace, ref["kind"], ref["name"], subjects)

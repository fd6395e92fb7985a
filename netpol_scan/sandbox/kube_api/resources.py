"""The kinds a cluster serves: group, version, plural, scope, as discovery lists them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceKind:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    builtin: bool = False  # built-in lists omit apiVersion/kind on items; CRD (unstructured) lists keep them
    verbs: tuple[str, ...] = ("get", "list")

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The resource as kube-apiserver names it in messages: `networkpolicies.networking.k8s.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> dict[str, Any]:
        entry = {"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                 "kind": self.kind, "verbs": list(self.verbs)}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry


NAMESPACES = ResourceKind("", "v1", "namespaces", "Namespace", False, ("ns",), builtin=True)
NETWORK_POLICIES = ResourceKind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",),
                                builtin=True)

SELF_SUBJECT_ACCESS_REVIEWS = ResourceKind("authorization.k8s.io", "v1", "selfsubjectaccessreviews",
                                           "SelfSubjectAccessReview", False, builtin=True, verbs=("create",))

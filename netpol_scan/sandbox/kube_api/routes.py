"""HTTP routes of kube-apiserver that a scanner uses: discovery (/version, /api, /apis, resource lists), lists of
every kind in pages, single objects, RBAC refusals and SelfSubjectAccessReviews, in each view the Accept header
asks for."""
from __future__ import annotations

import json
import time
from typing import Any

from netpol_scan.sandbox.kube_api.cluster import Cluster
from netpol_scan.sandbox.kube_api.errors import ApiError
from netpol_scan.sandbox.kube_api.rbac import Attributes, Decision
from netpol_scan.sandbox.kube_api.request_info import attributes_of
from netpol_scan.sandbox.kube_api.resources import SELF_SUBJECT_ACCESS_REVIEWS, ResourceKind
from netpol_scan.sandbox.kube_api.views import as_item, metadata_only, negotiate, table

ACCESS_REVIEWS_PATH = f"/apis/{SELF_SUBJECT_ACCESS_REVIEWS.group_version}/{SELF_SUBJECT_ACCESS_REVIEWS.plural}"


def answer(cluster: Cluster, method: str, path: str, query: dict[str, str], identity: str | None,
           accept: str | None, body: bytes = b"") -> tuple[int, Any]:
    """The status and body of one request (ApiError for an error answer), in kube-apiserver's order:
    authentication, (injected faults), authorization, then the route."""
    if identity is None:
        raise ApiError(401)
    fault = cluster.take_fault(path)
    if fault and fault.delay_seconds:
        time.sleep(fault.delay_seconds)
    if fault and fault.status is not None:
        raise fault.error()
    request = attributes_of(method, path, query)
    decision = cluster.decide(identity, request)
    if not decision.allowed:
        raise forbidden(identity, request, decision)
    if method == "POST" and path.rstrip("/") == ACCESS_REVIEWS_PATH:
        return 201, access_review(cluster, identity, body)
    if method != "GET":
        raise ApiError(405)  # the scanner only reads; this server has no write verbs
    return 200, Router(cluster, identity, query, accept).get(path)


def forbidden(user: str, request: Attributes, decision: Decision) -> ApiError:
    """kube-apiserver's 403: `<resource>[ "<name>"] is forbidden: User ... cannot ...[: <authorizer reason>]`."""
    message = request.forbidden_message(user) + (f": {decision.reason}" if decision.reason else "")
    if not request.resource_request:
        return ApiError(403, f"forbidden: {message}", details={})
    qualified = f"{request.resource}.{request.group}" if request.group else request.resource
    subject = f'{qualified} "{request.name}"' if request.name else qualified
    details = {"kind": request.resource, **({"group": request.group} if request.group else {}),
               **({"name": request.name} if request.name else {})}
    return ApiError(403, f"{subject} is forbidden: {message}", details=details)


def access_review(cluster: Cluster, user: str, body: bytes) -> dict[str, Any]:
    """A SelfSubjectAccessReview answered for the caller: may I do what spec.resourceAttributes (or
    nonResourceAttributes) says? Every authenticated identity may ask (the bootstrap role system:basic-user)."""
    try:
        review = json.loads(body or b"null")
        spec = review["spec"]
        resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ApiError(400, "the body is not a SelfSubjectAccessReview with a spec") from None
    if (resource is None) == (non_resource is None):
        field = "nonResourceAttributes" if resource else "resourceAttributes"
        detail = ("Invalid value: cannot be specified in combination with resourceAttributes" if resource
                  else "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified")
        raise ApiError(422, f'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.{field}: {detail}',
                       details={"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview"})
    if resource is not None:
        request = Attributes(resource.get("verb", ""), True, resource.get("group", ""), resource.get("resource", ""),
                             resource.get("subresource", ""), resource.get("namespace", ""), resource.get("name", ""))
    else:
        request = Attributes(non_resource.get("verb", ""), False, path=non_resource.get("path", ""))
    decision = cluster.decide(user, request)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.denied:
        status["denied"] = True
    if decision.reason:
        status["reason"] = decision.reason
    return {"kind": "SelfSubjectAccessReview", "apiVersion": SELF_SUBJECT_ACCESS_REVIEWS.group_version,
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


class Router:
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
        if ("list" if name is None else "get") not in kind.verbs:
            raise ApiError(405)
        return self._list(kind, namespace) if name is None else self._get(kind, namespace, name)

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
            return table(kind, page.items, page.metadata, self.query.get("includeObject", "Metadata"))
        if view == "PartialObjectMetadataList":
            return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": page.metadata,
                    "items": [metadata_only(obj) for obj in page.items]}
        return {"kind": f"{kind.kind}List", "apiVersion": kind.group_version, "metadata": page.metadata,
                "items": [as_item(kind, obj) for obj in page.items]}

    def _get(self, kind: ResourceKind, namespace: str | None, name: str) -> dict[str, Any]:
        view = negotiate(self.accept, single=True)
        obj = self.cluster.get_object(kind, name, namespace)
        if obj is None:
            details = {"name": name, **({"group": kind.group} if kind.group else {}), "kind": kind.plural}
            raise ApiError(404, f'{kind.qualified} "{name}" not found', details=details)
        if view == "Table":
            return table(kind, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                          self.query.get("includeObject", "Metadata"))
        return metadata_only(obj) if view == "PartialObjectMetadata" else obj


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


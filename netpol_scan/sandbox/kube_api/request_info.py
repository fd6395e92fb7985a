"""What a request asks for, read from its method, path and query the way kube-apiserver's RequestInfoFactory does,
so that authorization happens before routing (a forbidden request for a kind that does not exist is 403, not 404).
"""
from __future__ import annotations

from netpol_scan.sandbox.kube_api.rbac import Attributes

VERB_OF_METHOD = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def attributes_of(method: str, path: str, query: dict[str, str]) -> Attributes:
    parts = [part for part in path.split("/") if part]
    grouped = len(parts) >= 1 and parts[0] == "apis"
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (grouped and len(parts) < 4):
        return Attributes(method.lower(), False, path=path)
    group, rest = (parts[1], parts[3:]) if grouped else ("", parts[2:])
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]  # /namespaces/<ns>/<resource>/...: the resource of its own right
    resource, name, subresource = (rest + ["", ""])[:3]
    verb = VERB_OF_METHOD.get(method, method.lower())
    if not name and verb == "get":
        verb = "watch" if query.get("watch") in ("1", "true") else "list"
    elif not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb, True, group, resource, subresource, namespace, name)

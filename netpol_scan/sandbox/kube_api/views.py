"""Views of objects the Accept header can ask for: full objects, metadata only, and kubectl's Table."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from netpol_scan.sandbox.kube_api.errors import ApiError
from netpol_scan.sandbox.kube_api.resources import NAMESPACES, NETWORK_POLICIES, ResourceKind

def as_item(kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any]:
    if kind.builtin:
        return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return obj


def metadata_only(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def _age(timestamp: str) -> str:
    created = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    seconds = int((dt.datetime.now(dt.timezone.utc) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _pod_selector(spec: dict[str, Any]) -> str:
    selector = spec.get("podSelector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        values = ",".join(expression.get("values") or [])
        parts.append(f"{expression['key']} {expression['operator'].lower()} ({values})")
    return ",".join(parts) or "<none>"


def table(kind: ResourceKind, objects: list[dict[str, Any]], metadata: dict[str, Any],
           include_object: str) -> dict[str, Any]:
    columns = [("Name", "string", "name")]
    extra: Callable[[dict[str, Any]], list[str]] = lambda obj: []
    if kind == NAMESPACES:
        columns.append(("Status", "string", ""))
        extra = lambda obj: [obj.get("status", {}).get("phase", "")]
    elif kind == NETWORK_POLICIES:
        columns.append(("Pod-Selector", "string", ""))
        extra = lambda obj: [_pod_selector(obj.get("spec", {}))]
    columns.append(("Age", "string", ""))
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [obj["metadata"]["name"], *extra(obj),
                                         _age(obj["metadata"]["creationTimestamp"])]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = metadata_only(obj)
        rows.append(row)
    definitions = [{"name": n, "type": t, "format": f, "description": n, "priority": 0} for n, t, f in columns]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": definitions, "rows": rows}


def negotiate(accept: str | None, single: bool) -> str:
    """The view the Accept header asks for: "json", "Table", "PartialObjectMetadata" or "...List"; else 406."""
    metadata_view = "PartialObjectMetadata" if single else "PartialObjectMetadataList"
    for media in (accept or "*/*").split(","):
        media_type, *raw_params = [p.strip() for p in media.split(";")]
        params = dict(p.split("=", 1) for p in raw_params if "=" in p)
        if media_type not in ("application/json", "application/*", "*/*"):
            continue
        view = params.get("as")
        if view is None:
            return "json"
        if params.get("g") == "meta.k8s.io" and params.get("v") == "v1" and view in ("Table", metadata_view):
            return view
    raise ApiError(406)


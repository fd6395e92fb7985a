"""The object store of one cluster: kinds, objects in etcd key order, revisions, and paged lists with continue
tokens that expire like after an etcd compaction (410)."""
from __future__ import annotations

import base64
import binascii
import bisect
import copy
import datetime as dt
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from netpol_scan.sandbox.kube_api.errors import ApiError
from netpol_scan.sandbox.kube_api.resources import NAMESPACES, NETWORK_POLICIES, ResourceKind
from netpol_scan.sandbox.kube_api.selectors import field_matcher, label_matcher


class _Store:
    """Objects of one kind, with their keys kept sorted like etcd keys ("<namespace>/<name>" or "<name>")."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.keys: list[str] = []

    def put(self, key: str, obj: dict[str, Any]) -> None:
        if key not in self.objects:
            bisect.insort(self.keys, key)
        self.objects[key] = obj

    def pop(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            del self.keys[bisect.bisect_left(self.keys, key)]

    def span(self, namespace: str | None) -> tuple[int, int]:
        """Index range of the keys in `namespace` ("/" + 1 is "0", so `ns0` bounds the `ns/` prefix)."""
        if namespace is None:
            return 0, len(self.keys)
        return bisect.bisect_left(self.keys, namespace + "/"), bisect.bisect_left(self.keys, namespace + "0")


def _key(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name



def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    metadata: dict[str, Any]


class ObjectStore:
    """Objects of every kind a cluster serves. Mutate it from tests at any time: everything is guarded by `lock`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.continue_token_lifetime_pages: int | None = None  # continue tokens of later pages answer 410
        self._kinds: dict[tuple[str, str], ResourceKind] = {}
        self._stores: dict[tuple[str, str], _Store] = {}
        self._revision = 1000
        self._compacted = 0  # continue tokens older than this revision are gone, as after etcd compaction
        for kind in (NAMESPACES, NETWORK_POLICIES):
            self._register(kind)

    # -- kinds and objects -------------------------------------------------------------------------------------
    def add_resource_kind(self, group: str, version: str, plural: str, kind: str, namespaced: bool,
                          short_names: Iterable[str] = ()) -> ResourceKind:
        """Serves a custom kind (as a CRD would), e.g. cilium.io/v2 ciliumnetworkpolicies; discovery lists it."""
        resource = ResourceKind(group, version, plural, kind, namespaced, tuple(short_names))
        with self.lock:
            self._register(resource)
        return resource

    def _register(self, kind: ResourceKind) -> None:
        self._kinds[(kind.group, kind.plural)] = kind
        self._stores.setdefault((kind.group, kind.plural), _Store())

    def kinds(self) -> list[ResourceKind]:
        with self.lock:
            return list(self._kinds.values())

    def kind_of(self, group_version: str, plural: str) -> ResourceKind | None:
        group, _, version = group_version.rpartition("/")
        with self.lock:
            kind = self._kinds.get((group, plural))
        return kind if kind and kind.version == version else None

    def add_object(self, group_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Adds or replaces an object (a copy is stored); fills apiVersion, kind, uid, resourceVersion."""
        kind = self.kind_of(group_version, plural)
        if kind is None:
            raise KeyError(f"no resource kind {plural} in {group_version}: add_resource_kind first")
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace") if kind.namespaced else None
        if kind.namespaced != bool(namespace):
            raise ValueError(f"{kind.kind} {meta.get('name')!r}: namespace is required iff the kind is namespaced")
        with self.lock:
            store = self._stores[(kind.group, kind.plural)]
            previous = store.objects.get(_key(namespace, meta["name"]), {}).get("metadata", {})
            meta.setdefault("uid", previous.get("uid", str(uuid.uuid4())))
            meta.setdefault("creationTimestamp", previous.get("creationTimestamp", _now()))
            meta["resourceVersion"] = self._bump()
            obj.update({"apiVersion": kind.group_version, "kind": kind.kind})
            store.put(_key(namespace, meta["name"]), obj)
        return obj

    def delete_object(self, group_version: str, plural: str, name: str, namespace: str | None = None) -> None:
        kind = self.kind_of(group_version, plural)
        if kind is None:
            raise KeyError(f"no resource kind {plural} in {group_version}")
        with self.lock:
            self._stores[(kind.group, kind.plural)].pop(_key(namespace, name))
            self._bump()

    def get_object(self, kind: ResourceKind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self.lock:
            return self._stores[(kind.group, kind.plural)].objects.get(_key(namespace, name))

    def add_namespace(self, name: str, labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None, terminating: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}
        if annotations:
            meta["annotations"] = dict(annotations)
        if terminating:
            meta["deletionTimestamp"] = _now()
        status = {"phase": "Terminating" if terminating else "Active"}
        return self.add_object("v1", "namespaces", {"metadata": meta, "spec": {"finalizers": ["kubernetes"]},
                                                    "status": status})

    def delete_namespace(self, name: str) -> None:
        """Deletes the namespace and every namespaced object in it, of every kind."""
        with self.lock:
            self._stores[("", "namespaces")].pop(name)
            for (group, plural), store in self._stores.items():
                if self._kinds[(group, plural)].namespaced:
                    start, end = store.span(name)
                    for key in store.keys[start:end]:
                        store.pop(key)
            self._bump()

    def add_policy(self, namespace: str, name: str, spec: dict[str, Any],
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
        meta = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
        return self.add_object("networking.k8s.io/v1", "networkpolicies", {"metadata": meta, "spec": spec})

    def delete_policy(self, namespace: str, name: str) -> None:
        self.delete_object("networking.k8s.io/v1", "networkpolicies", name, namespace)

    @property
    def resource_version(self) -> str:
        with self.lock:
            return str(self._revision)

    def _bump(self) -> str:
        self._revision += 1
        return str(self._revision)

    def expire_continue_tokens(self) -> None:
        """Every continue token issued so far answers 410 Expired, as after an etcd compaction."""
        with self.lock:
            self._compacted = int(self._bump())

    # -- reading -----------------------------------------------------------------------------------------------
    def list_page(self, kind: ResourceKind, namespace: str | None, limit: int, continue_token: str | None,
                  label_selector: str | None, field_selector: str | None) -> Page:
        """One page of a list, in etcd key order, continuing after the last key the token names."""
        labels = label_matcher(label_selector) if label_selector else None
        fields = field_matcher(field_selector, kind) if field_selector else None
        with self.lock:
            store = self._stores[(kind.group, kind.plural)]
            start, end = store.span(namespace)
            revision, page_number = self._revision, 0
            if continue_token:
                revision, after, page_number = self._decode_continue(continue_token)
                start = max(start, bisect.bisect_left(store.keys, after))
            items, position = [], start
            while position < end and not (0 < limit <= len(items)):
                obj = store.objects[store.keys[position]]
                position += 1
                if (labels is None or labels(obj["metadata"].get("labels", {}))) and (fields is None or fields(obj)):
                    items.append(obj)
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if position < end:
            metadata["continue"] = _encode_continue(revision, store.keys[position - 1] + "\x00", page_number + 1)
            if labels is None and fields is None:  # kube-apiserver cannot count what a selector would keep
                metadata["remainingItemCount"] = end - position
        return Page(items, metadata)

    def _decode_continue(self, token: str) -> tuple[int, str, int]:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            revision, after, page = int(decoded["rv"]), str(decoded["start"]), int(decoded.get("p", 0))
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            raise ApiError(400, f"invalid continue token: {error}") from None
        lifetime = self.continue_token_lifetime_pages
        if revision < self._compacted or (lifetime is not None and page >= lifetime):
            raise ApiError(410, details={})
        return revision, after, page


def _encode_continue(revision: int, start: str, page: int) -> str:
    # kube-apiserver's format (base64url JSON of version, revision and the next key) plus a page counter.
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start, "p": page}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


"""What was published before, per cluster, and what this run must publish: the finding lifecycle, pure.

Security Hub's GetFindings is eventually consistent, so the scanner remembers what it published in its own
state (one object per cluster in S3) and decides from that alone:
- a namespace scanned now: its finding, ACTIVE, keeping the first-seen CreatedAt;
- a finding published before whose namespace is gone: the same finding, ARCHIVED;
- a cluster that could not be read: its findings untouched, and one NOT_AVAILABLE finding saying why;
- a cluster that no longer exists: every active finding ARCHIVED, and its state forgotten once Security Hub
  accepted every archive (so that later runs no longer look for it).
Archived records are kept for Security Hub's 30-day retention of archived findings, so a namespace that comes
back within that time revives its finding with its first-seen time.

Every import is a billed ingestion event, so a finding is imported only when it changed (its digest: status,
text, evidence, resources) or when it was last imported `refresh` ago (default 7 days, well inside the 90 days
after which Security Hub deletes an active finding that was not updated). `UpdatedAt` is the time of the last
import. The S3 findings file of every run still holds every current finding: the full picture, for Athena.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring_ascii
from typing import Any

from handler.controls import scan_status
from handler.models import ClusterRef, ControlResult, RecordState
from handler.publish import compact_json, compact_text

STATE_VERSION = 1
ARCHIVED_RETENTION = dt.timedelta(days=30)
DEFAULT_REFRESH = dt.timedelta(days=7)


def finding_id(cluster: ClusterRef, control_id: str, namespace: str | None) -> str:
    """A finding's Id: the cluster ARN, the namespace and the control; never a time or a content hash."""
    if namespace is None:
        return f"{cluster.arn}/{control_id}"
    return f"{cluster.arn}/namespace/{namespace}/{control_id}"


@dataclass(frozen=True, slots=True)  # a cluster has them by the ten thousand
class PublishedFinding:
    result: ControlResult
    created_at: str
    updated_at: str  # the last time it was imported
    record_state: RecordState
    digest: str = ""  # of what the finding says; "" (states written before digests) forces one re-import


@dataclass(frozen=True)
class ClusterState:
    cluster: ClusterRef
    cluster_resource: Mapping[str, Any] | None = None
    findings: Mapping[str, PublishedFinding] = field(default_factory=dict)

    @property
    def active_ids(self) -> set[str]:
        return {fid for fid, f in self.findings.items() if f.record_state is RecordState.ACTIVE}

    def to_dict(self) -> dict[str, Any]:
        return {**self._outline(), "findings": {fid: _finding_dict(f) for fid, f in sorted(self.findings.items())}}

    def encoded(self) -> Iterator[bytes]:
        """compact_json(self.to_dict()) in pieces, a finding at a time: the texts of the findings, made when read
        (models.Wording), never all exist at once (for 10,000 namespaces, to_dict made 25 MB of JSON and a heap
        peak of 76 MB)."""
        before, after = compact_text({**self._outline(), "findings": _MARKER}).split(encode_basestring_ascii(_MARKER))
        yield f"{before}{{".encode()
        string, separator = encode_basestring_ascii, ""
        for fid, f in sorted(self.findings.items()):  # each as compact_text(_finding_dict(f)), in key order
            yield (f'{separator}{string(fid)}:{{"created_at":{string(f.created_at)},"digest":{string(f.digest)},'
                   f'"record_state":{string(f.record_state.value)},"result":{_encoded_result(f.result)},'
                   f'"updated_at":{string(f.updated_at)}}}').encode()
            separator = ","
        yield f"}}{after}".encode()

    def _outline(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "version": STATE_VERSION,
            "cluster": {"account_id": c.account_id, "region": c.region, "name": c.name, "partition": c.partition},
            "cluster_resource": self.cluster_resource,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterState:
        shared: dict[Any, Any] = {}
        return cls._of(data, {fid: _published(f, shared) for fid, f in data.get("findings", {}).items()})

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        """ClusterState.from_dict(json.loads(text)), each finding made a PublishedFinding as it is parsed, and what
        the findings repeat held once (ControlResult.from_dict): json.loads of the state of 10,000 namespaces made
        73.5 MB of heap at its peak and the state held 38.6 MB through the scan that read it."""
        shared: dict[Any, Any] = {}

        def member(key: str, at: int) -> tuple[Any, int]:
            if key != "findings":
                return _DECODER.raw_decode(text, at)
            return _json_object(text, at, lambda _, at_finding: _published_at(text, at_finding, shared))

        data, end = _json_object(text, 0, member)
        if _skip_space(text, end) != len(text):
            raise ValueError(f"state JSON: extra data at {end}")
        return cls._of(data, data.get("findings", {}))

    @classmethod
    def _of(cls, data: Mapping[str, Any], findings: Mapping[str, PublishedFinding]) -> ClusterState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {data.get('version')!r}")
        return cls(cluster=ClusterRef(**data["cluster"]), cluster_resource=data.get("cluster_resource"),
                   findings=findings)


def _published(entry: Mapping[str, Any], shared: dict[Any, Any]) -> PublishedFinding:
    created_at, updated_at = entry["created_at"], entry["updated_at"]
    return PublishedFinding(ControlResult.from_dict(entry["result"], shared), shared.setdefault(created_at, created_at),
                            shared.setdefault(updated_at, updated_at), RecordState(entry["record_state"]),
                            entry.get("digest", ""))


def _published_at(text: str, at: int, shared: dict[Any, Any]) -> tuple[PublishedFinding, int]:
    entry, end = _DECODER.raw_decode(text, at)
    return _published(entry, shared), end


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, at: int) -> int:
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # it matches the empty string too


def _json_object(text: str, at: int, member: Callable[[str, int], tuple[Any, int]]) -> tuple[dict[str, Any], int]:
    """The JSON object at text[at:] (after white space) and where it ends, each member's value parsed by
    member(key, where the value starts); ValueError when it is not one."""
    at = _skip_space(text, at)
    if not text.startswith("{", at):
        raise ValueError(f"state JSON: an object expected at {at}")
    found: dict[str, Any] = {}
    at = _skip_space(text, at + 1)
    if text.startswith("}", at):
        return found, at + 1
    while True:
        key, at = _DECODER.raw_decode(text, at)
        at = _skip_space(text, at)
        if not isinstance(key, str) or not text.startswith(":", at):
            raise ValueError(f"state JSON: a member expected at {at}")
        found[key], at = member(key, _skip_space(text, at + 1))
        at = _skip_space(text, at)
        if text.startswith("}", at):
            return found, at + 1
        if not text.startswith(",", at):
            raise ValueError(f"state JSON: ',' or '}}' expected at {at}")
        at = _skip_space(text, at + 1)


def _finding_dict(finding: PublishedFinding) -> dict[str, Any]:
    return {"result": finding.result.to_dict(), "created_at": finding.created_at, "updated_at": finding.updated_at,
            "record_state": finding.record_state.value, "digest": finding.digest}


_MARKER = "\x00netpol-scanner-findings\x00"  # where the findings go in the encoded outline


@dataclass(frozen=True)
class Plan:
    """What this run reports (every current finding, and those it archives), what of that it imports into
    Security Hub (what changed or is due for refresh), and the state to keep once all imports are accepted. The
    ASFF findings are built from it when it is published (asff.plan_findings)."""

    report_ids: tuple[str, ...]
    send_ids: frozenset[str]
    next_state: ClusterState
    archived: int = 0
    forget: bool = False  # the cluster is gone: no state is kept once every archive is accepted

    def settle(self, previous: ClusterState | None, rejected_ids: Iterable[str]) -> ClusterState | None:
        """The state to keep when Security Hub rejected some findings for good: for those, what was there
        before stays, so the next run tries the same change again (an archive is never forgotten). None: keep
        no state (a deleted cluster whose archives were all accepted)."""
        rejected = set(rejected_ids)
        if not rejected:
            return None if self.forget else self.next_state
        before = previous.findings if previous else {}
        findings = dict(self.next_state.findings)
        for fid in rejected:
            if fid in before:
                findings[fid] = before[fid]
            else:
                findings.pop(fid, None)
        return replace(self.next_state, findings=findings)


def plan_scanned(previous: ClusterState | None, cluster: ClusterRef, resource: Mapping[str, Any],
                 results: Iterable[ControlResult], now: str, refresh: dt.timedelta = DEFAULT_REFRESH) -> Plan:
    """A complete read: every result reported ACTIVE; what was active and is no longer seen, ARCHIVED."""
    before = previous.findings if previous else {}
    findings: dict[str, PublishedFinding] = {}
    send: set[str] = set()
    encoded_resource = compact_json(resource)
    for result in results:
        fid = finding_id(cluster, result.control_id, result.namespace)
        findings[fid] = _current(before.get(fid), result, encoded_resource, now, refresh)
        if findings[fid].updated_at == now:
            send.add(fid)
    report = list(findings)
    archived = 0
    for fid, old in before.items():
        if fid in findings:
            continue
        if old.record_state is RecordState.ACTIVE:
            findings[fid] = replace(old, updated_at=now, record_state=RecordState.ARCHIVED)
            report.append(fid)
            send.add(fid)
            archived += 1
        elif _age(old.updated_at, now) < ARCHIVED_RETENTION:
            findings[fid] = old
    return Plan(tuple(report), frozenset(send), ClusterState(cluster, resource, findings), archived)


def plan_unreadable(previous: ClusterState | None, cluster: ClusterRef, resource: Mapping[str, Any] | None,
                    reason: str, now: str, refresh: dt.timedelta = DEFAULT_REFRESH) -> Plan:
    """A failed read changes nothing it published before; it only raises (or refreshes) the scan status."""
    before = dict(previous.findings) if previous else {}
    result = scan_status.not_available(cluster, reason)
    fid = finding_id(cluster, result.control_id, None)
    resource = resource or (previous.cluster_resource if previous else None)
    before[fid] = _current(before.get(fid), result, compact_json(resource), now, refresh)
    send = frozenset({fid}) if before[fid].updated_at == now else frozenset()
    return Plan((fid,), send, ClusterState(cluster, resource, before))


def _current(old: PublishedFinding | None, result: ControlResult, encoded_resource: bytes, now: str,
             refresh: dt.timedelta) -> PublishedFinding:
    """The record of an active finding: the old one while nothing changed and no refresh is due, else a new
    import (now) that keeps the first-seen time of an active or recently archived finding."""
    digest = _digest(result, encoded_resource)
    if (old is not None and old.record_state is RecordState.ACTIVE and old.digest == digest
            and _age(old.updated_at, now) < refresh):
        return old
    first_seen = old.created_at if old is not None else now
    return PublishedFinding(result, first_seen, now, RecordState.ACTIVE, digest)


def _digest(result: ControlResult, encoded_resource: bytes) -> str:
    """Of the JSON list [result, cluster resource]; the resource, the same for all of a cluster's findings, is
    encoded once per plan, not once per finding."""
    material = b"[" + _encoded_result(result).encode() + b"," + encoded_resource + b"]"
    return hashlib.sha256(material).hexdigest()[:32]


def _encoded_result(result: ControlResult) -> str:
    """compact_text(result.to_dict()), put together in key order without the dict: a digest is made of every
    result of every scan, and its texts, made when read (models.Wording), are encoded once here."""
    string = encode_basestring_ascii  # what compact_text makes of a str, called directly
    return "".join((
        '{"control_id":', string(result.control_id), ',"description":', string(result.description),
        ',"evidence":', compact_text(list(result.evidence)) if result.evidence else "[]",
        f',"fields":{compact_text(dict(result.fields))}' if result.fields else "",
        ',"namespace":', "null" if result.namespace is None else string(result.namespace),
        ',"status":', string(result.status.value), ',"title":', string(result.title), "}"))


def plan_deleted(previous: ClusterState | None, cluster: ClusterRef, now: str) -> Plan:
    """The cluster is gone from its account and Region: archive everything still active, then forget it."""
    previous = previous or ClusterState(cluster)
    to_archive = tuple(sorted(previous.active_ids))
    findings = dict(previous.findings)
    for fid in to_archive:
        findings[fid] = replace(findings[fid], updated_at=now, record_state=RecordState.ARCHIVED)
    return Plan(to_archive, frozenset(to_archive), replace(previous, findings=findings), len(to_archive),
                forget=True)


def _age(then: str, now: str) -> dt.timedelta:
    return _parse(now) - _parse(then)


def _parse(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))

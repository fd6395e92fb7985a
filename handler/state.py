"""What was published before, per cluster, and what this run must publish: the finding lifecycle, pure.

Security Hub's GetFindings is eventually consistent, so the scanner remembers what it published in its own
state (one object per cluster in S3) and decides from that alone:
- a namespace scanned now: its finding, ACTIVE, keeping the first-seen CreatedAt;
- a finding published before whose namespace is gone: the same finding, ARCHIVED;
- a cluster that could not be read: its findings untouched, and one NOT_AVAILABLE finding saying why;
- a cluster that no longer exists: every active finding ARCHIVED.
Archived records are kept for Security Hub's 30-day retention of archived findings, so a namespace that comes
back within that time revives its finding with its first-seen time.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from handler.asff import build_finding, finding_id
from handler.controls import CONTROLS_BY_ID, scan_status
from handler.models import ClusterRef, ControlResult, RecordState

STATE_VERSION = 1
ARCHIVED_RETENTION = dt.timedelta(days=30)


@dataclass(frozen=True)
class PublishedFinding:
    result: ControlResult
    created_at: str
    updated_at: str
    record_state: RecordState


@dataclass(frozen=True)
class ClusterState:
    cluster: ClusterRef
    cluster_resource: Mapping[str, Any] | None = None
    findings: Mapping[str, PublishedFinding] = field(default_factory=dict)

    @property
    def active_ids(self) -> set[str]:
        return {fid for fid, f in self.findings.items() if f.record_state is RecordState.ACTIVE}

    def to_dict(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "version": STATE_VERSION,
            "cluster": {"account_id": c.account_id, "region": c.region, "name": c.name, "partition": c.partition},
            "cluster_resource": self.cluster_resource,
            "findings": {fid: {"result": f.result.to_dict(), "created_at": f.created_at,
                               "updated_at": f.updated_at, "record_state": f.record_state.value}
                         for fid, f in sorted(self.findings.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {data.get('version')!r}")
        return cls(
            cluster=ClusterRef(**data["cluster"]),
            cluster_resource=data.get("cluster_resource"),
            findings={fid: PublishedFinding(ControlResult.from_dict(f["result"]), f["created_at"],
                                            f["updated_at"], RecordState(f["record_state"]))
                      for fid, f in data.get("findings", {}).items()},
        )


@dataclass(frozen=True)
class Plan:
    """The findings to import now, and the state to keep once they are all accepted."""

    send_ids: tuple[str, ...]
    next_state: ClusterState
    archived: int = 0

    def findings(self) -> Iterator[dict[str, Any]]:
        """The ASFF findings to import, built one at a time: a cluster's 10,000 findings never sit in memory
        together, only the batch being sent."""
        for fid in self.send_ids:
            published = self.next_state.findings[fid]
            control = CONTROLS_BY_ID[published.result.control_id]
            yield build_finding(published.result, control, self.next_state.cluster,
                                self.next_state.cluster_resource, created_at=published.created_at,
                                updated_at=published.updated_at, record_state=published.record_state)

    def settle(self, previous: ClusterState | None, rejected_ids: Iterable[str]) -> ClusterState:
        """The state to keep when Security Hub rejected some findings for good: for those, what was there
        before stays, so the next run tries the same change again (an archive is never forgotten)."""
        rejected = set(rejected_ids)
        if not rejected:
            return self.next_state
        before = previous.findings if previous else {}
        findings = dict(self.next_state.findings)
        for fid in rejected:
            if fid in before:
                findings[fid] = before[fid]
            else:
                findings.pop(fid, None)
        return replace(self.next_state, findings=findings)


def plan_scanned(previous: ClusterState | None, cluster: ClusterRef, resource: Mapping[str, Any],
                 results: Iterable[ControlResult], now: str) -> Plan:
    """A complete read: every result published ACTIVE; what was active and is no longer seen, ARCHIVED."""
    before = previous.findings if previous else {}
    findings: dict[str, PublishedFinding] = {}
    for result in results:
        fid = finding_id(cluster, result.control_id, result.namespace)
        first_seen = before[fid].created_at if fid in before else now
        findings[fid] = PublishedFinding(result, first_seen, now, RecordState.ACTIVE)
    to_send = list(findings)
    archived = 0
    for fid, old in before.items():
        if fid in findings:
            continue
        if old.record_state is RecordState.ACTIVE:
            findings[fid] = replace(old, updated_at=now, record_state=RecordState.ARCHIVED)
            to_send.append(fid)
            archived += 1
        elif _age(old.updated_at, now) < ARCHIVED_RETENTION:
            findings[fid] = old
    state = ClusterState(cluster, resource, findings)
    return Plan(tuple(to_send), state, archived)


def plan_unreadable(previous: ClusterState | None, cluster: ClusterRef, resource: Mapping[str, Any] | None,
                    reason: str, now: str) -> Plan:
    """A failed read changes nothing it published before; it only raises (or refreshes) the scan status."""
    before = dict(previous.findings) if previous else {}
    result = scan_status.not_available(cluster, reason)
    fid = finding_id(cluster, result.control_id, None)
    old = before.get(fid)
    first_seen = old.created_at if old and old.record_state is RecordState.ACTIVE else now
    before[fid] = PublishedFinding(result, first_seen, now, RecordState.ACTIVE)
    state = ClusterState(cluster, resource or (previous.cluster_resource if previous else None), before)
    return Plan((fid,), state)


def plan_deleted(previous: ClusterState, now: str) -> Plan:
    """The cluster is gone from its account and Region: archive everything still active."""
    to_archive = sorted(previous.active_ids)
    findings = dict(previous.findings)
    for fid in to_archive:
        findings[fid] = replace(findings[fid], updated_at=now, record_state=RecordState.ARCHIVED)
    state = replace(previous, findings=findings)
    return Plan(tuple(to_archive), state, len(to_archive))


def _age(then: str, now: str) -> dt.timedelta:
    return _parse(now) - _parse(then)


def _parse(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))

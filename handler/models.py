"""Plain, frozen data that flows through the pipeline: targets, cluster snapshots, control results."""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ComplianceStatus(enum.StrEnum):
    """ASFF Compliance.Status values the scanner emits."""

    PASSED = "PASSED"
    FAILED = "FAILED"
    WARNING = "WARNING"
    NOT_AVAILABLE = "NOT_AVAILABLE"


class RecordState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"


@dataclass(frozen=True, order=True)
class ClusterRef:
    """Names one EKS cluster: the account and Region that own it, and its name."""

    account_id: str
    region: str
    name: str
    partition: str = "aws"

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:eks:{self.region}:{self.account_id}:cluster/{self.name}"

    def __str__(self) -> str:
        return f"{self.account_id}/{self.region}/{self.name}"


@dataclass(frozen=True)
class ClusterInfo:
    """What DescribeCluster says about a cluster: where to reach it, how to trust it, what it is."""

    ref: ClusterRef
    endpoint: str
    ca_data: str  # base64 PEM, exactly as certificateAuthority.data
    version: str = ""
    status: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)  # ASFF Details.AwsEksCluster


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "NetworkPolicy"
    api_version: str = "networking.k8s.io/v1"


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything read from one cluster in one scan. Only complete reads become snapshots."""

    cluster: ClusterInfo
    namespaces: tuple[Namespace, ...]
    policies: tuple[NetworkPolicy, ...]
    api_requests: int = 0


@dataclass(frozen=True)
class ControlResult:
    """One control's verdict on one resource (a namespace, or the cluster when namespace is None)."""

    control_id: str
    namespace: str | None
    status: ComplianceStatus
    title: str
    description: str
    evidence: tuple[str, ...] = ()  # names of the objects the verdict rests on, e.g. the policies counted

    def to_dict(self) -> dict[str, Any]:
        return {"control_id": self.control_id, "namespace": self.namespace, "status": self.status.value,
                "title": self.title, "description": self.description, "evidence": list(self.evidence)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControlResult:
        return cls(control_id=data["control_id"], namespace=data.get("namespace"),
                   status=ComplianceStatus(data["status"]), title=data["title"],
                   description=data["description"], evidence=tuple(data.get("evidence") or ()))

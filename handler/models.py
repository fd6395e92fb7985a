"""Plain, frozen data that flows through the pipeline: targets, cluster snapshots, control results."""
from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn, Protocol


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

    @functools.cached_property  # named for every finding of the cluster
    def arn(self) -> str:
        return f"arn:{self.partition}:eks:{self.region}:{self.account_id}:cluster/{self.name}"

    def __str__(self) -> str:
        return f"{self.account_id}/{self.region}/{self.name}"


@dataclass(frozen=True)
class EnforcementEvidence:
    """What says whether network policies are enforced on a cluster: engines found enforcing, sources looked at
    that show no enforcement, and sources that could not be read (with why)."""

    engines: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    def __add__(self, other: EnforcementEvidence) -> EnforcementEvidence:
        return EnforcementEvidence(self.engines + other.engines, self.absent + other.absent,
                                   self.unknown + other.unknown)


class PodDefault(enum.StrEnum):
    """What the nodes do to a pod that no policy selects (EKS Auto Mode NodeClass `spec.networkPolicy`)."""

    ALLOW = "allow"  # Kubernetes' default: it accepts and opens any connection
    DENY = "deny"  # every node is of a NodeClass with networkPolicy DefaultDeny: denied both ways
    SOME_DENY = "some-deny"  # only some nodes are: which namespaces' pods land on them is not known
    UNKNOWN = "unknown"  # the NodeClasses or NodePools that would tell could not be read


@dataclass(frozen=True)
class UnselectedPods:
    """The default for pods no policy selects on one cluster, and the sentence that says why (for findings)."""

    default: PodDefault = PodDefault.ALLOW
    reason: str = ""
    node_classes: tuple[str, ...] = ()  # the DefaultDeny NodeClasses the NodePools use, named as evidence


@dataclass(frozen=True)
class ClusterInfo:
    """What DescribeCluster says about a cluster: where to reach it, how to trust it, what it is."""

    ref: ClusterRef
    endpoint: str
    ca_data: str  # base64 PEM, exactly as certificateAuthority.data
    version: str = ""
    status: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)  # ASFF Details.AwsEksCluster
    vpc_cni_addon: EnforcementEvidence = EnforcementEvidence()  # from eks:DescribeAddon vpc-cni
    auto_mode: bool | None = None  # DescribeCluster computeConfig.enabled; None: not described (a kubeconfig)


class _ReadOnlyEmpty(dict):
    """An empty dict that cannot be filled: shared, as a named tuple's defaults are. A dict, so that looking
    into it stays as fast as into the dicts read from clusters, and it pickles and encodes as {}."""

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the shared empty mapping is read only")

    __setitem__ = __delitem__ = __ior__ = setdefault = update = pop = popitem = clear = _read_only


# Named tuples, not frozen dataclasses, for what a cluster has by the ten thousand (namespaces, policies, control
# results, and the policy analysis's Effects): a frozen dataclass's __init__ sets each field with
# object.__setattr__, and that was 40 ms of the 340 ms a 10,000-namespace scan took (bench/scan_one_cluster.py).
# Their mapping fields default to EMPTY.
EMPTY: Mapping[str, Any] = _ReadOnlyEmpty()


# The namespace annotations the scanner reads (exemptions.py): the reader keeps these and drops the rest (Helm's,
# kubectl's last-applied-configuration), which no verdict uses and a large cluster has by the megabyte.
EXEMPT_ANNOTATION = "netpol-scanner.io/exempt"
EXEMPT_UNTIL_ANNOTATION = "netpol-scanner.io/exempt-until"


class Namespace(NamedTuple):
    name: str
    labels: Mapping[str, str] = EMPTY
    annotations: Mapping[str, str] = EMPTY  # as read: EXEMPT_ANNOTATION and EXEMPT_UNTIL_ANNOTATION only
    terminating: bool = False


class CidrGroup(NamedTuple):
    """A Cilium CiliumCIDRGroup: labelled CIDRs that Cilium policies name (`cidrGroupRef`, `cidrGroupSelector`)."""

    labels: Mapping[str, str]
    cidrs: tuple[str, ...]


class NetworkPolicy(NamedTuple):
    namespace: str
    name: str
    spec: Mapping[str, Any] = EMPTY
    kind: str = "NetworkPolicy"
    api_version: str = "networking.k8s.io/v1"
    # Of a Cilium policy whose rules name CiliumCIDRGroups: the cluster's groups by name, read with it (one mapping
    # shared by every such policy); None when they could not be read (kind not served, or forbidden).
    cidr_groups: Mapping[str, CidrGroup] | None = None


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything read from one cluster in one scan. Only complete reads become snapshots."""

    cluster: ClusterInfo
    namespaces: tuple[Namespace, ...]
    policies: tuple[NetworkPolicy, ...]  # every kind read: networking.k8s.io and the engines' own
    api_requests: int = 0
    unreadable: tuple[str, ...] = ()  # policy kinds discovery lists that RBAC did not let us read, with why
    enforcement: EnforcementEvidence = EnforcementEvidence()  # read in the cluster (DaemonSets, ConfigMap)
    unselected_pods: UnselectedPods = UnselectedPods()  # EKS Auto Mode NodeClasses: Kubernetes' allow otherwise
    # `coverage` when it was computed as the namespaces were read (evaluation.Evaluation), page by page.
    coverage_as_read: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def coverage(self) -> Mapping[str, Any]:
        """namespace -> NamespaceCoverage: what each policy does to it, computed once for all the controls."""
        if self.coverage_as_read is not None:
            return self.coverage_as_read
        from handler.policy.coverage import namespace_coverage  # the analysis imports these models
        return namespace_coverage(self)


class Wording(Protocol):
    """How a verdict's title and description are made from the result that holds it, when they are read.

    A cluster has its namespace verdicts by the ten thousand, and their texts, formatted per namespace, were most
    of a scan's heap (18 of 34 MB for 10,000 namespaces, bench/scan_one_cluster.py): a result keeps what its texts
    are made from instead (one wording shared by every namespace whose verdict reads the same but for its name, or
    the few values of its own), so that the texts of a cluster's results never all exist at once."""

    def title(self, result: ControlResult) -> str: ...

    def description(self, result: ControlResult) -> str: ...


class _ControlResultFields(NamedTuple):
    control_id: str
    namespace: str | None
    status: ComplianceStatus
    title: str | Wording
    description: str | Wording
    evidence: tuple[str, ...] = ()  # names of the objects the verdict rests on, e.g. the policies counted
    fields: Mapping[str, str] = EMPTY  # extra ASFF ProductFields, e.g. an exemption's


_title_slot, _description_slot = _ControlResultFields.title.__get__, _ControlResultFields.description.__get__
_NAME_MARKER = "\x00netpol-scanner-namespace\x00"  # stands for the name in _AroundName's parts: in no text


class _AroundName(NamedTuple):
    """A wording made once, but for the namespace's name (ControlResult.same_but_for_name)."""

    title_parts: tuple[str, ...]
    description_parts: tuple[str, ...]

    def title(self, result: ControlResult) -> str:
        return result.namespace.join(self.title_parts)  # type: ignore[union-attr]  # a namespace's verdict

    def description(self, result: ControlResult) -> str:
        return result.namespace.join(self.description_parts)  # type: ignore[union-attr]


class ControlResult(_ControlResultFields):
    """One control's verdict on one resource (a namespace, or the cluster when namespace is None).

    Its title and description are given as text, or as a Wording that makes them each time they are read
    (`worded`); either way `title` and `description` read as text, and two results are equal when they say the
    same."""

    __slots__ = ()

    @classmethod
    def worded(cls, control_id: str, namespace: str | None, status: ComplianceStatus, wording: Wording,
               evidence: tuple[str, ...] = ()) -> ControlResult:
        return cls(control_id, namespace, status, wording, wording, evidence)

    def same_but_for_name(self) -> ControlResult:
        """This result with its texts made once around the namespace's name: for the verdict that a cluster's
        namespaces share but for their name (those no policy applies to), made once and read tens of thousands
        of times (digests, findings, state)."""
        marked = self._replace(namespace=_NAME_MARKER)
        wording = _AroundName(tuple(marked.title.split(_NAME_MARKER)), tuple(marked.description.split(_NAME_MARKER)))
        return self._replace(title=wording, description=wording)

    @property
    def title(self) -> str:
        title = _title_slot(self)
        return title if type(title) is str else title.title(self)

    @property
    def description(self) -> str:
        description = _description_slot(self)
        return description if type(description) is str else description.description(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ControlResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # as a tuple holding its `fields` dict always was: unhashable

    def to_dict(self) -> dict[str, Any]:
        return {"control_id": self.control_id, "namespace": self.namespace, "status": self.status.value,
                "title": self.title, "description": self.description, "evidence": list(self.evidence),
                **({"fields": dict(self.fields)} if self.fields else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], shared: dict[Any, Any] | None = None) -> ControlResult:
        """`shared`, kept across the results of a state read back, makes what they repeat one object: their ids,
        evidence and names, and their texts, held once around their namespace's name where only that differs."""
        namespace, title, description = data.get("namespace"), data["title"], data["description"]
        evidence = tuple(data.get("evidence") or ())
        control_id, fields = data["control_id"], data.get("fields")
        if shared is not None:
            one = shared.setdefault
            control_id, evidence = one(control_id, control_id), one(evidence, evidence)
            if namespace:
                namespace = one(namespace, namespace)
                wording = _AroundName(tuple(title.split(namespace)), tuple(description.split(namespace)))
                title = description = one(wording, wording)
        return cls(control_id, namespace, ComplianceStatus(data["status"]), title, description, evidence,
                   dict(fields) if fields else EMPTY)

"""Pure ASFF building: control results in, BatchImportFindings-ready findings out.

Ids are derived from the cluster ARN (account, Region, cluster), the control and the namespace, never from
time or content, so the same namespace always updates the same finding and no two clusters collide (state.py
decides them, with what to send and archive; the findings are built here, once, when a plan is published).
Every field is held to the limits of the Security Hub API model; empty fields are dropped.
"""
from __future__ import annotations

import functools
from json.encoder import encode_basestring_ascii
from collections.abc import Iterator, Mapping
from typing import Any

from handler.publish import compact_text

from handler.controls import CONTROLS_BY_ID
from handler.controls.base import Control
from handler.models import ClusterInfo, ClusterRef, ComplianceStatus, ControlResult, RecordState
from handler.state import Plan, finding_id

SCHEMA_VERSION = "2018-10-08"
MAX_ID = 512
MAX_TITLE = 256
MAX_DESCRIPTION = 1024
MAX_REMEDIATION_TEXT = 512
MAX_PRODUCT_FIELD_VALUE = 2048
MAX_PRODUCT_FIELD_KEY = 128
MAX_OTHER_DETAIL_VALUE = 1024
ELLIPSIS = "..."

CLUSTER_FIELD = "kubernetes/cluster"
NAMESPACE_FIELD = "kubernetes/namespace"
CONTROL_FIELD = "eks-netpol-scanner/control"
EVIDENCE_FIELD = "eks-netpol-scanner/evidence"


def product_arn(cluster: ClusterRef) -> str:
    """The account's default product: imports must be made with the cluster account's own credentials."""
    return (f"arn:{cluster.partition}:securityhub:{cluster.region}:{cluster.account_id}:"
            f"product/{cluster.account_id}/default")


def cluster_resource(info: ClusterInfo) -> dict[str, Any]:
    """The AwsEksCluster resource of every finding of the cluster, with DescribeCluster's details."""
    resource = _bare_cluster_resource(info.ref)
    details = _drop_empty(dict(info.details))
    if details:
        resource["Details"] = {"AwsEksCluster": details}
    return resource


def _bare_cluster_resource(cluster: ClusterRef) -> dict[str, Any]:
    return {"Type": "AwsEksCluster", "Id": cluster.arn, "Partition": cluster.partition, "Region": cluster.region}


def build_finding(result: ControlResult, control: Control, cluster: ClusterRef,
                  cluster_resource_: Mapping[str, Any] | None, *, created_at: str, updated_at: str,
                  record_state: RecordState = RecordState.ACTIVE) -> dict[str, Any]:
    """One ASFF finding. `cluster_resource_` falls back to a bare AwsEksCluster when DescribeCluster failed.
    Findings are only read (encoded, sent): their constant fields are shared by all of a control's findings."""
    resources = [dict(cluster_resource_ or _bare_cluster_resource(cluster))]
    product_fields = {CLUSTER_FIELD: cluster.name, CONTROL_FIELD: control.id}
    if result.namespace is not None:
        product_fields[NAMESPACE_FIELD] = result.namespace
        resources.append(_namespace_resource(cluster, f"{cluster.arn}/namespace/{result.namespace}",
                                             _clip(result.namespace, MAX_OTHER_DETAIL_VALUE)))
    if result.evidence:
        product_fields[EVIDENCE_FIELD] = _clip(", ".join(result.evidence), MAX_PRODUCT_FIELD_VALUE)
    for key, value in result.fields.items():  # e.g. an exemption's reason, approver and expiry
        product_fields[key[:MAX_PRODUCT_FIELD_KEY]] = _clip(value, MAX_PRODUCT_FIELD_VALUE)
    finding = {
        **_constant_fields(control, cluster, result.status, record_state),
        "Id": finding_id(cluster, control.id, result.namespace),
        "CreatedAt": created_at,
        "UpdatedAt": updated_at,
        "Title": _clip(result.title, MAX_TITLE),
        "Description": _clip(result.description, MAX_DESCRIPTION),
        "ProductFields": product_fields,
        "Resources": resources,
    }
    if len(finding["Id"]) > MAX_ID:
        raise ValueError(f"finding Id longer than {MAX_ID} characters: {finding['Id'][:80]}...")
    # Every field above is non-empty by construction (the cluster resource was cleaned once, in
    # cluster_resource): cleaning each of 10,000 findings again cost more than evaluating them.
    return finding


def _namespace_resource(cluster: ClusterRef, resource_id: str, namespace: str) -> dict[str, Any]:
    return {"Type": "Other", "Id": resource_id, "Partition": cluster.partition, "Region": cluster.region,
            "Details": {"Other": {"Cluster": _clip(cluster.name, MAX_OTHER_DETAIL_VALUE), "Namespace": namespace}}}


@functools.lru_cache(maxsize=256)
def _constant_fields(control: Control, cluster: ClusterRef, status: ComplianceStatus,
                     record_state: RecordState) -> dict[str, Any]:
    """The fields that are the same for every finding of a control, status and record state on a cluster; built
    once, not once per finding (they were most of the cost of building one)."""
    severity = control.severity if status is ComplianceStatus.FAILED else "INFORMATIONAL"
    types = list(control.finding_types)
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "ProductArn": product_arn(cluster),
        "GeneratorId": control.generator_id,
        "AwsAccountId": cluster.account_id,
        "Types": types,
        "Severity": {"Label": severity, "Original": severity},
        "Remediation": {"Recommendation": {"Text": _clip(control.remediation_text, MAX_REMEDIATION_TEXT),
                                           "Url": control.remediation_url}},
        "Compliance": {"Status": status.value, "RelatedRequirements": list(control.requirements)},
        "RecordState": record_state.value,
        # Providers set Severity and Types here too: Security Hub keeps these even after a customer edits the
        # top-level copies with BatchUpdateFindings.
        "FindingProviderFields": {"Severity": {"Label": severity, "Original": severity}, "Types": types},
    }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _drop_empty(value: Any) -> Any:
    """Security Hub rejects empty strings, lists and maps in some fields; DescribeCluster has some."""
    if isinstance(value, Mapping):
        cleaned = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in ("", None, [], {})}
    if isinstance(value, list):
        cleaned_items = [_drop_empty(v) for v in value]
        return [v for v in cleaned_items if v not in ("", None, [], {})]
    return value


def plan_findings(plan: Plan) -> Iterator[dict[str, Any]]:
    """The ASFF findings a plan reports, built one at a time: a cluster's 10,000 findings never sit in memory
    together, only the batch being sent."""
    return (finding for finding, _ in encoded_findings(plan))


def encoded_findings(plan: Plan) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each finding a plan reports with its encoding, exactly compact_json(finding), made from templates: the
    parts that are the same for every finding of a control (texts, types, the cluster resource with its details)
    are encoded once per plan, and only what names the namespace and says the verdict is encoded per finding."""
    state = plan.next_state
    templates = _Templates(state.cluster, state.cluster_resource)
    for fid in plan.report_ids:
        published = state.findings[fid]
        finding = build_finding(published.result, CONTROLS_BY_ID[published.result.control_id], state.cluster,
                                state.cluster_resource, created_at=published.created_at,
                                updated_at=published.updated_at, record_state=published.record_state)
        yield finding, templates.encode(finding, published.result)


# The per-finding values, in the order sort_keys puts them: encoded into a template as a marker, then replaced by
# each finding's own.
_VARYING = ("CreatedAt", "Description", "Id", "ProductFields", "Resources", "Title", "UpdatedAt")
_MARKER = "\x00netpol-scanner-slot\x00"


class _Templates:
    """The encoding of a plan's findings around their varying values, one template per control, status and record
    state. A template is made by encoding a real finding with the varying values replaced by one marker: sort_keys
    orders keys alone, so every finding of the same template encodes to the same text between them."""

    def __init__(self, cluster: ClusterRef, cluster_resource_: Mapping[str, Any] | None) -> None:
        self._parts: dict[tuple[str, ComplianceStatus, str], list[str]] = {}
        self._cluster_resource = compact_text(dict(cluster_resource_ or _bare_cluster_resource(cluster)))
        # A namespace's resource: its Details.Other.Namespace, then its Id (sort_keys: "Details" < "Id").
        self._namespace_resource = compact_text(_namespace_resource(cluster, _MARKER, _MARKER)).split(
            encode_basestring_ascii(_MARKER))

    def encode(self, finding: dict[str, Any], result: ControlResult) -> bytes:
        key = (result.control_id, result.status, finding["RecordState"])
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts[key] = compact_text({**finding, **dict.fromkeys(_VARYING, _MARKER)}).split(
                encode_basestring_ascii(_MARKER))
            assert len(parts) == len(_VARYING) + 1, "a finding's constant text holds the template marker"
        string = encode_basestring_ascii  # what compact_text makes of a str, called directly
        resources = [self._cluster_resource]
        if result.namespace is not None:
            before_namespace, before_id, after = self._namespace_resource
            namespace = finding["Resources"][1]
            resources.append("".join((before_namespace, string(namespace["Details"]["Other"]["Namespace"]),
                                      before_id, string(namespace["Id"]), after)))
        return "".join((
            parts[0], string(finding["CreatedAt"]), parts[1], string(finding["Description"]), parts[2],
            string(finding["Id"]), parts[3], compact_text(finding["ProductFields"]), parts[4],
            "[", ",".join(resources), "]", parts[5], string(finding["Title"]), parts[6], string(finding["UpdatedAt"]),
            parts[7])).encode()

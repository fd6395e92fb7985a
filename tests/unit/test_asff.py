"""handler.asff: required fields, Ids, limits and the botocore `securityhub` model."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.asff import (CLUSTER_FIELD, EVIDENCE_FIELD, NAMESPACE_FIELD, build_finding, cluster_resource,
                          finding_id, product_arn)
from handler.controls import namespace_network_policy, scan_status
from handler.targets.discovery import _asff_details
from handler.models import ClusterInfo, ClusterRef, ComplianceStatus, ControlResult, RecordState
from tests.unit.asff_model import empties, limit_errors, model_errors

NETPOL = namespace_network_policy.CONTROL
SCAN = scan_status.CONTROL
REF = ClusterRef("123456789012", "eu-west-1", "alpha")
CREATED, UPDATED = "2025-01-01T00:00:00.000Z", "2025-01-02T03:04:05.678Z"
REQUIRED = ("SchemaVersion", "Id", "ProductArn", "GeneratorId", "AwsAccountId", "CreatedAt", "UpdatedAt", "Title",
            "Description", "Resources", "Severity", "Types")
ASFF_LABELS = {"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"}


def result(status: ComplianceStatus, namespace: str | None = "team-a", evidence: tuple[str, ...] = (),
           title: str = "a title", description: str = "a description") -> ControlResult:
    return ControlResult(NETPOL.id, namespace, status, title, description, evidence)


def finding(res: ControlResult, ref: ClusterRef = REF, control=NETPOL, resource=None, **kw):
    return build_finding(res, control, ref, resource, created_at=kw.pop("created_at", CREATED),
                         updated_at=kw.pop("updated_at", UPDATED), **kw)


def eks_cluster(name: str = "alpha", **overrides) -> dict:
    """DescribeCluster's `cluster`, as boto3 (and moto) return it."""
    cluster = {
        "name": name, "arn": f"arn:aws:eks:eu-west-1:123456789012:cluster/{name}",
        "createdAt": dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), "version": "1.31",
        "endpoint": "https://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com",
        "roleArn": "arn:aws:iam::123456789012:role/eks-cluster",
        "resourcesVpcConfig": {"subnetIds": ["subnet-1", "subnet-2"], "securityGroupIds": ["sg-1"],
                               "clusterSecurityGroupId": "sg-c", "vpcId": "vpc-1", "endpointPublicAccess": False,
                               "endpointPrivateAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]},
        "kubernetesNetworkConfig": {"serviceIpv4Cidr": "10.100.0.0/16", "ipFamily": "ipv4"},
        "logging": {"clusterLogging": [{"types": ["api", "audit"], "enabled": True},
                                       {"types": ["scheduler"], "enabled": False}]},
        "identity": {"oidc": {"issuer": "https://oidc.eks.eu-west-1.amazonaws.com/id/X"}},
        "status": "ACTIVE", "certificateAuthority": {"data": "LS0tLS1CRUdJTg=="}, "platformVersion": "eks.1",
        "tags": {"team": "platform"},
    }
    cluster.update(overrides)
    return cluster


def info(ref: ClusterRef = REF, details: dict | None = None) -> ClusterInfo:
    return ClusterInfo(ref, "https://example.invalid", "", details=details if details is not None else {})


# -- required fields and content -----------------------------------------------------------------------------

@pytest.mark.parametrize("status", list(ComplianceStatus))
def test_required_fields_and_model(status):
    f = finding(result(status, evidence=("default-deny",)))
    for name in REQUIRED:
        assert f.get(name), name
    assert f["SchemaVersion"] == "2018-10-08"
    assert f["ProductArn"] == "arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default"
    assert f["GeneratorId"] == f"eks-netpol-scanner/{NETPOL.id}"
    assert f["AwsAccountId"] == "123456789012"
    assert (f["CreatedAt"], f["UpdatedAt"]) == (CREATED, UPDATED)
    assert f["Compliance"]["Status"] == status.value
    assert f["RecordState"] == "ACTIVE"
    assert model_errors(f) == []
    assert limit_errors(f) == []


@pytest.mark.parametrize("status", list(ComplianceStatus))
def test_related_requirements_hold_both_benchmarks(status):
    reqs = finding(result(status))["Compliance"]["RelatedRequirements"]
    assert any(re.search(r"CIS Kubernetes.*5\.3\.2", r) for r in reqs), reqs
    assert any(re.search(r"CIS (Amazon )?EKS.*4\.3\.2", r) for r in reqs), reqs


def test_resources_cluster_then_namespace():
    f = finding(result(ComplianceStatus.FAILED, namespace="payments"))
    cluster, namespace = f["Resources"]
    assert cluster["Type"] == "AwsEksCluster" and cluster["Id"] == REF.arn
    assert cluster["Id"] == "arn:aws:eks:eu-west-1:123456789012:cluster/alpha"
    assert cluster["Region"] == "eu-west-1" and cluster["Partition"] == "aws"
    assert namespace["Id"] == f"{REF.arn}/namespace/payments"
    assert namespace["Details"]["Other"] == {"Cluster": "alpha", "Namespace": "payments"}
    assert f["ProductFields"][CLUSTER_FIELD] == "alpha"
    assert f["ProductFields"][NAMESPACE_FIELD] == "payments"


def test_cluster_level_finding_has_one_resource_and_no_namespace_field():
    res = scan_status.not_available(REF, "HTTP 401")
    f = finding(res, control=SCAN)
    assert [r["Id"] for r in f["Resources"]] == [REF.arn]
    assert NAMESPACE_FIELD not in f["ProductFields"]
    assert f["Compliance"]["Status"] == "NOT_AVAILABLE"
    assert "HTTP 401" in f["Description"]
    assert model_errors(f) == [] and limit_errors(f) == []


@pytest.mark.parametrize("status, label", [(ComplianceStatus.PASSED, "INFORMATIONAL"),
                                           (ComplianceStatus.WARNING, "INFORMATIONAL"),
                                           (ComplianceStatus.FAILED, NETPOL.severity)])
def test_severity(status, label):
    f = finding(result(status))
    assert f["Severity"]["Label"] == label
    assert f["FindingProviderFields"]["Severity"]["Label"] == label
    assert f["FindingProviderFields"]["Types"] == f["Types"] == list(NETPOL.finding_types)


def test_failed_severity_follows_the_control():
    f = finding(scan_status.not_available(REF, "x"), control=SCAN)
    assert f["Severity"]["Label"] in ASFF_LABELS
    assert NETPOL.severity != "INFORMATIONAL"
    assert finding(result(ComplianceStatus.FAILED))["Severity"]["Label"] == "MEDIUM"


def test_evidence_in_product_fields_and_absent_when_none():
    assert finding(result(ComplianceStatus.PASSED, evidence=("a", "b")))["ProductFields"][EVIDENCE_FIELD] == "a, b"
    assert EVIDENCE_FIELD not in finding(result(ComplianceStatus.FAILED))["ProductFields"]


def test_archived_record_state():
    f = finding(result(ComplianceStatus.PASSED), record_state=RecordState.ARCHIVED)
    assert f["RecordState"] == "ARCHIVED"
    assert model_errors(f) == []


# -- Ids ------------------------------------------------------------------------------------------------------

def test_id_is_deterministic_and_timeless():
    a = finding(result(ComplianceStatus.FAILED))
    b = finding(result(ComplianceStatus.PASSED, title="other", description="other", evidence=("p",)),
                created_at="2031-07-07T07:07:07.000Z", updated_at="2032-08-08T08:08:08.000Z")
    assert a["Id"] == b["Id"] == finding_id(REF, NETPOL.id, "team-a")
    assert not re.search(r"20\d\d-\d\d|T\d\d:\d\d", a["Id"])


@pytest.mark.parametrize("other", [
    ClusterRef("210987654321", "eu-west-1", "alpha"), ClusterRef("123456789012", "eu-west-2", "alpha"),
    ClusterRef("123456789012", "eu-west-1", "alpha2"), ClusterRef("123456789012", "eu-west-1", "alpha", "aws-cn"),
])
def test_id_differs_per_cluster(other):
    assert finding(result(ComplianceStatus.FAILED), ref=other)["Id"] != finding(result(ComplianceStatus.FAILED))["Id"]


def test_id_differs_per_namespace_and_control():
    ids = {finding(result(ComplianceStatus.FAILED, namespace=ns))["Id"] for ns in ("a", "b", "a-b", "default")}
    ids.add(finding(scan_status.not_available(REF, "x"), control=SCAN)["Id"])
    assert len(ids) == 5


def test_product_arn_uses_partition_region_and_account():
    ref = ClusterRef("111122223333", "us-gov-west-1", "c", "aws-us-gov")
    assert product_arn(ref) == "arn:aws-us-gov:securityhub:us-gov-west-1:111122223333:product/111122223333/default"
    assert finding(result(ComplianceStatus.FAILED), ref=ref)["Resources"][0]["Id"].startswith("arn:aws-us-gov:eks:")


# -- properties -----------------------------------------------------------------------------------------------

cluster_names = st.from_regex(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}", fullmatch=True)
namespaces = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
accounts = st.from_regex(r"[0-9]{12}", fullmatch=True)
regions = st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1", "cn-north-1"])
partitions = st.sampled_from(["aws", "aws-cn", "aws-us-gov"])
prose = st.text(min_size=1, max_size=3000).filter(lambda s: s.strip())
policy_names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", fullmatch=True)
refs = st.builds(ClusterRef, accounts, regions, cluster_names, partitions)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(ref=refs, namespace=st.one_of(st.none(), namespaces), status=st.sampled_from(list(ComplianceStatus)),
       title=prose, description=prose, evidence=st.lists(policy_names, max_size=40))
def test_any_finding_respects_limits_and_model(ref, namespace, status, title, description, evidence):
    control = SCAN if namespace is None else NETPOL
    res = ControlResult(control.id, namespace, status, title, description, tuple(evidence))
    f = build_finding(res, control, ref, None, created_at=CREATED, updated_at=UPDATED)
    assert limit_errors(f) == []
    assert model_errors(f) == []
    assert f["Resources"][0]["Id"] == ref.arn
    assert f["Title"] == title or (len(title) > 256 and f["Title"].endswith("...") and len(f["Title"]) == 256)
    assert f["Description"] == description or len(f["Description"]) == 1024


@PROPS
@given(a=st.tuples(refs, st.one_of(st.none(), namespaces)), b=st.tuples(refs, st.one_of(st.none(), namespaces)))
def test_ids_are_injective(a, b):
    id_a, id_b = finding_id(a[0], NETPOL.id, a[1]), finding_id(b[0], NETPOL.id, b[1])
    assert (id_a == id_b) == (a == b)
    assert 1 <= len(id_a) <= 512


@PROPS
@given(ref=refs, namespace=namespaces)
def test_real_control_results_validate(ref, namespace):
    from handler.models import ClusterSnapshot, Namespace, NetworkPolicy
    snap = ClusterSnapshot(ClusterInfo(ref, "https://x", ""), (Namespace(namespace),),
                           tuple(NetworkPolicy(namespace, f"p{i}" * 60) for i in range(30)))
    for res in NETPOL.evaluate(snap):
        f = build_finding(res, NETPOL, ref, None, created_at=CREATED, updated_at=UPDATED)
        assert limit_errors(f) == [] and model_errors(f) == []


def test_overlong_title_and_description_are_clipped_exactly():
    f = finding(result(ComplianceStatus.FAILED, title="t" * 5000, description="d" * 5000,
                       evidence=tuple(f"policy-{i:04d}" * 20 for i in range(200))))
    assert len(f["Title"]) == 256 and len(f["Description"]) == 1024
    assert len(f["ProductFields"][EVIDENCE_FIELD]) == 2048
    assert limit_errors(f) == []


# -- cluster_resource -----------------------------------------------------------------------------------------

def test_cluster_resource_from_describe_cluster_details():
    resource = cluster_resource(info(details=_asff_details(eks_cluster())))
    assert resource["Type"] == "AwsEksCluster" and resource["Id"] == REF.arn
    details = resource["Details"]["AwsEksCluster"]
    assert details["Name"] == "alpha" and details["Version"] == "1.31" and details["ClusterStatus"] == "ACTIVE"
    assert details["ResourcesVpcConfig"]["EndpointPublicAccess"] is False  # False is kept: it means private
    assert details["Logging"]["ClusterLogging"][0] == {"Enabled": True, "Types": ["api", "audit"]}
    assert "CertificateAuthorityData" not in details
    f = finding(result(ComplianceStatus.FAILED), resource=resource)
    assert f["Resources"][0] == resource
    assert model_errors(f) == [] and limit_errors(f) == []


def test_cluster_resource_drops_none_and_empty_values():
    sparse = eks_cluster(roleArn=None, version="", logging={"clusterLogging": []},
                         resourcesVpcConfig={"subnetIds": [], "securityGroupIds": [], "endpointPublicAccess": None})
    details = cluster_resource(info(details=_asff_details(sparse)))["Details"]["AwsEksCluster"]
    assert set(details) == {"Arn", "Name", "Endpoint", "ClusterStatus"}
    assert empties(details) == []
    f = finding(result(ComplianceStatus.PASSED), resource=cluster_resource(info(details=_asff_details(sparse))))
    assert model_errors(f) == [] and limit_errors(f) == []


def test_cluster_resource_without_details_is_bare():
    assert cluster_resource(info()) == {"Type": "AwsEksCluster", "Id": REF.arn, "Partition": "aws",
                                        "Region": "eu-west-1"}
    assert "Details" not in cluster_resource(info(details=_asff_details({})))


def test_drop_empty_removes_items_emptied_by_cleaning():
    resource = cluster_resource(info(details={"Name": "alpha", "Logging": {"ClusterLogging": [{"Types": []}]}}))
    assert empties(resource) == []


def test_model_checker_catches_problems():
    """The checkers themselves must be able to fail."""
    f = finding(result(ComplianceStatus.FAILED))
    broken = {**f, "Title": "x" * 300, "Resources": [], "Compliance": {"Status": "BROKEN"}}
    del broken["AwsAccountId"]
    assert model_errors(broken) and limit_errors(broken)
    assert any("BROKEN" in e for e in model_errors(broken))
    assert any("AwsAccountId" in e for e in model_errors(broken))

"""The one JSON encoding of published findings (asff.encoded_findings, publish.compact_json), the S3 file it is
written to (GzipJsonLines.tee) and the state's digests: fast paths that must say exactly what json.dumps says."""
from __future__ import annotations

import gzip
import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.asff import encoded_findings, plan_findings
from handler.controls import CONTROLS
from handler.models import ClusterRef, ComplianceStatus, ControlResult
from handler.publish import compact_json
from handler.publish.s3 import GzipJsonLines
from handler.state import plan_deleted, plan_scanned

NOW, LATER = "2025-01-01T00:00:00.000Z", "2025-03-01T00:00:00.000Z"
RESOURCE = {"Type": "AwsEksCluster", "Id": "arn:aws:eks:eu-west-1:123456789012:cluster/alpha", "Partition": "aws",
            "Region": "eu-west-1", "Details": {"AwsEksCluster": {"Name": "alpha", "Version": "1.31",
                                                                 "ResourcesVpcConfig": {"SubnetIds": ["s-1", "s-2"]},
                                                                 "Logging": {"Enabled": True, "Ratio": 0.5}}}}


def json_dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


texts = st.text(min_size=1, max_size=1200)  # any Unicode, quotes and control characters; some over the limits
namespaces = st.one_of(st.none(), st.text(min_size=1, max_size=80))
results = st.builds(
    ControlResult, st.sampled_from([c.id for c in CONTROLS]), namespaces, st.sampled_from(list(ComplianceStatus)),
    texts, texts, st.lists(st.text(min_size=1, max_size=60), max_size=5).map(tuple),
    st.dictionaries(st.text(min_size=1, max_size=140), st.text(min_size=1, max_size=60), max_size=3))
refs = st.builds(ClusterRef, st.from_regex(r"[0-9]{12}", fullmatch=True),
                 st.sampled_from(["eu-west-1", "cn-north-1"]), st.from_regex(r"[a-z][a-z0-9-]{0,40}", fullmatch=True),
                 st.sampled_from(["aws", "aws-cn"]))


def _unique(found: list[ControlResult]) -> list[ControlResult]:
    return list({(r.control_id, r.namespace): r for r in found}.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=refs, found=st.lists(results, min_size=1, max_size=12).map(_unique), described=st.booleans())
def test_each_encoding_is_json_dumps_of_its_finding(ref, found, described):
    """Templates per control, status and record state, with the cluster resource encoded once: the same bytes as
    encoding each finding whole, for active and archived findings, with or without DescribeCluster's details."""
    resource = RESOURCE if described else None
    plan = plan_scanned(None, ref, resource, found, NOW)
    archived = plan_deleted(plan.next_state, ref, LATER)
    for each in (plan, archived):
        encoded = list(encoded_findings(each))
        assert [f for f, _ in encoded] == list(plan_findings(each))
        assert len(encoded) == len(found)
        for finding, line in encoded:
            assert line == json_dumps(finding) == compact_json(finding)


@pytest.mark.parametrize("value", [{"b": [1, 2.5, None, True, False], "a": {"z": "é\n\"\x00", "y": -0.0}}, [], {},
                                   "text", 3, None])
def test_compact_json_is_json_dumps(value):
    assert compact_json(value) == json_dumps(value)


def test_compact_json_rejects_what_json_cannot_encode():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        compact_json({"a": {1, 2}})


@pytest.mark.parametrize("count", [0, 1, 99, 100, 101, 250])
def test_the_s3_file_holds_every_line_in_order(count):
    """Lines are compressed a hundred at a time: a partial last hundred is written too."""
    records = [({"n": i}, json_dumps({"n": i})) for i in range(count)]
    written = GzipJsonLines()
    assert list(written.tee(iter(records))) == records
    lines = gzip.decompress(written.close()).splitlines()
    assert lines == [line for _, line in records]


def test_digest_is_that_of_the_result_and_resource_encoded_together():
    """The cluster resource is encoded once a plan, not once a finding; states written before keep their digests
    (a changed digest would import every finding of every cluster again)."""
    ref = ClusterRef("123456789012", "eu-west-1", "alpha")
    found = ControlResult(CONTROLS[0].id, "team-a", ComplianceStatus.PASSED, "t", "d", ("p",), {"k": "v"})
    plan = plan_scanned(None, ref, RESOURCE, [found], NOW)
    (published,) = plan.next_state.findings.values()
    material = json.dumps([found.to_dict(), RESOURCE], sort_keys=True, separators=(",", ":"))
    assert published.digest == hashlib.sha256(material.encode()).hexdigest()[:32]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(found=results)
def test_a_digest_is_that_of_json_dumps_of_its_result(found):
    """The digest encodes a result without making its dict: the same bytes as json.dumps of the dict, for any
    texts, evidence, fields and namespace (or none); texts made when read included."""
    ref = ClusterRef("123456789012", "eu-west-1", "alpha")
    worded = found.same_but_for_name() if found.namespace else found
    for result in (found, worded):
        (published,) = plan_scanned(None, ref, RESOURCE, [result], NOW).next_state.findings.values()
        material = json.dumps([found.to_dict(), RESOURCE], sort_keys=True, separators=(",", ":"))
        assert published.digest == hashlib.sha256(material.encode()).hexdigest()[:32]

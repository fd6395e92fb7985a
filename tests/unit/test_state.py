"""handler.state: the finding lifecycle across scans, failures, deletions and rejected imports."""
from __future__ import annotations

import datetime as dt
import json
import tracemalloc

import pytest

from handler.asff import plan_findings
from handler.controls import namespace_network_policy, scan_status
from handler.evaluation import Evaluator
from handler.models import (ClusterInfo, ClusterRef, ClusterSnapshot, ComplianceStatus, ControlResult, Namespace,
                            NetworkPolicy, RecordState)
from handler.publish import compact_json
from handler.state import ClusterState, Plan, finding_id, plan_deleted, plan_scanned, plan_unreadable

REF = ClusterRef("123456789012", "eu-west-1", "alpha")
RESOURCE = {"Type": "AwsEksCluster", "Id": REF.arn, "Partition": "aws", "Region": "eu-west-1"}
NETPOL = namespace_network_policy.CONTROL_ID
SCAN_ID = finding_id(REF, scan_status.CONTROL_ID, None)
DAY1, DAY2, DAY3 = "2025-01-01T00:00:00.000Z", "2025-01-02T00:00:00.000Z", "2025-01-03T00:00:00.000Z"
DAY20, DAY31, DAY40 = "2025-01-20T00:00:00.000Z", "2025-01-31T00:00:00.000Z", "2025-02-09T00:00:00.000Z"


def res(namespace: str, status: ComplianceStatus = ComplianceStatus.FAILED) -> ControlResult:
    return ControlResult(NETPOL, namespace, status, f"title {namespace}", f"description {namespace}")


def fid(namespace: str) -> str:
    return finding_id(REF, NETPOL, namespace)


def by_id(plan: Plan) -> dict[str, dict]:
    return {f["Id"]: f for f in list(plan_findings(plan))}


def scan(previous, now, *results) -> Plan:
    return plan_scanned(previous, REF, RESOURCE, results, now)


def test_first_scan_all_active_created_now():
    plan = scan(None, DAY1, res("a"), res("b", ComplianceStatus.PASSED))
    sent = by_id(plan)
    assert set(sent) == {fid("a"), fid("b")}
    for f in sent.values():
        assert f["RecordState"] == "ACTIVE" and f["CreatedAt"] == f["UpdatedAt"] == DAY1
    assert plan.archived == 0
    assert plan.next_state.active_ids == {fid("a"), fid("b")}


def test_unchanged_finding_is_reported_but_not_imported_again_until_refresh_is_due():
    first = scan(None, DAY1, res("a")).next_state
    second = scan(first, DAY2, res("a"))
    assert second.send_ids == frozenset()
    f = by_id(second)[fid("a")]  # still in the run's S3 picture, as last imported
    assert (f["CreatedAt"], f["UpdatedAt"]) == (DAY1, DAY1)
    due = plan_scanned(second.next_state, REF, RESOURCE, [res("a")], DAY20, refresh=dt.timedelta(days=7))
    assert due.send_ids == {fid("a")}
    assert (by_id(due)[fid("a")]["CreatedAt"], by_id(due)[fid("a")]["UpdatedAt"]) == (DAY1, DAY20)


@pytest.mark.parametrize("change", [
    lambda r: r._replace(status=ComplianceStatus.PASSED),
    lambda r: r._replace(title="another title"),
    lambda r: r._replace(description="another description"),
    lambda r: r._replace(evidence=("policy-x",)),
])
def test_a_changed_finding_is_imported_at_once(change):
    first = scan(None, DAY1, res("a"), res("b")).next_state
    second = scan(first, DAY2, change(res("a")), res("b"))
    assert second.send_ids == {fid("a")}
    assert by_id(second)[fid("a")]["UpdatedAt"] == DAY2 and by_id(second)[fid("b")]["UpdatedAt"] == DAY1


def test_a_changed_cluster_resource_imports_every_finding():
    first = scan(None, DAY1, res("a"), res("b")).next_state
    upgraded = {**RESOURCE, "Details": {"AwsEksCluster": {"Version": "1.32"}}}
    assert plan_scanned(first, REF, upgraded, [res("a"), res("b")], DAY2).send_ids == {fid("a"), fid("b")}


def test_state_written_before_digests_is_imported_once_more():
    legacy = ClusterState.from_dict(json.loads(json.dumps(scan(None, DAY1, res("a")).next_state.to_dict())
                                               .replace('"digest"', '"old_field"')))
    assert scan(legacy, DAY2, res("a")).send_ids == {fid("a")}


def test_fixed_namespace_keeps_its_id():
    first = scan(None, DAY1, res("a", ComplianceStatus.FAILED))
    second = scan(first.next_state, DAY2, res("a", ComplianceStatus.PASSED))
    assert [f["Id"] for f in list(plan_findings(first))] == [f["Id"] for f in list(plan_findings(second))] == [fid("a")]
    f = list(plan_findings(second))[0]
    assert f["Compliance"]["Status"] == "PASSED" and f["RecordState"] == "ACTIVE" and f["CreatedAt"] == DAY1


def test_gone_namespace_is_archived_with_same_id():
    first = scan(None, DAY1, res("a"), res("b")).next_state
    plan = scan(first, DAY2, res("a"))
    sent = by_id(plan)
    assert sent[fid("b")]["RecordState"] == "ARCHIVED"
    assert sent[fid("b")]["UpdatedAt"] == DAY2 and sent[fid("b")]["CreatedAt"] == DAY1
    assert sent[fid("a")]["RecordState"] == "ACTIVE"
    assert plan.archived == 1
    assert plan.next_state.findings[fid("b")].record_state is RecordState.ARCHIVED


def test_archived_not_resent_and_dropped_after_30_days():
    s1 = scan(None, DAY1, res("a"), res("b")).next_state
    s2 = scan(s1, DAY2, res("a")).next_state  # b archived on DAY2
    p3 = scan(s2, DAY20, res("a"))
    assert set(by_id(p3)) == {fid("a")} and p3.archived == 0
    assert fid("b") in p3.next_state.findings  # still remembered inside 30 days
    p4 = scan(p3.next_state, DAY40, res("a"))  # 38 days after the archive
    assert fid("b") not in p4.next_state.findings
    assert set(by_id(p4)) == {fid("a")}


def test_namespace_back_within_30_days_keeps_first_created_at():
    s1 = scan(None, DAY1, res("a"), res("b")).next_state
    s2 = scan(s1, DAY2, res("a")).next_state
    f = by_id(scan(s2, DAY31, res("a"), res("b")))[fid("b")]
    assert (f["RecordState"], f["CreatedAt"], f["UpdatedAt"]) == ("ACTIVE", DAY1, DAY31)


def test_namespace_back_after_30_days_is_new():
    s1 = scan(None, DAY1, res("a"), res("b")).next_state
    s2 = scan(s1, DAY2, res("a")).next_state
    s3 = scan(s2, DAY40, res("a")).next_state
    assert by_id(scan(s3, DAY40, res("a"), res("b")))[fid("b")]["CreatedAt"] == DAY40


def test_unreadable_leaves_earlier_findings_and_sends_one_not_available():
    s1 = scan(None, DAY1, res("a"), res("b", ComplianceStatus.PASSED)).next_state
    plan = plan_unreadable(s1, REF, None, "HTTP 401 on /api/v1/namespaces", DAY2)
    assert len(list(plan_findings(plan))) == 1
    f = list(plan_findings(plan))[0]
    assert f["Id"] == SCAN_ID and f["Compliance"]["Status"] == "NOT_AVAILABLE" and f["RecordState"] == "ACTIVE"
    assert REF.arn in [r["Id"] for r in f["Resources"]]
    assert "HTTP 401" in f["Description"]
    for key, old in s1.findings.items():
        assert plan.next_state.findings[key] == old  # exactly as they were
    assert plan.archived == 0
    assert plan.next_state.cluster_resource == RESOURCE  # kept from the earlier state


def test_unreadable_without_previous_state():
    plan = plan_unreadable(None, REF, None, "timeout", DAY1)
    assert [f["Id"] for f in list(plan_findings(plan))] == [SCAN_ID]
    assert list(plan_findings(plan))[0]["Resources"][0]["Id"] == REF.arn
    assert set(plan.next_state.findings) == {SCAN_ID}


def test_repeated_failures_keep_not_available_created_at():
    s1 = plan_unreadable(None, REF, RESOURCE, "one", DAY1).next_state
    f = list(plan_findings(plan_unreadable(s1, REF, RESOURCE, "two", DAY2)))[0]
    assert (f["CreatedAt"], f["UpdatedAt"]) == (DAY1, DAY2)
    assert "two" in f["Description"]


def test_success_after_failure_archives_not_available():
    s1 = scan(None, DAY1, res("a")).next_state
    s2 = plan_unreadable(s1, REF, RESOURCE, "down", DAY2).next_state
    plan = scan(s2, DAY3, res("a"))
    sent = by_id(plan)
    assert sent[SCAN_ID]["RecordState"] == "ARCHIVED"
    assert sent[SCAN_ID]["Compliance"]["Status"] == "NOT_AVAILABLE"
    assert sent[fid("a")]["RecordState"] == "ACTIVE" and sent[fid("a")]["CreatedAt"] == DAY1
    assert SCAN_ID not in plan.next_state.active_ids


def test_deleted_archives_every_active_finding():
    s1 = scan(None, DAY1, res("a"), res("b"), res("c")).next_state
    s2 = scan(s1, DAY2, res("a"), res("b")).next_state  # c archived already
    plan = plan_deleted(s2, REF, DAY3)
    assert sorted(f["Id"] for f in list(plan_findings(plan))) == sorted([fid("a"), fid("b")])
    assert all(f["RecordState"] == "ARCHIVED" and f["UpdatedAt"] == DAY3 for f in list(plan_findings(plan)))
    assert plan.archived == 2
    assert plan.next_state.active_ids == set()
    assert list(plan_findings(plan_deleted(plan.next_state, REF, DAY3))) == []  # nothing left to archive


def test_a_deleted_cluster_is_forgotten_once_every_archive_is_accepted():
    s1 = scan(None, DAY1, res("a"), res("b")).next_state
    plan = plan_deleted(s1, REF, DAY2)
    assert plan.settle(s1, []) is None
    kept = plan.settle(s1, [fid("b")])  # b's archive was rejected: kept ACTIVE, to be archived next run
    assert kept is not None and kept.active_ids == {fid("b")}
    assert plan_deleted(None, REF, DAY2).report_ids == ()  # another run forgot it already


def test_settle_without_rejections_is_next_state():
    plan = scan(None, DAY1, res("a"))
    assert plan.settle(None, []) is plan.next_state


def test_settle_rejected_archive_is_retried_next_run():
    s1 = scan(None, DAY1, res("a"), res("b")).next_state
    plan = scan(s1, DAY2, res("a"))  # archives b
    settled = plan.settle(s1, [fid("b")])
    assert settled.findings[fid("b")] == s1.findings[fid("b")]  # still ACTIVE as before
    retry = scan(settled, DAY3, res("a"))
    assert by_id(retry)[fid("b")]["RecordState"] == "ARCHIVED" and retry.archived == 1


def test_settle_rejected_update_keeps_previous_record():
    s1 = scan(None, DAY1, res("a", ComplianceStatus.FAILED)).next_state
    plan = scan(s1, DAY2, res("a", ComplianceStatus.PASSED))
    settled = plan.settle(s1, [fid("a")])
    assert settled.findings[fid("a")].result.status is ComplianceStatus.FAILED
    assert settled.findings[fid("a")].updated_at == DAY1


def test_settle_drops_new_rejected_records():
    s1 = scan(None, DAY1, res("a")).next_state
    plan = scan(s1, DAY2, res("a", ComplianceStatus.PASSED), res("new"))
    settled = plan.settle(s1, [fid("new")])
    assert fid("new") not in settled.findings
    assert settled.findings[fid("a")].updated_at == DAY2
    assert fid("x") not in plan.settle(None, [fid("x")]).findings
    first = scan(None, DAY1, res("a"))
    assert first.settle(None, [fid("a")]).findings == {}


def test_state_round_trip_is_json():
    s1 = scan(None, DAY1, res("a", ComplianceStatus.PASSED), res("b")).next_state
    s2 = plan_unreadable(scan(s1, DAY2, res("a")).next_state, REF, None, "x", DAY3).next_state
    data = json.loads(json.dumps(s2.to_dict()))
    back = ClusterState.from_dict(data)
    assert back == s2
    assert back.findings[fid("b")].record_state is RecordState.ARCHIVED
    assert back.to_dict() == s2.to_dict()


@pytest.mark.parametrize("resource", [RESOURCE, None, {**RESOURCE, "findings": {}, "Details": {"ü": "\u2028"}}])
def test_state_encoded_a_finding_at_a_time_is_its_compact_json(resource):
    """What save_state compresses: the same JSON as the whole state encoded at once, with texts made when read,
    active and archived findings, exemption fields, and a cluster resource that has a "findings" key of its own."""
    found = Evaluator().evaluate(ClusterSnapshot(ClusterInfo(REF, "https://x", ""), (Namespace("a"), Namespace("b")),
                                                 (NetworkPolicy("a", "deny", {"podSelector": {}}),)), DAY1)
    first = plan_scanned(None, REF, resource, [*found, res("ü", ComplianceStatus.WARNING)._replace(
        fields={"eks-netpol-scanner/exemption/by": "jane"})], DAY1).next_state
    later = scan(first, DAY2, *found[:2]).next_state
    for state in (ClusterState(REF), first, later):
        pieces = list(state.encoded())
        assert b"".join(pieces) == compact_json(state.to_dict())
        assert len(pieces) == len(state.findings) + 2


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_wrong_state_version_raises(version):
    data = scan(None, DAY1, res("a")).next_state.to_dict()
    data["version"] = version
    with pytest.raises(ValueError, match="version"):
        ClusterState.from_dict(data)


def _states() -> list[ClusterState]:
    """States as scans leave them: texts made when read and as text, archives, exemption fields, an unreadable
    cluster's finding, and none."""
    found = Evaluator().evaluate(ClusterSnapshot(ClusterInfo(REF, "https://x", ""),
                                                 tuple(Namespace(n) for n in ("a", "b", "team-ü", "prod")),
                                                 (NetworkPolicy("a", "deny", {"podSelector": {}}),)), DAY1)
    first = plan_scanned(None, REF, RESOURCE, [*found, res("x")._replace(fields={"k": "v"})], DAY1).next_state
    later = scan(first, DAY2, *found[:5]).next_state
    return [ClusterState(REF), first, later, plan_unreadable(later, REF, None, "timed out", DAY3).next_state]


@pytest.mark.parametrize("dump", [lambda d: json.dumps(d, separators=(",", ":"), sort_keys=True),
                                  lambda d: json.dumps(d, indent=2), lambda d: json.dumps(d, ensure_ascii=False)],
                         ids=["as written", "indented, keys unsorted", "not ASCII"])
def test_a_state_read_a_finding_at_a_time_is_the_one_json_loads_makes(dump):
    for state in _states():
        text = dump(state.to_dict())
        read = ClusterState.from_json(text)
        assert read == ClusterState.from_dict(json.loads(text)) == state
        assert read.to_dict() == state.to_dict() and b"".join(read.encoded()) == compact_json(state.to_dict())


@pytest.mark.parametrize("text", ["", "[]", '{"version":1', '{"version" 1}', '{"version":1,}', '{"version":1} x',
                                  '{1:2}', '{"version":1,"findings":{"id":{}}}', '{"version":2,"findings":{}}'])
def test_a_state_that_is_not_one_is_refused(text):
    with pytest.raises((ValueError, KeyError)):
        ClusterState.from_json(text)


def test_a_state_read_back_holds_what_its_findings_repeat_once():
    """Texts that differ only by the namespace's name, ids, times and evidence are held once: 3,000 namespaces'
    findings held 1,208 bytes each when read with json.loads on main (tracemalloc), most of them their texts."""
    namespaces = tuple(Namespace(f"team-{i:05d}") for i in range(3000))
    policies = tuple(NetworkPolicy(ns.name, "default-deny", {"podSelector": {}}) for ns in namespaces[::3])
    found = Evaluator().evaluate(ClusterSnapshot(ClusterInfo(REF, "https://x", ""), namespaces, policies), DAY1)
    text = b"".join(plan_scanned(None, REF, RESOURCE, found, DAY1).next_state.encoded()).decode()
    tracemalloc.start()
    try:
        state = ClusterState.from_json(text)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(state.findings) == len(found)
    assert held / len(found) < 650, f"{held / len(found):.0f} bytes a finding"

"""Verdict texts are made when read (models.Wording), and say exactly what the eagerly formatted ones said.

tests/unit/data/verdict_texts.json holds the texts of the snapshots below as formatted by the code before texts
were made lazily (main at ef51631), for every namespace control and status, with exemptions, unreadable kinds,
EKS Auto Mode NodeClasses, enforcement and networking_k8s_io_only. Remake it only when a text is meant to change:
    .venv/bin/python -m tests.unit.test_verdict_texts > tests/unit/data/verdict_texts.json
"""
from __future__ import annotations

import datetime as dt
import json
import pathlib
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

from handler.controls import CONTROLS, EvaluationOptions
from handler.evaluation import Evaluator
from handler.exemptions import ANNOTATION, ANNOTATION_UNTIL, Exemption
from handler.models import (ClusterInfo, ClusterRef, ClusterSnapshot, ComplianceStatus, ControlResult,
                            EnforcementEvidence, Namespace, NetworkPolicy, PodDefault, UnselectedPods)

EXPECTED = pathlib.Path(__file__).parent / "data" / "verdict_texts.json"
REF = ClusterRef("123456789012", "eu-west-1", "alpha")
NOW = "2026-12-01T00:00:00Z"
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
ALLOW_ALL_INGRESS = {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}
NOT_UNDERSTOOD = {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Sometimes"}]}}
NAMESPACES = (
    Namespace("denies"), Namespace("open"), Namespace("busy"), Namespace("empty"), Namespace("cilium-only"),
    Namespace("unclear"), Namespace("going", terminating=True), Namespace("going-with-policy", terminating=True),
    Namespace("legacy", annotations={ANNOTATION: "vendor appliance", ANNOTATION_UNTIL: "2026-12-20"}),
    Namespace("no-expiry", annotations={ANNOTATION: "vendor appliance"}), Namespace("config-exempt"),
    Namespace("expired"))
POLICIES = (
    NetworkPolicy("denies", "default-deny", DENY_ALL), NetworkPolicy("open", "default-deny", DENY_ALL),
    NetworkPolicy("open", "allow-all", ALLOW_ALL_INGRESS),
    *(NetworkPolicy("busy", f"p{i:02d}", DENY_ALL) for i in range(25)),
    NetworkPolicy("cilium-only", "cnp", {"endpointSelector": {}, "ingress": [{}]}, "CiliumNetworkPolicy",
                  "cilium.io/v2"),
    NetworkPolicy("unclear", "odd", NOT_UNDERSTOOD), NetworkPolicy("going-with-policy", "default-deny", DENY_ALL))
EXEMPTIONS = (
    Exemption("migration", "jane@example.com", dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc), namespace="config-*",
              until_text="2026-12-31"),
    Exemption("old", "bob@example.com", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), namespace="expired"))
NOT_ENFORCED = EnforcementEvidence(absent=("aws-node: network policy agent off",))
CASES: dict[str, tuple[dict[str, Any], bool]] = {  # snapshot fields, networking_k8s_io_only
    "enforced": ({"enforcement": EnforcementEvidence(engines=("vpc-cni network policy agent",))}, False),
    "not-enforced, k8s only": ({"enforcement": NOT_ENFORCED}, True),
    "unreadable kinds": ({"unreadable": ("CiliumNetworkPolicy: 403 Forbidden",), "enforcement": NOT_ENFORCED}, False),
    "nodes deny": ({"unselected_pods": UnselectedPods(PodDefault.DENY, "every node is of NodeClass secure",
                                                      ("secure",))}, False),
    "some nodes deny": ({"unselected_pods": UnselectedPods(PodDefault.SOME_DENY, "only some nodes deny")}, False),
    "nodes unknown": ({"unselected_pods": UnselectedPods(PodDefault.UNKNOWN, "NodeClasses could not be read")},
                      False),
}
NAMESPACE_CONTROLS = {c.id for c in CONTROLS} - {"cis-k8s-5.3.1"}


def evaluated() -> Iterator[tuple[str, ControlResult]]:
    for case, (fields, k8s_only) in CASES.items():
        snapshot = ClusterSnapshot(ClusterInfo(REF, "https://x", ""), NAMESPACES, POLICIES, **fields)
        evaluator = Evaluator(EvaluationOptions(networking_k8s_io_only=k8s_only), EXEMPTIONS)
        for result in evaluator.evaluate(snapshot, NOW):
            yield f"{case} / {result.control_id} / {result.namespace}", result


def said(result: ControlResult) -> list[str]:
    return [result.status.value, result.title, result.description]


def test_texts_made_when_read_are_the_eagerly_formatted_ones():
    expected = json.loads(EXPECTED.read_text())
    found = {key: said(result) for key, result in evaluated()}
    assert found.keys() == expected.keys()
    for key, texts in found.items():
        assert texts == expected[key], key


def test_the_expected_texts_cover_every_namespace_control_and_status():
    seen = {(r.control_id, r.status) for _, r in evaluated() if r.namespace is not None}
    want = {(control, status) for control in NAMESPACE_CONTROLS for status in ComplianceStatus}
    # 5.3.2 and isolation have no other statuses; an exemption turns FAILED into WARNING.
    assert seen == want


def test_a_result_reads_and_compares_as_its_texts():
    for _, result in evaluated():
        texts = ControlResult(*result[:3], result.title, result.description, *result[5:])
        assert result == texts and not result != texts and (result.title, result.description) == (texts.title,
                                                                                                 texts.description)
        assert ControlResult.from_dict(result.to_dict()) == result
        assert result != texts._replace(description=texts.description + " ")


def test_the_results_of_a_large_cluster_hold_no_texts():
    """A namespace's texts are made when read: the results hold what they are made from, mostly shared, not the
    strings (about 590 bytes a result when they did: three quarters of the results' heap)."""
    namespaces = tuple(Namespace(f"team-{i:05d}") for i in range(3000))
    policies = tuple(NetworkPolicy(ns.name, "default-deny", DENY_ALL) for ns in namespaces[::3])
    snapshot = ClusterSnapshot(ClusterInfo(REF, "https://x", ""), namespaces, policies)
    snapshot.coverage  # the analysis is not what is measured  # noqa: B018
    tracemalloc.start()
    try:
        results = Evaluator().evaluate(snapshot, NOW)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(results) == 3 * len(namespaces) + 1
    assert held / len(results) < 250, f"{held / len(results):.0f} bytes a result"


if __name__ == "__main__":  # remakes the expected texts (module docstring)
    json.dump({key: said(result) for key, result in evaluated()}, sys.stdout, indent=0, sort_keys=True)
    print()

"""Evaluation as the namespaces are read (handler/evaluation.py): page by page, over any split and after a list
that starts over, the results are those of the whole snapshot at once, in the same order. And what makes that
fast: a NetworkPolicy analysed once per name and spec, the collector paused, the read's threads charged."""
from __future__ import annotations

import gc
import threading

from hypothesis import example, given, settings
from hypothesis import strategies as st

from handler import collector
from handler.evaluation import Evaluation, Evaluator, evaluate
from handler.exemptions import ANNOTATION, ANNOTATION_UNTIL
from handler.models import (EMPTY, ClusterInfo, ClusterRef, ClusterSnapshot, EnforcementEvidence, Namespace,
                            NetworkPolicy)
from handler.policy.coverage import AnalysedAsRead, PolicyIndex
from handler.policy.engines import POLICY_APIS, analyze, analyze_alone
from handler.run.stages import StageLedger
from tests.corpus import manifests

REF = ClusterRef("123456789012", "eu-west-1", "alpha")
NOW = "2026-12-02T00:00:00Z"
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
ALLOW_ALL_INGRESS = {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}
BAD_EGRESS = {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "not-a-cidr"}}]}],
              "policyTypes": ["Egress"]}
GLOBAL = ("GlobalNetworkPolicy", "projectcalico.org/v3")


def cluster(size: int, unreadable: tuple[str, ...] = ()) -> ClusterSnapshot:
    """Namespaces of two teams, some being deleted, some exempted by annotation; in them a default deny, an allow
    all, a policy whose egress cannot be interpreted, or none; and a Calico GlobalNetworkPolicy over team a."""
    namespaces, policies = [], []
    for i in range(size):
        name = f"ns-{i:03d}"
        annotations = {ANNOTATION: "reviewed", ANNOTATION_UNTIL: "2027-01-01"} if i % 11 == 0 else EMPTY
        namespaces.append(Namespace(name, {"team": "a" if i % 2 else "b"}, annotations, terminating=i % 13 == 5))
        spec = (DENY_ALL, ALLOW_ALL_INGRESS, BAD_EGRESS, None)[i % 4]
        if spec is not None:
            policies.append(NetworkPolicy(name, ("deny", "open", "bad")[i % 4], spec))
    policies.append(NetworkPolicy("", "team-a", {"selector": "team == 'a'", "types": ["Ingress"]}, *GLOBAL))
    return ClusterSnapshot(ClusterInfo(REF, "https://x", ""), tuple(namespaces), tuple(policies),
                           unreadable=unreadable, enforcement=EnforcementEvidence(absent=("aws-node",)))


def as_dicts(results) -> list[dict]:
    return [r.to_dict() for r in results]


def by_pages(snapshot: ClusterSnapshot, sizes: list[int], restart_after: int | None) -> Evaluation:
    """An evaluation given `snapshot`'s namespaces in pages of `sizes` (the last size repeated), started over
    after `restart_after` pages (as a 410 Gone restarts the list) and given them all again."""
    evaluation = Evaluation(Evaluator())
    evaluation.begin(ClusterSnapshot(snapshot.cluster, (), snapshot.policies, unreadable=snapshot.unreadable,
                                     enforcement=snapshot.enforcement))
    rounds = [restart_after, None] if restart_after is not None else [None]
    for limit in rounds:
        start, page = 0, 0
        while start < len(snapshot.namespaces) and (limit is None or page < limit):
            size = sizes[min(page, len(sizes) - 1)]
            evaluation.add(snapshot.namespaces[start:start + size])
            start, page = start + size, page + 1
        if limit is not None:
            evaluation.restart()
    return evaluation


@settings(max_examples=60, deadline=None, derandomize=True)
@given(size=st.integers(0, 60), sizes=st.lists(st.integers(1, 25), min_size=1, max_size=6),
       restart_after=st.none() | st.integers(0, 4), unreadable=st.booleans())
@example(size=40, sizes=[7], restart_after=2, unreadable=False)
def test_page_by_page_is_the_whole_snapshot_at_once(size, sizes, restart_after, unreadable):
    snapshot = cluster(size, ("CiliumNetworkPolicy (ciliumnetworkpolicies.cilium.io): HTTP 403",) if unreadable else ())
    whole = evaluate(snapshot, now=NOW)

    evaluated, results = by_pages(snapshot, sizes, restart_after).finish(snapshot, NOW)

    assert as_dicts(results) == as_dicts(whole)
    assert dict(evaluated.coverage) == dict(ClusterSnapshot(snapshot.cluster, snapshot.namespaces,
                                                            snapshot.policies).coverage)


def test_the_example_cluster_has_every_kind_of_verdict():
    # So that the property above compares something: each status, exemptions and the cluster's own finding.
    results = evaluate(cluster(40), now=NOW)
    assert {r.status.value for r in results} >= {"PASSED", "FAILED", "WARNING", "NOT_AVAILABLE"}
    assert any("Exempted" in r.description for r in results)
    assert [r.control_id for r in results if r.namespace is None] == ["cis-k8s-5.3.1"]


def test_namespaces_not_given_are_evaluated_when_the_read_finishes():
    snapshot = cluster(30)
    evaluation = by_pages(snapshot, [10], restart_after=None)
    evaluation.restart()  # what was given is dropped, as after a list started over that never ended
    evaluation.add(snapshot.namespaces[:5])

    _, results = evaluation.finish(snapshot, NOW)

    assert as_dicts(results) == as_dicts(evaluate(snapshot, now=NOW))


def test_a_network_policy_is_analysed_once_per_name_and_spec():
    first = analyze(NetworkPolicy("one", "deny", dict(DENY_ALL)), Namespace("one"))
    same = analyze(NetworkPolicy("two", "deny", dict(DENY_ALL)), Namespace("two"))
    renamed = analyze(NetworkPolicy("two", "deny-all", dict(DENY_ALL)), Namespace("two"))
    other = analyze(NetworkPolicy("two", "deny", {**DENY_ALL, "policyTypes": ["Ingress"]}), Namespace("two"))

    assert same is first
    assert renamed is not first and renamed.short_name == "deny-all"
    assert other.egress != first.egress


def test_a_direction_not_understood_names_its_own_namespace_each_time():
    one = analyze(NetworkPolicy("one", "bad", BAD_EGRESS), Namespace("one"))
    two = analyze(NetworkPolicy("two", "bad", BAD_EGRESS), Namespace("two"))
    assert one.egress.unknown.startswith("NetworkPolicy one/bad:")
    assert two.egress.unknown.startswith("NetworkPolicy two/bad:")


def test_a_spec_made_in_code_is_analysed_too():
    effect = analyze(NetworkPolicy("one", "empty", EMPTY), Namespace("one"))  # a mappingproxy: not marshalled
    assert effect.ingress.isolates and not effect.egress.isolates


def test_a_policy_analysed_as_read_is_looked_up_not_analysed_again():
    analysed = AnalysedAsRead()
    bad = NetworkPolicy("one", "bad", BAD_EGRESS)  # a direction not understood: analysed anew each time
    analysed.add(bad)
    coverage = PolicyIndex([bad], analysed).coverage([Namespace("one", {"team": "a"})])["one"]

    assert coverage.effects == (analysed.effect(bad),)
    assert coverage.effects[0] is analysed.effect(bad)
    assert analysed.effect(NetworkPolicy("one", "bad", BAD_EGRESS)) is None  # an equal policy, but another read's


def test_only_namespaced_policies_of_kinds_blind_to_namespace_labels_are_analysed_alone():
    assert {(api.group, api.kind) for api in POLICY_APIS if api.spec_alone} == {
        ("networking.k8s.io", "NetworkPolicy"), ("networking.k8s.aws", "ApplicationNetworkPolicy")}
    calico = NetworkPolicy("one", "team", {"selector": "all()", "types": ["Ingress"]}, "NetworkPolicy",
                           "projectcalico.org/v3")
    assert analyze_alone(calico) is None  # a Calico policy's selectors can name its namespace's labels
    assert analyze_alone(NetworkPolicy("", "team-a", {"selector": "team == 'a'"}, *GLOBAL)) is None
    assert analyze_alone(NetworkPolicy("one", "deny", DENY_ALL)) == analyze(NetworkPolicy("one", "deny", DENY_ALL),
                                                                            Namespace("one"))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(labels=st.dictionaries(st.sampled_from(["team", "environment", "kubernetes.io/metadata.name", "app",
                                               "projectcalico.org/name", "io.cilium.k8s.policy.cluster"]),
                              st.sampled_from(["a", "prod", "corpus", "kube-system", ""]), max_size=4))
def test_a_kind_analysed_alone_does_the_same_to_its_namespace_whatever_its_labels(labels):
    # Over every manifest of the real-world corpus of such a kind: PolicyApi.spec_alone must be true of them.
    spec_alone = {(api.group, api.kind) for api in POLICY_APIS if api.spec_alone}
    policies = [m.policy for m in manifests()]
    alone = [p for p in policies if (p.api_version.split("/")[0], p.kind) in spec_alone]
    assert len(alone) >= 20
    for policy in alone:
        assert analyze(policy, Namespace(policy.namespace, labels)) == analyze_alone(policy), policy.name


def test_overlapping_pauses_of_the_collector_resume_it_after_the_last():
    assert gc.isenabled()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def second() -> None:
        first_in.wait()
        with collector.paused():
            second_in.set()
            first_out.wait()
            seen.append(gc.isenabled())  # the first pause has ended; this one has not

    thread = threading.Thread(target=second)
    thread.start()
    with collector.paused():
        first_in.set()
        second_in.wait()
    first_out.set()
    thread.join()

    assert seen == [False]
    assert gc.isenabled()


def test_pauses_that_keep_overlapping_still_collect_the_young_generation_every_max_pause_seconds():
    now = [0.0]
    pauses = collector._Pauses(lambda: now[0])
    passes: list[int] = []
    watch = lambda phase, info: phase == "start" and passes.append(info["generation"])  # noqa: E731
    gc.callbacks.append(watch)
    try:
        with pauses():  # a long scan, while shorter ones start and end
            for ended_at, collected in ((5.0, []), (collector.MAX_PAUSE_SECONDS + 1, [0]), (15.0, [0]),
                                        (2 * collector.MAX_PAUSE_SECONDS + 2, [0, 0])):
                with pauses():
                    now[0] = ended_at
                assert passes == collected, ended_at
                assert not gc.isenabled()
    finally:
        gc.callbacks.remove(watch)
    assert gc.isenabled() and passes == [0, 0]


def test_a_collector_paused_before_stays_paused():
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_cpu_spent_by_another_thread_is_charged_to_the_open_stage():
    now = [0.0]
    ledger = StageLedger(lambda: now[0])
    with ledger.stage("read"):
        now[0] += 1.0
        ledger.charge(0.25)
    ledger.charge(5.0)  # no stage open: counted as charged, to no stage

    assert ledger.take() == {"read": 1.25}
    assert ledger.charged() == 5.25

"""ClusterReader against the Kubernetes API test server over TLS, with real EKS tokens: paging and every fault."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from handler.targets.auth import eks_token
from handler.cluster_reader import MAX_LIST_RESTARTS, ClusterReader, ReadLimits
from handler.errors import ClusterReadError
from handler.models import ClusterInfo, ClusterRef
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import Cluster, KubeApiServer, generate_tls

DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress"]}


class Target:
    def __init__(self, world: World, cluster: Cluster, server: KubeApiServer) -> None:
        self.world, self.cluster, self.server = world, cluster, server
        self.info = ClusterInfo(ClusterRef(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster.name), server.endpoint,
                                server.ca_data)
        self.sleeps: list[float] = []

    def token(self, cluster_name: str | None = None) -> str:
        return eks_token(self.world.session(), cluster_name or self.cluster.name, DEFAULT_REGION)

    def read(self, **limits: float):
        reader = ClusterReader(ReadLimits(**limits), sleep=self.sleeps.append)
        return reader.read(self.info, self.token())


@pytest.fixture
def target() -> Iterator[Target]:
    cluster = Cluster("reader", {"default": {}, "web": {"deny": DENY_ALL}})
    with World() as world, KubeApiServer(cluster, world.verifier) as server:
        yield Target(world, cluster, server)


def list_requests(cluster: Cluster, path: str) -> list[dict]:
    return [r for r in cluster.requests if r["path"] == path]


def test_pages_over_thousands_of_namespaces_with_few_requests(target: Target) -> None:
    namespaces = 1_234
    for i in range(namespaces):
        target.cluster.add_namespace(f"team-{i:04d}", terminating=i == 7)
        if i % 2:
            target.cluster.add_policy(f"team-{i:04d}", "deny", DENY_ALL)

    snapshot = target.read()

    assert len(snapshot.namespaces) == namespaces + 2
    assert len(snapshot.policies) == namespaces // 2 + 1
    assert [ns.name for ns in snapshot.namespaces if ns.terminating] == ["team-0007"]
    ns_requests = list_requests(target.cluster, "/api/v1/namespaces")
    policy_requests = list_requests(target.cluster, "/apis/networking.k8s.io/v1/networkpolicies")
    assert len(ns_requests) <= 2 + math.ceil((namespaces + 2) / 500)
    assert len(policy_requests) <= 2 + math.ceil(len(snapshot.policies) / 500)
    assert len(target.cluster.requests) == snapshot.api_requests
    assert all(int(r["query"]["limit"]) <= 500 for r in ns_requests + policy_requests)
    assert all("as=PartialObjectMetadataList" in r["accept"] for r in ns_requests)
    assert sum("continue" in r["query"] for r in ns_requests) == len(ns_requests) - 1


def test_token_for_another_cluster_is_refused_with_an_access_hint(target: Target) -> None:
    reader = ClusterReader(sleep=target.sleeps.append)
    with pytest.raises(ClusterReadError, match="HTTP 401.*access entry"):
        reader.read(target.info, target.token("another-cluster"))


def test_forbidden_names_the_missing_permission(target: Target) -> None:
    target.cluster.forbid("networkpolicies")
    with pytest.raises(ClusterReadError, match=r"HTTP 403.*networkpolicies.*infra/kubernetes/rbac.yaml"):
        target.read()


def test_not_found_is_a_read_error(target: Target) -> None:
    target.cluster.inject(r"^/apis/networking\.k8s\.io/v1/networkpolicies$", 404)
    with pytest.raises(ClusterReadError, match="HTTP 404"):
        target.read()


def test_too_many_requests_waits_for_retry_after(target: Target) -> None:
    target.cluster.inject(r"^/api/v1/namespaces$", 429, times=2, headers={"Retry-After": "3"})
    snapshot = target.read()
    assert {ns.name for ns in snapshot.namespaces} == {"default", "web"}
    assert target.sleeps == [3.0, 3.0]


def test_retry_after_is_capped(target: Target) -> None:
    target.cluster.inject(r"^/api/v1/namespaces$", 429, times=1, headers={"Retry-After": "86400"})
    target.read()
    assert target.sleeps == [30.0]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_transient_server_errors_are_retried(target: Target, status: int) -> None:
    target.cluster.inject(r"networkpolicies$", status, times=2)
    assert len(target.read().policies) == 1
    assert len(target.sleeps) == 2


def test_persistent_server_errors_fail_after_bounded_attempts(target: Target) -> None:
    target.cluster.inject(r"^/api/v1/namespaces$", 500, times=None)
    with pytest.raises(ClusterReadError, match="HTTP 500"):
        target.read(attempts=3)
    assert len(list_requests(target.cluster, "/api/v1/namespaces")) == 3


def test_read_timeout_is_bounded(target: Target) -> None:
    target.cluster.inject(r"^/api/v1/namespaces$", None, times=None, delay_seconds=1.0)
    with pytest.raises(ClusterReadError, match="timed out"):
        target.read(read_timeout=0.2, attempts=2)
    assert len(target.sleeps) == 1, "want one backoff between the two attempts, then the error"


def expire_after_first_page(cluster: Cluster, wait_seconds: float = 30.0, path: str = "/api/v1/namespaces",
                            change: Callable[[], object] = lambda: None) -> None:
    """Once the first page of `path` is answered: `change`, then every continue token expires."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if any(r["status"] == 200 for r in list_requests(cluster, path)):
            break
        time.sleep(0.005)
    change()
    cluster.expire_continue_tokens()


def test_expired_continue_token_restarts_the_list(target: Target) -> None:
    for i in range(1_100):
        target.cluster.add_namespace(f"ns-{i:04d}")
    # The first page is answered at once; the second is held for a second, during which etcd "compacts": as soon as
    # the first page has been answered (not after a fixed time, which a loaded machine may not keep to).
    target.cluster.inject(r"^/api/v1/namespaces$", None, times=1, delay_seconds=0.01)
    target.cluster.inject(r"^/api/v1/namespaces$", None, times=1, delay_seconds=1.0)
    compaction = threading.Thread(target=expire_after_first_page, args=(target.cluster,))
    compaction.start()
    try:
        snapshot = target.read()
    finally:
        compaction.join()
    assert len(snapshot.namespaces) == 1_102
    statuses = [r["status"] for r in list_requests(target.cluster, "/api/v1/namespaces")]
    assert statuses[:2] == [200, 410] and statuses[2:] == [200, 200, 200]


def test_a_list_that_keeps_expiring_fails(target: Target) -> None:
    for i in range(600):
        target.cluster.add_namespace(f"ns-{i:04d}")
    target.cluster.continue_token_lifetime_pages = 1
    with pytest.raises(ClusterReadError, match="410"):
        target.read()
    assert len(list_requests(target.cluster, "/api/v1/namespaces")) == 2 * (MAX_LIST_RESTARTS + 1)


def test_tls_is_verified_against_the_clusters_ca(target: Target) -> None:
    import base64

    other_ca = base64.b64encode(generate_tls().ca_pem).decode()
    info = ClusterInfo(target.info.ref, target.info.endpoint, other_ca)
    with pytest.raises(ClusterReadError, match="cannot reach.*(CERTIFICATE_VERIFY_FAILED|certificate verify)"):
        ClusterReader(sleep=target.sleeps.append).read(info, target.token())
    assert target.cluster.requests == [], "a request was sent over a connection whose certificate failed"


@pytest.mark.parametrize("endpoint, ca, error", [
    ("http://127.0.0.1:1", None, "not https"),
    (None, "bm90IGEgY2VydGlmaWNhdGU=", "no PEM certificate"),
    (None, "%%%", "not base64"),
])
def test_bad_cluster_coordinates_are_read_errors(target: Target, endpoint, ca, error) -> None:
    info = ClusterInfo(target.info.ref, endpoint or target.info.endpoint, ca or target.info.ca_data)
    with pytest.raises(ClusterReadError, match=error):
        ClusterReader().read(info, target.token())


def test_a_slow_server_ends_the_read_at_its_deadline(target: Target) -> None:
    target.cluster.inject(r"^/api/v1/namespaces$", None, times=None, delay_seconds=6)  # each answer takes 6 s
    reader = ClusterReader(ReadLimits(), sleep=target.sleeps.append)

    with pytest.raises(ClusterReadError, match=r"read did not finish in 2 s"):
        reader.read(target.info, target.token(), deadline=time.monotonic() + 2.4)


def test_a_retry_after_beyond_the_deadline_ends_the_read_without_waiting(target: Target) -> None:
    target.cluster.inject(r"^/api/v1/namespaces$", 429, times=None, headers={"Retry-After": "20"})
    reader = ClusterReader(ReadLimits(), sleep=target.sleeps.append)

    with pytest.raises(ClusterReadError, match=r"read did not finish in 10 s"):
        reader.read(target.info, target.token(), deadline=time.monotonic() + 10.4)
    assert target.sleeps == [] and len(list_requests(target.cluster, "/api/v1/namespaces")) == 1


class Taken:
    """A ClusterAsRead that records what it is given, and evaluates it as the scan does."""

    def __init__(self) -> None:
        from handler.evaluation import Evaluation, Evaluator

        self.evaluation = Evaluation(Evaluator())
        self.calls: list[str] = []
        self.policies_when_begun: int | None = None

    def policies_read(self, policies) -> None:
        self.calls.append(f"policies {len(policies)}")
        self.evaluation.policies_read(policies)

    def begin(self, read_so_far) -> None:
        self.calls.append("begin")
        self.policies_when_begun = len(read_so_far.policies)
        self.evaluation.begin(read_so_far)

    def add(self, namespaces) -> None:
        self.calls.append(f"add {len(namespaces)}")
        self.evaluation.add(namespaces)

    def restart(self) -> None:
        self.calls.append("restart")
        self.evaluation.restart()


def read_taken_while(target: Target, meanwhile: Callable[[], object]) -> tuple[Any, Taken]:
    """The target read as the scan reads it (given to a Taken), while `meanwhile` runs in another thread."""
    thread = threading.Thread(target=meanwhile)
    thread.start()
    taken = Taken()
    try:
        snapshot = ClusterReader(ReadLimits(page_size=500)).read(target.info, target.token(), as_read=taken)
    finally:
        thread.join()
    return snapshot, taken


def results_of(snapshot, results) -> list[dict]:
    return [r.to_dict() for r in results]


def test_policies_then_namespaces_are_given_page_by_page_and_evaluate_as_the_whole(target: Target) -> None:
    from handler.evaluation import evaluate

    for i in range(1_234):
        target.cluster.add_namespace(f"team-{i:04d}", terminating=i == 7)
        if i % 2 == 0:
            target.cluster.add_policy(f"team-{i:04d}", "deny", DENY_ALL)
    taken = Taken()

    snapshot = ClusterReader(ReadLimits(page_size=500)).read(target.info, target.token(), as_read=taken)
    evaluated_snapshot, results = taken.evaluation.finish(snapshot, "2026-12-02T00:00:00Z")

    assert taken.calls == ["policies 500", "policies 118", "begin", "add 500", "add 500", "add 236"]
    assert taken.policies_when_begun == len(snapshot.policies) == 618  # every policy was read before any namespace
    assert results_of(snapshot, results) == results_of(snapshot, evaluate(snapshot, now="2026-12-02T00:00:00Z"))
    assert dict(evaluated_snapshot.coverage) == dict(type(snapshot)(snapshot.cluster, snapshot.namespaces,
                                                                    snapshot.policies).coverage)


def test_a_list_of_namespaces_that_starts_over_is_evaluated_from_its_start_again(target: Target) -> None:
    from handler.evaluation import evaluate

    for i in range(1_100):
        target.cluster.add_namespace(f"ns-{i:04d}")
        if i % 2:
            target.cluster.add_policy(f"ns-{i:04d}", "deny", DENY_ALL)
    target.cluster.inject(r"^/api/v1/namespaces$", None, times=1, delay_seconds=0.01)
    target.cluster.inject(r"^/api/v1/namespaces$", None, times=1, delay_seconds=1.0)

    snapshot, taken = read_taken_while(target, lambda: expire_after_first_page(target.cluster))

    assert "restart" in taken.calls
    after = taken.calls[len(taken.calls) - 1 - taken.calls[::-1].index("restart") + 1:]
    assert after == ["add 500", "add 500", "add 102"]
    assert len(snapshot.namespaces) == 1_102
    _, results = taken.evaluation.finish(snapshot, "2026-12-02T00:00:00Z")
    assert results_of(snapshot, results) == results_of(snapshot, evaluate(snapshot, now="2026-12-02T00:00:00Z"))


def test_a_list_of_policies_that_starts_over_is_evaluated_as_read_the_second_time(target: Target) -> None:
    from handler.evaluation import evaluate

    for i in range(600):
        target.cluster.add_namespace(f"ns-{i:04d}")
        target.cluster.add_policy(f"ns-{i:04d}", "deny", DENY_ALL)
    policies_path = "/apis/networking.k8s.io/v1/networkpolicies"
    target.cluster.inject(f"^{policies_path}$", None, times=1, delay_seconds=0.01)
    target.cluster.inject(f"^{policies_path}$", None, times=1, delay_seconds=1.0)
    # Once the first page (with ns-0000's deny) is given, that policy admits all ingress instead.
    open_all = {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}

    snapshot, taken = read_taken_while(target, lambda: expire_after_first_page(
        target.cluster, path=policies_path, change=lambda: target.cluster.add_policy("ns-0000", "deny", open_all)))

    assert taken.calls[:3] == ["policies 500", "policies 500", "policies 101"]  # the first page, given again
    _, results = taken.evaluation.finish(snapshot, "2026-12-02T00:00:00Z")
    ingress = {r.namespace: r.status.value for r in results if r.control_id == "netpol-default-deny-ingress"}
    assert ingress["ns-0000"] == "FAILED" and ingress["ns-0001"] == "PASSED"
    assert results_of(snapshot, results) == results_of(snapshot, evaluate(snapshot, now="2026-12-02T00:00:00Z"))


def test_a_failure_in_one_list_ends_the_other_and_the_sessions_threads(target: Target) -> None:
    for i in range(3_000):
        target.cluster.add_namespace(f"ns-{i:04d}")
    # Each page of namespaces takes 0.2 s, so their list is still running when the policies' fails.
    target.cluster.inject(r"^/api/v1/namespaces$", None, times=None, delay_seconds=0.2)
    target.cluster.inject(r"^/apis/networking.k8s.io/v1/networkpolicies$", 401, times=None)
    started = time.monotonic()

    with pytest.raises(ClusterReadError, match="HTTP 401 on /apis/networking.k8s.io/v1/networkpolicies"):
        ClusterReader(ReadLimits(page_size=100), sleep=target.sleeps.append).read(target.info, target.token(),
                                                                               as_read=Taken())

    assert time.monotonic() - started < 2.0, "the read waited for the whole list of namespaces (6 s)"
    namespace_pages = len(list_requests(target.cluster, "/api/v1/namespaces"))
    time.sleep(0.5)
    assert len(list_requests(target.cluster, "/api/v1/namespaces")) == namespace_pages, "a list went on after the read"
    assert not [t for t in threading.enumerate() if t.name.startswith(("cluster-list", "cluster-page"))]


def test_the_lists_threads_cpu_is_charged_to_the_reading_threads_stage(target: Target) -> None:
    from handler.run.stages import CPU

    for i in range(2_000):
        target.cluster.add_namespace(f"ns-{i:04d}", labels={"team": f"t{i % 7}"})
    before, charged = CPU.snapshot(), CPU.charged()
    with CPU.stage("read"):
        ClusterReader(ReadLimits(page_size=500)).read(target.info, target.token())
    assert CPU.charged() > charged, "the session's threads parsed and converted pages, and nobody was charged"
    assert CPU.since(before)["read"] >= CPU.charged() - charged

"""EKS Auto Mode and enforcement found where installs do not put it, read over TLS from the Kubernetes API test
server (and, once, through the handler from moto's DescribeCluster): CIS 5.3.1, and what DefaultDeny NodeClasses
do to the isolation verdicts (docs/policy-semantics.md, "EKS Auto Mode NodeClasses")."""
from __future__ import annotations

from dataclasses import replace

import pytest

from handler.controls import namespace_isolation, policy_enforcement
from handler.models import ComplianceStatus
from netpol_scan.sandbox.auto_mode import add_auto_mode
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import Cluster
from tests.integration.conftest import by_namespace
from tests.integration.test_policy_engines import AGENT_OFF, AGENT_ON, KINDS, Target, daemonset, serve, with_kinds

PASSED, FAILED, NOT_AVAILABLE = ComplianceStatus.PASSED, ComplianceStatus.FAILED, ComplianceStatus.NOT_AVAILABLE
API_ONLY = {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}
ALLOW_ALL_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}


def auto_cluster(name: str, **auto_mode) -> Cluster:
    cluster = Cluster(name, {"default": {}, "quiet": {}, "shop": {"api": API_ONLY}, "open": {"all": ALLOW_ALL_INGRESS}})
    return add_auto_mode(cluster, **auto_mode)


def read(world: World, cluster: Cluster, auto_mode: bool | None = True):
    with serve(world, cluster) as server:
        target = Target(world, cluster, server)
        target.info = replace(target.info, auto_mode=auto_mode)
        return target.read()


def isolation(snapshot) -> dict[str, tuple]:
    ingress = {r.namespace: r for r in namespace_isolation.INGRESS_CONTROL.evaluate(snapshot)}
    egress = {r.namespace: r for r in namespace_isolation.EGRESS_CONTROL.evaluate(snapshot)}
    return {ns: (ingress[ns].status, egress[ns].status, ingress[ns].description + egress[ns].description)
            for ns in ingress}


# -- CIS 5.3.1 ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("auto_mode", [True, None], ids=["DescribeCluster", "NodeClass kind served"])
def test_auto_mode_with_the_controller_on_enforces(world: World, auto_mode) -> None:
    snapshot = read(world, auto_cluster("auto"), auto_mode)
    (result,) = policy_enforcement.evaluate(snapshot)
    assert result.status is PASSED, result.description
    assert "EKS Auto Mode" in result.description and "enable-network-policy-controller=true" in result.description


def test_auto_mode_without_the_configmap_does_not_enforce(world: World) -> None:
    snapshot = read(world, auto_cluster("auto-off", controller=None))
    (result,) = policy_enforcement.evaluate(snapshot)
    assert result.status is FAILED
    assert "accepted but not enforced" in result.description and "amazon-vpc-cni" in result.description
    assert all(s is not PASSED for s, _, _ in isolation(snapshot).values() if s), "no NodeClass effect without it"


def test_auto_mode_with_other_nodes_whose_agent_is_off_does_not_enforce(world: World) -> None:
    cluster = auto_cluster("mixed")
    cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": "aws-node", "namespace": "kube-system"},
                                                 **AGENT_OFF, "status": {"desiredNumberScheduled": 2}})
    (result,) = policy_enforcement.evaluate(read(world, cluster))
    assert result.status is FAILED and "2 other node(s)" in result.description


@pytest.mark.parametrize("group, namespace, name, label", [
    ("cilium.io", "cilium", "cilium-agent", "cilium"),
    ("projectcalico.org", "networking", "calico-node", "calico-node")])
def test_engine_agent_outside_its_usual_namespace_is_found_by_label(world: World, group, namespace, name,
                                                                    label) -> None:
    cluster = with_kinds(Cluster("custom", {"default": {}}), [k for k in KINDS if k[0] == group])
    cluster.add_resource_kind("apps", "v1", "daemonsets", "DaemonSet", True)
    cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": name, "namespace": namespace,
                                                              "labels": {"k8s-app": label}}, **daemonset([], 3)})
    cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": "other", "namespace": namespace,
                                                              "labels": {"k8s-app": "not-an-agent"}},
                                                 **daemonset([], 3)})
    (result,) = policy_enforcement.evaluate(read(world, cluster, auto_mode=False))
    assert result.status is PASSED and f"DaemonSet {namespace}/{name}, 3 ready" in result.description
    (listed,) = cluster.requests_to(r"^/apis/apps/v1/daemonsets$")
    assert listed["query"]["labelSelector"] == f"k8s-app in ({label})"


def test_engine_agent_where_installs_put_it_needs_no_list(world: World) -> None:
    cluster = with_kinds(Cluster("usual", {"default": {}}), [KINDS[0]])
    cluster.add_resource_kind("apps", "v1", "daemonsets", "DaemonSet", True)
    cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": "cilium", "namespace": "kube-system"},
                                                 **daemonset([], 1)})
    assert policy_enforcement.evaluate(read(world, cluster, auto_mode=False))[0].status is PASSED
    assert not cluster.requests_to(r"^/apis/apps/v1/daemonsets$")


def test_agent_search_forbidden_is_unknown_not_failed(world: World) -> None:
    cluster = with_kinds(Cluster("hidden", {"default": {}}), [KINDS[0]])
    cluster.add_resource_kind("apps", "v1", "daemonsets", "DaemonSet", True)
    cluster.inject(r"^/apis/apps/v1/daemonsets$", 403)  # RBAC with the named gets and without the list
    (result,) = policy_enforcement.evaluate(read(world, cluster, auto_mode=False))
    assert result.status is NOT_AVAILABLE and "outside its usual namespace" in result.description


# -- NodeClasses and isolation --------------------------------------------------------------------------------

def test_default_deny_on_every_node_pool_isolates_namespaces_without_an_opener(world: World) -> None:
    cluster = auto_cluster("locked", node_classes={"default": None, "locked": "DefaultDeny"},
                           node_pools={"apps": "locked", "batch": "locked"})
    verdicts = isolation(read(world, cluster))
    for namespace in ("default", "quiet"):  # no policy: every pod is one no policy selects
        ingress, egress, text = verdicts[namespace]
        assert (ingress, egress) == (PASSED, PASSED), text
        assert "NodeClass locked (networkPolicy: DefaultDeny)" in text
    ingress, egress, text = verdicts["shop"]  # its policy isolates the pods it selects for ingress only
    assert (ingress, egress) == (PASSED, FAILED), text
    assert "leave egress open to pods they select" in text
    assert verdicts["open"][0] is FAILED  # an allow-all opener undoes any default


def test_default_deny_on_some_node_pools_keeps_the_policy_verdict_and_says_so(world: World) -> None:
    cluster = auto_cluster("partial", node_classes={"default": None, "locked": "DefaultDeny"},
                           node_pools={"general-purpose": "default", "secure": "locked"})
    for namespace in ("default", "quiet"):
        ingress, egress, text = isolation(read(world, cluster))[namespace]
        assert (ingress, egress) == (FAILED, FAILED)
        assert "NodePool secure use(s) NodeClass locked" in text and "NodePool general-purpose" in text
        assert "which namespaces' pods run on the DefaultDeny nodes is not known" in text


def test_default_deny_with_nodes_outside_auto_mode_is_partial(world: World) -> None:
    cluster = auto_cluster("hybrid", node_classes={"locked": "DefaultDeny"}, node_pools={"apps": "locked"})
    cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": "aws-node", "namespace": "kube-system"},
                                                 **AGENT_ON, "status": {"desiredNumberScheduled": 3}})
    ingress, _, text = isolation(read(world, cluster))["quiet"]
    assert ingress is FAILED and "3 node(s) outside EKS Auto Mode" in text


def test_unreadable_node_classes_make_isolation_not_available(world: World) -> None:
    cluster = auto_cluster("secret-classes", node_classes={"locked": "DefaultDeny"}, node_pools={"apps": "locked"})
    cluster.forbid("nodeclasses")
    snapshot = read(world, cluster)
    assert policy_enforcement.evaluate(snapshot)[0].status is PASSED
    ingress, egress, text = isolation(snapshot)["quiet"]
    assert (ingress, egress) == (NOT_AVAILABLE, NOT_AVAILABLE) and "nodeclasses.eks.amazonaws.com" in text
    assert isolation(snapshot)["open"][0] is FAILED


def test_node_pools_are_read_only_when_a_node_class_denies(world: World) -> None:
    cluster = auto_cluster("allowing")
    read(world, cluster)
    assert cluster.requests_to(r"^/apis/eks.amazonaws.com/v1/nodeclasses$")
    assert not cluster.requests_to(r"^/apis/karpenter.sh/")


# -- through the handler ----------------------------------------------------------------------------------------

def test_auto_mode_cluster_end_to_end(world: World, invoke) -> None:
    world.enable_security_hub()
    cluster = auto_cluster("auto-e2e", node_classes={"locked": "DefaultDeny"},
                           node_pools={"general-purpose": "locked", "system": "locked"})
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster, auto_mode=True)
    # DescribeCluster decides, not the kinds served: computeConfig.enabled without the NodeClass kind is Auto Mode,
    # the kind without computeConfig.enabled is not (no aws-node there: nothing enforces).
    described = Cluster("described", {"default": {}})
    described.add_resource_kind("", "v1", "configmaps", "ConfigMap", True)
    described.add_object("v1", "configmaps", {"metadata": {"name": "amazon-vpc-cni", "namespace": "kube-system"},
                                              "data": {"enable-network-policy-controller": "true"}})
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, described, auto_mode=True)
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, auto_cluster("standard"), auto_mode=False)
    summary = invoke({"accounts": [DEFAULT_ACCOUNT], "regions": [DEFAULT_REGION]})
    assert summary["clusters_scanned"] == 3, summary
    findings = world.findings()
    enforced = {f["ProductFields"]["kubernetes/cluster"]: f for f in findings
                if f["GeneratorId"].endswith("/cis-k8s-5.3.1")}
    assert enforced["auto-e2e"]["Compliance"]["Status"] == "PASSED", enforced["auto-e2e"]["Description"]
    assert "EKS Auto Mode" in enforced["auto-e2e"]["Description"]
    assert enforced["described"]["Compliance"]["Status"] == "PASSED"
    assert enforced["standard"]["Compliance"]["Status"] == "FAILED"
    egress = by_namespace(findings, "auto-e2e", "eks-netpol-scanner/netpol-default-deny-egress")
    assert egress["quiet"]["Compliance"]["Status"] == "PASSED"
    assert "NodeClass locked" in egress["quiet"]["ProductFields"]["eks-netpol-scanner/evidence"]
    five32 = by_namespace(findings, "auto-e2e")
    assert five32["quiet"]["Compliance"]["Status"] == "FAILED"
    assert policy_enforcement.NOT_ENFORCED not in five32["quiet"]["Description"]
    assert "isolated by the nodes alone" in five32["quiet"]["Description"]  # not "accepts any connection"

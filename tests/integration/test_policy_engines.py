"""Engine policy kinds and enforcement evidence, read by ClusterReader from the Kubernetes API test server over TLS,
then evaluated: the real-world corpus, discovery, RBAC refusals, and enforcement per engine."""
from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest

from handler.cluster_reader import ClusterReader, ReadLimits
from handler.controls import namespace_isolation, namespace_network_policy, policy_enforcement
from handler.targets.auth import eks_token
from handler.models import ClusterInfo, ClusterRef, ComplianceStatus, EnforcementEvidence
from handler.policy import label
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import Cluster, KubeApiServer
from tests.corpus import NAMESPACE_LABELS, classify, manifests, namespace_for

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "policy-semantics.md"
KINDS = [("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True),
         ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", False),
         ("projectcalico.org", "v3", "networkpolicies", "NetworkPolicy", True),
         ("projectcalico.org", "v3", "globalnetworkpolicies", "GlobalNetworkPolicy", False),
         ("policy.networking.k8s.io", "v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy", False),
         ("policy.networking.k8s.io", "v1alpha1", "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", False)]
PLURAL = {kind: (f"{group}/{version}", plural) for group, version, plural, kind, _ in KINDS}
PLURAL["NetworkPolicy/networking.k8s.io"] = ("networking.k8s.io/v1", "networkpolicies")


class Target:
    def __init__(self, world: World, cluster: Cluster, server: KubeApiServer) -> None:
        self.world, self.cluster = world, cluster
        self.info = ClusterInfo(ClusterRef(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster.name), server.endpoint,
                                server.ca_data)

    def read(self):
        token = eks_token(self.world.session(), self.cluster.name, DEFAULT_REGION)
        return ClusterReader(ReadLimits(), sleep=lambda s: None).read(self.info, token)


def with_kinds(cluster: Cluster, kinds=KINDS) -> Cluster:
    for group, version, plural, kind, namespaced in kinds:
        cluster.add_resource_kind(group, version, plural, kind, namespaced)
    return cluster


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World() as w:
        yield w


def serve(world: World, cluster: Cluster):
    return KubeApiServer(cluster, world.verifier)


def place(cluster: Cluster, document: dict, namespace: str) -> tuple[str, str]:
    kind, group = document["kind"], document["apiVersion"].split("/")[0]
    group_version, plural = PLURAL["NetworkPolicy/networking.k8s.io"] if group == "networking.k8s.io" \
        else PLURAL[kind] if group != "projectcalico.org" or kind == "GlobalNetworkPolicy" \
        else ("projectcalico.org/v3", "networkpolicies")
    obj = {k: v for k, v in document.items() if k not in ("apiVersion", "kind")}
    obj["metadata"] = dict(document["metadata"])
    if cluster.kind_of(group_version, plural).namespaced:
        obj["metadata"]["namespace"] = namespace
    cluster.add_object(group_version, plural, obj)
    return group_version, plural


# -- the corpus ----------------------------------------------------------------------------------------------

def documented() -> dict[str, tuple[str, ...]]:
    rows = re.findall(r"^\| `([^`]+\.yaml)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$",
                      DOCS.read_text(), re.M)
    return {file: tuple(c.strip() for c in cells) for file, *cells in rows}


def test_docs_table_lists_every_corpus_file_once():
    assert sorted(documented()) == sorted(m.file for m in manifests())
    assert len(manifests()) == 76


@pytest.fixture(scope="module")
def corpus_server(world: World) -> Iterator[Target]:
    cluster = with_kinds(Cluster("corpus"))
    namespaces = {m.namespace for m in manifests()}
    for name in namespaces:
        cluster.add_namespace(name, labels=NAMESPACE_LABELS.get(name))
    with serve(world, cluster) as server:
        yield Target(world, cluster, server)


@pytest.mark.parametrize("manifest", manifests(), ids=lambda m: m.file)
def test_every_corpus_manifest_is_read_and_classified_as_documented(corpus_server: Target, manifest) -> None:
    group_version, plural = place(corpus_server.cluster, manifest.document, manifest.namespace)
    try:
        snapshot = corpus_server.read()
    finally:
        cluster_scoped = not corpus_server.cluster.kind_of(group_version, plural).namespaced
        corpus_server.cluster.delete_object(group_version, plural, manifest.document["metadata"]["name"],
                                            None if cluster_scoped else manifest.namespace)
    (policy,) = [p for p in snapshot.policies if p.name == manifest.document["metadata"]["name"]]
    assert label(policy) == label(manifest.policy) and policy.spec == manifest.policy.spec
    want = documented()[manifest.file]
    assert want[0] == manifest.namespace
    assert classify(policy, namespace_for(manifest.namespace)) == want[1:]
    coverage = snapshot.coverage[manifest.namespace]
    if want[1] == "rejected":
        assert any(manifest.document["metadata"]["name"] in e for e in coverage.errors)
    if "unknown" in want:
        assert any(manifest.document["metadata"]["name"] in d.unknown
                   for e in coverage.effects for d in (e.ingress, e.egress))


# -- discovery and reading ------------------------------------------------------------------------------------

def test_engine_kinds_are_listed_cluster_wide_only_when_served(world: World) -> None:
    cluster = with_kinds(Cluster("engines"), KINDS[:2])
    for i in range(1_200):
        cluster.add_namespace(f"team-{i:04d}")
        cluster.add_object("cilium.io/v2", "ciliumnetworkpolicies",
                           {"metadata": {"name": "iso", "namespace": f"team-{i:04d}"},
                            "spec": {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}]}]}})
    with serve(world, cluster) as server:
        snapshot = Target(world, cluster, server).read()
    paths = [r["path"] for r in cluster.requests]
    cnp = [p for p in paths if p == "/apis/cilium.io/v2/ciliumnetworkpolicies"]
    assert 1 <= len(cnp) <= 2 + math.ceil(1_200 / 500)
    assert not [p for p in paths if "/namespaces/team-" in p], "listed per namespace"
    assert not [p for p in paths if "projectcalico" in p or "policy.networking" in p], "listed a kind not served"
    assert len(snapshot.policies) == 1_200
    verdicts = {r.namespace: r.status for r in namespace_isolation.INGRESS_CONTROL.evaluate(snapshot)}
    assert verdicts["team-0007"] is ComplianceStatus.PASSED


def test_calico_api_server_view_is_read_once_and_kubernetes_copies_skipped(world: World) -> None:
    cluster = with_kinds(Cluster("calico"), [KINDS[2]])
    cluster.add_resource_kind("crd.projectcalico.org", "v1", "networkpolicies", "NetworkPolicy", True)
    cluster.add_namespace("shop")
    cluster.add_policy("shop", "web", {"podSelector": {}})
    for name in ("knp.default.web", "default.own"):
        cluster.add_object("projectcalico.org/v3", "networkpolicies",
                           {"metadata": {"name": name, "namespace": "shop"}, "spec": {"selector": "all()"}})
    cluster.add_object("crd.projectcalico.org/v1", "networkpolicies",
                       {"metadata": {"name": "default.own", "namespace": "shop"}, "spec": {"selector": "all()"}})
    with serve(world, cluster) as server:
        snapshot = Target(world, cluster, server).read()
    assert sorted(label(p) for p in snapshot.policies) == ["NetworkPolicy shop/default.own", "NetworkPolicy shop/web"]
    assert not [r for r in cluster.requests if r["path"].startswith("/apis/crd.projectcalico.org/v1/")]


def test_forbidden_kind_makes_failing_namespaces_not_available_never_failed(world: World) -> None:
    cluster = with_kinds(Cluster("rbac"), KINDS[:2])
    cluster.add_namespace("covered")
    cluster.add_namespace("maybe-covered")
    cluster.add_policy("covered", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    cluster.forbid("ciliumnetworkpolicies")
    with serve(world, cluster) as server:
        snapshot = Target(world, cluster, server).read()
    assert len(snapshot.unreadable) == 1 and "ciliumnetworkpolicies" in snapshot.unreadable[0]
    v = {r.namespace: r for r in namespace_network_policy.evaluate(snapshot)}
    assert v["covered"].status is ComplianceStatus.PASSED
    assert v["maybe-covered"].status is ComplianceStatus.NOT_AVAILABLE
    assert "403" in v["maybe-covered"].description and "CiliumNetworkPolicy" in v["maybe-covered"].description
    iso = {r.namespace: r.status for r in namespace_isolation.INGRESS_CONTROL.evaluate(snapshot)}
    assert iso == {"covered": ComplianceStatus.PASSED, "maybe-covered": ComplianceStatus.NOT_AVAILABLE}


# -- enforcement ----------------------------------------------------------------------------------------------

def daemonset(containers: list[dict], ready: int = 3) -> dict:
    return {"spec": {"template": {"spec": {"containers": containers}}}, "status": {"numberReady": ready}}


AGENT_ON = daemonset([{"name": "aws-node"},
                      {"name": "aws-eks-nodeagent", "args": ["--enable-network-policy=true"]}])
AGENT_OFF = daemonset([{"name": "aws-node"},
                       {"name": "aws-eks-nodeagent", "args": ["--enable-network-policy=false"]}])


def enforcement_cluster(name: str, aws_node: dict | None, controller: str | None,
                        engine: tuple[str, str, str, dict] | None = None) -> Cluster:
    cluster = Cluster(name, {"default": {}})
    cluster.add_resource_kind("apps", "v1", "daemonsets", "DaemonSet", True)
    cluster.add_resource_kind("", "v1", "configmaps", "ConfigMap", True)
    if aws_node is not None:
        cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": "aws-node", "namespace": "kube-system"},
                                                     **aws_node})
    if controller is not None:
        cluster.add_object("v1", "configmaps", {"metadata": {"name": "amazon-vpc-cni", "namespace": "kube-system"},
                                                "data": {"enable-network-policy-controller": controller}})
    if engine:
        group, namespace, ds_name, body = engine
        with_kinds(cluster, [k for k in KINDS if k[0] == group])
        cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": ds_name, "namespace": namespace}, **body})
    return cluster


@pytest.mark.parametrize("case, aws_node, controller, engine, want", [
    ("vpc-cni agent and controller on", AGENT_ON, "true", None, ComplianceStatus.PASSED),
    ("vpc-cni agent on, controller off", AGENT_ON, "false", None, ComplianceStatus.FAILED),
    ("vpc-cni agent off", AGENT_OFF, "true", None, ComplianceStatus.FAILED),
    ("env switch", daemonset([{"name": "aws-node", "env": [{"name": "ENABLE_NETWORK_POLICY", "value": "true"}]}]),
     "true", None, ComplianceStatus.PASSED),
    ("no CNI objects at all", None, None, None, ComplianceStatus.FAILED),
    ("cilium running", None, None, ("cilium.io", "kube-system", "cilium", daemonset([], 2)), ComplianceStatus.PASSED),
    ("cilium CRDs but no ready agent", None, None, ("cilium.io", "kube-system", "cilium", daemonset([], 0)),
     ComplianceStatus.FAILED),
    ("calico operator install", AGENT_OFF, "false",
     ("projectcalico.org", "calico-system", "calico-node", daemonset([], 4)), ComplianceStatus.PASSED),
    ("calico manifest install", AGENT_OFF, "false",
     ("projectcalico.org", "kube-system", "calico-node", daemonset([], 1)), ComplianceStatus.PASSED),
])
def test_enforcement_per_engine(world: World, case, aws_node, controller, engine, want) -> None:
    cluster = enforcement_cluster("enforce", aws_node, controller, engine)
    with serve(world, cluster) as server:
        snapshot = Target(world, cluster, server).read()
    (result,) = policy_enforcement.evaluate(snapshot)
    assert result.status is want, (case, result.description)
    gets = [r for r in cluster.requests if "/daemonsets/" in r["path"] or "/configmaps/" in r["path"]]
    assert all(r["path"].rsplit("/", 1)[-1] in ("aws-node", "amazon-vpc-cni", "cilium", "calico-node")
               for r in gets), "enforcement is read with gets of named objects, never lists"
    five32 = namespace_network_policy.evaluate(snapshot)[0]
    assert (policy_enforcement.NOT_ENFORCED in five32.description) == (want is ComplianceStatus.FAILED)


def test_enforcement_unknown_when_aws_node_is_forbidden(world: World) -> None:
    cluster = enforcement_cluster("forbidden", AGENT_ON, "true")
    cluster.forbid("daemonsets")
    with serve(world, cluster) as server:
        snapshot = Target(world, cluster, server).read()
    (result,) = policy_enforcement.evaluate(snapshot)
    assert result.status is ComplianceStatus.NOT_AVAILABLE and "403" in result.description


def test_addon_setting_alone_is_enough(world: World) -> None:
    cluster = enforcement_cluster("addon", None, None)
    with serve(world, cluster) as server:
        snapshot = Target(world, cluster, server).read()
    addon = EnforcementEvidence(engines=("VPC CNI network policy agent (add-on)",))
    snapshot = replace(snapshot, cluster=replace(snapshot.cluster, vpc_cni_addon=addon))
    assert policy_enforcement.evaluate(snapshot)[0].status is ComplianceStatus.PASSED

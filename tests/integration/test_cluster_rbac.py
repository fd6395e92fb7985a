"""infra/kubernetes/rbac.yaml is enough for everything the scanner reads, and no more: ClusterReader reads a cluster
over TLS through the Kubernetes API test server, which holds every caller to those RBAC rules (as the group
netpol-scanner:readers), kind by kind and object by object."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from handler.targets.auth import eks_token
from handler.engine_reader import POLICY_KINDS
from netpol_scan.sandbox.aws_world import DEFAULT_IDENTITY, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import Attributes, Cluster
from tests.integration.test_kube_api_server import Kubectl, kubectl_binary  # noqa: F401 - a fixture
from tests.integration.test_policy_engines import Target, serve

RBAC = Path(__file__).resolve().parents[2] / "infra" / "kubernetes" / "rbac.yaml"
READERS = "netpol-scanner:readers"
# Every kind the scanner reads or may read (issue 9's too), (group, version, plural, kind, namespaced).
SERVED = [
    ("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True),
    ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", False),
    ("cilium.io", "v2alpha1", "ciliumcidrgroups", "CiliumCIDRGroup", False),
    ("projectcalico.org", "v3", "networkpolicies", "NetworkPolicy", True),
    ("projectcalico.org", "v3", "globalnetworkpolicies", "GlobalNetworkPolicy", False),
    ("policy.networking.k8s.io", "v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy", False),
    ("policy.networking.k8s.io", "v1alpha1", "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", False),
    ("policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies", "ClusterNetworkPolicy", False),
    ("networking.k8s.aws", "v1alpha1", "clusternetworkpolicies", "ClusterNetworkPolicy", False),
    ("networking.k8s.aws", "v1alpha1", "applicationnetworkpolicies", "ApplicationNetworkPolicy", True),
    ("eks.amazonaws.com", "v1", "nodeclasses", "NodeClass", False),
    ("karpenter.sh", "v1", "nodepools", "NodePool", False),
    ("apps", "v1", "daemonsets", "DaemonSet", True),
    ("", "v1", "configmaps", "ConfigMap", True),
    ("", "v1", "secrets", "Secret", True),
    ("", "v1", "pods", "Pod", True),
]
READY = {"spec": {"template": {"spec": {"containers": [
    {"name": "aws-eks-nodeagent", "args": ["--enable-network-policy=true"]}]}}}, "status": {"numberReady": 2}}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World() as w:
        yield w


def rbac_documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


def everything_cluster(documents: list[dict]) -> Cluster:
    """A cluster serving every kind, one object of each, and the enforcement objects of three engines."""
    cluster = Cluster("rbac", {"default": {"deny": {"podSelector": {}}}, "web": {}})
    for group, version, plural, kind, namespaced in SERVED:
        cluster.add_resource_kind(group, version, plural, kind, namespaced)
        group_version = f"{group}/{version}" if group else version
        if plural in ("daemonsets", "configmaps"):
            continue
        metadata = {"name": f"one-{plural}", **({"namespace": "web"} if namespaced else {})}
        cluster.add_object(group_version, plural, {"metadata": metadata, "spec": {}})
    for namespace, name in (("kube-system", "aws-node"), ("kube-system", "cilium"), ("calico-system", "calico-node"),
                            ("kube-system", "kube-proxy")):
        cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": name, "namespace": namespace}, **READY})
    for namespace, name in (("kube-system", "amazon-vpc-cni"), ("kube-system", "coredns")):
        cluster.add_object("v1", "configmaps", {"metadata": {"name": name, "namespace": namespace},
                                                "data": {"enable-network-policy-controller": "true"}})
    cluster.rbac.apply(documents)
    cluster.rbac.add_groups(DEFAULT_IDENTITY, READERS)  # the access entry's kubernetesGroups
    return cluster


def read(world: World, cluster: Cluster):
    with serve(world, cluster) as server:
        return Target(world, cluster, server).read()


def test_the_projects_cluster_role_reads_every_kind_and_enforcement_object(world):
    cluster = everything_cluster(rbac_documents())
    snapshot = read(world, cluster)
    assert [r for r in cluster.requests if r["status"] == 403] == []
    assert snapshot.unreadable == () and snapshot.enforcement.unknown == ()
    read_kinds = {(p.api_version.split("/")[0], p.kind) for p in snapshot.policies if p.api_version != "networking.k8s.io/v1"}
    served = {(group, kind) for group, kinds in POLICY_KINDS.items() for _, kind, _ in kinds
              if group != "crd.projectcalico.org"}  # projectcalico.org is served, so its storage group is not read
    assert read_kinds == served
    assert {p.name for p in snapshot.policies if p.api_version == "networking.k8s.io/v1"} == {"deny"}
    assert any("VPC CNI" in engine for engine in snapshot.enforcement.engines)
    assert not any(r["query"].get("watch") for r in cluster.requests if "query" in r)


@pytest.mark.parametrize("verb, group, resource, namespace, name", [
    ("list", "", "secrets", None, None), ("get", "", "secrets", "kube-system", "aws-secret"),
    ("list", "", "pods", None, None), ("list", "", "configmaps", None, None),
    ("get", "", "configmaps", "kube-system", "coredns"), ("get", "", "configmaps", "default", "amazon-vpc-cni"),
    ("get", "apps", "daemonsets", "kube-system", "kube-proxy"), ("list", "apps", "deployments", None, None),
    ("watch", "networking.k8s.io", "networkpolicies", None, None), ("create", "", "namespaces", None, None),
    ("delete", "cilium.io", "ciliumnetworkpolicies", "web", "one"),
])
def test_the_projects_cluster_role_grants_nothing_else(verb, group, resource, namespace, name):
    cluster = everything_cluster(rbac_documents())
    request = Attributes(verb, True, group, resource, "", namespace or "", name or "")
    assert not cluster.rbac.decide(DEFAULT_IDENTITY, request).allowed
    readable = Attributes("list", True, "", "namespaces")  # the control: what the role grants, it allows
    assert cluster.rbac.decide(DEFAULT_IDENTITY, readable).allowed


def without(documents: list[dict], kind: str, resource: str) -> list[dict]:
    """The RBAC objects with one resource taken out of the rules of `kind` (a rule left with none goes)."""
    trimmed = copy.deepcopy(documents)
    for document in (d for d in trimmed if d["kind"] == kind):
        for rule in document["rules"]:
            rule["resources"] = [r for r in rule["resources"] if r != resource]
        document["rules"] = [r for r in document["rules"] if r["resources"]]
    return trimmed


def test_the_test_server_enforces_each_rule(world):
    """The control: take one rule away and the read of exactly what it covered is refused."""
    cluster = everything_cluster(without(rbac_documents(), "ClusterRole", "ciliumnetworkpolicies"))
    snapshot = read(world, cluster)
    assert [r["path"] for r in cluster.requests if r["status"] == 403] == ["/apis/cilium.io/v2/ciliumnetworkpolicies"]
    assert [u.split(" ")[0] for u in snapshot.unreadable] == ["CiliumNetworkPolicy"]

    cluster = everything_cluster(without(rbac_documents(), "Role", "configmaps"))
    snapshot = read(world, cluster)
    assert [r["path"] for r in cluster.requests if r["status"] == 403] == [
        "/api/v1/namespaces/kube-system/configmaps/amazon-vpc-cni"]
    assert len(snapshot.enforcement.unknown) == 1


# -- kubectl apply -f infra/kubernetes/ ---------------------------------------------------------------------------

RBAC_KINDS = [("rbac.authorization.k8s.io", "v1", plural, kind, namespaced) for plural, kind, namespaced in (
    ("clusterroles", "ClusterRole", False), ("clusterrolebindings", "ClusterRoleBinding", False),
    ("roles", "Role", True), ("rolebindings", "RoleBinding", True))] + [("", "v1", "configmaps", "ConfigMap", True)]
OLD_AWS_AUTH = """apiVersion: v1
kind: ConfigMap
metadata: {name: aws-auth, namespace: kube-system}
data: {mapRoles: "- rolearn: arn:aws:iam::111122223333:role/NetpolScannerRole"}
"""


def applied_by_kubectl(world: World, kubectl_binary: str, home: Path, directory: Path) -> list[str]:
    """What `kubectl apply -f <directory>` would apply (client-side dry run against the test API server)."""
    cluster = Cluster("apply", {"default": {}, "kube-system": {}})
    for group, version, plural, kind, namespaced in RBAC_KINDS:
        cluster.add_resource_kind(group, version, plural, kind, namespaced)
    with serve(world, cluster) as server:
        kubectl = Kubectl(kubectl_binary, home)
        kubectl.configure(server, {"token": eks_token(world.session(), cluster.name, DEFAULT_REGION)})
        done = kubectl("apply", "--dry-run=client", "--validate=false", "-o", "name", "-f", str(directory))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_kubectl_apply_of_infra_kubernetes_applies_the_rbac_and_never_aws_auth(world, kubectl_binary, tmp_path):
    applied = applied_by_kubectl(world, kubectl_binary, tmp_path, RBAC.parent)
    assert sorted(applied) == ["clusterrole.rbac.authorization.k8s.io/netpol-scanner-read",
                               "clusterrolebinding.rbac.authorization.k8s.io/netpol-scanner-read",
                               "role.rbac.authorization.k8s.io/netpol-scanner-enforcement",
                               "rolebinding.rbac.authorization.k8s.io/netpol-scanner-enforcement"]
    # The control: the aws-auth manifest this directory used to hold would have been applied with the rest.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "rbac.yaml").write_text(RBAC.read_text())
    (tmp_path / "old" / "aws-auth-snippet.yaml").write_text(OLD_AWS_AUTH)
    assert "configmap/aws-auth" in applied_by_kubectl(world, kubectl_binary, tmp_path, tmp_path / "old")

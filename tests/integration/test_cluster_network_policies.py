"""The cluster-wide tiered policies and the 2025 kinds (ClusterNetworkPolicy of policy.networking.k8s.io/v1alpha2
and of networking.k8s.aws, ApplicationNetworkPolicy), and policies the scanner cannot interpret: read by
ClusterReader from the Kubernetes API test server over TLS, then evaluated by every control."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from handler.evaluation import evaluate
from handler.models import ClusterSnapshot
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import Cluster
from tests.integration.conftest import of_cluster
from tests.integration.test_policy_engines import Target, serve, with_kinds

ANP_V1ALPHA1 = ("policy.networking.k8s.io/v1alpha1", "adminnetworkpolicies")
CNP_UPSTREAM = ("policy.networking.k8s.io/v1alpha2", "clusternetworkpolicies")
CNP_EKS = ("networking.k8s.aws/v1alpha1", "clusternetworkpolicies")
APP_EKS = ("networking.k8s.aws/v1alpha1", "applicationnetworkpolicies")
CCNP = ("cilium.io/v2", "ciliumclusterwidenetworkpolicies")
CNP_CILIUM = ("cilium.io/v2", "ciliumnetworkpolicies")
UPSTREAM_V1ALPHA2 = ("policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies", "ClusterNetworkPolicy", False)
KINDS = [("policy.networking.k8s.io", "v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy", False),
         ("policy.networking.k8s.io", "v1alpha1", "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", False),
         UPSTREAM_V1ALPHA2,
         ("networking.k8s.aws", "v1alpha1", "clusternetworkpolicies", "ClusterNetworkPolicy", False),
         ("networking.k8s.aws", "v1alpha1", "applicationnetworkpolicies", "ApplicationNetworkPolicy", True),
         ("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True),
         ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", False)]
SHOP = {"matchLabels": {"team": "shop"}}
EVERY_POD, EVERY_ADDRESS = {"namespaces": {}}, {"networks": ["0.0.0.0/0"]}
DENY_INGRESS = [{"action": "Deny", "from": [EVERY_POD]}]
DENY_EGRESS = [{"action": "Deny", "to": [EVERY_POD, EVERY_ADDRESS]}]
CONTROLS = ("cis-k8s-5.3.2", "netpol-default-deny-ingress", "netpol-default-deny-egress")


@pytest.fixture(scope="module")
def kube_world() -> Iterator[World]:
    with World() as w:
        yield w


def cluster_with(*objects: tuple[tuple[str, str], dict], kinds: list[tuple] = KINDS) -> Cluster:
    cluster = with_kinds(Cluster("tiers"), kinds)
    cluster.add_namespace("shop", labels={"team": "shop"})
    cluster.add_namespace("other")
    for (group_version, plural), obj in objects:
        cluster.add_object(group_version, plural, obj)
    return cluster


def verdicts(world: World, cluster: Cluster) -> dict[str, tuple[str, str, str]]:
    """namespace -> (5.3.2, default-deny ingress, default-deny egress) statuses."""
    with serve(world, cluster) as server:
        snapshot = Target(world, cluster, server).read()
    return _by_namespace(snapshot)


def _by_namespace(snapshot: ClusterSnapshot) -> dict[str, tuple[str, str, str]]:
    found = {(r.namespace, r.control_id): r.status.value for r in evaluate(snapshot) if r.namespace}
    return {ns.name: tuple(found[(ns.name, control)] for control in CONTROLS) for ns in snapshot.namespaces}


def cluster_policy(name: str, spec: dict) -> dict:
    return {"metadata": {"name": name}, "spec": spec}


def admin(name: str, priority: int, subject: dict, **rules: list) -> dict:
    return cluster_policy(name, {"priority": priority, "subject": subject, **rules})


def tiered(name: str, tier: str, priority: int, subject: dict, **rules: list) -> dict:
    return cluster_policy(name, {"tier": tier, "priority": priority, "subject": subject, **rules})


# -- the 2025 kinds count and isolate ---------------------------------------------------------------------------

@pytest.mark.parametrize("where, policy", [
    (CNP_EKS, tiered("eks-admin", "Admin", 10, {"namespaces": SHOP}, ingress=DENY_INGRESS, egress=DENY_EGRESS)),
    (CNP_UPSTREAM, tiered("baseline", "Baseline", 0, {"namespaces": SHOP}, ingress=DENY_INGRESS,
                          egress=DENY_EGRESS)),
    (APP_EKS, {"metadata": {"name": "app", "namespace": "shop"},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                        "egress": [{"to": [{"domainNames": ["api.example.com"]}], "ports": [{"port": 443}]}]}}),
], ids=["networking.k8s.aws ClusterNetworkPolicy", "policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy",
        "ApplicationNetworkPolicy"])
def test_a_namespace_protected_only_by_a_2025_kind_passes(kube_world: World, where, policy) -> None:
    got = verdicts(kube_world, cluster_with((where, policy)))
    assert got["shop"] == ("PASSED", "PASSED", "PASSED")
    assert got["other"] == ("FAILED", "FAILED", "FAILED")


def test_both_versions_of_policy_networking_k8s_io_are_read(kube_world: World) -> None:
    preferred_v1alpha2 = [UPSTREAM_V1ALPHA2, *(k for k in KINDS if k is not UPSTREAM_V1ALPHA2)]
    cluster = cluster_with((CNP_UPSTREAM, tiered("v2", "Admin", 1, {"namespaces": SHOP}, ingress=DENY_INGRESS)),
                           (ANP_V1ALPHA1, admin("v1", 1, {"namespaces": SHOP}, egress=DENY_EGRESS)),
                           kinds=preferred_v1alpha2)
    with serve(kube_world, cluster) as server:
        snapshot = Target(kube_world, cluster, server).read()
    assert sorted((p.api_version, p.kind) for p in snapshot.policies) == [
        ("policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy"),
        ("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy")]
    assert _by_namespace(snapshot)["shop"] == ("PASSED", "PASSED", "PASSED")


# -- false PASSes of the cluster-wide family ------------------------------------------------------------------------

@pytest.mark.parametrize("where, make", [
    (ANP_V1ALPHA1, lambda egress: admin("deny", 10, {"namespaces": {}}, egress=egress)),
    (CNP_UPSTREAM, lambda egress: tiered("deny", "Admin", 10, {"namespaces": {}}, egress=egress)),
    (CNP_EKS, lambda egress: tiered("deny", "Baseline", 10, {"namespaces": {}}, egress=egress)),
], ids=["AdminNetworkPolicy", "upstream ClusterNetworkPolicy", "EKS ClusterNetworkPolicy"])
def test_a_deny_of_every_pod_with_networks_open_is_not_egress_isolation(kube_world: World, where, make) -> None:
    pods_only = [{"action": "Deny", "to": [EVERY_POD]}]
    assert verdicts(kube_world, cluster_with((where, make(pods_only))))["shop"][2] == "FAILED"
    assert verdicts(kube_world, cluster_with((where, make(DENY_EGRESS))))["shop"][2] == "PASSED"
    ipv6 = [{"action": "Deny", "to": [{"networks": ["::/0"]}]}]  # a /0 network is every pod and every address
    assert verdicts(kube_world, cluster_with((where, make(ipv6))))["shop"][2] == "PASSED"


@pytest.mark.parametrize("first, verdict", [
    ({"action": "Allow", "to": [EVERY_ADDRESS]}, "FAILED"),  # admits everything before the deny
    ({"action": "Pass", "to": [EVERY_POD, EVERY_ADDRESS]}, "FAILED"),  # hands everything to the lower tiers
    ({"action": "Allow", "to": [{"pods": {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}}],
      "ports": [{"portNumber": {"protocol": "UDP", "port": 53}}]}, "PASSED"),  # an exception, as in a default deny
], ids=["allow everything", "pass everything", "allow DNS"])
def test_the_first_matching_rule_of_a_policy_decides(kube_world: World, first, verdict) -> None:
    policy = admin("ordered", 10, {"namespaces": {}}, egress=[first, *DENY_EGRESS])
    assert verdicts(kube_world, cluster_with((ANP_V1ALPHA1, policy)))["shop"][2] == verdict


@pytest.mark.parametrize("where, make", [
    (ANP_V1ALPHA1, lambda subject: admin("db", 10, subject, ingress=DENY_INGRESS)),
    (CNP_UPSTREAM, lambda subject: tiered("db", "Admin", 10, subject, ingress=DENY_INGRESS)),
    (CNP_EKS, lambda subject: tiered("db", "Baseline", 10, subject, ingress=DENY_INGRESS)),
], ids=["AdminNetworkPolicy", "upstream ClusterNetworkPolicy", "EKS ClusterNetworkPolicy"])
def test_a_subject_on_pod_labels_in_every_namespace_counts_in_none(kube_world: World, where, make) -> None:
    databases = {"matchLabels": {"app": "db"}}
    everywhere = verdicts(kube_world, cluster_with((where, make({"pods": {"namespaceSelector": {},
                                                                          "podSelector": databases}}))))
    assert {ns: v[0] for ns, v in everywhere.items()} == {"shop": "FAILED", "other": "FAILED"}
    named = verdicts(kube_world, cluster_with((where, make({"pods": {"namespaceSelector": SHOP,
                                                                     "podSelector": databases}}))))
    assert {ns: v[0] for ns, v in named.items()} == {"shop": "PASSED", "other": "FAILED"}


@pytest.mark.parametrize("every_namespace", [
    {"namespaces": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}},
    {"pods": {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                                          "operator": "Exists"}]}, "podSelector": {}}},
], ids=["namespaces", "pods"])
def test_a_peer_selecting_every_namespace_without_being_empty_is_every_pod(kube_world: World,
                                                                           every_namespace: dict) -> None:
    # kube-apiserver sets kubernetes.io/metadata.name on every namespace: `Exists` selects them all, as `{}` does.
    deny = admin("deny", 10, {"namespaces": {}}, ingress=[{"action": "Deny", "from": [every_namespace]}])
    assert verdicts(kube_world, cluster_with((ANP_V1ALPHA1, deny)))["shop"][1] == "PASSED"
    allow_first = admin("allow", 10, {"namespaces": {}},
                        ingress=[{"action": "Allow", "from": [every_namespace]}, *DENY_INGRESS])
    assert verdicts(kube_world, cluster_with((ANP_V1ALPHA1, allow_first)))["shop"][1] == "FAILED"


def test_the_admin_tier_decides_before_network_policies_by_priority(kube_world: World) -> None:
    allow_all = {"metadata": {"name": "allow-all"}, "spec": {"podSelector": {}, "egress": [{}]}}
    deny = admin("deny", 20, {"namespaces": {}}, egress=DENY_EGRESS)
    cluster = cluster_with((ANP_V1ALPHA1, deny))
    cluster.add_policy("shop", "allow-all", allow_all["spec"])
    assert verdicts(kube_world, cluster)["shop"][2] == "PASSED", "an Admin Deny is final over a NetworkPolicy"
    before = admin("accept", 10, {"namespaces": {}}, egress=[{"action": "Allow", "to": [EVERY_POD, EVERY_ADDRESS]}])
    assert verdicts(kube_world, cluster_with((ANP_V1ALPHA1, deny), (ANP_V1ALPHA1, before)))["shop"][2] == "FAILED"
    after = admin("accept", 30, {"namespaces": {}}, egress=[{"action": "Allow", "to": [EVERY_POD, EVERY_ADDRESS]}])
    assert verdicts(kube_world, cluster_with((ANP_V1ALPHA1, deny), (ANP_V1ALPHA1, after)))["shop"][2] == "PASSED"
    passed = admin("pass", 10, {"namespaces": {}}, egress=[{"action": "Pass", "to": [EVERY_POD, EVERY_ADDRESS]}])
    assert verdicts(kube_world, cluster_with((ANP_V1ALPHA1, deny), (ANP_V1ALPHA1, passed)))["shop"][2] == "FAILED"


# -- policies the scanner cannot interpret ------------------------------------------------------------------------

def kube_system_egress(name: str, egress: list) -> dict:
    return cluster_policy(name, {"endpointSelector": {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}},
                                 "egress": egress})


def test_an_uninterpretable_clusterwide_rule_blanks_only_what_it_could_change(kube_world: World) -> None:
    cluster = cluster_with((CCNP, kube_system_egress("corp", [{"toCIDRSet": [{"cidrGroupRef": "corp"}]}])),
                           (CCNP, kube_system_egress("bad-cidr", [{"toCIDR": ["corp-net"]}])))
    cluster.add_namespace("kube-system")
    cluster.add_namespace("web")
    cluster.add_policy("web", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    got = verdicts(kube_world, cluster)
    assert got["shop"] == got["other"] == ("FAILED", "FAILED", "FAILED")
    assert got["web"] == ("PASSED", "PASSED", "PASSED")
    # It selects kube-system's pods: counted there; it has no ingress rules; its egress is not known.
    assert got["kube-system"] == ("PASSED", "FAILED", "NOT_AVAILABLE")
    cluster.add_policy("kube-system", "egress-anywhere", {"podSelector": {}, "egress": [{}]})
    assert verdicts(kube_world, cluster)["kube-system"][2] == "FAILED", "an allow-all fails it whatever the rest"


def test_a_namespaced_policy_not_understood_still_counts_in_its_namespace(kube_world: World) -> None:
    broken = {"metadata": {"name": "broken", "namespace": "shop"},
              "spec": {"endpointSelector": {"matchExpressions": [{"key": "app", "operator": "Near"}]},
                       "ingress": [{}]}}
    got = verdicts(kube_world, cluster_with((CNP_CILIUM, broken)))
    assert got["shop"] == ("PASSED", "NOT_AVAILABLE", "NOT_AVAILABLE")
    assert got["other"] == ("FAILED", "FAILED", "FAILED")


def test_the_run_and_the_cluster_finding_count_the_policies_not_understood(world, invoke) -> None:
    cluster = cluster_with((CCNP, kube_system_egress("bad-cidr", [{"toCIDR": ["corp-net"]}])),
                           (CNP_EKS, tiered("fine", "Admin", 1, {"namespaces": SHOP}, ingress=DENY_INGRESS)),
                           (APP_EKS, {"metadata": {"name": "typo", "namespace": "shop"},
                                      "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "x"}}]}]}}))
    cluster.add_namespace("kube-system")
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)
    result = invoke({"source": "eks-netpol-scanner.schedule"})
    assert result["clusters_scanned"] == 1 and result["policies_not_understood"] == 2
    (enforcement,) = [f for f in of_cluster(world.findings(DEFAULT_ACCOUNT, DEFAULT_REGION), "tiers")
                      if f["GeneratorId"].endswith("/cis-k8s-5.3.1")]
    assert "2 network policies could not be interpreted" in enforcement["Description"]
    assert "CiliumClusterwideNetworkPolicy bad-cidr" in enforcement["Description"]

"""False PASSes found by review (issue #9), each read by ClusterReader from the Kubernetes API test server over
TLS and evaluated by the controls: /0 blocks with exceptions, selectors that match every namespace without being
empty, Calico's rule order and negated matches, Cilium's `spec` beside `specs`, and Cilium's `cidrGroupRef`."""
from __future__ import annotations

from typing import Any

import pytest

from handler.controls import namespace_isolation, namespace_network_policy
from handler.models import ClusterSnapshot, ComplianceStatus, ControlResult
from netpol_scan.sandbox.aws_world import World
from netpol_scan.sandbox.kube_api import Cluster
from tests.integration.test_policy_engines import Target, place, serve, with_kinds
from tests.integration.test_policy_engines import world  # noqa: F401  (one World for the module)

PASSED, FAILED, NOT_AVAILABLE = ComplianceStatus.PASSED, ComplianceStatus.FAILED, ComplianceStatus.NOT_AVAILABLE
METADATA = "169.254.169.254/32"
CIDR_GROUP = ("cilium.io", "v2alpha1", "ciliumcidrgroups", "CiliumCIDRGroup", False)


def k8s(name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name}, "spec": spec}


def cnp(name: str, spec: dict | None = None, kind: str = "CiliumNetworkPolicy", **fields: Any) -> dict:
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": {"name": name},
            **({"spec": spec} if spec is not None else {}), **fields}


def ccnp(name: str, spec: dict) -> dict:
    return cnp(name, spec, kind="CiliumClusterwideNetworkPolicy")


def calico(name: str, spec: dict, kind: str = "GlobalNetworkPolicy") -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name}, "spec": spec}


def gnp_ingress(*rules: dict) -> dict:
    return calico("gnp", {"selector": "all()", "types": ["Ingress"], "ingress": list(rules)})


def verdicts(world: World, cluster: Cluster) -> dict[str, dict[str, ControlResult]]:
    """control -> namespace -> result, from a real read of the cluster."""
    with serve(world, cluster) as server:
        snapshot: ClusterSnapshot = Target(world, cluster, server).read()
    controls = {"5.3.2": namespace_network_policy.evaluate, "ingress": namespace_isolation.INGRESS_CONTROL.evaluate,
                "egress": namespace_isolation.EGRESS_CONTROL.evaluate}
    return {name: {r.namespace: r for r in evaluate(snapshot)} for name, evaluate in controls.items()}


def cluster_with(*documents: dict, namespaces: tuple[str, ...] = ("shop",), kinds=None) -> Cluster:
    cluster = with_kinds(Cluster("review"))
    for extra in kinds or ():
        cluster.add_resource_kind(*extra)
    for name in namespaces:
        cluster.add_namespace(name, labels={"team": name})
    for document in documents:
        place(cluster, document, namespaces[0])
    return cluster


# -- 1. a /0 block admits everything, whatever its exceptions -------------------------------------------------------

ALL_BUT_METADATA = [
    ("NetworkPolicy ipBlock 0.0.0.0/0 except", k8s("all-but-metadata", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA]}}]}]}), METADATA),
    ("NetworkPolicy ipBlock ::/0 except", k8s("all-but-metadata", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}}]}]}), "fd00:ec2::254/128"),
    ("Cilium toCIDRSet /0 except", cnp("all-but-metadata", {
        "endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "0.0.0.0/0", "except": [METADATA]}]}]}), METADATA),
    ("Calico nets /0 with notNets", calico("all-but-metadata", {
        "selector": "all()", "types": ["Egress"],
        "egress": [{"action": "Allow", "destination": {"nets": ["0.0.0.0/0"], "notNets": [METADATA]}}]},
        kind="NetworkPolicy"), METADATA),
    ("Calico notNets alone", calico("all-but-metadata", {
        "selector": "all()", "types": ["Egress"],
        "egress": [{"action": "Allow", "destination": {"notNets": [METADATA]}}]}), METADATA),
]


@pytest.mark.parametrize("case, document, excepted", ALL_BUT_METADATA, ids=[c[0] for c in ALL_BUT_METADATA])
def test_zero_prefix_with_exceptions_admits_every_destination(world: World, case, document, excepted) -> None:
    result = verdicts(world, cluster_with(document))["egress"]["shop"]
    assert result.status is FAILED, (case, result.description)
    assert f"egress rule 1 admits every destination except {excepted}" in result.description


def test_cilium_from_cidr_set_zero_prefix_with_exceptions_admits_every_source(world: World) -> None:
    document = cnp("from-all-but-one", {"endpointSelector": {}, "ingress": [
        {"fromCIDRSet": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "192.168.0.0/16"]}]}]})
    result = verdicts(world, cluster_with(document))["ingress"]["shop"]
    assert result.status is FAILED
    assert "ingress rule 1 admits every source except 10.0.0.0/8, 192.168.0.0/16" in result.description


# -- 2. selectors that match every namespace without being empty ----------------------------------------------------

EVERY_NAMESPACE_EXISTS = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}
EVERY_POD = [
    ("namespaceSelector metadata.name Exists", k8s("from-every-namespace", {
        "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": EVERY_NAMESPACE_EXISTS}]}]})),
    ("namespaceSelector metadata.name Exists and podSelector {}", k8s("from-every-namespace", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": EVERY_NAMESPACE_EXISTS, "podSelector": {}}]}]})),
    ("Calico namespaceSelector has(projectcalico.org/name)", gnp_ingress(
        {"action": "Allow", "source": {"namespaceSelector": "has(projectcalico.org/name)"}})),
    ("Calico selector global() in a global policy", gnp_ingress({"action": "Allow", "source": {"selector": "global()"}})),
    ("Calico selector has(projectcalico.org/namespace)", gnp_ingress(
        {"action": "Allow", "source": {"selector": "has(projectcalico.org/namespace)"}})),
    ("Cilium clusterwide fromEndpoints namespace Exists", ccnp("from-every-namespace", {
        "endpointSelector": {}, "ingress": [{"fromEndpoints": [
            {"matchExpressions": [{"key": "k8s:io.kubernetes.pod.namespace", "operator": "Exists"}]}]}]})),
    ("Cilium namespaced fromEndpoints naming the namespace key", cnp("from-every-namespace", {
        "endpointSelector": {}, "ingress": [{"fromEndpoints": [
            {"matchExpressions": [{"key": "k8s:io.kubernetes.pod.namespace", "operator": "Exists"}]}]}]})),
]


@pytest.mark.parametrize("case, document", EVERY_POD, ids=[c[0] for c in EVERY_POD])
def test_peer_selecting_every_namespace_admits_every_pod(world: World, case, document) -> None:
    result = verdicts(world, cluster_with(document))["ingress"]["shop"]
    assert result.status is FAILED, (case, result.description)
    assert "ingress rule 1 admits every pod of the cluster" in result.description


def test_global_policy_source_with_only_not_selector_admits_every_source_but_those(world: World) -> None:
    document = gnp_ingress({"action": "Allow", "source": {"notSelector": "role == 'scanner'"}})
    result = verdicts(world, cluster_with(document))["ingress"]["shop"]
    assert result.status is FAILED
    assert "ingress rule 1 admits every source except endpoints matching role == 'scanner'" in result.description


SOME_PODS = [
    ("namespaceSelector on a team label", k8s("from-team", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "payments"}}}]}]})),
    ("Calico namespaceSelector global() selects no pod", gnp_ingress(
        {"action": "Allow", "source": {"namespaceSelector": "global()"}})),
    ("Calico namespaced policy: notSelector stays in its namespace", calico("own-but-scanner", {
        "selector": "all()", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"notSelector": "role == 'scanner'"}}]}, kind="NetworkPolicy")),
]


@pytest.mark.parametrize("case, document", SOME_PODS, ids=[c[0] for c in SOME_PODS])
def test_peer_selecting_some_namespaces_keeps_isolation(world: World, case, document) -> None:
    assert verdicts(world, cluster_with(document))["ingress"]["shop"].status is PASSED, case


# -- 3. Calico: first match wins; Pass ends the tier; negated matches narrow -----------------------------------------

DENY_ALL = {"action": "Deny"}
ALLOW_ALL = {"action": "Allow"}


def test_calico_allow_after_a_deny_of_everything_is_unreachable(world: World) -> None:
    result = verdicts(world, cluster_with(gnp_ingress(DENY_ALL, ALLOW_ALL)))["ingress"]["shop"]
    assert result.status is PASSED, result.description


def test_calico_pass_of_everything_does_not_isolate(world: World) -> None:
    result = verdicts(world, cluster_with(gnp_ingress({"action": "Pass"})))["ingress"]["shop"]
    assert result.status is FAILED, result.description
    assert "no policy puts all of its pods in default deny for ingress" in result.description


@pytest.mark.parametrize("earlier, verb", [
    ({"action": "Deny", "source": {"selector": "role == 'attacker'"}}, "denies"),
    ({"action": "Pass", "source": {"namespaceSelector": "team == 'platform'"}}, "passes"),
    ({"action": "Deny", "protocol": "TCP", "destination": {"ports": [22]}}, "denies"),
])
def test_calico_allow_after_a_narrow_deny_or_pass_still_admits_everything_else(world: World, earlier, verb) -> None:
    result = verdicts(world, cluster_with(gnp_ingress(earlier, ALLOW_ALL)))["ingress"]["shop"]
    assert result.status is FAILED, result.description
    assert f"ingress rule 2 admits every source except what ingress rule 1 {verb}" in result.description


@pytest.mark.parametrize("rule", [
    {"action": "Allow", "notProtocol": "TCP"},
    {"action": "Allow", "destination": {"notPorts": [22]}},
    {"action": "Allow", "source": {"notPorts": [53]}},
], ids=["notProtocol", "notPorts", "source notPorts"])
def test_calico_negated_protocol_or_ports_narrow_a_rule_to_some_ports(world: World, rule) -> None:
    result = verdicts(world, cluster_with(gnp_ingress(rule)))["ingress"]["shop"]
    assert result.status is PASSED, result.description
    assert "ingress rule 1 admits every source on some ports" in result.description


def test_calico_log_rule_matches_and_goes_on(world: World) -> None:
    result = verdicts(world, cluster_with(gnp_ingress({"action": "Log"}, ALLOW_ALL)))["ingress"]["shop"]
    assert result.status is FAILED and "ingress rule 2 admits every source" in result.description


def calico_np(name: str, *ingress: dict, **spec: Any) -> dict:
    return calico(name, {"selector": "all()", "types": ["Ingress"], "ingress": list(ingress), **spec},
                  kind="NetworkPolicy")


@pytest.mark.parametrize("policies, want", [
    ([calico_np("p0", DENY_ALL), calico_np("p1", ALLOW_ALL)], PASSED),  # by name: p0's Deny decides first
    ([calico_np("p0", ALLOW_ALL), calico_np("p1", DENY_ALL)], FAILED),
    ([calico_np("a", ALLOW_ALL, order=200), calico_np("b", DENY_ALL, order=100)], PASSED),  # order before name
    ([calico_np("a", DENY_ALL), calico_np("b", ALLOW_ALL, order=1000)], FAILED),  # no order: after every order
    ([calico("g", {"selector": "all()", "order": 1, "types": ["Ingress"], "ingress": [DENY_ALL]}),
      calico_np("p", ALLOW_ALL, order=2)], PASSED),  # GlobalNetworkPolicy and NetworkPolicy share the tier
    ([calico_np("p0", {"action": "Pass"}), calico_np("p1", DENY_ALL)], FAILED),  # a Pass ends the tier
    ([calico_np("security.p0", DENY_ALL, tier="security"), calico_np("p1", ALLOW_ALL)], FAILED),  # tiers: union
], ids=["deny-then-allow", "allow-then-deny", "order", "unordered-last", "global-shares-tier", "pass-ends-tier",
        "other-tier"])
def test_calico_policies_of_a_tier_decide_in_order(world: World, policies, want) -> None:
    result = verdicts(world, cluster_with(*policies))["ingress"]["shop"]
    assert result.status is want, result.description


# -- 4. Cilium: `spec` and `specs` both apply -------------------------------------------------------------------------

def test_cilium_spec_beside_specs_applies_both(world: World) -> None:
    document = cnp("both", {"endpointSelector": {}, "ingress": [{"fromEntities": ["all"]}]},
                   specs=[{"endpointSelector": {}, "ingress": [{}]}])
    result = verdicts(world, cluster_with(document))["ingress"]["shop"]
    assert result.status is FAILED, result.description
    assert "CiliumNetworkPolicy both (ingress rule 1 admits every source)" in result.description


# -- 5. Cilium cidrGroupRef -------------------------------------------------------------------------------------------

def cidr_group(cluster: Cluster, name: str, cidrs: list[str], version: str = "v2alpha1") -> None:
    cluster.add_object(f"cilium.io/{version}", "ciliumcidrgroups",
                       {"metadata": {"name": name, "labels": {"scope": name}}, "spec": {"externalCIDRs": cidrs}})


def egress_to_group(ref: dict, name: str = "to-group") -> dict:
    return cnp(name, {"endpointSelector": {}, "ingress": [{}], "egress": [{"toCIDRSet": [ref]}]})


@pytest.mark.parametrize("version", ["v2alpha1", "v2"])
def test_cidr_group_ref_resolves_to_its_cidrs(world: World, version) -> None:
    group_kind = ("cilium.io", version, "ciliumcidrgroups", "CiliumCIDRGroup", False)
    cluster = cluster_with(egress_to_group({"cidrGroupRef": "internet"}), namespaces=("shop", "billing"),
                           kinds=[group_kind])
    place(cluster, egress_to_group({"cidrGroupRef": "partners"}), "billing")
    cidr_group(cluster, "internet", ["0.0.0.0/0", "::/0"], version)
    cidr_group(cluster, "partners", ["203.0.113.0/24"], version)
    v = verdicts(world, cluster)
    assert v["egress"]["shop"].status is FAILED, v["egress"]["shop"].description
    assert "egress rule 1 admits every destination" in v["egress"]["shop"].description
    assert v["egress"]["billing"].status is PASSED, v["egress"]["billing"].description


def test_cidr_group_selector_resolves_to_the_groups_it_selects(world: World) -> None:
    cluster = cluster_with(egress_to_group({"cidrGroupSelector": {"matchLabels": {"scope": "internet"}}}),
                           kinds=[CIDR_GROUP])
    cidr_group(cluster, "internet", ["0.0.0.0/0"])
    result = verdicts(world, cluster)["egress"]["shop"]
    assert result.status is FAILED and "egress rule 1 admits every destination" in result.description


def test_unresolvable_cidr_group_ref_only_blanks_the_direction_and_namespaces_it_could_change(world: World) -> None:
    lockdown = ccnp("kube-system-egress", {
        "endpointSelector": {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}},
        "egress": [{"toCIDRSet": [{"cidrGroupRef": "missing"}]}]})
    cluster = cluster_with(egress_to_group({"cidrGroupRef": "missing"}), lockdown,
                           namespaces=("shop", "kube-system", "other"), kinds=[CIDR_GROUP])
    v = verdicts(world, cluster)
    assert v["5.3.2"]["shop"].status is PASSED
    assert v["ingress"]["shop"].status is PASSED, v["ingress"]["shop"].description
    assert v["egress"]["shop"].status is NOT_AVAILABLE
    assert "CiliumCIDRGroup" in v["egress"]["shop"].description and "missing" in v["egress"]["shop"].description
    assert v["egress"]["kube-system"].status is NOT_AVAILABLE
    assert {v[c]["other"].status for c in v} == {FAILED}, "a policy that cannot reach 'other' changes nothing there"


def test_cidr_groups_are_not_asked_for_when_no_policy_needs_them_or_the_kind_is_not_served(world: World) -> None:
    served = cluster_with(egress_to_group({"cidr": "10.0.0.0/8"}), kinds=[CIDR_GROUP])
    assert verdicts(world, served)["egress"]["shop"].status is PASSED
    assert not [r for r in served.requests if "ciliumcidrgroups" in r["path"]]
    not_served = cluster_with(egress_to_group({"cidrGroupRef": "internet"}))
    result = verdicts(world, not_served)["egress"]["shop"]
    assert result.status is NOT_AVAILABLE and "CiliumCIDRGroup" in result.description
    assert not [r for r in not_served.requests if "ciliumcidrgroups" in r["path"]]


def test_forbidden_cidr_groups_only_make_the_rules_that_name_them_uninterpretable(world: World) -> None:
    cluster = cluster_with(egress_to_group({"cidrGroupRef": "internet"}), namespaces=("shop", "billing"),
                           kinds=[CIDR_GROUP])
    place(cluster, egress_to_group({"cidr": "203.0.113.0/24"}), "billing")
    cidr_group(cluster, "internet", ["0.0.0.0/0"])
    cluster.forbid("ciliumcidrgroups")
    v = verdicts(world, cluster)
    assert v["egress"]["shop"].status is NOT_AVAILABLE
    assert "cidrGroupRef 'internet': the cluster's CiliumCIDRGroups could not be read" in v["egress"]["shop"].description
    assert v["egress"]["billing"].status is PASSED and v["5.3.2"]["billing"].status is PASSED

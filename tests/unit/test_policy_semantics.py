"""handler.policy: label selectors (exact and three-valued, property-based), Calico selectors, and the semantics
of every policy kind, rule by rule (table-driven)."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handler.errors import PolicyError
from handler.models import CidrGroup, Namespace, NetworkPolicy
from handler.policy import Reach, analyze
from handler.policy.calico_selector import compile_selector
from handler.policy.engines import calico, cilium
from handler.policy.engines.cilium import names_cidr_groups
from handler.policy.engines.common import _by_identity
from handler.policy.selectors import PRESENT, UNKNOWN, matches, selector_reach

NS = Namespace("shop", labels={"team": "a", "env": "prod"})

# -- label selectors, property-based against a direct reading of the Kubernetes rules ----------------------------

keys = st.sampled_from(["app", "team", "env", "tier"])
values = st.sampled_from(["a", "b", "prod", ""])
labels = st.dictionaries(keys, values, max_size=4)
expression = st.fixed_dictionaries({"key": keys, "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
                                    "values": st.lists(values, max_size=3)})
selector = st.fixed_dictionaries({}, optional={"matchLabels": st.dictionaries(keys, values, max_size=3),
                                               "matchExpressions": st.lists(expression, max_size=3)})


def reference(sel: dict, lab: dict) -> bool:
    """The Kubernetes rules, written independently: every matchLabels pair and every expression holds."""
    ok = all(lab.get(k) == v for k, v in (sel.get("matchLabels") or {}).items())
    for e in sel.get("matchExpressions") or ():
        present, value = e["key"] in lab, lab.get(e["key"])
        ok = ok and {"In": present and value in e["values"], "NotIn": not present or value not in e["values"],
                     "Exists": present, "DoesNotExist": not present}[e["operator"]]
    return ok


@given(selector, labels)
def test_label_selector_matches_like_kubernetes(sel, lab):
    assert matches(sel, lab) == reference(sel, lab)


@given(selector, labels, st.sets(keys))
def test_three_valued_reach_is_sound(sel, lab, unknown_keys):
    """ALL: matches whatever the unknown labels are; NONE: never; SOME only when unknown keys are involved."""
    reach = selector_reach(sel, lambda k: UNKNOWN if k in unknown_keys else lab.get(k))
    for filler in ({}, {k: "a" for k in unknown_keys}, {k: "prod" for k in unknown_keys}):
        full = {**{k: v for k, v in lab.items() if k not in unknown_keys}, **filler}
        if reach is Reach.ALL:
            assert reference(sel, full)
        if reach is Reach.NONE:
            assert not reference(sel, full)
    if not unknown_keys:
        assert reach is not Reach.SOME


@given(selector, labels, st.sets(keys), st.sets(keys))
def test_three_valued_reach_is_sound_with_labels_known_present(sel, lab, unknown_keys, present_keys):
    """PRESENT: the label is there, its value unknown. ALL must hold for every value, NONE for none."""
    present_keys -= unknown_keys
    reach = selector_reach(sel, lambda k: UNKNOWN if k in unknown_keys else PRESENT if k in present_keys
                           else lab.get(k))
    known = {k: v for k, v in lab.items() if k not in unknown_keys | present_keys}
    for value in ("a", "prod", ""):
        for filler in ({}, {k: value for k in unknown_keys}):
            full = {**known, **filler, **{k: value for k in present_keys}}
            if reach is Reach.ALL:
                assert reference(sel, full)
            if reach is Reach.NONE:
                assert not reference(sel, full)


def test_bad_operator_is_a_clear_error():
    with pytest.raises(PolicyError, match="Near"):
        selector_reach({"matchExpressions": [{"key": "a", "operator": "Near"}]}, lambda k: None)


# -- Calico selectors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ns_labels, want", [
    ("", {}, Reach.ALL), ("all()", {}, Reach.ALL), ("role == 'db'", {}, Reach.SOME),
    ("projectcalico.org/namespace == 'shop'", {}, Reach.ALL),
    ("projectcalico.org/namespace == 'other'", {}, Reach.NONE),
    ("pcns.team == 'a' && role == 'db'", {"team": "a"}, Reach.SOME),
    ("pcns.team == 'b' && role == 'db'", {"team": "a"}, Reach.NONE),
    ("pcns.team != 'b'", {}, Reach.ALL),  # != holds when the label is absent
    ("has(pcns.team)", {}, Reach.NONE), ("!has(pcns.team)", {}, Reach.ALL),
    ("pcns.team in {'a', \"b\"}", {"team": "b"}, Reach.ALL), ("pcns.team not in {'a'}", {"team": "a"}, Reach.NONE),
    ("pcns.env starts with 'pr' || role == 'x'", {"env": "prod"}, Reach.ALL),
    ("(pcns.env ends with 'x' || pcns.env contains 'ro') && all()", {"env": "prod"}, Reach.ALL),
])
def test_calico_selector(text, ns_labels, want):
    resolve = {"projectcalico.org/namespace": "shop", **{f"pcns.{k}": v for k, v in ns_labels.items()}}
    assert compile_selector(text)(lambda k: resolve.get(k) if k.startswith(("pcns.", "projectcalico")) else UNKNOWN) is want


@pytest.mark.parametrize("text, rule_namespace_selector, want", [
    ("has(name)", False, Reach.ALL), ("!has(name)", False, Reach.NONE), ("name == 'shop'", False, Reach.SOME),
    ("name != 'shop'", False, Reach.SOME), ("name in {'a'}", False, Reach.SOME), ("global()", False, Reach.ALL),
    ("global()", True, Reach.NONE), ("!global()", True, Reach.ALL), ("all()", True, Reach.ALL),
])
def test_calico_selector_over_a_label_known_present(text, rule_namespace_selector, want):
    assert compile_selector(text, rule_namespace_selector)(lambda k: PRESENT if k == "name" else UNKNOWN) is want


@pytest.mark.parametrize("text", ["role ==", "a == b", "(all()", "has(x", "a ~ 'b'", "a in {'x'"])
def test_calico_selector_errors_name_the_selector(text):
    with pytest.raises(PolicyError, match="Calico selector"):
        compile_selector(text)


# -- the semantics, rule by rule ------------------------------------------------------------------------------------

def k8s(spec):
    return NetworkPolicy("shop", "p", spec)


def engine(kind, api, spec, namespace=""):
    return NetworkPolicy(namespace, "p", spec, kind, api)


CNP, CCNP = ("CiliumNetworkPolicy", "cilium.io/v2"), ("CiliumClusterwideNetworkPolicy", "cilium.io/v2")
GNP, CNPC = ("GlobalNetworkPolicy", "projectcalico.org/v3"), ("NetworkPolicy", "projectcalico.org/v3")
ANP, BANP = ("AdminNetworkPolicy", "policy.networking.k8s.io/v1alpha1"), \
    ("BaselineAdminNetworkPolicy", "policy.networking.k8s.io/v1alpha1")


def row(policy):
    e = analyze(policy, NS)
    return (e.counts, e.ingress.reach, e.ingress.isolates, e.ingress.admits_everything, bool(e.ingress.open_rules),
            e.egress.reach, e.egress.isolates)


A, S, N = Reach.ALL, Reach.SOME, Reach.NONE
CASES = [
    # Kubernetes: policyTypes defaulting, empty selectors, peers
    ("k8s no types: Ingress only", k8s({"podSelector": {}}), (True, A, True, False, False, N, False)),
    ("k8s egress:[] is not Egress", k8s({"podSelector": {}, "egress": []}), (True, A, True, False, False, N, False)),
    ("k8s egress rules default Egress", k8s({"podSelector": {}, "egress": [{"to": [{"podSelector": {}}]}]}),
     (True, A, True, False, False, A, True)),
    ("k8s Egress only", k8s({"podSelector": {}, "policyTypes": ["Egress"]}), (True, N, False, False, False, A, True)),
    ("k8s matchLabels null selects all", k8s({"podSelector": {"matchLabels": None}}),
     (True, A, True, False, False, N, False)),
    ("k8s matchExpressions is SOME", k8s({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}),
     (True, S, True, False, False, N, False)),
    ("k8s rule {} admits everything", k8s({"podSelector": {}, "ingress": [{}]}), (True, A, True, True, True, N, False)),
    ("k8s from everywhere on a port", k8s({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
     (True, A, True, False, True, N, False)),
    ("k8s namespaceSelector {} is every pod", k8s({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
     (True, A, True, True, True, N, False)),
    ("k8s namespaceSelector {} + podSelector set is limited",
     k8s({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}}]}]}),
     (True, A, True, False, False, N, False)),
    ("k8s podSelector {} peer is own namespace", k8s({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
     (True, A, True, False, False, N, False)),
    ("k8s ipBlock 0.0.0.0/0", k8s({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}),
     (True, A, True, True, True, N, False)),
    ("k8s ipBlock /0 with except admits everything", k8s({"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}}]}]}), (True, A, True, True, True, N, False)),
    ("k8s namespaceSelector metadata.name Exists is every pod", k8s({"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}}]}]}),
     (True, A, True, True, True, N, False)),
    ("k8s namespaceSelector metadata.name NotIn is limited", k8s({"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}}]}]}),
     (True, A, True, False, False, N, False)),
    # Cilium
    ("cnp ingress section isolates", engine(*CNP, {"endpointSelector": {}, "ingress": [{}]}, "shop"),
     (True, A, True, False, False, N, False)),
    ("cnp no sections isolates nothing", engine(*CNP, {"endpointSelector": {}}, "shop"),
     (True, N, False, False, False, N, False)),
    ("cnp enableDefaultDeny false", engine(*CNP, {"endpointSelector": {}, "ingress": [{"fromEntities": ["cluster"]}],
                                                  "enableDefaultDeny": {"ingress": False}}, "shop"),
     (True, A, False, True, True, N, False)),
    ("cnp fromEntities all", engine(*CNP, {"endpointSelector": {}, "ingress": [{"fromEntities": ["all"]}]}, "shop"),
     (True, A, True, True, True, N, False)),
    ("cnp fromEndpoints {} is own namespace", engine(*CNP, {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}]}]},
                                                     "shop"), (True, A, True, False, False, N, False)),
    ("ccnp fromEndpoints {} is every pod", engine(*CCNP, {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}]}]}),
     (True, A, True, True, True, N, False)),
    ("ccnp namespace label selects", engine(*CCNP, {"endpointSelector": {"matchLabels": {
        "k8s:io.cilium.k8s.namespace.labels.team": "a"}}, "ingressDeny": [{"fromEntities": ["world"]}]}),
     (True, A, True, False, False, N, False)),
    ("ccnp other namespace", engine(*CCNP, {"endpointSelector": {"matchLabels": {
        "k8s:io.kubernetes.pod.namespace": "other"}}, "ingress": [{}]}), (False, N, False, False, False, N, False)),
    ("ccnp pod labels only do not count", engine(*CCNP, {"endpointSelector": {"matchLabels": {"app": "x"}}, "ingress": [{}]}),
     (False, S, True, False, False, N, False)),
    ("ccnp host policy", engine(*CCNP, {"nodeSelector": {}, "ingress": [{}]}), (False, N, False, False, False, N, False)),
    ("cnp toPorts only admits every source on ports", engine(*CNP, {"endpointSelector": {}, "ingress": [
        {"toPorts": [{"ports": [{"port": "80"}]}]}]}, "shop"), (True, A, True, False, True, N, False)),
    ("cnp spec and specs both apply", engine(*CNP, {"endpointSelector": {}, "ingress": [{"fromEntities": ["all"]}],
                                                    "specs": [{"endpointSelector": {}, "ingress": [{}]}]}, "shop"),
     (True, A, True, True, True, N, False)),
    ("ccnp fromEndpoints namespace Exists is every pod", engine(*CCNP, {"endpointSelector": {}, "ingress": [
        {"fromEndpoints": [{"matchExpressions": [{"key": "io.kubernetes.pod.namespace", "operator": "exists"}]}]}]}),
     (True, A, True, True, True, N, False)),
    ("cnp fromEndpoints naming another namespace is limited", engine(*CNP, {"endpointSelector": {}, "ingress": [
        {"fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "other"}}]}]}, "shop"),
     (True, A, True, False, False, N, False)),
    # Calico
    ("gnp all() default types", engine(*GNP, {"selector": "all()"}), (True, A, True, False, False, N, False)),
    ("gnp egress rules only: Egress", engine(*GNP, {"selector": "all()", "egress": [{"action": "Allow"}]}),
     (True, N, False, False, False, A, True)),
    ("gnp allow everything", engine(*GNP, {"selector": "all()", "ingress": [{"action": "Allow"}]}),
     (True, A, True, True, True, N, False)),
    ("gnp deny rule opens nothing", engine(*GNP, {"selector": "all()", "ingress": [{"action": "Deny"}]}),
     (True, A, True, False, False, N, False)),
    ("gnp source all() is every pod", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"selector": "all()"}}]}), (True, A, True, True, True, N, False)),
    ("calico np source all() is own namespace", engine(*CNPC, {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"selector": "all()"}}]}, "shop"), (True, A, True, False, False, N, False)),
    ("gnp namespaceSelector misses", engine(*GNP, {"namespaceSelector": "team == 'b'", "selector": "all()"}),
     (False, N, False, False, False, N, False)),
    ("gnp preDNAT is host only", engine(*GNP, {"preDNAT": True, "selector": "all()"}),
     (False, N, False, False, False, N, False)),
    ("gnp Allow after a Deny of everything is unreachable", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Deny"}, {"action": "Allow"}]}), (True, A, True, False, False, N, False)),
    ("gnp Allow of every pod after a Deny of every pod is unreachable", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Deny", "source": {"selector": "all()"}}, {"action": "Allow", "source": {"selector": "all()"}}]}),
     (True, A, True, False, False, N, False)),
    ("gnp Allow after a Deny on one port still opens", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Deny", "protocol": "TCP", "destination": {"ports": [22]}}, {"action": "Allow"}]}),
     (True, A, True, True, True, N, False)),
    ("gnp Pass of everything does not isolate", engine(*GNP, {"selector": "all()", "ingress": [{"action": "Pass"}]}),
     (True, A, False, False, False, N, False)),
    ("gnp Pass after a Deny of everything is unreachable", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Deny"}, {"action": "Pass"}]}), (True, A, True, False, False, N, False)),
    ("gnp Pass of some keeps isolation", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Pass", "source": {"selector": "role == 'x'"}}]}), (True, A, True, False, False, N, False)),
    ("gnp Deny of the own end's pods only leaves the Allow", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Deny", "destination": {"selector": "role == 'db'"}}, {"action": "Allow"}]}),
     (True, A, True, True, True, N, False)),
    ("gnp notProtocol narrows to some ports", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Allow", "notProtocol": "TCP"}]}), (True, A, True, False, True, N, False)),
    ("gnp ipVersion Allow still opens", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Allow", "ipVersion": 4}]}), (True, A, True, True, True, N, False)),
    ("gnp rule namespaceSelector global() selects no pod", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"namespaceSelector": "global()"}}]}), (True, A, True, False, False, N, False)),
    ("gnp source selector and nets are ANDed", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"selector": "all()", "nets": ["10.0.0.0/8"]}}]}),
     (True, A, True, False, False, N, False)),
    ("gnp source notSelector alone is every source but those", engine(*GNP, {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"notSelector": "role == 'x'"}}]}), (True, A, True, True, True, N, False)),
    ("calico np source notNets alone is every source but those", engine(*CNPC, {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"notNets": ["10.0.0.0/8"]}}]}, "shop"), (True, A, True, True, True, N, False)),
    # AdminNetworkPolicy
    ("anp deny every pod isolates", engine(*ANP, {"priority": 1, "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
                                                 "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}),
     (True, A, True, False, False, N, False)),
    ("anp pass does nothing", engine(*ANP, {"priority": 1, "subject": {"namespaces": {}}, "ingress": [
        {"action": "Pass", "from": [{"namespaces": {}}]}]}), (True, A, False, False, False, N, False)),
    ("anp allow every pod", engine(*ANP, {"priority": 1, "subject": {"namespaces": {}}, "ingress": [
        {"action": "Allow", "from": [{"namespaces": {}}]}]}), (True, A, False, True, True, N, False)),
    ("anp pods subject on pod labels alone does not count", engine(*ANP, {"priority": 1, "subject": {"pods": {
        "namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}), (False, S, True, False, False, N, False)),
    ("banp elsewhere", engine(*BANP, {"subject": {"namespaces": {"matchLabels": {"team": "z"}}}, "ingress": [
        {"action": "Deny", "from": [{"namespaces": {}}]}]}), (False, N, False, False, False, N, False)),
]


@pytest.mark.parametrize("case, policy, want", CASES, ids=[c[0] for c in CASES])
def test_semantics(case, policy, want):
    assert row(policy) == want


def test_banp_allow_does_not_open_over_isolation():
    e = analyze(engine(*BANP, {"subject": {"namespaces": {}}, "ingress": [
        {"action": "Allow", "from": [{"namespaces": {}}]}]}), NS)
    assert e.ingress.admits_everything and not e.ingress.opens_over_isolation


def test_namespaced_policy_elsewhere_does_not_apply_and_bad_specs_are_named():
    assert analyze(NetworkPolicy("other", "p", {"podSelector": {}}), NS) is None
    with pytest.raises(PolicyError, match="GlobalNetworkPolicy p"):
        analyze(engine(*GNP, {"selector": "a =="}), NS)
    with pytest.raises(PolicyError, match="no semantics"):
        analyze(engine("Gadget", "example.com/v1", {}), NS)


@pytest.mark.parametrize("policy, direction, want", [
    (k8s({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}},
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "10.0.0.0/8"]}}]}]}),
     "egress", "egress rule 1 admits every destination except 169.254.169.254/32"),
    (k8s({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}, {"ipBlock": {"cidr": "::/0"}}]}]}),
     "egress", "egress rule 1 admits every destination"),
    (engine(*CNP, {"endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "::/0", "except": ["fd00::/8"]}],
                                                       "toPorts": [{"ports": [{"port": "443"}]}]}]}, "shop"),
     "egress", "egress rule 1 admits every destination except fd00::/8 on some ports"),
    (engine(*GNP, {"selector": "all()", "ingress": [{"action": "Pass", "source": {"selector": "role == 'x'"}},
                                                   {"action": "Deny", "source": {"nets": ["10.0.0.0/8"]}},
                                                   {"action": "Allow", "source": {"notNets": ["192.0.2.0/24"]}}]}),
     "ingress", "ingress rule 3 admits every source except 192.0.2.0/24, what ingress rule 1 passes, "
                "what ingress rule 2 denies"),
])
def test_open_rules_name_what_they_leave_out(policy, direction, want):
    assert getattr(analyze(policy, NS), direction).open_rules == (want,)


def test_calico_rule_without_a_known_action_is_a_clear_error():
    # Asked of the rules' reduction, not of analyze: how analyze reports a direction it cannot read is its own.
    with pytest.raises(PolicyError, match="ingress rule 1: action must be one of Allow, Deny, Pass, Log, got 'allow'"):
        calico._ordered_rules([{"action": "allow"}], "source", False)


GROUPS = {"world": CidrGroup({"scope": "world"}, ("0.0.0.0/0",)), "partners": CidrGroup({}, ("203.0.113.0/24",))}


def to_groups(*entries, groups=GROUPS):
    return engine(*CNP, {"endpointSelector": {}, "ingress": [{}], "egress": [{"toCIDRSet": list(entries)}]},
                  "shop")._replace(cidr_groups=groups)


@pytest.mark.parametrize("entry, everything", [
    ({"cidrGroupRef": "world"}, True), ({"cidrGroupRef": "partners"}, False),
    ({"cidrGroupSelector": {"matchLabels": {"scope": "world"}}}, True),
    ({"cidrGroupSelector": {"matchLabels": {"scope": "nowhere"}}}, False),
])
def test_cidr_group_references_resolve_to_the_groups_cidrs(entry, everything):
    effect = analyze(to_groups(entry), NS)
    assert effect.egress.admits_everything is everything and effect.egress.isolates and effect.ingress.isolates


@pytest.mark.parametrize("entry, groups, why", [
    ({"cidrGroupRef": "gone"}, GROUPS, "cidrGroupRef 'gone': no CiliumCIDRGroup of that name"),
    ({"cidrGroupRef": "world"}, None, "cidrGroupRef 'world': the cluster's CiliumCIDRGroups could not be read"),
    ({"cidrGroupSelector": {}}, None, "cidrGroupSelector {}: the cluster's CiliumCIDRGroups could not be read"),
    ({"except": ["10.0.0.0/8"]}, GROUPS, "a CIDR rule needs cidr, cidrGroupRef or cidrGroupSelector"),
])
def test_unresolvable_cidr_group_references_are_named(entry, groups, why):
    # Asked of the CIDR rule: how analyze reports a direction it cannot read is its own (and tested over TLS).
    with pytest.raises(PolicyError, match=re.escape(why)):
        cilium._cidr_set_peers(entry, groups)


@pytest.mark.parametrize("spec, names", [
    ({"egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/8"}]}]}, False),
    ({"specs": [{"ingressDeny": [{"fromCIDRSet": [{"cidrGroupRef": "a"}]}]}]}, True),
    ({"egress": [{"toCIDRSet": [{"cidrGroupSelector": {}}]}]}, True),
    ({"egress": "not a list", "specs": [7, {"egress": [None, {"toCIDRSet": {"cidrGroupRef": "a"}}]}]}, False),
])
def test_which_cilium_policies_name_cidr_groups(spec, names):
    assert names_cidr_groups(spec) is names


def test_rules_are_reduced_once_per_rules_object_not_per_equal_value():
    calls = []
    reduce = _by_identity(lambda rules, side: calls.append((rules, side)) or len(rules))
    rules = [{"action": "Allow"}]
    assert reduce(rules, "source") == reduce(rules, "source") == 1 and len(calls) == 1
    assert reduce([{"action": "Allow"}], "source") == 1 and len(calls) == 2, "an equal list is another policy's"
    assert reduce(rules, "destination") == 1 and len(calls) == 3

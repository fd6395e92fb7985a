"""Enforcement evidence from objects (handler/enforcement.py, pure): add-on configuration values in JSON or YAML,
and what EKS Auto Mode NodeClasses and NodePools say about pods no policy selects."""
from __future__ import annotations

import pytest

from handler import enforcement
from handler.models import PodDefault

ADDON = {"addonName": "vpc-cni", "addonVersion": "v1.21.1-eksbuild.1"}


@pytest.mark.parametrize("values", [
    '{"enableNetworkPolicy": "true"}',
    'enableNetworkPolicy: "true"\n',
    "enableNetworkPolicy: true\nenv:\n  NETWORK_POLICY_ENFORCING_MODE: standard\n",
    "# written by Terraform\nnodeAgent:\n  enablePolicyEventLogs: 'true'\nenableNetworkPolicy: 'True'\n",
])
def test_addon_configuration_values_in_json_or_yaml_enable_the_agent(values) -> None:
    evidence = enforcement.from_addon({**ADDON, "configurationValues": values})
    assert evidence.engines and "enableNetworkPolicy=true" in evidence.engines[0]


@pytest.mark.parametrize("values, why", [
    ('enableNetworkPolicy: "false"', "enableNetworkPolicy is not true"),
    ("", "enableNetworkPolicy is not true"),
    ("enableNetworkPolicy: [unclosed", "neither JSON nor YAML"),
    ("- enableNetworkPolicy", "neither JSON nor YAML"),  # a list, not a mapping
    ("!!python/object/apply:os.system ['true']", "neither JSON nor YAML"),  # safe loading only
])
def test_addon_configuration_values_that_do_not_enable_the_agent(values, why) -> None:
    evidence = enforcement.from_addon({**ADDON, "configurationValues": values})
    assert not evidence.engines and why in evidence.absent[0]


def node_class(name: str, network_policy: str | None = None) -> dict:
    return {"metadata": {"name": name}, "spec": {"networkPolicy": network_policy} if network_policy else {}}


def node_pool(name: str, ref: dict) -> dict:
    return {"metadata": {"name": name}, "spec": {"template": {"spec": {"nodeClassRef": ref}}}}


def eks(name: str) -> dict:
    return {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": name}


CLASSES = [node_class("default"), node_class("locked", "DefaultDeny")]


@pytest.mark.parametrize("pools, other_nodes, want", [
    ([node_pool("a", eks("locked")), node_pool("b", eks("locked"))], 0, PodDefault.DENY),
    ([node_pool("a", {"apiVersion": "eks.amazonaws.com/v1", "kind": "NodeClass", "name": "locked"})], 0,
     PodDefault.DENY),  # a v1beta1-style reference
    ([node_pool("a", eks("locked")), node_pool("general-purpose", eks("default"))], 0, PodDefault.SOME_DENY),
    ([node_pool("a", eks("locked")), node_pool("karpenter", {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                                             "name": "locked"})], 0, PodDefault.SOME_DENY),
    ([node_pool("a", eks("locked"))], 2, PodDefault.SOME_DENY),  # nodes running aws-node are not Auto Mode's
    ([node_pool("general-purpose", eks("default"))], 0, PodDefault.ALLOW),  # DefaultDeny class with no nodes
    ([], 0, PodDefault.ALLOW),
])
def test_pods_no_policy_selects(pools, other_nodes, want) -> None:
    result = enforcement.unselected_pods(CLASSES, pools, other_nodes)
    assert result.default is want
    assert result.node_classes == (("locked",) if want is not PodDefault.ALLOW else ())


def test_no_default_deny_node_class_allows() -> None:
    assert enforcement.unselected_pods([node_class("default", "DefaultAllow")], [node_pool("a", eks("default"))],
                                       0).default is PodDefault.ALLOW

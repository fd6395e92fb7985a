"""Whether anything enforces NetworkPolicy on an EKS cluster (CIS Kubernetes 5.3.1 / CIS EKS 4.3.1), from what
was read: the vpc-cni add-on's configuration, the aws-node DaemonSet, the amazon-vpc-cni ConfigMap, and the
Cilium and Calico DaemonSets. Pure: objects in, EnforcementEvidence out.

On EKS a NetworkPolicy object does nothing until an engine enforces it: the VPC CNI's network policy agent
(`enableNetworkPolicy`), Calico or Cilium.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from handler.models import EnforcementEvidence

VPC_CNI_ADDON = "vpc-cni"
NODE_AGENT_CONTAINER = "aws-eks-nodeagent"  # the VPC CNI's network policy agent, a container of aws-node
# (namespace, DaemonSet name, engine) of the engines that enforce policies themselves.
ENGINE_DAEMONSETS = (("kube-system", "cilium", "Cilium"), ("kube-system", "calico-node", "Calico"),
                     ("calico-system", "calico-node", "Calico"))


def from_addon(addon: Mapping[str, Any] | None) -> EnforcementEvidence:
    """DescribeAddon's `addon` for vpc-cni (None: not installed as an add-on)."""
    if addon is None:
        return EnforcementEvidence(absent=("the VPC CNI is not installed as an EKS add-on",))
    raw = addon.get("configurationValues") or ""
    try:
        config = json.loads(raw) if raw.strip().startswith("{") else {}
    except ValueError:
        config = {}  # configuration values may also be YAML; the DaemonSet then tells
    if str(config.get("enableNetworkPolicy", "")).lower() == "true":
        return EnforcementEvidence(engines=("VPC CNI network policy agent (add-on vpc-cni "
                                            f"{addon.get('addonVersion', '')}: enableNetworkPolicy=true)",))
    return EnforcementEvidence(absent=("add-on vpc-cni: enableNetworkPolicy is not true in its configuration",))


def from_aws_node(daemonset: Mapping[str, Any] | None, configmap: Mapping[str, Any] | None) -> EnforcementEvidence:
    """The self-managed (or add-on) VPC CNI: the node agent's `--enable-network-policy=true` (or the
    ENABLE_NETWORK_POLICY variable), and the controller switch in the amazon-vpc-cni ConfigMap; both are needed."""
    if daemonset is None:
        return EnforcementEvidence(absent=("DaemonSet kube-system/aws-node not found",))
    agent = _agent_enabled(daemonset)
    controller = str(((configmap or {}).get("data") or {}).get("enable-network-policy-controller", "")).lower()
    if agent and controller == "true":
        return EnforcementEvidence(engines=("VPC CNI network policy agent (aws-node: --enable-network-policy=true; "
                                            "amazon-vpc-cni: enable-network-policy-controller=true)",))
    missing = [what for what, on in ((f"{NODE_AGENT_CONTAINER} --enable-network-policy=true", agent),
                                     ("amazon-vpc-cni enable-network-policy-controller=true", controller == "true"))
               if not on]
    return EnforcementEvidence(absent=(f"VPC CNI network policy is off: no {' and no '.join(missing)}",))


def from_engine_daemonset(namespace: str, name: str, engine: str,
                          daemonset: Mapping[str, Any] | None) -> EnforcementEvidence:
    """Calico or Cilium runs when its agent DaemonSet has ready pods."""
    where = f"DaemonSet {namespace}/{name}"
    if daemonset is None:
        return EnforcementEvidence(absent=(f"{where} not found",))
    ready = int((daemonset.get("status") or {}).get("numberReady") or 0)
    if ready > 0:
        return EnforcementEvidence(engines=(f"{engine} ({where}, {ready} ready)",))
    return EnforcementEvidence(absent=(f"{where} has no ready pods",))


def _agent_enabled(daemonset: Mapping[str, Any]) -> bool:
    containers = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in (containers.get("containers") or []) + (containers.get("initContainers") or []):
        args = [str(a).lower() for a in container.get("args") or ()]
        env = {e.get("name"): str(e.get("value", "")).lower() for e in container.get("env") or ()}
        if container.get("name") == NODE_AGENT_CONTAINER and "--enable-network-policy=true" in args:
            return True
        if env.get("ENABLE_NETWORK_POLICY") == "true":
            return True
    return False

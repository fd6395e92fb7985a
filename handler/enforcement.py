"""Whether anything enforces NetworkPolicy on an EKS cluster (CIS Kubernetes 5.3.1 / CIS EKS 4.3.1), from what
was read: the vpc-cni add-on's configuration, the aws-node DaemonSet, the amazon-vpc-cni ConfigMap, the Cilium
and Calico DaemonSets, and on EKS Auto Mode the NodeClasses and NodePools. Pure: objects in, EnforcementEvidence
(and UnselectedPods) out.

On EKS a NetworkPolicy object does nothing until an engine enforces it: the VPC CNI's network policy agent
(`enableNetworkPolicy`), Calico or Cilium. EKS Auto Mode (DescribeCluster `computeConfig.enabled`) has no aws-node
DaemonSet and no vpc-cni add-on: its nodes carry the agent, and the kube-system ConfigMap amazon-vpc-cni with
`enable-network-policy-controller: "true"` switches enforcement on; without it NetworkPolicy and
ApplicationNetworkPolicy objects are accepted but not enforced. A NodeClass (`eks.amazonaws.com/v1`) with
`networkPolicy: DefaultDeny` denies, on its nodes, every pod that no policy selects (EKS user guide:
"Use Network Policies with EKS Auto Mode", auto-net-pol; "Create a Node Class for Amazon EKS", create-node-class).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from handler.models import EnforcementEvidence, PodDefault, UnselectedPods

VPC_CNI_ADDON = "vpc-cni"
NODE_AGENT_CONTAINER = "aws-eks-nodeagent"  # the VPC CNI's network policy agent, a container of aws-node
# (namespace, DaemonSet name, engine) of the engines that enforce policies themselves, where their installs put
# them; an agent elsewhere is found by its `k8s-app` label (ENGINE_AGENT_LABELS).
ENGINE_DAEMONSETS = (("kube-system", "cilium", "Cilium"), ("kube-system", "calico-node", "Calico"),
                     ("calico-system", "calico-node", "Calico"))
ENGINE_AGENT_LABELS = {"Cilium": "cilium", "Calico": "calico-node"}  # k8s-app of the agent DaemonSet
CONTROLLER_KEY = "enable-network-policy-controller"  # in ConfigMap kube-system/amazon-vpc-cni
NODE_CLASS_GROUP = "eks.amazonaws.com"  # NodeClass, the EKS Auto Mode kind a NodePool's nodeClassRef names
DEFAULT_DENY = "DefaultDeny"  # NodeClass spec.networkPolicy; DefaultAllow when absent


def from_addon(addon: Mapping[str, Any] | None) -> EnforcementEvidence:
    """DescribeAddon's `addon` for vpc-cni (None: not installed as an add-on)."""
    if addon is None:
        return EnforcementEvidence(absent=("the VPC CNI is not installed as an EKS add-on",))
    config = addon_configuration(addon.get("configurationValues") or "")
    if config is None:
        return EnforcementEvidence(absent=("add-on vpc-cni: its configuration values are neither JSON nor YAML",))
    if str(config.get("enableNetworkPolicy", "")).lower() == "true":
        return EnforcementEvidence(engines=("VPC CNI network policy agent (add-on vpc-cni "
                                            f"{addon.get('addonVersion', '')}: enableNetworkPolicy=true)",))
    return EnforcementEvidence(absent=("add-on vpc-cni: enableNetworkPolicy is not true in its configuration",))


def addon_configuration(raw: str) -> Mapping[str, Any] | None:
    """An add-on's configurationValues, which EKS takes as JSON or YAML; None when it is neither (or not a
    mapping). PyYAML's safe loader builds plain data only; it ships with the kubernetes client."""
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except ValueError:
        import yaml  # only for values that are not JSON: kept out of the cold start (docs/benchmarks.md, 2)

        try:
            config = yaml.safe_load(raw)
        except yaml.YAMLError:
            return None
    return config if isinstance(config, Mapping) else None


def from_aws_node(daemonset: Mapping[str, Any] | None, configmap: Mapping[str, Any] | None) -> EnforcementEvidence:
    """The self-managed (or add-on) VPC CNI: the node agent's `--enable-network-policy=true` (or the
    ENABLE_NETWORK_POLICY variable), and the controller switch in the amazon-vpc-cni ConfigMap; both are needed."""
    if daemonset is None:
        return EnforcementEvidence(absent=("DaemonSet kube-system/aws-node not found",))
    agent, controller = _agent_enabled(daemonset), controller_enabled(configmap)
    if agent and controller:
        return EnforcementEvidence(engines=("VPC CNI network policy agent (aws-node: --enable-network-policy=true; "
                                            "amazon-vpc-cni: enable-network-policy-controller=true)",))
    missing = [what for what, on in ((f"{NODE_AGENT_CONTAINER} --enable-network-policy=true", agent),
                                     ("amazon-vpc-cni enable-network-policy-controller=true", controller))
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


def controller_enabled(configmap: Mapping[str, Any] | None) -> bool:
    return str(((configmap or {}).get("data") or {}).get(CONTROLLER_KEY, "")).lower() == "true"


def nodes_outside_auto_mode(aws_node: Mapping[str, Any] | None) -> int:
    """Nodes that run aws-node: EKS Auto Mode nodes do not, so on an Auto Mode cluster these are managed or
    self-managed nodes, the only ones the scanner can see without reading nodes."""
    status = (aws_node or {}).get("status") or {}
    return max(int(status.get("desiredNumberScheduled") or 0), int(status.get("numberReady") or 0))


def from_auto_mode(configmap: Mapping[str, Any] | None, aws_node: Mapping[str, Any] | None) -> EnforcementEvidence:
    """EKS Auto Mode: enforced when the ConfigMap switches the controller on, on the Auto Mode nodes. Nodes that
    run aws-node are not Auto Mode nodes: their own agent must be on too, or policies stop at them."""
    where = "ConfigMap kube-system/amazon-vpc-cni"
    if not controller_enabled(configmap):
        return EnforcementEvidence(absent=(f"EKS Auto Mode: {where} does not set {CONTROLLER_KEY}: \"true\", so "
                                           "NetworkPolicy and ApplicationNetworkPolicy objects are accepted but not "
                                           "enforced",))
    others = nodes_outside_auto_mode(aws_node)
    if others and not _agent_enabled(aws_node or {}):
        return EnforcementEvidence(absent=(f"EKS Auto Mode nodes enforce policies ({where}: {CONTROLLER_KEY}=true), "
                                           f"but DaemonSet kube-system/aws-node runs on {others} other node(s) "
                                           f"without {NODE_AGENT_CONTAINER} --enable-network-policy=true",))
    return EnforcementEvidence(engines=(f"EKS Auto Mode network policy agent ({where}: {CONTROLLER_KEY}=true)",))


def unselected_pods(node_classes: Iterable[Mapping[str, Any]], node_pools: Iterable[Mapping[str, Any]],
                    other_nodes: int) -> UnselectedPods:
    """What an EKS Auto Mode cluster whose controller is on does to pods no policy selects. DENY only when every
    NodePool uses a DefaultDeny NodeClass and no node outside Auto Mode is seen: the scanner never reads pods, so
    when only some NodePools do, which namespaces' pods land on their nodes is not known (SOME_DENY)."""
    denying = sorted(_name(c) for c in node_classes if denies_by_default(c))
    if not denying:
        return UnselectedPods()
    pools = {_name(p): _node_class_of(p) for p in node_pools}
    deny_pools = sorted(p for p, node_class in pools.items() if node_class in denying)
    if not deny_pools:
        return UnselectedPods()  # a DefaultDeny NodeClass no NodePool uses has no nodes
    used = tuple(sorted({str(pools[p]) for p in deny_pools}))
    classes = f"NodeClass {', '.join(used)} (networkPolicy: {DEFAULT_DENY})"
    rest = sorted(set(pools) - set(deny_pools))
    if not rest and not other_nodes:
        return UnselectedPods(PodDefault.DENY, f"every NodePool of this EKS Auto Mode cluster "
                                               f"({', '.join(deny_pools)}) uses {classes}, which denies ingress and "
                                               "egress to every pod no policy selects", used)
    elsewhere = ([f"NodePool {', '.join(rest)}"] if rest else []) + (
        [f"{other_nodes} node(s) outside EKS Auto Mode (aws-node)"] if other_nodes else [])
    return UnselectedPods(PodDefault.SOME_DENY,
                          f"NodePool {', '.join(deny_pools)} use(s) {classes}, but {' and '.join(elsewhere)} do(es) "
                          "not; the scanner does not read pods, so which namespaces' pods run on the DefaultDeny "
                          "nodes is not known, and this verdict rests on the policies alone", used)


def denies_by_default(node_class: Mapping[str, Any]) -> bool:
    return (node_class.get("spec") or {}).get("networkPolicy") == DEFAULT_DENY


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _node_class_of(node_pool: Mapping[str, Any]) -> str | None:
    """The EKS NodeClass a karpenter.sh NodePool's nodes are of; None for any other class (EC2NodeClass of a
    self-managed Karpenter: not Auto Mode nodes). v1 names the group, v1beta1 an apiVersion."""
    ref = (((node_pool.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeClassRef") or {}
    group = ref.get("group") or str(ref.get("apiVersion", "")).split("/")[0]
    return str(ref.get("name", "")) if group == NODE_CLASS_GROUP and ref.get("kind", "NodeClass") == "NodeClass" \
        else None


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

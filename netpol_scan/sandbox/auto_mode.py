"""EKS Auto Mode in the sandbox: the objects an Auto Mode cluster shows its readers, on a test API server cluster.

Auto Mode has no aws-node DaemonSet and no vpc-cni add-on. What the scanner reads instead: the kube-system
ConfigMap amazon-vpc-cni (`enable-network-policy-controller`), the cluster-scoped NodeClasses
(`eks.amazonaws.com/v1`, `spec.networkPolicy` DefaultAllow | DefaultDeny) and NodePools (`karpenter.sh/v1`,
`spec.template.spec.nodeClassRef`). The built-in NodePools general-purpose and system use the built-in NodeClass
`default` (EKS user guide: create-node-class, set-builtin-node-pools, auto-net-pol). DescribeCluster's
`computeConfig.enabled` is set on moto's backend by World.add_cluster(auto_mode=True).
"""
from __future__ import annotations

from netpol_scan.sandbox.kube_api import Cluster

BUILT_IN_POOLS = {"general-purpose": "default", "system": "default"}  # NodePool -> NodeClass


def add_auto_mode(cluster: Cluster, controller: str | None = "true",
                  node_classes: dict[str, str | None] | None = None,
                  node_pools: dict[str, str] | None = None) -> Cluster:
    """Serves the kinds an Auto Mode cluster has and adds its objects. `controller`: the ConfigMap's
    enable-network-policy-controller (None: no ConfigMap); `node_classes`: name -> spec.networkPolicy (None: unset,
    i.e. DefaultAllow); `node_pools`: name -> the NodeClass it uses."""
    node_classes = {"default": None} if node_classes is None else node_classes
    node_pools = BUILT_IN_POOLS if node_pools is None else node_pools
    cluster.add_resource_kind("", "v1", "configmaps", "ConfigMap", True)
    cluster.add_resource_kind("apps", "v1", "daemonsets", "DaemonSet", True)
    cluster.add_resource_kind("eks.amazonaws.com", "v1", "nodeclasses", "NodeClass", False)
    cluster.add_resource_kind("karpenter.sh", "v1", "nodepools", "NodePool", False)
    if controller is not None:
        cluster.add_object("v1", "configmaps", {"metadata": {"name": "amazon-vpc-cni", "namespace": "kube-system"},
                                                "data": {"enable-network-policy-controller": controller}})
    for name, network_policy in node_classes.items():
        spec = {"role": "AmazonEKSAutoNodeRole", "networkPolicyEventLogs": "Disabled",
                **({"networkPolicy": network_policy} if network_policy else {})}
        cluster.add_object("eks.amazonaws.com/v1", "nodeclasses", {"metadata": {"name": name}, "spec": spec})
    for name, node_class in node_pools.items():
        ref = {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": node_class}
        cluster.add_object("karpenter.sh/v1", "nodepools",
                           {"metadata": {"name": name}, "spec": {"template": {"spec": {"nodeClassRef": ref}}}})
    return cluster

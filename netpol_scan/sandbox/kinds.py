"""The kinds the scanner reads that the sandbox can serve, in one place: group, version, plural and scope as the
projects' own CRDs (or kube-apiserver, for built-in kinds) define them.

    serve(cluster, *CILIUM)            # as installing Cilium's CRDs would
    add(cluster, manifest)             # a manifest (apiVersion, kind, metadata, ...) as an object of its kind

Sources, checked against the CRDs where they are public:
- Cilium: `ciliumnetworkpolicies` (Namespaced), `ciliumclusterwidenetworkpolicies` (Cluster), `cilium.io/v2`;
  `ciliumcidrgroups` (Cluster) is `v2alpha1` up to Cilium 1.17 and `v2` (with `v2alpha1` deprecated) from 1.18.
- Calico API server: `projectcalico.org/v3` `networkpolicies` (Namespaced), `globalnetworkpolicies` (Cluster); its
  storage CRDs, the same plurals in `crd.projectcalico.org/v1`.
- kubernetes-sigs/network-policy-api: `policy.networking.k8s.io/v1alpha1` `adminnetworkpolicies` (anp) and
  `baselineadminnetworkpolicies` (banp), Cluster, release-0.1; `v1alpha2` `clusternetworkpolicies` (cnp), Cluster,
  v0.2.0 (config/crd/standard/policy.networking.k8s.io_clusternetworkpolicies.yaml).
- aws/amazon-network-policy-controller-k8s (config/crd/bases): `networking.k8s.aws/v1alpha1`
  `clusternetworkpolicies` (cnp, Cluster) and `applicationnetworkpolicies` (anp, Namespaced).
- EKS Auto Mode: `eks.amazonaws.com/v1` `nodeclasses` (Cluster); Karpenter `karpenter.sh/v1` `nodepools` (Cluster).
- Enforcement evidence the scanner gets by name: `apps/v1` `daemonsets`, `v1` `configmaps` (built-in).
"""
from __future__ import annotations

from typing import Any

from netpol_scan.sandbox.kube_api import NETWORK_POLICIES, Cluster, ResourceKind

CILIUM_NETWORK_POLICY = ResourceKind("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True,
                                     ("cnp", "ciliumnp"))
CILIUM_CLUSTERWIDE_NETWORK_POLICY = ResourceKind("cilium.io", "v2", "ciliumclusterwidenetworkpolicies",
                                                 "CiliumClusterwideNetworkPolicy", False, ("ccnp",))
CILIUM_CIDR_GROUP = ResourceKind("cilium.io", "v2alpha1", "ciliumcidrgroups", "CiliumCIDRGroup", False, ("ccg",))
CILIUM_CIDR_GROUP_V2 = ResourceKind("cilium.io", "v2", "ciliumcidrgroups", "CiliumCIDRGroup", False, ("ccg",))

CALICO_NETWORK_POLICY = ResourceKind("projectcalico.org", "v3", "networkpolicies", "NetworkPolicy", True)
CALICO_GLOBAL_NETWORK_POLICY = ResourceKind("projectcalico.org", "v3", "globalnetworkpolicies", "GlobalNetworkPolicy",
                                            False)
# Calico's storage CRDs: what a cluster without the Calico API server serves.
CALICO_CRD_NETWORK_POLICY = ResourceKind("crd.projectcalico.org", "v1", "networkpolicies", "NetworkPolicy", True)
CALICO_CRD_GLOBAL_NETWORK_POLICY = ResourceKind("crd.projectcalico.org", "v1", "globalnetworkpolicies",
                                                "GlobalNetworkPolicy", False)

ADMIN_NETWORK_POLICY = ResourceKind("policy.networking.k8s.io", "v1alpha1", "adminnetworkpolicies",
                                    "AdminNetworkPolicy", False, ("anp",))
BASELINE_ADMIN_NETWORK_POLICY = ResourceKind("policy.networking.k8s.io", "v1alpha1", "baselineadminnetworkpolicies",
                                             "BaselineAdminNetworkPolicy", False, ("banp",))
CLUSTER_NETWORK_POLICY = ResourceKind("policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies",
                                      "ClusterNetworkPolicy", False, ("cnp",))

EKS_CLUSTER_NETWORK_POLICY = ResourceKind("networking.k8s.aws", "v1alpha1", "clusternetworkpolicies",
                                          "ClusterNetworkPolicy", False, ("cnp",))
EKS_APPLICATION_NETWORK_POLICY = ResourceKind("networking.k8s.aws", "v1alpha1", "applicationnetworkpolicies",
                                              "ApplicationNetworkPolicy", True, ("anp",))

NODE_CLASS = ResourceKind("eks.amazonaws.com", "v1", "nodeclasses", "NodeClass", False)
NODE_POOL = ResourceKind("karpenter.sh", "v1", "nodepools", "NodePool", False)

DAEMON_SETS = ResourceKind("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), builtin=True)
CONFIG_MAPS = ResourceKind("", "v1", "configmaps", "ConfigMap", True, ("cm",), builtin=True)

# What installing each engine (or turning on Auto Mode) adds to a cluster.
CILIUM = (CILIUM_NETWORK_POLICY, CILIUM_CLUSTERWIDE_NETWORK_POLICY, CILIUM_CIDR_GROUP)
CALICO = (CALICO_NETWORK_POLICY, CALICO_GLOBAL_NETWORK_POLICY)
CALICO_CRDS = (CALICO_CRD_NETWORK_POLICY, CALICO_CRD_GLOBAL_NETWORK_POLICY)
NETWORK_POLICY_API_V1ALPHA1 = (ADMIN_NETWORK_POLICY, BASELINE_ADMIN_NETWORK_POLICY)
NETWORK_POLICY_API = (CLUSTER_NETWORK_POLICY,)
EKS_NETWORK_POLICY = (EKS_CLUSTER_NETWORK_POLICY, EKS_APPLICATION_NETWORK_POLICY)  # VPC CNI 1.21.1+, Auto Mode
AUTO_MODE = (NODE_CLASS, NODE_POOL, *EKS_NETWORK_POLICY)
ENFORCEMENT = (DAEMON_SETS, CONFIG_MAPS)
POLICY_KINDS = (NETWORK_POLICIES, *CILIUM, *CALICO, *CALICO_CRDS, *NETWORK_POLICY_API_V1ALPHA1, *NETWORK_POLICY_API,
                *EKS_NETWORK_POLICY)
ALL = (*POLICY_KINDS, NODE_CLASS, NODE_POOL, *ENFORCEMENT)


def serve(cluster: Cluster, *kinds: ResourceKind) -> Cluster:
    """Serves the kinds on the cluster (every kind of this catalogue when none is named); returns the cluster."""
    for kind in kinds or ALL:
        cluster.serve(kind)
    return cluster


def kind_of(api_version: str, kind: str, served: tuple[ResourceKind, ...] = ALL) -> ResourceKind:
    """The catalogue's kind for a manifest's apiVersion and kind; KeyError names what is not in the catalogue."""
    for candidate in served:
        if (candidate.group_version, candidate.kind) == (api_version, kind):
            return candidate
    raise KeyError(f"{kind} {api_version} is not a kind the sandbox catalogue serves")


def add(cluster: Cluster, manifest: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """Adds a manifest as an object of its kind, served first if it was not; `namespace` fills in a namespaced
    manifest that names none (a cluster-scoped one keeps none). Returns the stored object."""
    kind = kind_of(manifest["apiVersion"], manifest["kind"], (*ALL, CILIUM_CIDR_GROUP_V2))
    if cluster.kind_of(kind.group_version, kind.plural) is None:
        cluster.serve(kind)
    obj = {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind")}
    obj["metadata"] = dict(manifest.get("metadata") or {})
    if kind.namespaced:
        obj["metadata"].setdefault("namespace", namespace or "default")
    else:
        obj["metadata"].pop("namespace", None)
    return cluster.add_object(kind.group_version, kind.plural, obj)

"""The policy engines' own kinds and the enforcement evidence, read from one cluster after discovery.

Discovery (`/apis`, then one resource list per group version needed) decides what is listed: only groups, versions
and kinds the cluster serves, each listed cluster-wide in pages like NetworkPolicies. When both Calico groups are served,
projectcalico.org (the Calico API server) is read and crd.projectcalico.org (its storage) is not, so nothing
counts twice; names starting `knp.` are the API server's views of Kubernetes NetworkPolicies and are skipped.

A kind that discovery lists but RBAC forbids (403) does not fail the cluster: it is recorded in
`unreadable`, and every verdict it could change says so (see controls/). Enforcement evidence is read with one
`get` per named object (aws-node, amazon-vpc-cni, the Cilium and Calico agents where their installs put them): a
404 means absent, a 403 means unknown. Only when an engine's kinds are served and its agent is not where installs
put it, one list of DaemonSets across namespaces, by the agents' `k8s-app` label, looks for it elsewhere. On EKS
Auto Mode the NodeClasses are listed, and the NodePools only when some NodeClass says DefaultDeny.

CiliumCIDRGroups (cluster-scoped, named by Cilium rules' `cidrGroupRef` and `cidrGroupSelector`) are listed only
when a Cilium policy names one, and handed to those policies; when they cannot be read, only the rules that name
them are uninterpretable (handler/policy/engines/cilium.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from handler import enforcement
from handler.errors import ForbiddenError
from handler.models import CidrGroup, EnforcementEvidence, NetworkPolicy, PodDefault, UnselectedPods
from handler.policy.engines import POLICY_APIS, cilium

JSON = "application/json"
# group -> (plural, kind, version) of the engines' kinds, from the one table of kinds (handler/policy/engines/);
# networking.k8s.io NetworkPolicies are the cluster reader's own first list.
POLICY_KINDS: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    group: tuple((api.plural, api.kind, api.version) for api in POLICY_APIS if api.group == group)
    for group in dict.fromkeys(api.group for api in POLICY_APIS if api.group != "networking.k8s.io")}
CALICO_VIEW_OF_KUBERNETES = "knp."
CIDR_GROUPS = "ciliumcidrgroups"  # cluster-scoped CiliumCIDRGroup, read only when a Cilium policy names one
ENGINE_OF_GROUP = {"cilium.io": "Cilium", "projectcalico.org": "Calico", "crd.projectcalico.org": "Calico"}


DAEMONSETS = ("apps", "daemonsets", "DaemonSet")  # listed across namespaces, by label
NODE_CLASSES = ("eks.amazonaws.com", "nodeclasses", "NodeClass")  # (group, plural, kind), cluster-scoped
NODE_POOLS = ("karpenter.sh", "nodepools", "NodePool")


class Session(Protocol):
    every_read: bool  # read also what only some contents call for (NodePools, CiliumCIDRGroups): the doctor's plan

    def list_all(self, path: str, accept: str, *, label_selector: str | None = None) -> list[Mapping[str, Any]]: ...

    def get_object(self, path: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class EngineRead:
    policies: tuple[NetworkPolicy, ...]
    unreadable: tuple[str, ...]
    enforcement: EnforcementEvidence
    unselected_pods: UnselectedPods = UnselectedPods()


def read_engines(session: Session, auto_mode: bool | None = None) -> EngineRead:
    """`auto_mode`: DescribeCluster's computeConfig.enabled; None (not described) lets a served NodeClass kind
    tell."""
    group_list = session.get_object("/apis") or {}
    groups, versions = served_groups(group_list), served_versions(group_list)
    if "projectcalico.org" in groups:
        groups.pop("crd.projectcalico.org", None)
    policies: list[NetworkPolicy] = []
    unreadable: list[str] = []
    for group, group_version in sorted(groups.items()):
        if group in POLICY_KINDS:
            _read_group(session, group, group_version, versions[group], policies, unreadable)
    naming = {i for i, p in enumerate(policies) if p.api_version.startswith("cilium.io/")
              and cilium.names_cidr_groups(p.spec)}
    if naming or session.every_read:
        cidr_groups = read_cidr_groups(session, group_list)
        policies = [p._replace(cidr_groups=cidr_groups) if i in naming else p for i, p in enumerate(policies)]
    if auto_mode is None:
        auto_mode = NODE_CLASSES[0] in groups
    evidence, unselected = read_enforcement(session, groups, auto_mode)
    return EngineRead(tuple(policies), tuple(unreadable), evidence, unselected)


def served_groups(group_list: Mapping[str, Any]) -> dict[str, str]:
    """group name -> preferred groupVersion, from an APIGroupList."""
    return {g["name"]: (g.get("preferredVersion") or g["versions"][0])["groupVersion"]
            for g in group_list.get("groups") or () if g.get("name") and (g.get("preferredVersion") or g.get("versions"))}


def served_versions(group_list: Mapping[str, Any]) -> dict[str, set[str]]:
    """group name -> every groupVersion it serves, from an APIGroupList."""
    return {g["name"]: {v["groupVersion"] for v in g.get("versions") or () if v.get("groupVersion")}
            for g in group_list.get("groups") or () if g.get("name")}


def _read_group(session: Session, group: str, preferred: str, versions: set[str], policies: list[NetworkPolicy],
                unreadable: list[str]) -> None:
    resources: dict[str, set[str]] = {}  # groupVersion -> the plurals it serves, asked once
    for plural, kind, version in POLICY_KINDS[group]:
        group_version = preferred if version is None else f"{group}/{version}"
        if group_version not in versions | {preferred}:
            continue
        if group_version not in resources:
            listing = session.get_object(f"/apis/{group_version}") or {}
            resources[group_version] = {r.get("name") for r in listing.get("resources") or ()}
        if plural not in resources[group_version]:
            continue
        try:
            items = session.list_all(f"/apis/{group_version}/{plural}", JSON)
        except ForbiddenError as error:
            unreadable.append(f"{kind} ({plural}.{group}): {error}")
            continue
        policies.extend(engine_policy(item, group_version, kind) for item in items
                        if not str((item.get("metadata") or {}).get("name", "")).startswith(CALICO_VIEW_OF_KUBERNETES))


def read_cidr_groups(session: Session, group_list: Mapping[str, Any]) -> dict[str, CidrGroup] | None:
    """The cluster's CiliumCIDRGroups by name, from the first version of cilium.io that serves them (v2alpha1,
    and v2 in recent releases), the preferred one first; None when none does, or RBAC forbids the list."""
    for group_version in _versions(group_list, "cilium.io"):
        served = {r.get("name") for r in (session.get_object(f"/apis/{group_version}") or {}).get("resources") or ()}
        if CIDR_GROUPS not in served:
            continue
        try:
            items = session.list_all(f"/apis/{group_version}/{CIDR_GROUPS}", JSON)
        except ForbiddenError:
            return None  # the policies that name a group say it could not be read
        return {item["metadata"]["name"]: CidrGroup(dict(item["metadata"].get("labels") or {}),
                                                    tuple(map(str, (item.get("spec") or {}).get("externalCIDRs") or ())))
                for item in items}
    return None


def _versions(group_list: Mapping[str, Any], name: str) -> list[str]:
    """The groupVersions a group serves, its preferred one first."""
    for group in group_list.get("groups") or ():
        if group.get("name") == name:
            preferred = (group.get("preferredVersion") or {}).get("groupVersion")
            others = [v["groupVersion"] for v in group.get("versions") or () if v["groupVersion"] != preferred]
            return ([preferred] if preferred else []) + others
    return []


def engine_policy(item: Mapping[str, Any], api_version: str, kind: str) -> NetworkPolicy:
    """A policy of an engine's own kind; cluster-scoped kinds get namespace "". Cilium's `specs` (several rules
    in one object) is kept beside `spec`."""
    meta = item.get("metadata") or {}
    spec = dict(item.get("spec") or {})
    if item.get("specs"):
        spec["specs"] = item["specs"]
    return NetworkPolicy(namespace=meta.get("namespace") or "", name=meta["name"], spec=spec, kind=kind,
                         api_version=api_version)


def read_enforcement(session: Session, groups: Mapping[str, str],
                     auto_mode: bool) -> tuple[EnforcementEvidence, UnselectedPods]:
    aws_node, aws_node_error = _get(session, "/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node")
    configmap, configmap_error = _get(session, "/api/v1/namespaces/kube-system/configmaps/amazon-vpc-cni")
    evidence = EnforcementEvidence(unknown=tuple(e for e in (aws_node_error, configmap_error) if e))
    unselected = UnselectedPods()
    if not aws_node_error and not (auto_mode and aws_node is None):  # Auto Mode nodes run no aws-node
        evidence += enforcement.from_aws_node(aws_node, configmap)
    if auto_mode and not configmap_error:
        auto = enforcement.from_auto_mode(configmap, aws_node)
        evidence += auto
        if auto.engines or session.every_read:
            unselected = _unselected_pods(session, groups, enforcement.nodes_outside_auto_mode(aws_node))
    return evidence + _engine_agents(session, groups), unselected


def _engine_agents(session: Session, groups: Mapping[str, str]) -> EnforcementEvidence:
    """Cilium and Calico agents: by name where their installs put them, then by label anywhere for an engine whose
    kinds are served but whose agent was not found by name."""
    engines_present = {ENGINE_OF_GROUP[g] for g in groups if g in ENGINE_OF_GROUP}
    evidence, missing = EnforcementEvidence(), set(engines_present)
    for namespace, name, engine in enforcement.ENGINE_DAEMONSETS:
        if engine not in engines_present:
            continue  # no CRDs of that engine: it is not installed, and its DaemonSet is not worth a request
        daemonset, error = _get(session, f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}")
        if daemonset is not None or error:
            missing.discard(engine)
        evidence += (EnforcementEvidence(unknown=(error,)) if error
                     else enforcement.from_engine_daemonset(namespace, name, engine, daemonset))
    return evidence + (_agents_by_label(session, groups, sorted(missing)) if missing else EnforcementEvidence())


def _agents_by_label(session: Session, groups: Mapping[str, str], engines: list[str]) -> EnforcementEvidence:
    labels = {enforcement.ENGINE_AGENT_LABELS[e]: e for e in engines}
    selector = f"k8s-app in ({','.join(sorted(labels))})"
    daemonsets, error = _list_kind(session, groups, DAEMONSETS, selector)
    if error:
        return EnforcementEvidence(unknown=(f"to find the {' and '.join(engines)} agent outside its usual "
                                            f"namespace, {error}",))
    evidence = EnforcementEvidence()
    for daemonset in daemonsets:
        meta = daemonset.get("metadata") or {}
        engine = labels.get((meta.get("labels") or {}).get("k8s-app", ""))
        if engine:
            evidence += enforcement.from_engine_daemonset(meta.get("namespace", ""), meta.get("name", ""), engine,
                                                          daemonset)
    return evidence


def _unselected_pods(session: Session, groups: Mapping[str, str], other_nodes: int) -> UnselectedPods:
    """The NodePools are read only when some NodeClass denies by default: otherwise they change nothing."""
    node_classes, error = _list_kind(session, groups, NODE_CLASSES)
    node_pools: list[Mapping[str, Any]] = []
    if not error and (session.every_read or any(map(enforcement.denies_by_default, node_classes))):
        node_pools, error = _list_kind(session, groups, NODE_POOLS)
    if error:
        return UnselectedPods(PodDefault.UNKNOWN, f"whether pods no policy selects are denied is not known: {error}")
    return enforcement.unselected_pods(node_classes, node_pools, other_nodes)


def _list_kind(session: Session, groups: Mapping[str, str], kind: tuple[str, str, str],
               label_selector: str | None = None) -> tuple[list[Mapping[str, Any]], str | None]:
    """Every object of a kind across namespaces (those the selector selects), or why they could not be read (403);
    none when the cluster does not serve the kind: discovery asks first, since a list of an unknown kind is a
    404 that would fail the whole read."""
    group, plural, name = kind
    if group not in groups:
        return [], None
    served = {r.get("name") for r in (session.get_object(f"/apis/{groups[group]}") or {}).get("resources") or ()}
    if plural not in served:
        return [], None
    try:
        return session.list_all(f"/apis/{groups[group]}/{plural}", JSON, label_selector=label_selector), None
    except ForbiddenError as error:
        return [], f"{name} ({plural}.{group}) could not be read: {error}"


def _get(session: Session, path: str) -> tuple[Mapping[str, Any] | None, str | None]:
    try:
        return session.get_object(path), None
    except ForbiddenError as error:
        return None, str(error)

"""network-config-analyzer (IBM np-guard, NCA) as an independent oracle: what it says about every pod of a world.

A world is a few *subject* namespaces (with generated labels and policies) inside a *universe* that stands for
every other namespace and pod a cluster could have: one namespace per combination of the namespace label values
the generators use (plus a value no selector names), and in every namespace one pod per value of the pod label
(absent, each value a selector names, and one no selector names). Since the generated selectors only name these
keys and values, every real pod of every real cluster matches exactly the selectors that one pod of the universe
matches; so "NCA says every pod of the universe may connect" means "every pod of any cluster may connect", and
"every pod of the namespace" is decided for every possible labelling, not for a sample.

NCA is pinned to 2.1.0 and read through its own objects (ResourcesHandler, the K8s_Calico network layer): the
per-direction view (`_allowed_xgress_conns`) is not part of its command line, which only prints end-to-end
connectivity, where the egress of one pod hides the ingress of another.
"""
from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from nca.CoreDS.ConnectivityProperties import ConnectivityProperties
from nca.CoreDS.Peer import BasePeerSet, IpBlock, PeerSet
from nca.NetworkConfig.NetworkLayer import NetworkLayerName
from nca.NetworkConfig.ResourcesHandler import ResourcesHandler
from nca.Resources.PolicyResources.NetworkPolicy import PolicyConnectionsFilter

INGRESS, EGRESS = "Ingress", "Egress"
POD_KEY = "app"
POD_VALUES = ("web", "db")  # the values generated pod selectors name
NAMESPACE_LABELS = {"team": ("a", "b"), "env": ("prod",)}  # keys and values generated namespace selectors name
UNNAMED = "other"  # a value no selector names: stands for every value a real cluster may use
POD_LABELLINGS: tuple[Mapping[str, str], ...] = ({}, *({POD_KEY: v} for v in (*POD_VALUES, UNNAMED)))
# Every `except` block a generator may write, by address family: "every address" means every address but these
# (the rule this project applies to a /0 block with exceptions, issue 9).
EXCEPTED = {4: ("169.254.169.254/32", "10.0.0.0/8"), 6: ("fd00::/8",)}


@dataclass(frozen=True)
class World:
    """Subject namespaces (name, labels) and policies (namespace or "" for a cluster-wide one, name, manifest)."""

    namespaces: tuple[tuple[str, Mapping[str, str]], ...]
    policies: tuple[Mapping[str, Any], ...]  # whole manifests (apiVersion, kind, metadata, spec)


@dataclass(frozen=True)
class PodView:
    """What NCA says about one pod for one direction."""

    name: str
    isolated: bool  # selected by a policy that affects the direction: only what a rule allows gets through
    open_to_all_pods: bool  # every pod of the universe, on every protocol and port
    open_to_all_addresses: bool  # every IPv4 or every IPv6 address (but EXCEPTED), on every protocol and port
    open_to_some: bool  # some pod or address, on some protocol or port
    namespace_wide_only: bool  # every policy selecting it for the direction selects every pod of its namespace


@dataclass(frozen=True)
class NamespaceView:
    pods: tuple[PodView, ...]
    one_policy_isolates_all: bool  # a single policy affecting the direction selects every pod of the namespace
    # cluster-wide policies "defined for" the namespace by the rule of docs/policy-semantics.md, decided on NCA's
    # selection: they select every pod of it, or some, and no pod of a namespace without labels
    defined_by_cluster_wide: tuple[str, ...]

    @property
    def all_isolated(self) -> bool:
        return all(p.isolated for p in self.pods)


def universe_namespaces(subjects: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """One namespace per combination of namespace label values (each key absent, each named value, UNNAMED)."""
    keys = sorted(NAMESPACE_LABELS)
    choices = [(None, *NAMESPACE_LABELS[k], UNNAMED) for k in keys]
    taken = set(subjects)
    universe = []
    for number, values in enumerate(itertools.product(*choices)):
        name = f"u{number}"
        assert name not in taken, name
        universe.append((name, {k: v for k, v in zip(keys, values) if v is not None}))
    return universe


def ask(world: World) -> dict[tuple[str, str], NamespaceView]:
    """(subject namespace, direction) -> what NCA says about its pods. Every policy must parse, or this raises."""
    universe = universe_namespaces(n for n, _ in world.namespaces)
    namespaces = [*world.namespaces, *universe]
    with tempfile.TemporaryDirectory(prefix="nca-world-") as directory:
        _write(Path(directory), namespaces, world.policies)
        BasePeerSet.reset()  # NCA keeps every peer it ever saw in a singleton
        config = ResourcesHandler().get_network_config(None, None, None, [directory])
    parsed = len(config.policies_container.policies)
    if parsed != len(world.policies):
        raise AssertionError(f"NCA parsed {parsed} of {len(world.policies)} policies")
    layer = config.policies_container.layers.get(NetworkLayerName.K8s_Calico)
    all_pods = config.peer_container.get_all_peers_group()
    unlabelled = next(name for name, labels in universe if not labels)
    cluster_wide = [] if layer is None else [p for p in layer.policies_list if p.namespace is None]
    views = {}
    for direction in (INGRESS, EGRESS):
        ingress = direction == INGRESS
        if layer is None:
            allowed, captured, policies = None, PeerSet(), []
        else:
            conns = layer._allowed_xgress_conns(ingress, config.peer_container,
                                                PolicyConnectionsFilter.only_all_allowed_connections())
            allowed, captured = conns.all_allowed_conns, conns.captured
            policies = [p for p in layer.policies_list if (p.affects_ingress if ingress else p.affects_egress)]
        for name, _ in world.namespaces:
            members = _pods_of(all_pods, name)
            wide = [p for p in policies if members and members <= p.selected_peers]
            narrow = [p for p in policies if p not in wide]
            pods = tuple(PodView(str(pod), pod in captured,
                                 _open(allowed, pod, all_pods, ingress),
                                 any(_open(allowed, pod, PeerSet({_every_address(f)}), ingress) for f in (4, 6)),
                                 _open_to_some(allowed, pod, all_pods, ingress),
                                 not any(pod in p.selected_peers for p in narrow))
                         for pod in sorted(members, key=str))
            defined = tuple(p.name for p in cluster_wide if members <= p.selected_peers or (
                members & p.selected_peers and not _pods_of(all_pods, unlabelled) & p.selected_peers))
            views[(name, direction)] = NamespaceView(pods, bool(wide), defined)
    return views


def _pods_of(pods: PeerSet, namespace: str) -> PeerSet:
    return PeerSet({p for p in pods if str(p.namespace) == namespace})


def _open(allowed: ConnectivityProperties | None, pod: Any, peers: PeerSet, ingress: bool) -> bool:
    if allowed is None:  # no policy at all: everything is allowed
        return True
    ends = {"src_peers": peers, "dst_peers": PeerSet({pod})} if ingress else \
        {"src_peers": PeerSet({pod}), "dst_peers": peers}
    return ConnectivityProperties.make_conn_props_from_dict(ends).contained_in(allowed)


def _open_to_some(allowed: ConnectivityProperties | None, pod: Any, pods: PeerSet, ingress: bool) -> bool:
    if allowed is None:
        return True
    others = PeerSet({*pods, IpBlock("0.0.0.0/0"), IpBlock("::/0")})
    ends = {"src_peers": others, "dst_peers": PeerSet({pod})} if ingress else \
        {"src_peers": PeerSet({pod}), "dst_peers": others}
    return bool(ConnectivityProperties.make_conn_props_from_dict(ends) & allowed)


def _every_address(family: int) -> IpBlock:
    return IpBlock("0.0.0.0/0" if family == 4 else "::/0", list(EXCEPTED[family]))


def _write(directory: Path, namespaces: Sequence[tuple[str, Mapping[str, str]]],
           policies: Sequence[Mapping[str, Any]]) -> None:
    (directory / "namespaces.yaml").write_text(yaml.safe_dump(_list("Namespace", [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}
        for name, labels in namespaces])))
    (directory / "pods.yaml").write_text(yaml.safe_dump(_list("Pod", [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": f"pod{number}", "namespace": name, "labels": dict(labels)},
         "spec": {"containers": [{"name": "c", "image": "registry.example/c"}]}}
        for name, _ in namespaces for number, labels in enumerate(POD_LABELLINGS)])))
    for number, policy in enumerate(policies):
        (directory / f"policy{number}.yaml").write_text(yaml.safe_dump(dict(policy)))


def _list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": f"{kind}List", "items": items}

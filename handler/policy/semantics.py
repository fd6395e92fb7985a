"""What one policy object does to the pods of one namespace, by the semantics of the engine that owns its kind.

For a (policy, namespace) pair `analyze` answers, per direction (ingress, egress):
- reach: which pods of the namespace the policy selects for that direction (NONE, SOME, ALL; see selectors.py);
- isolates: whether being selected puts those pods into default deny for that direction;
- open_rules: the rules that admit traffic from (to) every pod of the cluster or everywhere, named for the
  finding; `admits_everything` when one of them also leaves every port open.
and `counts`: whether the policy is one "defined for" the namespace in the sense of CIS 5.3.2.

The rules, kind by kind, are written out in docs/policy-semantics.md; tests check every one of them.
"""
from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from handler.errors import PolicyError
from handler.models import Namespace, NetworkPolicy
from handler.policy.calico_selector import compile_selector
from handler.policy.selectors import UNKNOWN, Reach, Resolver, all_of, is_empty, selector_reach

INGRESS, EGRESS = "Ingress", "Egress"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by kube-apiserver on every namespace since 1.22
NO_SUCH_NAMESPACE = Namespace(name="\0no-such-namespace")  # to tell selectors that name a namespace from others


class Scope(enum.IntEnum):
    """How far the peers of a rule reach."""

    LIMITED = 0
    ALL_PODS = 1  # every pod of the cluster
    EVERYWHERE = 2  # every pod and every address outside the cluster


# Named tuples, not frozen dataclasses (models.py says why): an Effect and its Directions are made for every
# policy and namespace it applies to, and building them as frozen dataclasses was a third of the analysis.
class Direction(NamedTuple):
    reach: Reach = Reach.NONE
    isolates: bool = False
    open_rules: tuple[str, ...] = ()
    admits_everything: bool = False
    opens_over_isolation: bool = True  # False for BaselineAdminNetworkPolicy: any NetworkPolicy overrides it


INACTIVE = Direction()  # of a direction the policy does not apply to


class Effect(NamedTuple):
    kind: str
    counts: bool
    ingress: Direction
    egress: Direction
    api_group: str = ""
    name: str = ""
    short_name: str = ""  # how a finding names it: a NetworkPolicy by its name, any other kind with its kind


class _Rule(NamedTuple):
    """One allow (or deny) rule reduced to what isolation needs: who it reaches and whether ports are open."""

    scope: Scope
    all_ports: bool
    allows: bool = True


def label(policy: NetworkPolicy) -> str:
    return f"{policy.kind} {policy.namespace}/{policy.name}" if policy.namespace else f"{policy.kind} {policy.name}"


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect | None:
    """The policy's effect on `namespace`, or None when it cannot apply there (a namespaced policy elsewhere)."""
    group = policy.api_version.split("/")[0]
    analyzer = ANALYZERS.get((group, policy.kind))
    if analyzer is None:
        raise PolicyError(f"{label(policy)}: no semantics for {policy.api_version} {policy.kind}")
    if policy.namespace and policy.namespace != namespace.name:
        return None
    try:
        return analyzer(policy, namespace)
    except PolicyError as error:
        raise PolicyError(f"{label(policy)}: {error}") from error
    except (AttributeError, TypeError, ValueError) as error:
        raise PolicyError(f"{label(policy)}: malformed spec ({error})") from error


def _effect(policy: NetworkPolicy, counts: bool, ingress: Direction, egress: Direction) -> Effect:
    # Built whole, once: a copy made afterwards to add the group and name cost a third of the analysis.
    group = policy.api_version.split("/")[0]
    short_name = policy.name if group == "networking.k8s.io" else f"{policy.kind} {policy.name}"
    return Effect(policy.kind, counts, ingress, egress, group, policy.name, short_name)


# -- networking.k8s.io/v1 NetworkPolicy --------------------------------------------------------------------------

def _kubernetes(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    spec = policy.spec
    reach = selector_reach(spec.get("podSelector") or {}, _pod_labels)
    types = spec.get("policyTypes") or _default_k8s_types(spec)
    return _effect(policy, True,
                  _k8s_direction(reach, INGRESS in types, spec.get("ingress"), "from", "ingress"),
                  _k8s_direction(reach, EGRESS in types, spec.get("egress"), "to", "egress"))


def _default_k8s_types(spec: Mapping[str, Any]) -> list[str]:
    # kube-apiserver's defaulting: Ingress always; Egress only when there are egress rules (`egress: []` is none).
    return [INGRESS, EGRESS] if spec.get("egress") else [INGRESS]


def _k8s_direction(reach: Reach, active: bool, rules: Sequence[Any] | None, peers_key: str, name: str) -> Direction:
    if not active:
        return INACTIVE
    reduced = [_Rule(_k8s_scope(rule.get(peers_key)), not rule.get("ports")) for rule in rules or ()]
    return _direction(reach, True, reduced, name)


def _k8s_scope(peers: Sequence[Mapping[str, Any]] | None) -> Scope:
    if not peers:  # no `from`/`to`: every source or destination
        return Scope.EVERYWHERE
    return max(map(_k8s_peer_scope, peers), default=Scope.LIMITED)


def _k8s_peer_scope(peer: Mapping[str, Any]) -> Scope:
    block = peer.get("ipBlock")
    if block is not None:
        return Scope.EVERYWHERE if _whole_internet(block.get("cidr"), block.get("except")) else Scope.LIMITED
    namespaces = peer.get("namespaceSelector")
    # namespaceSelector {} alone, or with podSelector {}: every pod of every namespace.
    if namespaces is not None and is_empty(namespaces) and is_empty(peer.get("podSelector") or {}):
        return Scope.ALL_PODS
    return Scope.LIMITED


# -- cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy -----------------------------------------

CILIUM_NAMESPACE_KEY = "io.kubernetes.pod.namespace"
CILIUM_NAMESPACE_LABELS = "io.cilium.k8s.namespace.labels."


def _cilium(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    rules = list(policy.spec.get("specs") or ()) or [policy.spec]
    # A namespaced policy only ever selects endpoints of its own namespace, whatever its selector says.
    resolve = _cilium_resolver(namespace)
    clusterwide = policy.namespace == ""
    ingress = [_cilium_direction(rule, resolve, clusterwide, "ingress", "fromEndpoints", "fromEntities",
                                 ("fromCIDR", "fromCIDRSet")) for rule in rules if _selects_pods(rule)]
    egress = [_cilium_direction(rule, resolve, clusterwide, "egress", "toEndpoints", "toEntities",
                                ("toCIDR", "toCIDRSet")) for rule in rules if _selects_pods(rule)]
    reach = max((d.reach for d in ingress + egress), default=Reach.NONE)
    counts = not clusterwide or _names_namespace(
        reach, lambda ns: max((_cilium_reach(r, _cilium_resolver(ns)) for r in rules if _selects_pods(r)),
                              default=Reach.NONE))
    return _effect(policy, counts, _merge(ingress), _merge(egress))


def _selects_pods(rule: Mapping[str, Any]) -> bool:
    return "nodeSelector" not in rule  # host policies select nodes, not pods


def _cilium_reach(rule: Mapping[str, Any], resolve: Resolver) -> Reach:
    return selector_reach(rule.get("endpointSelector") or {}, resolve)


def _cilium_resolver(namespace: Namespace) -> Resolver:
    def resolve(key: str) -> Any:
        source, _, bare = key.rpartition(":")
        if source == "reserved":
            return None  # reserved identities (host, health, world...) are never pods
        if bare == CILIUM_NAMESPACE_KEY:
            return namespace.name
        if bare.startswith(CILIUM_NAMESPACE_LABELS):
            return _namespace_labels(namespace).get(bare[len(CILIUM_NAMESPACE_LABELS):])
        return UNKNOWN
    return resolve


def _cilium_direction(rule: Mapping[str, Any], resolve: Resolver, clusterwide: bool, name: str,
                      endpoints_key: str, entities_key: str, cidr_keys: tuple[str, str]) -> Direction:
    allows, denies = rule.get(name) or [], rule.get(f"{name}Deny") or []
    if not allows and not denies:
        return INACTIVE
    default_deny = (rule.get("enableDefaultDeny") or {}).get(name, True) is not False
    reduced = [_cilium_rule(r, clusterwide, endpoints_key, entities_key, cidr_keys) for r in allows]
    return _direction(_cilium_reach(rule, resolve), default_deny, reduced, name)


def _cilium_rule(rule: Mapping[str, Any], clusterwide: bool, endpoints_key: str, entities_key: str,
                 cidr_keys: tuple[str, str]) -> _Rule:
    entities = {str(e).lower() for e in rule.get(entities_key) or ()}
    cidrs = [c for c in rule.get(cidr_keys[0]) or ()] + [c.get("cidr") for c in rule.get(cidr_keys[1]) or ()
                                                          if not c.get("except")]
    endpoints = rule.get(endpoints_key)
    has_peer = bool(entities or cidrs or endpoints or any(k.startswith(("from", "to")) and k != "toPorts"
                                                          for k in rule))
    all_ports = not rule.get("toPorts") and not rule.get("icmps")
    if not has_peer:
        # No L3 peer: with toPorts it admits every source on those ports; an empty rule `{}` admits nothing.
        return _Rule(Scope.EVERYWHERE, False, allows=not all_ports)
    scope = Scope.LIMITED
    if "all" in entities or any(_whole_internet(c) for c in cidrs):
        scope = Scope.EVERYWHERE
    elif "cluster" in entities or (clusterwide and any(is_empty(e) for e in endpoints or ())):
        scope = Scope.ALL_PODS  # in a namespaced policy, fromEndpoints {} means its own namespace only
    return _Rule(scope, all_ports)


# -- projectcalico.org/v3 (and crd.projectcalico.org/v1) NetworkPolicy and GlobalNetworkPolicy -------------------

def _calico(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    spec = policy.spec
    if spec.get("preDNAT") or spec.get("doNotTrack"):
        return _effect(policy, False, INACTIVE, INACTIVE)  # host endpoints only
    reach = _calico_reach(spec, namespace)
    types = spec.get("types") or _default_calico_types(spec)
    counts = bool(policy.namespace) or _names_namespace(reach, lambda ns: _calico_reach(spec, ns))
    ingress = _calico_direction(reach, INGRESS in types, spec.get("ingress"), "source", bool(policy.namespace))
    egress = _calico_direction(reach, EGRESS in types, spec.get("egress"), "destination", bool(policy.namespace))
    return _effect(policy, counts, ingress, egress)


def _calico_reach(spec: Mapping[str, Any], namespace: Namespace) -> Reach:
    labels = {**_namespace_labels(namespace), "projectcalico.org/name": namespace.name}
    namespaces = compile_selector(spec.get("namespaceSelector"))(lambda key: labels.get(key))
    endpoints = compile_selector(spec.get("selector"))(_calico_endpoint_resolver(namespace))
    accounts = Reach.SOME if spec.get("serviceAccountSelector") else Reach.ALL
    return all_of((namespaces, endpoints, accounts))


def _calico_endpoint_resolver(namespace: Namespace) -> Resolver:
    labels = _namespace_labels(namespace)

    def resolve(key: str) -> Any:
        if key == "projectcalico.org/namespace":
            return namespace.name
        if key.startswith("pcns."):
            return labels.get(key[len("pcns."):])
        return UNKNOWN
    return resolve


def _default_calico_types(spec: Mapping[str, Any]) -> list[str]:
    # Calico: egress rules only -> Egress; egress and ingress rules -> both; otherwise Ingress.
    if spec.get("egress"):
        return [INGRESS, EGRESS] if spec.get("ingress") else [EGRESS]
    return [INGRESS]


def _calico_direction(reach: Reach, active: bool, rules: Sequence[Any] | None, peer_key: str,
                      namespaced: bool) -> Direction:
    if not active:
        return INACTIVE
    reduced = [_calico_rule(rule, peer_key, namespaced) for rule in rules or ()]
    return _direction(reach, True, reduced, "ingress" if peer_key == "source" else "egress")


def _calico_rule(rule: Mapping[str, Any], peer_key: str, namespaced: bool) -> _Rule:
    peer = rule.get(peer_key) or {}
    ports_side = rule.get("destination") or {}
    all_ports = not (rule.get("protocol") or ports_side.get("ports") or rule.get("icmp") or rule.get("http"))
    return _Rule(_calico_scope(peer, namespaced), all_ports, allows=rule.get("action") == "Allow")


def _calico_scope(peer: Mapping[str, Any], namespaced: bool) -> Scope:
    narrowing = {k: v for k, v in peer.items() if k not in ("ports", "notPorts")}
    if not narrowing:
        return Scope.EVERYWHERE
    if set(narrowing) == {"nets"} and any(_whole_internet(n) for n in narrowing["nets"]):
        return Scope.EVERYWHERE
    selector, namespaces = narrowing.get("selector"), narrowing.get("namespaceSelector")
    every_endpoint = selector is None or _is_all(selector)
    # In a namespaced policy a bare selector stays in the policy's namespace; in a global one it spans them all.
    every_namespace = _is_all(namespaces) if namespaced else namespaces is None or _is_all(namespaces)
    if set(narrowing) <= {"selector", "namespaceSelector"} and every_endpoint and every_namespace:
        return Scope.ALL_PODS
    return Scope.LIMITED


def _is_all(selector: str | None) -> bool:
    return selector is not None and selector.replace(" ", "") in ("all()", "")


# -- policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy ------------------------

def _admin(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    spec = policy.spec
    reach = _admin_reach(spec.get("subject") or {}, namespace)
    baseline = policy.kind == "BaselineAdminNetworkPolicy"
    return _effect(policy, reach is not Reach.NONE,
                  _admin_direction(reach, spec.get("ingress"), "from", baseline, "ingress"),
                  _admin_direction(reach, spec.get("egress"), "to", baseline, "egress"))


def _admin_reach(subject: Mapping[str, Any], namespace: Namespace) -> Reach:
    labels = _namespace_labels(namespace)
    if "namespaces" in subject:
        return selector_reach(subject["namespaces"] or {}, lambda key: labels.get(key))
    pods = _pods_peer(subject)
    return all_of((selector_reach(pods["namespaceSelector"] or {}, lambda key: labels.get(key)),
                   selector_reach(pods.get("podSelector") or {}, _pod_labels)))


def _admin_direction(reach: Reach, rules: Sequence[Any] | None, peers_key: str, baseline: bool,
                     name: str) -> Direction:
    if not rules or reach is Reach.NONE:
        return INACTIVE
    reduced = [_Rule(max((_admin_peer_scope(p) for p in rule.get(peers_key) or ()), default=Scope.LIMITED),
                     not rule.get("ports"), allows=rule.get("action") == "Allow") for rule in rules]
    # No implicit deny here: only a Deny rule for every pod on every port isolates.
    isolates = any(r.scope >= Scope.ALL_PODS and r.all_ports for rule, r in zip(rules, reduced)
                   if rule.get("action") == "Deny")
    direction = _direction(reach, isolates, reduced, name)
    return Direction(direction.reach, direction.isolates, direction.open_rules, direction.admits_everything,
                     opens_over_isolation=not baseline)


def _admin_peer_scope(peer: Mapping[str, Any]) -> Scope:
    if "networks" in peer:
        return Scope.EVERYWHERE if any(_whole_internet(n) for n in peer["networks"] or ()) else Scope.LIMITED
    if "namespaces" in peer:
        return Scope.ALL_PODS if is_empty(peer["namespaces"] or {}) else Scope.LIMITED
    pods = _pods_peer(peer)
    if is_empty(pods["namespaceSelector"] or {}) and is_empty(pods.get("podSelector") or {}):
        return Scope.ALL_PODS
    return Scope.LIMITED


def _pods_peer(holder: Mapping[str, Any]) -> Mapping[str, Any]:
    """`pods` of a subject or peer; its namespaceSelector is required by the CRD schema."""
    pods = holder.get("pods")
    if not isinstance(pods, Mapping) or "namespaceSelector" not in pods:
        raise PolicyError(f"`pods` needs a namespaceSelector (the CRD requires one), got {pods!r}")
    return pods


# -- shared ------------------------------------------------------------------------------------------------------

def _direction(reach: Reach, isolates: bool, rules: Sequence[_Rule], name: str) -> Direction:
    if not rules:  # a default deny, or a direction with no rule: nothing to name
        return Direction(reach, isolates and reach is not Reach.NONE)
    open_rules, everything = [], False
    for number, rule in enumerate(rules, 1):
        if rule.allows and rule.scope >= Scope.ALL_PODS:
            whom = "every source" if rule.scope is Scope.EVERYWHERE else "every pod of the cluster"
            if name == "egress":
                whom = "every destination" if rule.scope is Scope.EVERYWHERE else "every pod of the cluster"
            open_rules.append(f"{name} rule {number} admits {whom}" + ("" if rule.all_ports else " on some ports"))
            everything = everything or rule.all_ports
    return Direction(reach, isolates and reach is not Reach.NONE, tuple(open_rules), everything)


def _merge(directions: list[Direction]) -> Direction:
    """The rules of a multi-rule Cilium policy (`specs`) act together; the pods they isolate are those of the
    rules that isolate, so a wide rule without a deny section never makes a narrow one isolate everything."""
    active = [d for d in directions if d.reach is not Reach.NONE]
    if not active:
        return INACTIVE
    isolating = [d for d in active if d.isolates]
    reach = max(d.reach for d in (isolating or active))
    return Direction(reach, bool(isolating), tuple(r for d in active for r in d.open_rules),
                     any(d.admits_everything and d.reach is reach for d in active))


def _names_namespace(reach: Reach, reach_of: Callable[[Namespace], Reach]) -> bool:
    """A cluster-wide policy is defined for a namespace when it selects all of its pods, or some of them because
    of a term about this namespace: a selector on pod labels alone (`role == 'db'` everywhere) is not."""
    return reach is Reach.ALL or (reach is Reach.SOME and reach_of(NO_SUCH_NAMESPACE) is Reach.NONE)


def _namespace_labels(namespace: Namespace) -> dict[str, str]:
    return {**namespace.labels, NAMESPACE_NAME_LABEL: namespace.name}


def _pod_labels(key: str) -> Any:
    return UNKNOWN


def _whole_internet(cidr: Any, excepted: Any = None) -> bool:
    try:
        return not excepted and ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0
    except ValueError as error:
        raise PolicyError(f"bad CIDR {cidr!r}") from error


ANALYZERS: dict[tuple[str, str], Callable[[NetworkPolicy, Namespace], Effect]] = {
    ("networking.k8s.io", "NetworkPolicy"): _kubernetes,
    ("cilium.io", "CiliumNetworkPolicy"): _cilium,
    ("cilium.io", "CiliumClusterwideNetworkPolicy"): _cilium,
    ("projectcalico.org", "NetworkPolicy"): _calico,
    ("projectcalico.org", "GlobalNetworkPolicy"): _calico,
    ("crd.projectcalico.org", "NetworkPolicy"): _calico,
    ("crd.projectcalico.org", "GlobalNetworkPolicy"): _calico,
    ("policy.networking.k8s.io", "AdminNetworkPolicy"): _admin,
    ("policy.networking.k8s.io", "BaselineAdminNetworkPolicy"): _admin,
}

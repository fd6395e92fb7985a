"""The cluster-wide, tiered policies: what one policy does to the pods of one namespace (pure).

- policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy (Admin tier) and BaselineAdminNetworkPolicy (Baseline);
- policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy (network-policy-api v0.2, `tier` Admin or Baseline);
- networking.k8s.aws/v1alpha1 ClusterNetworkPolicy (EKS's own, the same shape with `ports`).

Sources: kubernetes-sigs/network-policy-api apis/v1alpha1/adminnetworkpolicy_types.go, shared_types.go,
apis/v1alpha2/clusternetworkpolicy_types.go; aws/amazon-network-policy-controller-k8s
api/v1alpha1/clusternetworkpolicy_types.go. The rules are in docs/policy-semantics.md.

Inside one policy the rules of a direction are tried in order and the first that matches decides (Accept,
Deny, or Pass to the next tier). Traffic is reduced to two regions, every pod of the cluster and every address
outside it; a rule decides a region only when its peers cover all of it on every port. A direction isolates when
Deny decides every region there is for it: egress needs a Deny of every pod and of every network (`networks`
0.0.0.0/0 or ::/0, which also covers pods), ingress (whose peers are pods only) a Deny of every pod.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from handler.errors import PolicyError
from handler.models import Namespace, NetworkPolicy
from handler.policy.engines.common import (ADMIN_TIER, INACTIVE, Direction, Effect, Order, Scope,
                                           _any_namespace_label, _direction, _effect, _guarded, _names_namespace,
                                           _namespace_labels, _pod_labels, _Rule, _whole_internet)
from handler.policy.selectors import Reach, all_of, selector_reach

ACCEPT, DENY, PASS = "Accept", "Deny", "Pass"
ADMIN, BASELINE = "Admin", "Baseline"
PODS, OUTSIDE = "every pod", "every address outside the cluster"
REGIONS = {Scope.LIMITED: (), Scope.ALL_PODS: (PODS,), Scope.EVERYWHERE: (PODS, OUTSIDE)}
NEEDED = {"ingress": (PODS,), "egress": (PODS, OUTSIDE)}  # what a default deny must deny, per direction


class _Dialect(NamedTuple):
    """What differs between the kinds of this family."""

    actions: Mapping[str, str]  # as written -> ACCEPT, DENY or PASS
    tier: str | None  # fixed by the kind (v1alpha1), or None: `spec.tier`
    pods_need_namespace_selector: bool  # the CRD requires `pods.namespaceSelector`


V1ALPHA1 = {"Allow": ACCEPT, "Deny": DENY, "Pass": PASS}
TIERED = {ACCEPT: ACCEPT, DENY: DENY, PASS: PASS}
DIALECTS = {
    ("policy.networking.k8s.io", "AdminNetworkPolicy"): _Dialect(V1ALPHA1, ADMIN, True),
    ("policy.networking.k8s.io", "BaselineAdminNetworkPolicy"): _Dialect(V1ALPHA1, BASELINE, True),
    # v1alpha2: NamespacedPod.namespaceSelector is optional there (empty or absent: every namespace).
    ("policy.networking.k8s.io", "ClusterNetworkPolicy"): _Dialect(TIERED, None, False),
    ("networking.k8s.aws", "ClusterNetworkPolicy"): _Dialect(TIERED, None, True),
}


def analyze(policy: NetworkPolicy, namespace: Namespace) -> Effect:
    dialect = DIALECTS[(policy.api_version.split("/")[0], policy.kind)]
    spec = policy.spec
    tier = dialect.tier or spec.get("tier")
    if tier not in (ADMIN, BASELINE):
        raise PolicyError(f"`tier` must be Admin or Baseline, got {tier!r}")
    subject = spec.get("subject") or {}
    reach = _subject_reach(subject, namespace, dialect)
    # Counted where it names the namespace: a subject on pod labels alone is not a policy defined for every one.
    counts = _names_namespace(reach, lambda ns: _subject_reach(subject, ns, dialect))
    baseline = tier == BASELINE

    def direction(peers_key: str, name: str) -> Direction:
        found = _guarded(policy, reach, lambda: _first_match(reach, spec.get(name), peers_key, dialect, baseline,
                                                             name))
        # Any NetworkPolicy overrides the Baseline tier: what it admits, known or not, opens nothing over a deny.
        return found._replace(opens_over_isolation=False) if baseline and found is not INACTIVE else found

    return _effect(policy, counts, direction("from", "ingress"), direction("to", "egress"),
                   None if baseline else Order(ADMIN_TIER, (_priority(spec),)))


def _priority(spec: Mapping[str, Any]) -> int:
    priority = spec.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise PolicyError(f"`priority` must be an integer (the CRD requires one), got {priority!r}")
    return priority


def _subject_reach(subject: Mapping[str, Any], namespace: Namespace, dialect: _Dialect) -> Reach:
    labels = _namespace_labels(namespace)
    if "namespaces" in subject:
        return selector_reach(subject["namespaces"] or {}, lambda key: labels.get(key))
    pods = _pods(subject, dialect)
    return all_of((selector_reach(pods.get("namespaceSelector") or {}, lambda key: labels.get(key)),
                   selector_reach(pods.get("podSelector") or {}, _pod_labels)))


def _first_match(reach: Reach, rules: Sequence[Any] | None, peers_key: str, dialect: _Dialect, baseline: bool,
                 name: str) -> Direction:
    if not rules or reach is Reach.NONE:  # no rules: the policy does not affect this direction
        return INACTIVE
    decided: dict[str, str] = {}  # region -> the action of the first rule that covers all of it
    effective = []
    for rule in rules:
        action = _action(rule, dialect)
        peers = rule.get(peers_key)
        if not peers:
            raise PolicyError(f"a rule needs `{peers_key}` with at least one peer (the CRD requires it)")
        scope = max(_peer_scope(peer, dialect) for peer in peers)
        all_ports = not rule.get("ports") and not rule.get("protocols")
        undecided = [region for region in REGIONS[scope] if region not in decided]
        # An Accept of every pod admits what no earlier rule decided; one shadowed by earlier rules admits nothing.
        effective.append(_Rule(scope, all_ports, allows=action == ACCEPT and bool(undecided)))
        if all_ports:
            decided.update((region, action) for region in undecided)
    needed = [decided.get(region) for region in NEEDED[name]]
    isolates = all(action == DENY for action in needed)
    passes = not baseline and None not in needed and ACCEPT not in needed and not isolates
    return _direction(reach, isolates, effective, name)._replace(passes_everything=passes, denies_everything=isolates)


def _action(rule: Mapping[str, Any], dialect: _Dialect) -> str:
    action = dialect.actions.get(rule.get("action"))
    if action is None:
        raise PolicyError(f"unknown rule action {rule.get('action')!r} (expected {', '.join(dialect.actions)})")
    return action


def _peer_scope(peer: Mapping[str, Any], dialect: _Dialect) -> Scope:
    if not isinstance(peer, Mapping):
        raise PolicyError(f"a peer must be an object, got {peer!r}")
    if "networks" in peer:
        # Networks match pod addresses too (v1alpha2 types): a /0 network is every pod and every address.
        return Scope.EVERYWHERE if any(_whole_internet(n) for n in peer["networks"] or ()) else Scope.LIMITED
    # Every pod of the cluster when the selectors hold for any pod of any namespace, decided three-valued as for
    # NetworkPolicy peers: `{}`, and also `kubernetes.io/metadata.name Exists`, true of every namespace.
    if "namespaces" in peer:
        every = selector_reach(peer["namespaces"] or {}, _any_namespace_label)
        return Scope.ALL_PODS if every is Reach.ALL else Scope.LIMITED
    if "pods" in peer:
        pods = _pods(peer, dialect)
        every = all_of((selector_reach(pods.get("namespaceSelector") or {}, _any_namespace_label),
                        selector_reach(pods.get("podSelector") or {}, _pod_labels)))
        return Scope.ALL_PODS if every is Reach.ALL else Scope.LIMITED
    if peer and set(peer) <= {"nodes", "domainNames"}:
        return Scope.LIMITED  # node addresses, or named domains: never every pod or address
    raise PolicyError(f"a peer needs one of namespaces, pods, networks, nodes, domainNames, got {peer!r}")


def _pods(holder: Mapping[str, Any], dialect: _Dialect) -> Mapping[str, Any]:
    """`pods` of a subject or peer; v1alpha1 and EKS CRDs require its namespaceSelector."""
    pods = holder.get("pods")
    if not isinstance(pods, Mapping) or (dialect.pods_need_namespace_selector and "namespaceSelector" not in pods):
        raise PolicyError(f"`pods` needs a namespaceSelector (the CRD requires one), got {pods!r}")
    return pods

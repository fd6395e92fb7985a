"""What every engine's analyzer shares: the answer it gives (Effect, Direction) and the reductions behind it.

For a (policy, namespace) pair an analyzer answers, per direction (ingress, egress):
- reach: which pods of the namespace the policy selects for that direction (NONE, SOME, ALL; see selectors.py);
- isolates: whether being selected puts those pods into default deny for that direction;
- open_rules: the rules that admit traffic from (to) every pod of the cluster or everywhere, named for the
  finding; `admits_everything` when one of them also leaves every port open.
and `counts`: whether the policy is one "defined for" the namespace in the sense of CIS 5.3.2.

The rules, kind by kind, are written out in docs/policy-semantics.md; tests check every one of them.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from handler.errors import PolicyError
from handler.models import Namespace, NetworkPolicy
from handler.policy.selectors import PRESENT, UNKNOWN, Reach

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
    opens_over_isolation: bool = True  # False in the Baseline tier: any NetworkPolicy overrides it
    passes_everything: bool = False  # a Pass of every pod in an ordered tier: no later policy of the tier applies
    denies_everything: bool = False  # in an ordered tier: a Deny of everything that no later policy of it undoes
    unknown: str = ""  # why this direction's rules could not be interpreted (then nothing else here is known)


INACTIVE = Direction()  # of a direction the policy does not apply to


class Effect(NamedTuple):
    kind: str
    counts: bool
    ingress: Direction
    egress: Direction
    api_group: str = ""
    name: str = ""
    short_name: str = ""  # how a finding names it: a NetworkPolicy by its name, any other kind with its kind
    order: Order | None = None  # of a policy in a tier whose policies are tried in turn (None: unordered)


class Order(NamedTuple):
    """Where a policy stands in a tier whose policies are tried in turn, the first that decides winning: the
    Admin tier of the cluster-wide policies (before every other policy, by priority) or a Calico tier (by
    `order`, then name)."""

    tier: str  # ADMIN_TIER, or CALICO_TIER + a Calico tier's name
    rank: tuple[Any, ...]  # lowest first; policies of equal rank decide together


ADMIN_TIER, CALICO_TIER = "Admin", "Calico tier "


Analyzer = Callable[[NetworkPolicy, Namespace], Effect]


class Peer(NamedTuple):
    """How far one peer (or the peers of one rule) reaches, and what it leaves out.

    An exception never narrows the scope: a /0 block admits everything whatever its `except` list (every
    address that matters, the metadata endpoint aside, is still reachable); the finding names the exceptions.
    """

    scope: Scope
    excepted: tuple[str, ...] = ()


LIMITED = Peer(Scope.LIMITED)


class _Rule(NamedTuple):
    """One allow (or deny) rule reduced to what isolation needs: who it reaches and whether ports are open."""

    scope: Scope
    all_ports: bool
    allows: bool = True
    excepted: tuple[str, ...] = ()  # what it leaves out of its scope, named in the finding


def label(policy: NetworkPolicy) -> str:
    return f"{policy.kind} {policy.namespace}/{policy.name}" if policy.namespace else f"{policy.kind} {policy.name}"


def _effect(policy: NetworkPolicy, counts: bool, ingress: Direction, egress: Direction,
            order: Order | None = None) -> Effect:
    # Built whole, once: a copy made afterwards to add the group and name cost a third of the analysis.
    group = policy.api_version.split("/")[0]
    short_name = policy.name if group == "networking.k8s.io" else f"{policy.kind} {policy.name}"
    return Effect(policy.kind, counts, ingress, egress, group, policy.name, short_name, order)


def _guarded(policy: NetworkPolicy, reach: Reach, build: Callable[[], Direction]) -> Direction:
    """One direction's analysis, or, when its rules cannot be interpreted, a direction that says so: the pods
    the policy selects are known, so only their verdicts for this direction are open (PolicyError otherwise)."""
    try:
        return build()
    except UNINTERPRETABLE as error:
        return INACTIVE if reach is Reach.NONE else Direction(reach, unknown=f"{label(policy)}: {why(error)}")


UNINTERPRETABLE = (PolicyError, AttributeError, TypeError, ValueError)  # what a malformed spec raises


def why(error: Exception) -> str:
    return str(error) if isinstance(error, PolicyError) else f"malformed spec ({error})"


def _direction(reach: Reach, isolates: bool, rules: Sequence[_Rule], name: str) -> Direction:
    if not rules:  # a default deny, or a direction with no rule: nothing to name
        return Direction(reach, isolates and reach is not Reach.NONE)
    open_rules, everything = [], False
    for number, rule in enumerate(rules, 1):
        if rule.allows and rule.scope >= Scope.ALL_PODS:
            whom = "every source" if rule.scope is Scope.EVERYWHERE else "every pod of the cluster"
            if name == "egress":
                whom = "every destination" if rule.scope is Scope.EVERYWHERE else "every pod of the cluster"
            but = f" except {', '.join(rule.excepted)}" if rule.excepted else ""
            open_rules.append(f"{name} rule {number} admits {whom}{but}" + ("" if rule.all_ports else " on some ports"))
            everything = everything or rule.all_ports
    return Direction(reach, isolates and reach is not Reach.NONE, tuple(open_rules), everything)


def _merge(directions: list[Direction]) -> Direction:
    """The rules of a multi-rule Cilium policy (`specs`) act together; the pods they isolate are those of the
    rules that isolate, so a wide rule without a deny section never makes a narrow one isolate everything."""
    active = [d for d in directions if d.reach is not Reach.NONE]
    if not active:
        return INACTIVE
    unknown = "; ".join(dict.fromkeys(d.unknown for d in active if d.unknown))
    if any(d.unknown and d.reach is Reach.ALL for d in active):
        return Direction(Reach.ALL, unknown=unknown)  # it may deny or admit anything to every pod
    active = [d for d in active if not d.unknown] or active
    isolating = [d for d in active if d.isolates]
    reach = max(d.reach for d in (isolating or active))
    return Direction(reach, bool(isolating), tuple(r for d in active for r in d.open_rules),
                     any(d.admits_everything and d.reach is reach for d in active), unknown=unknown)


def _by_identity(function: Callable[..., Any]) -> Callable[..., Any]:
    """Memoizes `function(obj, *hashable)` on obj's identity: a cluster-wide policy's rules (lists read from the
    cluster, not hashable) reduce the same way in every namespace it is asked of. An entry keeps obj alive, so
    its id is not reused while cached; the cache is emptied when full."""
    cache: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def memoized(obj: Any, *args: Any) -> Any:
        key = (id(obj), *args)
        hit = cache.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        result = function(obj, *args)
        if len(cache) >= 4096:
            cache.clear()
        cache[key] = (obj, result)
        return result
    return memoized


def _names_namespace(reach: Reach, reach_of: Callable[[Namespace], Reach]) -> bool:
    """A cluster-wide policy is defined for a namespace when it selects all of its pods, or some of them because
    of a term about this namespace: a selector on pod labels alone (`role == 'db'` everywhere) is not."""
    return reach is Reach.ALL or (reach is Reach.SOME and reach_of(NO_SUCH_NAMESPACE) is Reach.NONE)


def _namespace_labels(namespace: Namespace) -> dict[str, str]:
    return {**namespace.labels, NAMESPACE_NAME_LABEL: namespace.name}


def _pod_labels(key: str) -> Any:
    return UNKNOWN


def _any_namespace_label(key: str) -> Any:
    """The labels of a namespace the scanner knows nothing of: only its name label is sure to be there."""
    return PRESENT if key == NAMESPACE_NAME_LABEL else UNKNOWN


def _whole_internet(cidr: Any) -> bool:
    """A /0 block (`0.0.0.0/0`, `::/0`): every address, whatever is excepted from it."""
    return _zero_prefix(str(cidr))


@functools.lru_cache(maxsize=4096)  # a cluster-wide policy's few CIDRs are asked of every namespace
def _zero_prefix(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError as error:
        raise PolicyError(f"bad CIDR {cidr!r}") from error


def _cidr_peer(cidr: Any, excepted: Sequence[Any] | None = None) -> Peer:
    return Peer(Scope.EVERYWHERE, tuple(map(str, excepted or ()))) if _whole_internet(cidr) else LIMITED


def _widest(peers: Iterable[Peer]) -> Peer:
    """Peers of one rule are ORed: the widest scope, less only what every peer of that scope leaves out."""
    reached = list(peers)
    if len(reached) == 1:  # most rules name one peer: it is the widest, with all it leaves out
        return reached[0]
    scope = max((p.scope for p in reached), default=Scope.LIMITED)
    widest = [p.excepted for p in reached if p.scope is scope]
    return Peer(scope, tuple(e for e in widest[0] if all(e in other for other in widest[1:])) if widest else ())

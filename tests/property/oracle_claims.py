"""The claims our verdicts make about pods, checked against NCA (nca_oracle.py), and the known disagreements.

For a subject namespace N and a direction D (Ingress, Egress), with "every pod of N" meaning every labelling a
pod could have (nca_oracle's universe), our isolation control (handler.controls.namespace_isolation) says:

1. PASSED => NCA: every pod of N is isolated for D (selected by a policy that affects D).
2. PASSED => NCA: no pod of N that only namespace-wide policies select (policies selecting every pod of N) is
   open for D to every pod of the cluster, nor to every IPv4 or IPv6 address (but the EXCEPTED blocks), on every
   protocol and port. Pods a labelled policy selects may be opened by it: PASSED means "default deny", and such
   policies are named in the finding.
3. an opener (a policy selecting every pod of N that admits everything, `Direction.admits_everything`, and that no
   earlier policy of its ordered tier decides before: `namespace_isolation.openers`) => FAILED, and NCA: every pod
   of N is open for D to every pod, or to every address of one family; or, when rules of the opener before its
   Allow deny or pass some traffic (Calico's first match; the finding names them as exceptions, as it names an
   ipBlock's `except`), every pod of N is open to some traffic (so those rules do not cover the Allow).
4. FAILED without an opener => NCA: no single policy affecting D selects every pod of N.
5. never NOT_AVAILABLE: every generated policy is interpretable.
and the CIS 5.3.2 control says:
6. NCA: every pod of N is selected by some policy (its "all captured", per namespace) => PASSED.
7. PASSED <=> N has a namespaced policy, or NCA: a cluster-wide policy selects every pod of N, or some pod of N
   and no pod of a namespace without labels (the rule for cluster-wide policies: a selector on pod labels alone
   does not make every namespace compliant).

Where NCA finds connectivity the claims deny, the disagreement is classified, by construction:
- "union": no single peer of a rule (with that rule's ports), put alone in a namespace-wide policy, opens
  everything in NCA either; only their union does. Our analysis is peer by peer, by design
  (docs/policy-semantics.md, "Differential oracle").
- otherwise unexplained: the test fails and prints the world.
The worlds on which the oracle found bugs of ours, fixed since, are `Regression`s: @examples of their kind's
property, checked like any generated world, and each shown wrong by NCA itself under the old verdict.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from handler.controls import namespace_isolation, namespace_network_policy
from handler.models import (ClusterInfo, ClusterRef, ClusterSnapshot, ComplianceStatus, Namespace, NetworkPolicy)
from handler.policy import EGRESS, INGRESS
from tests.property import nca_oracle
from tests.property.nca_oracle import World

# The same examples on every run, bounded by their number (each kind sets max_examples), not by a clock: a
# per-example deadline fails on a loaded machine, and one example with a disagreement to explain asks NCA again.
ORACLE_SETTINGS = settings(derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
REF = ClusterRef("123456789012", "eu-west-1", "oracle")
CONTROLS = {INGRESS: namespace_isolation.INGRESS_CONTROL, EGRESS: namespace_isolation.EGRESS_CONTROL}


@dataclass(frozen=True)
class Ours:
    isolation: ComplianceStatus
    openers: tuple[str, ...]  # the names of the policies selecting every pod that admit everything, over any deny


def snapshot(world: World) -> ClusterSnapshot:
    namespaces = tuple(Namespace(name, dict(labels)) for name, labels in world.namespaces)
    policies = tuple(NetworkPolicy(p["metadata"].get("namespace", ""), p["metadata"]["name"], p["spec"], p["kind"],
                                   p["apiVersion"]) for p in world.policies)
    return ClusterSnapshot(ClusterInfo(REF, "https://oracle.invalid", ""), namespaces, policies)


def ours(world: World) -> tuple[dict[tuple[str, str], Ours], dict[str, ComplianceStatus]]:
    """The isolation verdicts per (namespace, direction) and the 5.3.2 verdict per namespace, with the openers
    as the isolation control finds them (after the ordered tiers decided)."""
    snap = snapshot(world)
    isolation = {}
    for direction, control in CONTROLS.items():
        for result in control.evaluate(snap):
            effects = snap.coverage[result.namespace].effects
            names = {e.short_name: e.name for e in effects}
            openers = tuple(names[o] for o in namespace_isolation.openers(direction, effects))
            isolation[(result.namespace, direction)] = Ours(result.status, openers)
    defined = {r.namespace: r.status for r in namespace_network_policy.evaluate(snap)}
    return isolation, defined


@dataclass(frozen=True)
class Regression:
    """A world on which the oracle found a bug of ours, fixed since: an @example of its kind's property, checked
    strictly like any generated world. `old` is the verdict the buggy code gave its namespace "ns0" for
    `direction`; NCA itself shows that verdict wrong."""

    name: str
    world: World
    direction: str
    old: ComplianceStatus

    def old_verdict_wrong_per_nca(self, to_nca: Callable[[World], World]) -> bool:
        """A PASSED namespace whose pods are all open to everything, or a FAILED one whose pods are all isolated
        and none open."""
        pods = nca_oracle.ask(to_nca(self.world))[("ns0", self.direction)].pods
        isolated = all(p.isolated for p in pods)
        opened = [p.open_to_all_pods or p.open_to_all_addresses for p in pods]
        if self.old is ComplianceStatus.PASSED:
            return isolated and all(opened)
        return isolated and not any(opened)


def with_stored_types(world: World, key: str, types_of: Callable[[Mapping[str, Any]], list[str]]) -> World:
    """The world with every policy's directions written out under `key` as the API server stores them
    (`types_of`), and the rules of a direction left out dropped: NCA reads the keys where the cluster reads the
    lists, and rejects what the cluster ignores (the test modules say how, kind by kind)."""
    policies = []
    for policy in world.policies:
        stored = copy.deepcopy(dict(policy))
        spec = stored["spec"]
        spec[key] = types = types_of(spec)
        for direction in (INGRESS, EGRESS):
            if direction not in types:
                spec.pop(direction.lower(), None)
        policies.append(stored)
    return World(world.namespaces, tuple(policies))


def worlds(subjects: tuple[str, ...], specs: st.SearchStrategy[tuple[str, dict[str, Any]]],
           make: Callable[[str, str, Mapping[str, Any]], dict[str, Any]]) -> st.SearchStrategy[World]:
    """Subject namespaces with generated labels, and one to three policies: `specs` draws (namespace, spec) and
    `make` turns them into a manifest named p<number>."""
    labelling = st.fixed_dictionaries({}, optional={k: st.sampled_from((*v, nca_oracle.UNNAMED))
                                                    for k, v in nca_oracle.NAMESPACE_LABELS.items()})
    namespaces = st.tuples(*(st.tuples(st.just(name), labelling) for name in subjects))
    policies = st.lists(specs, min_size=1, max_size=3).map(
        lambda placed: tuple(make(namespace, f"p{number}", spec) for number, (namespace, spec) in enumerate(placed)))
    return st.builds(World, namespaces, policies)


@dataclass(frozen=True)
class Kind:
    """How one policy kind meets the oracle: how NCA must read it, and how to take one peer of a rule alone."""

    to_nca: Callable[[World], World]  # the world as NCA must read it (the test modules say why)
    peers_alone: Callable[[World, str, str], Iterator[dict[str, Any]]]  # each a namespace-wide policy


def disagreements(world: World, kind: Kind) -> list[str]:
    """Every claim above that NCA contradicts and that is not a union."""
    views = nca_oracle.ask(kind.to_nca(world))
    isolation, defined = ours(world)
    found = []
    for (namespace, direction), view in views.items():
        verdict = isolation[(namespace, direction)]
        where = f"{namespace} {direction}"
        if verdict.isolation is ComplianceStatus.NOT_AVAILABLE:
            found.append(f"{where}: NOT_AVAILABLE for an interpretable world (claim 5)")
        if verdict.isolation is ComplianceStatus.PASSED:
            found += [f"{where}: PASSED but NCA: {p.name} not isolated (claim 1)" for p in view.pods if not p.isolated]
            opened = [p.name for p in view.pods if p.namespace_wide_only and (p.open_to_all_pods or
                                                                               p.open_to_all_addresses)]
            if opened and not _only_a_union_opens(world, kind, namespace, direction):
                found.append(f"{where}: PASSED but NCA: {', '.join(opened)} open to everything (claim 2)")
        if verdict.openers:
            if verdict.isolation is not ComplianceStatus.FAILED:
                found.append(f"{where}: openers {verdict.openers} but {verdict.isolation} (claim 3)")
            closed = [p.name for p in view.pods if not (p.open_to_all_pods or p.open_to_all_addresses)]
            if closed and not (_rules_before_the_allow(world, namespace, direction, verdict.openers)
                               and all(p.open_to_some for p in view.pods)):
                found.append(f"{where}: {verdict.openers} admit everything but NCA: {', '.join(closed)} not open "
                             "(claim 3)")
        elif verdict.isolation is ComplianceStatus.FAILED and view.one_policy_isolates_all:
            found.append(f"{where}: FAILED but NCA: one policy isolates every pod and none opens (claim 4)")
    for namespace, _ in world.namespaces:
        both = zip(views[(namespace, INGRESS)].pods, views[(namespace, EGRESS)].pods)
        captured = all(ingress.isolated or egress.isolated for ingress, egress in both)
        if captured and defined[namespace] is not ComplianceStatus.PASSED:
            found.append(f"{namespace}: NCA: every pod is selected by a policy, but 5.3.2 {defined[namespace]} "
                         "(claim 6)")
        namespaced = any(p["metadata"].get("namespace") == namespace for p in world.policies)
        cluster_wide = views[(namespace, INGRESS)].defined_by_cluster_wide
        if (defined[namespace] is ComplianceStatus.PASSED) != (namespaced or bool(cluster_wide)):
            found.append(f"{namespace}: 5.3.2 {defined[namespace]}, but namespaced policies: {namespaced}, "
                         f"cluster-wide policies defined for it per NCA: {cluster_wide or 'none'} (claim 7)")
    return found


def _rules_before_the_allow(world: World, namespace: str, direction: str, openers: tuple[str, ...]) -> bool:
    """Whether a rule with an action (Calico) denies or passes traffic before an Allow in every opener."""
    def before_an_allow(policy: Mapping[str, Any]) -> bool:
        actions = [rule.get("action") for rule in policy["spec"].get(direction.lower()) or ()]
        return "Allow" in actions and bool({"Deny", "Pass"} & set(actions[:actions.index("Allow")]))
    by_name = {p["metadata"]["name"]: p for p in world.policies
               if p["metadata"].get("namespace", namespace) == namespace}
    return all(before_an_allow(by_name[name]) for name in openers)


def _only_a_union_opens(world: World, kind: Kind, namespace: str, direction: str) -> bool:
    """Whether no single peer of a rule, alone in a namespace-wide policy, opens the namespace in NCA either."""
    for alone in kind.peers_alone(world, namespace, direction):
        view = nca_oracle.ask(kind.to_nca(World(world.namespaces, (alone,))))[(namespace, direction)]
        if any(p.open_to_all_pods or p.open_to_all_addresses for p in view.pods):
            return False
    return True

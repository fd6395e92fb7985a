"""Namespace is isolated by default: two controls, one per direction (ingress, egress).

PASSED when every pod of the namespace is covered by a default deny for the direction: a policy that selects
all of its pods, puts them in default deny for that direction (Kubernetes policyTypes, Cilium's ingress/egress
sections, Calico types, an Admin or Baseline tier Deny of every pod, and for egress of every network) and has no
rule admitting everything; and no policy that selects all of its pods admits everything (Kubernetes unions allow
rules, so one allow-all policy undoes the deny). Admin-tier policies (AdminNetworkPolicy, ClusterNetworkPolicy
tier Admin) come first, by priority: the first that denies or admits everything decides alone; the policies of a
Calico tier are tried in `order` the same way, the tier's decision joining the rest. FAILED otherwise.
Policies that admit every source (destination), on all ports or some, are named in every finding. The rules are
in handler/policy/engines/ and docs/policy-semantics.md.

NOT_AVAILABLE when the verdict depends on what could not be known: a policy kind that could not be read or a
cluster-wide policy not interpreted, when no default deny was found; a direction not interpreted of a policy
over all of the namespace's pods, unless an allow-all already fails the namespace.
On EKS Auto Mode, DefaultDeny NodeClasses can isolate a namespace too (controls/unselected_pods.py).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from handler.controls import unselected_pods
from handler.controls.base import Control, Evaluate, EvaluationOptions, namespace_verdicts, where
from handler.models import ClusterSnapshot, ComplianceStatus, ControlResult, Namespace, UnselectedPods
from handler.policy import EGRESS, INGRESS, Direction, Effect, Reach
from handler.policy.coverage import NamespaceCoverage
from handler.policy.engines.common import ADMIN_TIER

MAX_NAMED = 10


def _evaluator(direction: str, control_id: str) -> Evaluate:
    def evaluate(snapshot: ClusterSnapshot, options: EvaluationOptions = EvaluationOptions()) -> list[ControlResult]:
        cluster, pods = snapshot.cluster.ref.name, snapshot.unselected_pods
        shared = _Shared.of(cluster, direction, pods)
        return namespace_verdicts(snapshot, control_id, lambda ns, coverage: _verdict(
            direction, control_id, ns, coverage, snapshot.unreadable, cluster, pods, shared))
    return evaluate


class _Isolation(NamedTuple):
    """What one direction's policies do to a namespace."""

    denies: Sequence[str]  # sorted: put all of its pods in default deny, and admit nothing over it
    openers: Sequence[str]  # sorted: admit everything to all of its pods, over any deny
    evidence: tuple[str, ...]  # the first MAX_NAMED of each
    named: str  # the sentence naming the rules that admit every source (destination), or ""
    unknown: tuple[str, ...] = ()  # policies over all of its pods not understood that could change the verdict
    unknown_if_no_deny: tuple[str, ...] = ()  # those that could only turn a "no default deny" into one


NOT_ISOLATED = _Isolation((), (), (), "")  # of every namespace that no policy applies to


def _isolation(direction: str, effects: tuple[Effect, ...]) -> _Isolation:
    if not effects:  # most namespaces of a large cluster: nothing to sort or name
        return NOT_ISOLATED
    pick = (lambda e: e.ingress) if direction == INGRESS else (lambda e: e.egress)
    left_out = _left_out_by_tiers(pick, effects)
    denies, openers, open_rules, unknown, unknown_if_no_deny = [], [], [], [], []
    for index, effect in enumerate(effects):
        d = pick(effect)
        if d.open_rules:
            open_rules.append(f"{effect.short_name} ({'; '.join(d.open_rules)})")
        if d.reach is not Reach.ALL or index in left_out:
            continue
        if d.unknown:
            (unknown if d.opens_over_isolation else unknown_if_no_deny).append(d.unknown)
        if d.isolates and not d.admits_everything:
            denies.append(effect.short_name)
        if d.admits_everything and d.opens_over_isolation:
            openers.append(effect.short_name)
    denies.sort()
    openers.sort()
    named = f" Policies admitting every {'source' if direction == INGRESS else 'destination'}: " \
            f"{', '.join(sorted(open_rules)[:MAX_NAMED])}." if open_rules else ""
    return _Isolation(denies, openers, tuple(denies[:MAX_NAMED] + openers[:MAX_NAMED]), named, tuple(unknown),
                      tuple(unknown_if_no_deny))


def openers(direction: str, effects: tuple[Effect, ...]) -> Sequence[str]:
    """The policies that admit everything to every pod of a namespace over any deny, once the ordered tiers have
    decided (sorted): each alone fails the namespace."""
    return _isolation(direction, effects).openers


class _Decision(NamedTuple):
    """How the policies of one ordered tier, tried in turn, end for every pod of a namespace (indices into the
    namespace's effects)."""

    deciding: tuple[int, ...] | None  # the policies that admit or deny everything first; (): a Pass of everything
    # first; None: none of them, so each keeps its own effect (a Calico tier denies at its end what none allowed)
    tried: tuple[int, ...]  # those that may decide, up to the decision: those not understood may have decided first


def _left_out_by_tiers(pick: Callable[[Effect], Direction], effects: tuple[Effect, ...]) -> set[int]:
    """The policies that ordered tiers leave out of the union of the rest (indices into `effects`).

    In each tier (Effect.order) the first policies over all of the namespace's pods that admit or deny everything
    decide alone and the rest of the tier does nothing; a Pass of everything hands the traffic on and the whole
    tier does nothing. The Admin tier comes before every other policy: its decision is the verdict, and when it
    decides nothing none of its policies applies. Calico tiers are each decided alone and then joined with the
    rest: their order among themselves is a Tier resource's, which the scanner does not read. Policies not
    understood that are tried before a decision are kept: their unknown reaches the verdict."""
    candidates: dict[str, list[tuple[tuple[Any, ...], int]]] = {}  # tier -> (rank, index) of those that may decide
    leaving: set[str] = set()  # the tiers whose policies leave the union but for those kept
    for index, effect in enumerate(effects):
        if effect.order is not None:
            if effect.order.tier == ADMIN_TIER:
                leaving.add(ADMIN_TIER)  # it decides, or none of its policies applies
            d = pick(effect)
            if d.reach is Reach.ALL and (d.admits_everything or d.denies_everything or d.passes_everything
                                         or d.unknown):
                candidates.setdefault(effect.order.tier, []).append((effect.order.rank, index))
    decisions = {tier: _decide(pick, effects, ranked) for tier, ranked in candidates.items()}
    kept: set[int] = set()  # the deciding policies, and those not understood tried before a decision
    for decision in decisions.values():
        kept.update(decision.deciding or ())
        kept.update(i for i in decision.tried if pick(effects[i]).unknown)
    admin = decisions.get(ADMIN_TIER)
    if admin is not None and admin.deciding:
        return set(range(len(effects))) - kept
    leaving.update(tier for tier, decision in decisions.items() if decision.deciding is not None)
    if not leaving:  # the common case: every Calico tier ends in its own deny, and no Admin tier
        return set()
    return {index for index, effect in enumerate(effects)
            if effect.order is not None and effect.order.tier in leaving and index not in kept}


def _decide(pick: Callable[[Effect], Direction], effects: tuple[Effect, ...],
            candidates: list[tuple[tuple[Any, ...], int]]) -> _Decision:
    """The tier's policies that may decide (the others change nothing here, and most policies of a large cluster
    are among them: only these are sorted) in rank order, equal ranks together: an admitting one wins a tie."""
    tried: list[int] = []
    for _, group in itertools.groupby(sorted(candidates), key=lambda candidate: candidate[0]):
        policies = tuple(index for _, index in group)
        tried += policies
        deciding = (tuple(i for i in policies if pick(effects[i]).admits_everything)
                    or tuple(i for i in policies if pick(effects[i]).denies_everything))
        if deciding:
            return _Decision(deciding, tuple(tried))
        if any(pick(effects[i]).passes_everything for i in policies):
            return _Decision((), tuple(tried))
    return _Decision(None, tuple(tried))


def _verdict(direction: str, control_id: str, namespace: Namespace, coverage: NamespaceCoverage,
             unreadable: tuple[str, ...], cluster: str, pods: UnselectedPods, shared: _Shared) -> ControlResult:
    """The texts are made when read (models.Wording): the wordings of namespaces no policy applies to, and of
    those being deleted, are the cluster's (`shared`)."""
    denies, openers, evidence, named, unknown_rules, unknown_if_no_deny = _isolation(direction, coverage.effects)
    if namespace.terminating:
        return ControlResult.worded(control_id, namespace.name, ComplianceStatus.WARNING, shared.terminating,
                                    evidence)
    if denies and not openers and not unknown_rules:
        return ControlResult.worded(control_id, namespace.name, ComplianceStatus.PASSED,
                                    _Denies(cluster, direction, denies[:MAX_NAMED], named), evidence)
    # A policy not understood leaves the verdict open only if it could change it: one that is not over all of the
    # namespace's pods, or one the verdict does not depend on, does not (it stays in the run's count).
    unknown = unknown_rules + (() if denies else unreadable + coverage.errors + unknown_if_no_deny)
    if not openers and not unknown and unselected_pods.isolates(direction, coverage.effects, pods):
        return ControlResult.worded(control_id, namespace.name, ComplianceStatus.PASSED,
                                    _NodesDeny(cluster, direction, pods, named),
                                    evidence + unselected_pods.evidence(pods))
    unknown += unselected_pods.unknown(pods)
    if unknown and not openers:
        return ControlResult.worded(control_id, namespace.name, ComplianceStatus.NOT_AVAILABLE,
                                    _Unknown(cluster, direction, unknown, named), evidence)
    wording = _NotIsolated(cluster, direction, openers[:MAX_NAMED], named, pods) if coverage.effects \
        else shared.not_isolated
    return ControlResult.worded(control_id, namespace.name, ComplianceStatus.FAILED, wording, evidence)


class _Terminating(NamedTuple):
    cluster: str
    direction: str

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace} is being deleted; {self.direction.lower()} isolation not applicable"

    def description(self, result: ControlResult) -> str:
        return f"{where(result, self.cluster)} is Terminating; it is not counted as failing."


class _Denies(NamedTuple):
    cluster: str
    direction: str
    denies: Sequence[str]  # the first MAX_NAMED policies that put every pod in default deny
    named: str  # the sentence naming the rules that admit every source (destination), or ""

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace} denies {self.direction.lower()} by default"

    def description(self, result: ControlResult) -> str:
        return (f"{where(result, self.cluster)}: every pod is in default deny for {self.direction.lower()} by "
                f"{', '.join(self.denies)}." + self.named)


class _NodesDeny(NamedTuple):
    cluster: str
    direction: str
    pods: UnselectedPods
    named: str

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace} denies {self.direction.lower()} by default"

    def description(self, result: ControlResult) -> str:
        return f"{where(result, self.cluster)}: {unselected_pods.passed_text(self.direction, self.pods)}" + self.named


class _Unknown(NamedTuple):
    cluster: str
    direction: str
    unknown: tuple[str, ...]  # what could not be read or interpreted, with why
    named: str

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace}: {self.direction.lower()} isolation could not be determined"

    def description(self, result: ControlResult) -> str:
        return (f"{where(result, self.cluster)} has no default deny for {self.direction.lower()} that is certain "
                f"among the policies read: some could not be read or interpreted: {'; '.join(self.unknown)}."
                + self.named)


class _NotIsolated(NamedTuple):
    cluster: str
    direction: str
    openers: Sequence[str]  # the first MAX_NAMED policies that admit everything over any deny
    named: str
    pods: UnselectedPods

    def title(self, result: ControlResult) -> str:
        return f"Namespace {result.namespace} is not isolated for {self.direction.lower()} by default"

    def description(self, result: ControlResult) -> str:
        word = self.direction.lower()
        why = (f"{', '.join(self.openers)} admit(s) all {word} traffic for every pod" if self.openers
               else f"no policy puts all of its pods in default deny for {word}")
        return (f"{where(result, self.cluster)} is not isolated by default for {word}: {why}. Pods not selected by "
                f"a deny accept any {word} traffic." + self.named + unselected_pods.note(self.direction, self.pods))


class _Shared(NamedTuple):
    """The wordings of a cluster's namespaces that say the same but for their name."""

    terminating: _Terminating
    not_isolated: _NotIsolated  # of a namespace no policy applies to

    @classmethod
    def of(cls, cluster: str, direction: str, pods: UnselectedPods) -> _Shared:
        return cls(_Terminating(cluster, direction), _NotIsolated(cluster, direction, (), "", pods))


def _control(direction: str, control_id: str, remediation: str) -> Control:
    return Control(
        id=control_id,
        title=f"Namespace is isolated by default ({direction.lower()})",
        severity="MEDIUM" if direction == INGRESS else "LOW",
        # Isolation is the intent behind 5.3.2: existence alone lets an allow-all policy pass (kubescape #3600).
        requirements=("CIS Kubernetes Benchmark v1.10.0/5.3.2", "CIS Amazon EKS Benchmark v1.7.0/4.3.2"),
        remediation_text=remediation,
        remediation_url="https://kubernetes.io/docs/concepts/services-networking/network-policies/"
                        "#default-policies",
        evaluate=_evaluator(direction, control_id),
        namespace_local=True,
    )


INGRESS_CONTROL = _control(INGRESS, "netpol-default-deny-ingress",
                           "Add a NetworkPolicy with podSelector {} and policyTypes [Ingress] and no ingress rules "
                           "(or the engine's equivalent), then allow what each workload needs; remove policies "
                           "that admit all ingress to every pod.")
EGRESS_CONTROL = _control(EGRESS, "netpol-default-deny-egress",
                          "Add a NetworkPolicy with podSelector {} and policyTypes [Egress] and no egress rules "
                          "(allow DNS to kube-dns explicitly), then allow what each workload needs.")

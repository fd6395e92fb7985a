"""What EKS Auto Mode NodeClasses do to the isolation verdicts (pure; the rule is in docs/policy-semantics.md).

On the nodes of a NodeClass with `networkPolicy: DefaultDeny` a pod that no policy selects is denied in both
directions; a pod that a policy selects follows its policies, and a direction none of its policies isolates is open
(the VPC CNI node agent adds an allow-all entry for it). So, when every node is of such a NodeClass
(PodDefault.DENY), a namespace is isolated for a direction when every policy that selects some of its pods isolates
those pods for that direction. When only some are (SOME_DENY), the verdict rests on the policies and says why.
"""
from __future__ import annotations

from collections.abc import Iterable

from handler.models import PodDefault, UnselectedPods
from handler.policy import INGRESS, Effect, Reach


def isolates(direction: str, effects: Iterable[Effect], pods: UnselectedPods) -> bool:
    if pods.default is not PodDefault.DENY:
        return False
    for effect in effects:
        selected = max(effect.ingress.reach, effect.egress.reach)  # whom the policy selects, in either direction
        d = effect.ingress if direction == INGRESS else effect.egress
        # Two directions of one policy share its subject; a smaller reach here may leave selected pods open.
        if selected is not Reach.NONE and not (d.isolates and d.reach >= selected):
            return False
    return True


def passed_text(direction: str, pods: UnselectedPods) -> str:
    return (f"no policy puts all of its pods in default deny for {direction.lower()}, but {pods.reason}, and every "
            f"policy that selects some of its pods isolates them for {direction.lower()}.")


def evidence(pods: UnselectedPods) -> tuple[str, ...]:
    return tuple(f"NodeClass {name}" for name in pods.node_classes)


def unknown(pods: UnselectedPods) -> tuple[str, ...]:
    """Why a FAILED verdict could be wrong: the NodeClasses that might isolate the namespace were not read."""
    return (pods.reason,) if pods.default is PodDefault.UNKNOWN else ()


def note(direction: str, pods: UnselectedPods) -> str:
    """The sentence a verdict the NodeClasses did not decide ends with."""
    if pods.default is PodDefault.SOME_DENY:
        return f" {pods.reason[:1].upper()}{pods.reason[1:]}."
    if pods.default is PodDefault.DENY:
        return (f" Pods no policy selects are denied ({pods.reason}), but the policies here leave "
                f"{direction.lower()} open to pods they select.")
    return ""

"""Label selectors, exactly as Kubernetes matches them, and three-valued: which pods of a namespace they reach.

The scanner reads namespaces and policies, never pods (a pod list would cost more than the whole scan), so a
selector over pod labels is undecided for a namespace: it may select some of its pods. A selector that holds
for every pod whatever its labels (an empty one) selects ALL of them; one whose namespace terms are false
selects NONE. `Reach` is that answer; AND is its minimum, OR its maximum, NOT swaps ALL and NONE.

The same evaluation answers "does this peer select every namespace?" without a syntactic test: over a namespace
the scanner knows nothing of but the labels every namespace carries (PRESENT, value unknown), a selector that is
still ALL holds for every namespace (`kubernetes.io/metadata.name Exists` does, `team In (a)` does not).
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from handler.errors import PolicyError


class Reach(enum.IntEnum):
    """Which pods of one namespace a selector (or a policy) selects."""

    NONE = 0
    SOME = 1  # depends on pod labels the scanner does not read
    ALL = 2

    def negate(self) -> Reach:
        return Reach(2 - self.value)


def all_of(values: Iterable[Reach]) -> Reach:
    return min(values, default=Reach.ALL)


def any_of(values: Iterable[Reach]) -> Reach:
    return max(values, default=Reach.NONE)


# A key's value as far as the scanner knows it: a string, None for "label absent", UNKNOWN (a pod label: absent or
# any value), or PRESENT (a label every object of its kind carries, whatever its value, e.g. a namespace's name).
UNKNOWN: Any = object()
PRESENT: Any = object()
Resolver = Callable[[str], Any]

# Operators as the API spells them; Cilium's examples also write them in lower case, which its agent accepts.
_OPERATORS = {"in": "In", "notin": "NotIn", "exists": "Exists", "doesnotexist": "DoesNotExist"}


def selector_reach(selector: Mapping[str, Any] | None, resolve: Resolver) -> Reach:
    """A metav1.LabelSelector: matchLabels AND matchExpressions; no requirement at all matches everything.

    Unknown fields are ignored, as kube-apiserver prunes them from CRD objects (`matchlabels` typos select all).
    """
    if selector is None:
        return Reach.ALL
    if not isinstance(selector, Mapping):
        raise PolicyError(f"a label selector must be an object, got {selector!r}")
    labels, expressions = selector.get("matchLabels"), selector.get("matchExpressions")
    if not labels and not expressions:  # `{}`, as most podSelectors are: nothing to resolve
        return Reach.ALL
    terms = [_equals(str(k), v, resolve) for k, v in (labels or {}).items()]
    terms += [_expression(e, resolve) for e in expressions or ()]
    return all_of(terms)


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Exact matching of a label selector against known labels (a namespace's)."""
    return selector_reach(selector, lambda key: labels.get(key)) is Reach.ALL


def is_empty(selector: Mapping[str, Any] | None) -> bool:
    """`{}` (or matchLabels: null): selects everything in its scope."""
    return isinstance(selector, Mapping) and not selector.get("matchLabels") and not selector.get("matchExpressions")


def _equals(key: str, value: Any, resolve: Resolver) -> Reach:
    known = resolve(key)
    if known is UNKNOWN or known is PRESENT:
        return Reach.SOME
    return Reach.ALL if known == ("" if value is None else str(value)) else Reach.NONE


def _expression(expression: Any, resolve: Resolver) -> Reach:
    if not isinstance(expression, Mapping) or "key" not in expression:
        raise PolicyError(f"a matchExpressions entry needs a key and an operator, got {expression!r}")
    operator = _OPERATORS.get(str(expression.get("operator", "")).lower())
    if operator is None:
        raise PolicyError(f"unknown label selector operator {expression.get('operator')!r}")
    values = {str(v) for v in expression.get("values") or ()}
    known = resolve(str(expression["key"]))
    if known is UNKNOWN:
        return Reach.SOME
    if known is PRESENT:
        return {"Exists": Reach.ALL, "DoesNotExist": Reach.NONE}.get(operator, Reach.SOME)
    holds = {"In": known is not None and known in values,
             "NotIn": known is None or known not in values,  # NotIn also matches objects without the key
             "Exists": known is not None,
             "DoesNotExist": known is None}[operator]
    return Reach.ALL if holds else Reach.NONE

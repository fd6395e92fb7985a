"""Label and field selectors on lists, parsed like kube-apiserver (400 with its message when malformed)."""
from __future__ import annotations

import re
from typing import Any, Callable

from netpol_scan.sandbox.kube_api.errors import ApiError
from netpol_scan.sandbox.kube_api.resources import NAMESPACES, ResourceKind

_REQUIREMENT = re.compile(
    r"^\s*(?P<not>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)|\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$")


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A predicate for a labelSelector (=, ==, !=, in, notin, exists, !exists); ApiError 400 when malformed."""
    requirements = [_requirement(part) for part in re.split(r",(?![^(]*\))", selector) if part.strip()]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def _requirement(text: str) -> Callable[[dict[str, str]], bool]:
    match = _REQUIREMENT.match(text)
    if not match or (match["not"] and (match["op"] or match["setop"])):
        raise ApiError(400, f"unable to parse requirement: {text.strip()!r}")
    key, op = match["key"], match["op"] or match["setop"]
    if op is None:
        return (lambda labels: key not in labels) if match["not"] else (lambda labels: key in labels)
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == match["value"]
    if op == "!=":
        return lambda labels: labels.get(key) != match["value"]
    values = {v.strip() for v in match["values"].split(",")}
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def field_matcher(selector: str, kind: ResourceKind) -> Callable[[dict[str, Any]], bool]:
    """A predicate for a fieldSelector over the fields kube-apiserver supports for namespaces and policies."""
    getters: dict[str, Callable[[dict[str, Any]], str]] = {
        "metadata.name": lambda obj: obj["metadata"]["name"],
        "metadata.namespace": lambda obj: obj["metadata"].get("namespace", ""),
    }
    if kind == NAMESPACES:
        getters["status.phase"] = lambda obj: obj.get("status", {}).get("phase", "")
    tests = []
    for part in filter(None, (p.strip() for p in selector.split(","))):
        match = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise ApiError(400, f"invalid selector: '{selector}'; can't understand '{part}'")
        if match[1] not in getters:
            raise ApiError(400, f'"{match[1]}" is not a known field selector: only "'
                                + '", "'.join(sorted(getters)) + '"')
        getter, negate, value = getters[match[1]], match[2] == "!=", match[3]
        tests.append(lambda obj, g=getter, n=negate, v=value: (g(obj) == v) != n)
    return lambda obj: all(test(obj) for test in tests)



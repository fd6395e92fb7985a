"""Calico's selector language (projectcalico.org/v3 `selector`, `namespaceSelector`), three-valued over a namespace.

Grammar, as Calico documents it: `all()`, `global()`, `has(k)`, `k == "v"`, `k != "v"`, `k in {"a","b"}`,
`k not in {...}`, `k contains "s"`, `k starts with "s"`, `k ends with "s"`, `!e`, `(e)`, `e && e`, `e || e`
(`&&` binds tighter than `||`). An empty selector means all(). Values are quoted with ' or ".

`global()` matches everything, as `all()` does, except in a rule's `namespaceSelector`: there Calico rewrites it to
`!has(projectcalico.org/namespace)` (only non-namespaced GlobalNetworkSets and HostEndpoints), so it selects no
namespace (libcalico-go updateprocessors/rules.go, getEndpointSelector; API doc of EntityRule.NamespaceSelector).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

from handler.errors import PolicyError
from handler.policy.selectors import PRESENT, UNKNOWN, Reach, Resolver, all_of, any_of

Node = Callable[[Resolver], Reach]

_TOKEN = re.compile(r"""\s*(?:(?P<op>&&|\|\||==|!=|!|\(|\)|\{|\}|,)|(?P<str>"[^"]*"|'[^']*')"""
                    r"""|(?P<word>[A-Za-z0-9_./\-]+(?:\(\))?))""")
_WORD_OPS = ("not in", "starts with", "ends with", "contains", "in")


@functools.lru_cache(maxsize=4096)  # the same few selectors are asked of every namespace
def compile_selector(text: str | None, rule_namespace_selector: bool = False) -> Node:
    """A predicate over a key resolver; PolicyError naming the selector when it does not parse.
    `rule_namespace_selector`: the text is a rule's namespaceSelector, where `global()` selects no namespace."""
    tokens = _tokenize(text or "")
    if not tokens:
        return lambda resolve: Reach.ALL
    parser = _Parser(tokens, text or "", Reach.NONE if rule_namespace_selector else Reach.ALL)
    node = parser.disjunction()
    if parser.position != len(tokens):
        raise PolicyError(f"Calico selector {text!r}: unexpected {tokens[parser.position]!r}")
    return node


def _tokenize(text: str) -> list[str]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise PolicyError(f"Calico selector {text!r}: cannot read it at {text[position:]!r}")
        tokens.append(match.group().strip())
        position = match.end()
    return _join_word_operators(tokens)


def _join_word_operators(tokens: list[str]) -> list[str]:
    """`not in`, `starts with`, `ends with` are one operator made of two words."""
    out: list[str] = []
    for token in tokens:
        if out and f"{out[-1]} {token}" in _WORD_OPS:
            out[-1] = f"{out[-1]} {token}"
        else:
            out.append(token)
    return out


class _Parser:
    def __init__(self, tokens: list[str], text: str, global_reach: Reach) -> None:
        self.tokens, self.text, self.position, self.global_reach = tokens, text, 0, global_reach

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise PolicyError(f"Calico selector {self.text!r}: expected {expected or 'more'}, got {token!r}")
        self.position += 1
        return token

    def disjunction(self) -> Node:
        return self._chain("||", self.conjunction, any_of)

    def conjunction(self) -> Node:
        return self._chain("&&", self.unary, all_of)

    def _chain(self, operator: str, operand: Callable[[], Node], combine: Callable[[Iterable[Any]], Any]) -> Node:
        """operand (operator operand)*, combined left to right; a single operand stands for itself."""
        terms = [operand()]
        while self.peek() == operator:
            self.take()
            terms.append(operand())
        return terms[0] if len(terms) == 1 else (lambda resolve: combine(t(resolve) for t in terms))

    def unary(self) -> Node:
        if self.peek() == "!":
            self.take()
            inner = self.unary()
            return lambda resolve: inner(resolve).negate()
        if self.peek() == "(":
            self.take()
            inner = self.disjunction()
            self.take(")")
            return inner
        return self.term()

    def term(self) -> Node:
        word = self.take()
        if word == "all()":
            return lambda resolve: Reach.ALL
        if word == "global()":
            global_reach = self.global_reach
            return lambda resolve: global_reach
        if word == "has" and self.peek() == "(":
            self.take("(")
            key = self.take()
            self.take(")")
            return lambda resolve: _compare(resolve(key), _any_value, absent_matches=False)
        operator = self.take()
        if operator in ("in", "not in"):
            values = self._set()
            negate = operator == "not in"
            return lambda resolve: _compare(resolve(word), lambda v: (v in values) != negate, negate)
        value = _unquote(self.take(), self.text)
        tests: dict[str, Callable[[str], bool]] = {
            "==": lambda v: v == value, "!=": lambda v: v != value, "contains": lambda v: value in v,
            "starts with": lambda v: v.startswith(value), "ends with": lambda v: v.endswith(value)}
        if operator not in tests:
            raise PolicyError(f"Calico selector {self.text!r}: unknown operator {operator!r}")
        return lambda resolve: _compare(resolve(word), tests[operator], operator == "!=")

    def _set(self) -> set[str]:
        self.take("{")
        values: set[str] = set()
        while self.peek() != "}":
            values.add(_unquote(self.take(), self.text))
            if self.peek() == ",":
                self.take()
        self.take("}")
        return values


def _any_value(value: str) -> bool:  # the test of has(k)
    return True


def _compare(known: object, test: Callable[[str], bool], absent_matches: bool) -> Reach:
    """`!=` and `not in` hold for endpoints without the label, as in Calico."""
    if known is UNKNOWN:
        return Reach.SOME
    if known is PRESENT:  # the label is there, its value unknown: only has(k) is decided
        return Reach.ALL if test is _any_value else Reach.SOME
    if known is None:
        return Reach.ALL if absent_matches else Reach.NONE
    return Reach.ALL if test(str(known)) else Reach.NONE


def _unquote(token: str, text: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    raise PolicyError(f"Calico selector {text!r}: expected a quoted value, got {token!r}")

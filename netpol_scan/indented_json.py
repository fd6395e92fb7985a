"""`json.dump(value, stream, indent=2)`, byte for byte, streamed and at the speed of json's C encoder.

With an indent, the json module encodes in pure Python and `json.dumps` joins the whole text in memory: for the
30,001 results of a 10,000-namespace cluster that was a quarter of `netpol-scan cluster -o json`'s CPU time and
73 of its 163 MiB peak RSS (docs/benchmarks.md, "CLI, whole process"). Here a container whose items are all scalars or empty
containers (most of what the CLI prints: a result, a policy count map) is one call of the C encoder, with the
line break and indent of its depth as the item separator; other containers are walked in Python. Text goes to
the stream in blocks as it is made, and an iterator is written as an array as it is consumed, so a document's
large lists need not be built first.

Differences from `json.dump`: any iterator is an array (json rejects them), and a value holding itself is a
RecursionError (json says "Circular reference detected").
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Any, NoReturn, TextIO

INDENT = 2
BLOCK_CHARS = 1 << 16  # text handed to the stream at a time
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = (dict, list, tuple)


def _not_serializable(value: Any) -> NoReturn:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_encoder(item_separator: str) -> Any:
    # As json.dumps(..., indent=INDENT) sets them: ensure_ascii, allow_nan, no key sorting, ": " after keys.
    return c_make_encoder(None, _not_serializable, encode_basestring_ascii, None, ": ", item_separator, False, False,
                          True)


_scalar = _c_encoder(",")
_flat_by_depth: dict[int, Any] = {}  # the C encoder for flat containers at each depth


def dump(value: Any, stream: TextIO) -> None:
    """Writes `value` as `json.dump(value, stream, indent=2)` would (iterators as arrays)."""
    block: list[str] = []
    size = 0
    for chunk in chunks(value):
        block.append(chunk)
        size += len(chunk)
        if size >= BLOCK_CHARS:
            stream.write("".join(block))
            block.clear()
            size = 0
    stream.write("".join(block))


def chunks(value: Any, depth: int = 0) -> Iterator[str]:
    """The text of `value` at `depth` levels of indent, in pieces: containers are walked down to their iterators,
    whose items (one result, one finding: small) are each made as one piece."""
    if isinstance(value, Iterator):
        yield from _array_chunks(value, depth, items_whole=True)
    elif isinstance(value, dict) and not _flat(value.values()):
        inner = _line(depth + 1)
        separator = "{" + inner
        for key, item in value.items():
            yield separator + _key(key) + ": "
            yield from chunks(item, depth + 1)
            separator = "," + inner
        yield _line(depth) + "}"
    elif isinstance(value, (list, tuple)) and not _flat(value):
        yield from _array_chunks(iter(value), depth, items_whole=False)
    else:
        yield text(value, depth)


def text(value: Any, depth: int = 0) -> str:
    """The text of `value` at `depth` levels of indent, made whole (an iterator in it is consumed)."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind in _SCALARS:
        return "".join(_scalar(value, 0))
    if isinstance(value, dict):
        if _flat(value.values()):
            return _flat_text(value, depth)
        inner = _line(depth + 1)
        return ("{" + inner + ("," + inner).join([_key(k) + ": " + text(v, depth + 1) for k, v in value.items()])
                + _line(depth) + "}")
    if isinstance(value, Iterator):
        value = list(value)
    if isinstance(value, (list, tuple)):
        if _flat(value):
            return _flat_text(value, depth)
        inner = _line(depth + 1)
        return "[" + inner + ("," + inner).join([text(v, depth + 1) for v in value]) + _line(depth) + "]"
    return "".join(_scalar(value, 0))


def _array_chunks(items: Iterator[Any], depth: int, items_whole: bool) -> Iterator[str]:
    first = next(items, _END)
    if first is _END:
        yield "[]"
        return
    inner = _line(depth + 1)
    separator = "[" + inner
    for item in itertools.chain((first,), items):
        if items_whole:
            yield separator + text(item, depth + 1)
        else:
            yield separator
            yield from chunks(item, depth + 1)
        separator = "," + inner
    yield _line(depth) + "]"


def _flat(items: Iterable[Any]) -> bool:
    """Only scalars and empty containers: text the C encoder can make in one call."""
    return all(type(item) in _SCALARS or (type(item) in _CONTAINERS and not item) for item in items)


def _flat_text(value: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> str:
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    encoder = _flat_by_depth.get(depth)
    if encoder is None:
        encoder = _flat_by_depth[depth] = _c_encoder("," + _line(depth + 1))
    made = "".join(encoder(value, 0))
    # The C encoder put a line break and this depth's indent between items; the ones after the opening bracket
    # and before the closing one are added here.
    return made[0] + _line(depth + 1) + made[1:-1] + _line(depth) + made[-1]


def _key(key: Any) -> str:
    if type(key) is str:
        return encode_basestring_ascii(key)
    return "".join(_scalar({key: None}, 0))[1:-len(": null}")]  # int, float, bool, None keys: as json names them


def _line(depth: int) -> str:
    return "\n" + " " * (INDENT * depth)


_END = object()

"""Just enough of Kubernetes' protobuf encoding to read the review requests kubectl sends that way (kubectl 1.32+
posts `auth whoami`, `auth can-i` and `auth can-i --list` as application/vnd.kubernetes.protobuf, which
kube-apiserver accepts for every built-in kind). Answers stay JSON: kubectl's Accept allows it."""
from __future__ import annotations

from typing import Any

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"  # runtime.Unknown envelope: typeMeta = 1, raw = 2

# Field numbers from k8s.io/api/authorization/v1/generated.proto.
RESOURCE_ATTRIBUTES = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource",
                       7: "name"}
NON_RESOURCE_ATTRIBUTES = {1: "path", 2: "verb"}


class ProtobufError(ValueError):
    """The body is not the protobuf encoding of a Kubernetes object."""


def review_spec(body: bytes, kind: str) -> dict[str, Any]:
    """The spec of a SelfSubjectAccessReview or SelfSubjectRulesReview (or {} for a SelfSubjectReview, which has
    none) as its JSON form would give it."""
    if not body.startswith(MAGIC):
        raise ProtobufError("no k8s protobuf envelope")
    raw = _first(_fields(body[len(MAGIC):]), 2, b"")
    spec = _fields(_first(_fields(raw), 2, b"")) if kind != "SelfSubjectReview" else {}
    if kind == "SelfSubjectRulesReview":
        return {"namespace": _first(spec, 1, b"").decode()}
    if kind == "SelfSubjectAccessReview":
        return {name: _strings(_fields(_first(spec, number)), fields) for number, name, fields in (
            (1, "resourceAttributes", RESOURCE_ATTRIBUTES), (2, "nonResourceAttributes", NON_RESOURCE_ATTRIBUTES))
            if number in spec}
    return {}


def _strings(message: dict[int, list[Any]], names: dict[int, str]) -> dict[str, str]:
    return {names[number]: values[0].decode() for number, values in message.items() if number in names}


def _first(message: dict[int, list[Any]], number: int, default: Any = None) -> Any:
    return message.get(number, [default])[0]


def _fields(data: bytes) -> dict[int, list[Any]]:
    """Field number -> values of one message (varints as int, length-delimited as bytes)."""
    fields: dict[int, list[Any]] = {}
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            size, position = _varint(data, position)
            value, position = data[position:position + size], position + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, position = data[position:position + size], position + size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if position > len(data):
            raise ProtobufError("truncated message")
        fields.setdefault(number, []).append(value)
    return fields


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ProtobufError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position

"""Publishing: Security Hub (securityhub.py) and the S3 report bucket (s3.py)."""
from __future__ import annotations

from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Any, NoReturn


def _not_serializable(value: Any) -> NoReturn:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps(data, separators=(",", ":"), sort_keys=True), less what json.dumps does on every call: make a
# JSONEncoder and then a C encoder (three quarters of the cost for a small dict). No check for reference
# cycles: what is published is built from JSON and has none.
_encode_chunks = c_make_encoder(None, _not_serializable, encode_basestring_ascii, None, ":", ",", True, False, True)


def compact_text(data: Any) -> str:
    """The one JSON encoding of everything published, as ASCII text."""
    return "".join(_encode_chunks(data, 0))


def compact_json(data: Any) -> bytes:
    """The one JSON encoding of everything published: a finding is encoded once, for the S3 file, the size limits
    and the Security Hub request body."""
    return compact_text(data).encode()

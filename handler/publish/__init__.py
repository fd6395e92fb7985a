"""Publishing: Security Hub (securityhub.py) and the S3 report bucket (s3.py)."""
from __future__ import annotations

import json
from typing import Any


def compact_json(data: Any) -> bytes:
    """The one JSON encoding of everything published: a finding is encoded once, for the S3 file, the size limits
    and the Security Hub request body."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

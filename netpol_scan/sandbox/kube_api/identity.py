"""Identities as EKS sees them: the caller's ARN from the token, and the canonical ARN an access entry names (an
assumed role's session ARN maps to its IAM role ARN)."""
from __future__ import annotations

import re

ASSUMED_ROLE = re.compile(
    r"arn:(?P<partition>[^:]+):sts::(?P<account>\d+):assumed-role/(?P<role>[^/]+)/(?P<session>.+)")


def canonical_arn(arn: str) -> str:
    """`arn:aws:sts::1:assumed-role/R/s` -> `arn:aws:iam::1:role/R`; any other ARN is its own canonical ARN."""
    assumed = ASSUMED_ROLE.fullmatch(arn)
    return f"arn:{assumed['partition']}:iam::{assumed['account']}:role/{assumed['role']}" if assumed else arn


def session_name(arn: str) -> str | None:
    assumed = ASSUMED_ROLE.fullmatch(arn)
    return assumed["session"] if assumed else None

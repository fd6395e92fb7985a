"""Network policy semantics: what each engine's policy kinds do to the pods of a namespace (pure)."""
from __future__ import annotations

from handler.policy.engines import ANALYZERS, EGRESS, INGRESS, Direction, Effect, analyze, label
from handler.policy.selectors import Reach

__all__ = ["ANALYZERS", "EGRESS", "INGRESS", "Direction", "Effect", "Reach", "analyze", "label"]

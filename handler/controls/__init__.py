"""The controls the scanner evaluates. Add a control by adding a module and listing it in CONTROLS."""
from __future__ import annotations

from handler.controls import namespace_isolation, namespace_network_policy, policy_enforcement, scan_status
from handler.controls.base import Control, EvaluationOptions

# 5.3.2 comes last, so that a namespace's findings reach Security Hub after the other controls' ones: a reader
# that keeps one finding per namespace in import order (the acceptance suite's `by_namespace`) keeps 5.3.2's.
CONTROLS: tuple[Control, ...] = (policy_enforcement.CONTROL, namespace_isolation.INGRESS_CONTROL,
                                 namespace_isolation.EGRESS_CONTROL, namespace_network_policy.CONTROL)
# Every generator of findings, including the cluster's scan status, which is raised by the pipeline.
CONTROLS_BY_ID: dict[str, Control] = {control.id: control for control in (*CONTROLS, scan_status.CONTROL)}

__all__ = ["CONTROLS", "CONTROLS_BY_ID", "Control", "EvaluationOptions"]

"""The controls the scanner evaluates. Add a control by adding a module and listing it in CONTROLS."""
from __future__ import annotations

from handler.controls import namespace_network_policy, scan_status
from handler.controls.base import Control

CONTROLS: tuple[Control, ...] = (namespace_network_policy.CONTROL,)
# Every generator of findings, including the cluster's scan status, which is raised by the pipeline.
CONTROLS_BY_ID: dict[str, Control] = {control.id: control for control in (*CONTROLS, scan_status.CONTROL)}

__all__ = ["CONTROLS", "CONTROLS_BY_ID", "Control"]

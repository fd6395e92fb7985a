"""Checks an ASFF finding against botocore's `securityhub` BatchImportFindings input model, plus the documented
length limits that the model does not declare (REFERENCE.md, "Security Hub (CSPM) and ASFF")."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

LIMITS = {"Id": 512, "GeneratorId": 512, "Title": 256, "Description": 1024}


@lru_cache(maxsize=1)
def input_shape():
    model = botocore.session.get_session().get_service_model("securityhub")
    return model.operation_model("BatchImportFindings").input_shape


def model_errors(finding: dict[str, Any]) -> list[str]:
    """ParamValidator's report (types, required members, declared min/max) plus enums and patterns, which it
    does not check."""
    shape = input_shape()
    report = ParamValidator().validate({"Findings": [finding]}, shape)
    errors = [report.generate_report()] if report.has_errors() else []
    _walk(finding, shape.members["Findings"].member, "Findings[0]", errors)
    return errors


def _walk(value: Any, shape: Any, path: str, errors: list[str]) -> None:
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                _walk(item, shape.members[key], f"{path}.{key}", errors)
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, shape.member, f"{path}[{i}]", errors)
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            _walk(key, shape.key, f"{path} key {key!r}", errors)
            _walk(item, shape.value, f"{path}[{key!r}]", errors)
    elif shape.type_name == "string" and isinstance(value, str):
        if "enum" in meta and value not in meta["enum"]:
            errors.append(f"{path}: {value!r} not in {meta['enum']}")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value, re.DOTALL):
            errors.append(f"{path}: {value!r} does not match {meta['pattern']!r}")


def limit_errors(finding: dict[str, Any]) -> list[str]:
    """The documented BatchImportFindings limits, and no empty string, list or map anywhere."""
    errors = []
    for name, limit in LIMITS.items():
        if not 1 <= len(finding.get(name, "")) <= limit:
            errors.append(f"{name}: length {len(finding.get(name, ''))} not in 1..{limit}")
    if not 1 <= len(finding.get("Resources", [])) <= 32:
        errors.append("Resources: not 1..32 entries")
    fields = finding.get("ProductFields", {})
    if len(fields) > 50:
        errors.append("ProductFields: more than 50 pairs")
    for key, value in fields.items():
        if not 1 <= len(key) <= 128 or not 1 <= len(value) <= 2048:
            errors.append(f"ProductFields[{key!r}]: key or value length out of range")
    text = finding.get("Remediation", {}).get("Recommendation", {}).get("Text")
    if text is not None and not 1 <= len(text) <= 512:
        errors.append("Remediation.Recommendation.Text: length out of range")
    errors.extend(empties(finding))
    return errors


def empties(value: Any, path: str = "$") -> list[str]:
    if value in ("", [], {}) or value is None:
        return [f"{path}: empty"]
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(empties(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(empties(item, f"{path}[{i}]"))
    return found

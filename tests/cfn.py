"""CloudFormation templates read as CloudFormation would: YAML with short tags, and a resolver that gives the
parameters their defaults (or overrides), evaluates the Conditions and Rules and the intrinsic functions the
project's templates use, so that tests can read what a stack deployed with those values would hold."""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long form ({"Fn::Sub": ...})."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_cfn(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


NO_VALUE = object()  # AWS::NoValue: the property or list item is left out
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
          "AWS::StackName": "netpol", "AWS::URLSuffix": "amazonaws.com"}


class TemplateError(ValueError):
    """A parameter value CloudFormation would refuse, or a Rule whose assertion fails."""


class Resolved:
    """A template with parameter values (defaults unless overridden), as CloudFormation would deploy it.
    `refs` gives what Ref and Fn::GetAtt of resources stand for (a resource's physical name, "Name.Attr")."""

    def __init__(self, template: dict, overrides: Mapping[str, str] | None = None,
                 refs: Mapping[str, Any] | None = None, pseudo: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.refs = {**PSEUDO, **(pseudo or {}), **self._parameters(overrides or {}), **(refs or {})}
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions", {}):
            self.condition(name)
        self._check_rules()

    def _parameters(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        unknown = set(overrides) - set(self.template["Parameters"])
        if unknown:
            raise TemplateError(f"no such parameter(s): {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in self.template["Parameters"].items():
            value = str(overrides[name]) if name in overrides else spec.get("Default")
            if value is None:
                raise TemplateError(f"parameter {name} has no default and no value")
            value = str(value)
            if "AllowedValues" in spec and value not in map(str, spec["AllowedValues"]):
                raise TemplateError(f"{name}={value!r} not in {spec['AllowedValues']}")
            if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
                raise TemplateError(f"{name}={value!r} does not match {spec['AllowedPattern']}")
            values[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else value
        return values

    def _check_rules(self) -> None:
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.value(rule["RuleCondition"]):
                continue
            for assertion in rule["Assertions"]:
                if not self.value(assertion["Assert"]):
                    raise TemplateError(f"rule {name}: {assertion.get('AssertDescription', '')}")

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self.conditions[name]

    def resource(self, name: str) -> Any:
        """The resource's properties, resolved; None when its Condition is false."""
        resource = self.template["Resources"][name]
        if "Condition" in resource and not self.condition(resource["Condition"]):
            return None
        return self.value(resource.get("Properties", {}))

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                return self._intrinsic(key, arg)
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}

    def _intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Ref":
            if arg == "AWS::NoValue":
                return NO_VALUE
            return self.refs.get(arg, arg) if arg in self.template["Resources"] else self.refs[arg]
        if key in ("Condition", "Fn::Condition"):  # the long form, and the short tag !Condition as loaded
            return self.condition(arg)
        if key == "Fn::If":
            name, when_true, when_false = arg
            return self.value(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = (self.value(a) for a in arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self.value(arg[0])
        if key == "Fn::And":
            return all(self.value(a) for a in arg)
        if key == "Fn::Or":
            return any(self.value(a) for a in arg)
        if key == "Fn::Join":
            delimiter, items = arg
            return delimiter.join(str(i) for i in self.value(items))
        if key == "Fn::Split":
            delimiter, text = arg
            return str(self.value(text)).split(delimiter)
        if key == "Fn::Select":
            index, items = arg
            return self.value(items)[int(self.value(index))]
        if key == "Fn::GetAtt":
            name = ".".join(arg)
            return self.refs.get(name, name)
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.value(arg[1]))
            return self._sub(text, variables)
        raise TemplateError(f"intrinsic {key} is not resolved by tests/cfn.py")

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if name in self.refs:
                return str(self.refs[name])
            return name  # Resource.Attr without a given value: its own name stands for it
        return re.sub(r"\$\{([^}]+)\}", one, text)


def policy_statements(policy_document: Mapping[str, Any]) -> list[dict[str, Any]]:
    statements = policy_document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def actions_of(statement: Mapping[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]

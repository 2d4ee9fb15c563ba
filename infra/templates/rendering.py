"""A template rendered as CloudFormation would for one stack, and a role's policy out of it.

`Rendered` resolves parameters, conditions, mappings, `!Sub`, `!If`, `!Join` and the pseudo
parameters; references to the stack's own resources (`!Ref`, `!GetAtt`) and SSM dynamic
references (`{{resolve:ssm:…}}`) stay as they are, known only once the stacks exist.
`role_policy` then takes one role's policy and fills those in from what a running stack has
(the embedded stack's ARNs, local/iam.py): the same template text, so a policy the tests run
under is the policy the cloud gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra import templates

_NO_VALUE = object()
SSM_REFERENCE = re.compile(r"\{\{resolve:ssm:([^}]+)\}\}")


@dataclass(frozen=True)
class Account:
    """Where a stack is deployed: its pseudo parameters (`AWS::Region`, …)."""

    region: str
    account_id: str
    partition: str = "aws"

    def pseudo_parameters(self) -> dict[str, str]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
        }


class TemplateError(ValueError):
    """A template cannot be rendered as asked; the message names the template and the fix."""


class Rendered:
    """A template with its parameters, conditions, mappings and `!Sub`s resolved."""

    def __init__(self, name: str, account: Account, **parameters: str) -> None:
        self.name = name
        self._pseudo_parameters = account.pseudo_parameters()
        self._template = templates.load(name)
        declared = self._template.get("Parameters", {})
        unknown = set(parameters) - set(declared)
        if unknown:
            raise TemplateError(f"{name}.yaml has no parameters {sorted(unknown)}")
        self._parameters: dict[str, Any] = {}
        for key, declaration in declared.items():
            value = parameters.get(key, declaration.get("Default"))
            if value is None:
                raise TemplateError(f"{name}.yaml needs parameter {key}")
            if declaration["Type"] == "CommaDelimitedList":
                value = str(value).split(",") if value != "" else [""]
            self._parameters[key] = value
        self._conditions: dict[str, bool] = {}
        self.resources = {
            logical_id: self.value(resource)
            for logical_id, resource in self._template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.value(self._template["Conditions"][name]))
        return self._conditions[name]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource["Properties"]
            for logical_id, resource in self.resources.items()
            if resource["Type"] == resource_type
        }

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.value(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            [(function, argument)] = node.items()
            if function in _FUNCTIONS:
                return _FUNCTIONS[function](self, argument)
        values = {key: self.value(item) for key, item in node.items()}
        return {key: item for key, item in values.items() if item is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self._parameters:
            return self._parameters[name]
        if name in self._pseudo_parameters:
            return self._pseudo_parameters[name]
        return {"Ref": name}  # a resource: known only once it exists

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        variables = {key: self.value(value) for key, value in variables.items()}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            resolved = self._ref(name)
            return match.group(0) if isinstance(resolved, dict) else str(resolved)

        return re.sub(r"\$\{([\w:.]+)\}", substitute, text)

    def _find_in_map(self, argument: list[Any]) -> Any:
        mapping, first, second = (self.value(item) for item in argument)
        return self._template["Mappings"][mapping][first][second]

    def _if(self, argument: list[Any]) -> Any:
        name, when_true, when_false = argument
        return self.value(when_true if self.condition(name) else when_false)

    def _join(self, argument: list[Any]) -> Any:
        separator, items = self.value(argument[0]), self.value(argument[1])
        return separator.join(items)


_FUNCTIONS: dict[str, Any] = {
    "Ref": Rendered._ref,
    "Fn::Sub": Rendered._sub,
    "Fn::FindInMap": Rendered._find_in_map,
    "Fn::If": Rendered._if,
    "Fn::Join": Rendered._join,
    "Fn::Equals": lambda self, argument: self.value(argument[0]) == self.value(argument[1]),
    "Fn::Not": lambda self, argument: not self.value(argument[0]),
    "Fn::And": lambda self, argument: all(self.value(item) for item in argument),
    "Fn::Or": lambda self, argument: any(self.value(item) for item in argument),
    "Condition": lambda self, name: self.condition(name),
}


def role_policy(
    rendered: Rendered,
    role: str,
    *,
    attributes: Mapping[str, str],
    parameters: Mapping[str, str],
) -> dict[str, Any]:
    """The policy document of `rendered`'s IAM role `role` (its one inline policy), with the
    stack's own resources and the SSM parameters it names filled in: `attributes` maps
    `Logical.Attribute` (`!GetAtt`) or `Logical` (`!Ref`) to a value, `parameters` an SSM
    parameter's name to its value. Anything left unfilled is a TemplateError naming it."""
    where = f"{rendered.name}.yaml {role}"
    properties = rendered.resources.get(role, {}).get("Properties", {})
    policies = properties.get("Policies", [])
    if len(policies) != 1:
        raise TemplateError(f"{where}: expected one inline policy, found {len(policies)}")

    def fill(node: Any) -> Any:
        if isinstance(node, list):
            return [fill(item) for item in node]
        if isinstance(node, dict):
            if set(node) == {"Fn::GetAtt"}:
                return _known(attributes, ".".join(node["Fn::GetAtt"]), where)
            if set(node) == {"Ref"}:
                return _known(attributes, node["Ref"], where)
            return {key: fill(item) for key, item in node.items()}
        if isinstance(node, str):
            return SSM_REFERENCE.sub(lambda m: _known(parameters, m.group(1), where), node)
        return node

    document: dict[str, Any] = fill(policies[0]["PolicyDocument"])
    unresolved = re.findall(r"\$\{[\w:.]+\}", json.dumps(document))
    if unresolved:
        raise TemplateError(f"{where}: {sorted(set(unresolved))} left unresolved")
    return document


def _known(values: Mapping[str, str], name: str, where: str) -> str:
    if name not in values:
        raise TemplateError(
            f"{where} names {name!r}, which this stack has no value for: give it one "
            "(local/iam.py for the embedded stack)"
        )
    return values[name]


@dataclass(frozen=True)
class Grant:
    """One action an Allow statement of a policy grants, on the statement's resources."""

    sid: str
    action: str
    resources: tuple[str, ...]


def policy_grants(document: Mapping[str, Any]) -> list[Grant]:
    return [
        Grant(statement.get("Sid", ""), action, tuple(as_list(statement["Resource"])))
        for statement in document["Statement"]
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    ]


def as_list(value: Any) -> list[Any]:
    """A policy element that may be one value or a list of them, as a list."""
    return value if isinstance(value, list) else [value]

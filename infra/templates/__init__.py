"""The cloud's CloudFormation (SAM) templates, and how to read them.

`core.yaml` (shared resources), `service.yaml` (deployed once per service) and `workflow.yaml`
(the state machine and the rules). `load` reads one with CloudFormation's short tags (`!Ref`,
`!Sub`, `!GetAtt`, ...) turned into their long form (`{"Ref": ...}`, `{"Fn::Sub": ...}`), the
shape CloudFormation itself sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATES_DIR = Path(__file__).resolve().parent
CORE, WORKFLOW = "core", "workflow"


def path(name: str) -> Path:
    """A template's file: `core`, `workflow`, or `service` for every service."""
    return TEMPLATES_DIR / f"{name}.yaml"


class _CloudFormationLoader(yaml.SafeLoader):
    """A safe YAML loader that also understands CloudFormation's short tags."""


def _short_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)  # !GetAtt Resource.Attribute
    return {f"Fn::{tag_suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _short_tag)


def load(name: str) -> dict[str, Any]:
    # A SafeLoader subclass: plain data and CloudFormation's tags, nothing else.
    template: dict[str, Any] = yaml.load(path(name).read_text(), Loader=_CloudFormationLoader)
    return template

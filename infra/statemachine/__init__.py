"""The one state machine definition, rendered with its substitutions.

`sourceflow.asl.json` holds `${Name}` placeholders (quoted where the value is a string, bare
where it is a number), exactly as CloudFormation's DefinitionSubstitutions replaces them; the
local stack renders the same file the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFINITION_PATH = Path(__file__).resolve().parent / "sourceflow.asl.json"
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def placeholders(text: str | None = None) -> set[str]:
    return set(_PLACEHOLDER.findall(text if text is not None else DEFINITION_PATH.read_text()))


def render(substitutions: Mapping[str, str | int]) -> dict[str, Any]:
    """The definition with every placeholder replaced; a missing or unknown one is an error."""
    text = DEFINITION_PATH.read_text()
    needed = placeholders(text)
    missing, unknown = needed - set(substitutions), set(substitutions) - needed
    if missing or unknown:
        raise ValueError(
            f"state machine substitutions do not match {DEFINITION_PATH.name}: "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    rendered = _PLACEHOLDER.sub(lambda match: str(substitutions[match.group(1)]), text)
    definition: dict[str, Any] = json.loads(rendered)
    return definition


def queue_messages(definition: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The schema of each message the definition's tasks send, by the queue URL they send it
    to, in the definition's order (a rendered definition names each queue by its URL)."""
    sent: dict[str, list[str]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            body = node.get("MessageBody")
            if "QueueUrl" in node and isinstance(body, dict) and "schema" in body:
                schemas = sent.setdefault(node["QueueUrl"], [])
                if body["schema"] not in schemas:
                    schemas.append(body["schema"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(definition)
    return {queue: tuple(schemas) for queue, schemas in sent.items()}

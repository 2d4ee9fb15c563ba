"""Every contract's schema, examples and README row, checked against each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from shared.connectors.base import SOURCE_TYPES, connection_contract
from shared.errors import ContractViolation
from shared.runtime.contracts import (
    COMMON,
    CONTRACTS_DIR,
    parse,
    schema_id,
    schema_names,
    validate,
    violations,
)

EXAMPLES_DIR = CONTRACTS_DIR / "examples"
SCHEMA_FILES = sorted(CONTRACTS_DIR.glob("*.schema.json"))
# Documents people write into PostgreSQL columns (and sources files), not messages: they carry
# no envelope.
DOCUMENTS = {
    "batch-execution-params",
    "source-settings",
    "workflow-definition",
    *map(connection_contract, SOURCE_TYPES),
}
MESSAGE_CONTRACTS = [key for key in schema_names() if key[0] not in DOCUMENTS]
# Requests of a workflow's state machine: a task of a workflow run, not a run of one source, so
# they carry the workflow run's ids instead of the task fields (execution, source).
WORKFLOW_REQUESTS = {"workflow-task-request"}


def _examples(kind: str) -> list[Any]:
    """(name, version, path) of every example of `kind`, with readable test ids."""
    cases = []
    for directory in sorted(EXAMPLES_DIR.glob("*.v*")):
        name, _, version = directory.name.rpartition(".v")
        for path in sorted((directory / kind).glob("*.json")):
            cases.append(pytest.param(name, int(version), path, id=f"{directory.name}/{path.stem}"))
    return cases


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("name", "version", "path"), _examples("valid"))
def test_valid_example_passes(name: str, version: int, path: Path) -> None:
    validate(_load(path), name, version)


@pytest.mark.parametrize(("name", "version", "path"), _examples("valid"))
def test_valid_example_parses_from_its_body(name: str, version: int, path: Path) -> None:
    assert parse(path.read_bytes(), name) == _load(path)


@pytest.mark.parametrize(("name", "version", "path"), _examples("invalid"))
def test_invalid_example_is_rejected(name: str, version: int, path: Path) -> None:
    with pytest.raises(ContractViolation) as raised:
        validate(_load(path), name, version)
    assert str(raised.value).startswith(f"{name} v{version}: $")


@pytest.mark.parametrize(("name", "version", "path"), _examples("invalid"))
def test_invalid_example_fails_for_one_reason(name: str, version: int, path: Path) -> None:
    problems = violations(_load(path), name, version)
    assert len(problems) == 1, f"{path.name} should break one rule, breaks {problems}"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda path: path.name)
def test_schema_file_is_a_valid_draft_2020_12_schema(path: Path) -> None:
    schema = _load(path)
    Draft202012Validator.check_schema(schema)
    name, version = re.fullmatch(r"(.+)\.v(\d+)\.schema\.json", path.name).groups()  # type: ignore[union-attr]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert (
        schema["$id"]
        == schema_id(name, int(version))
        == f"urn:sourceflow:contract:{name}:v{version}"
    )
    assert schema["title"].strip()
    assert schema["description"].strip()


@pytest.mark.parametrize(("name", "version"), MESSAGE_CONTRACTS)
def test_message_schema_is_closed_and_carries_the_envelope(name: str, version: int) -> None:
    schema = _load(CONTRACTS_DIR / f"{name}.v{version}.schema.json")
    assert schema["unevaluatedProperties"] is False
    assert schema["properties"]["schema"] == {"const": name}
    assert schema["properties"]["version"] == {"const": version}
    envelope = {"$ref": f"{schema_id(COMMON, 1)}#/$defs/envelope"}
    assert envelope in schema["allOf"]
    if name.endswith("-request") and name not in WORKFLOW_REQUESTS:
        assert {"$ref": f"{schema_id(COMMON, 1)}#/$defs/task_fields"} in schema["allOf"]


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_a_column_document_is_not_a_message_and_is_closed(name: str) -> None:
    schema = _load(CONTRACTS_DIR / f"{name}.v1.schema.json")
    assert "allOf" not in schema or all("envelope" not in str(part) for part in schema["allOf"])
    assert schema["additionalProperties"] is False
    assert schema["description"].startswith("Not a message:")


def test_every_source_type_has_a_connection_contract() -> None:
    assert {connection_contract(source_type) for source_type in SOURCE_TYPES} <= {
        name for name, _ in schema_names()
    }


@pytest.mark.parametrize(("name", "version"), schema_names())
def test_every_contract_has_enough_examples(name: str, version: int) -> None:
    directory = EXAMPLES_DIR / f"{name}.v{version}"
    assert len(list((directory / "valid").glob("*.json"))) >= 2
    assert len(list((directory / "invalid").glob("*.json"))) >= 3


def test_every_example_directory_belongs_to_a_contract() -> None:
    on_disk = {f"{name}.v{version}" for name, version in schema_names()}
    directories = {path.name for path in EXAMPLES_DIR.iterdir() if path.is_dir()}
    assert directories == on_disk


def test_every_example_file_is_json() -> None:
    files = [path for path in EXAMPLES_DIR.rglob("*") if path.is_file()]
    assert files
    assert all(
        path.suffix == ".json" and path.parent.name in {"valid", "invalid"} for path in files
    )


def test_schema_names_cover_every_file_but_common() -> None:
    names = schema_names()
    assert (COMMON, 1) not in names
    assert len(names) == len(SCHEMA_FILES) - 1
    assert {name for name, _ in names} >= {
        "validation-request",
        "validation-result",
        "download-request",
        "download-result",
        "unlocking-request",
        "unlocking-result",
        "run-succeeded",
        "run-failed",
        "batch-execution-params",
    }


def test_readme_table_lists_every_contract() -> None:
    readme = (CONTRACTS_DIR / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\|\s*`([a-z][a-z0-9-]*)`\s*\|\s*(\d+)\s*\|(.*)\|\s*$", readme, re.M)
    listed = {(name, int(version)) for name, version, _ in rows}
    assert listed == set(schema_names())
    for name, _, rest in rows:
        producer, consumer, transport = (cell.strip() for cell in rest.split("|"))
        assert producer and consumer and transport, f"README row of {name} is incomplete"
    assert "adds only optional fields within a version" in readme

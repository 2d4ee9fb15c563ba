"""The message contracts: load the JSON Schemas in `contracts/`, validate, parse and build messages.

Every message sourceflow services exchange (SQS bodies, Step Functions task outputs, EventBridge
event details) has a draft 2020-12 JSON Schema in `contracts/<name>.v<version>.schema.json`.
Producers build messages with `message()`, which validates them before they leave; consumers read
them with `parse()`, which validates them against the version they carry. Anything that does not
match raises `ContractViolation`, whose text names the contract and every problem with its JSON
path, e.g. ``validation-request v1: $.produced_at: 'x' is not a 'date-time'``.

All schemas, `contracts/common.v1.schema.json` included, are registered in one offline
`referencing.Registry` under their `$id` (`urn:sourceflow:contract:<name>:v<version>`), so the
`$ref`s between them never touch the network.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from shared.errors import ContractViolation
from shared.timefmt import isoformat

__all__ = [
    "COMMON",
    "CONTRACTS_DIR",
    "ContractViolation",
    "errors",
    "format_timestamp",
    "message",
    "parse",
    "schema_id",
    "schema_names",
    "schema_of",
    "validate",
    "violations",
]

CONTRACTS_DIR: Path = Path(
    os.environ.get("SOURCEFLOW_CONTRACTS_DIR") or Path(__file__).resolve().parents[2] / "contracts"
)
"""Where the schema files live; `SOURCEFLOW_CONTRACTS_DIR` overrides it (read once, at import)."""

COMMON = "common"
"""The schema of shared definitions: registered for `$ref`s, but not a contract of its own."""

_FILE_NAME = re.compile(r"^(?P<name>[a-z][a-z0-9-]*)\.v(?P<version>[1-9][0-9]*)\.schema\.json$")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
)
_MAX_PROBLEM = 300


def schema_id(name: str, version: int) -> str:
    """The `$id` of a contract's schema: ``urn:sourceflow:contract:<name>:v<version>``."""
    return f"urn:sourceflow:contract:{name}:v{version}"


def schema_names() -> list[tuple[str, int]]:
    """Every contract on disk as sorted ``(name, version)`` pairs, `common` excluded."""
    return sorted(key for key in _catalogue() if key[0] != COMMON)


def format_timestamp(value: datetime) -> str:
    """Render an aware datetime the way messages carry it: UTC, ``2026-11-22T18:41:57.126486Z``.

    As everywhere in sourceflow (`shared.timefmt`), a whole second has no fraction:
    ``2026-11-22T18:41:57Z``.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ContractViolation(f"timestamp {value.isoformat()} has no time zone; use an aware one")
    return isoformat(value)


def schema_of(name: str, version: int = 1) -> Mapping[str, Any]:
    """The schema of contract `name` v`version`, as its file says (not to be changed); raises
    `ContractViolation` if there is no such contract or version."""
    return _validator(name, version).schema


def errors(document: Any, name: str, version: int = 1) -> list[ValidationError]:
    """jsonschema's errors for `document` against contract `name` v`version`, in the order of
    their JSON paths (the document's own first), for a caller that words its own messages;
    `violations` words them for you."""
    instance = dict(document) if isinstance(document, Mapping) else document
    found = _validator(name, version).iter_errors(instance)
    return sorted(found, key=lambda error: error.json_path)


def violations(
    message: Mapping[str, Any], name: str, version: int = 1, *, echo_values: bool = True
) -> list[str]:
    """Every way `message` breaks contract `name` v`version`, as ``"<json path>: <problem>"``.

    An empty list means the message is valid. Raises `ContractViolation` if there is no such
    contract or version. With `echo_values=False` a problem never repeats the offending value
    (a setting typed in the wrong place may be a password) and quotes the schema's description
    of what was expected instead.
    """
    validator = _validator(name, version)
    instance = dict(message) if isinstance(message, Mapping) else message
    rendered = [
        _render(error, validator.schema, echo_values) for error in validator.iter_errors(instance)
    ]
    unique = dict.fromkeys(sorted(rendered, key=lambda pair: pair[0]))
    return [f"{path}: {problem}" for path, problem in unique]


def validate(message: Mapping[str, Any], name: str, version: int = 1) -> None:
    """Raise `ContractViolation` naming the contract and every problem unless `message` is valid.

    For example ``validate({"schema": "validation-request", ...}, "validation-request")`` may
    raise ``validation-request v1: $.produced_at: 'x' is not a 'date-time'; $.task_token: is a
    required property``.
    """
    problems = violations(message, name, version)
    if problems:
        raise ContractViolation(f"{name} v{version}: " + "; ".join(problems))


def parse(body: str | bytes, name: str) -> dict[str, Any]:
    """Decode a message body and validate it as contract `name`, at the version it carries.

    A message without a usable integer `version` is validated against the newest version (whose
    violations then include its `version`); a contract without an envelope
    (batch-execution-params) is always validated against its newest version.
    """
    versions = _versions(name)
    try:
        text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ContractViolation(f"{name} message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ContractViolation(
            f"{name} message is not a JSON object: it is {_json_type(data)} ({_short(data)})"
        )

    version = versions[-1]
    if _has_envelope(name):
        carried = data.get("schema")
        if "schema" in data and carried != name:
            raise ContractViolation(
                f"expected a {name!r} message, but its schema is {_short(carried)}"
            )
        carried_version = data.get("version")
        if isinstance(carried_version, int) and not isinstance(carried_version, bool):
            if carried_version not in versions:
                raise ContractViolation(
                    f"{name} message has version {carried_version}, which has no schema "
                    f"(no {name}.v{carried_version}.schema.json); known versions: "
                    + ", ".join(str(known) for known in versions)
                )
            version = carried_version
    validate(data, name, version)
    return data


def message(
    name: str,
    *,
    correlation_id: str,
    produced_at: datetime | None = None,
    version: int = 1,
    **fields: Any,
) -> dict[str, Any]:
    """Build an outgoing message: the envelope plus `fields`, validated before it is returned.

    `produced_at` defaults to now; datetimes anywhere in `fields` are rendered with
    `format_timestamp`. A message that breaks its contract (a producer bug) raises
    `ContractViolation`.
    """
    _versions(name)  # unknown contract -> ContractViolation
    if not _has_envelope(name):
        raise ContractViolation(f"{name} is not a message: its contract has no envelope")
    if "schema" in fields:
        raise ContractViolation(f"{name}: 'schema' is set by message(), not passed as a field")
    built: dict[str, Any] = {
        "schema": name,
        "version": version,
        "correlation_id": correlation_id,
        "produced_at": format_timestamp(produced_at or datetime.now(UTC)),
    }
    built.update((key, _jsonable(value)) for key, value in fields.items())
    validate(built, name, version)
    return built


# --- loading -----------------------------------------------------------------------------------


@functools.cache
def _catalogue() -> dict[tuple[str, int], dict[str, Any]]:
    """Every schema file in CONTRACTS_DIR by (name, version), `common` included."""
    schemas: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sorted(CONTRACTS_DIR.glob("*.schema.json")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path}: not named <name>.v<version>.schema.json")
        name, version = match["name"], int(match["version"])
        schema = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(schema, dict) or schema.get("$id") != schema_id(name, version):
            raise ValueError(f"{path}: its $id must be {schema_id(name, version)!r}")
        schemas[name, version] = schema
    return schemas


@functools.cache
def _registry() -> Registry[Any]:
    """All schemas under their `$id`; nothing is ever fetched."""
    resources: list[tuple[str, Resource[Any]]] = [
        (schema_id(name, version), DRAFT202012.create_resource(schema))
        for (name, version), schema in _catalogue().items()
    ]
    return Registry().with_resources(resources)


def _versions(name: str) -> list[int]:
    """The versions of contract `name` on disk, oldest first; ContractViolation if none."""
    versions = [version for known, version in schema_names() if known == name]
    if not versions:
        known_names = sorted({known for known, _ in schema_names()})
        raise ContractViolation(f"unknown contract {name!r}; known: {', '.join(known_names)}")
    return versions


def _has_envelope(name: str) -> bool:
    """Whether contract `name` is a message: its newest schema takes in the envelope. (A column
    document may have a field called `schema` of its own, such as a postgres connection's.)"""
    schema = _catalogue()[name, _versions(name)[-1]]
    envelope = {"$ref": f"{schema_id(COMMON, 1)}#/$defs/envelope"}
    return envelope in schema.get("allOf", [])


def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time with a time zone offset (used if rfc3339-validator is missing)."""
    if not isinstance(value, str):
        return True  # formats only constrain strings
    if _RFC3339.match(value) is None:
        return False
    normalised = value[:-1] + "+00:00" if value[-1] in "Zz" else value
    try:
        parsed = datetime.fromisoformat(normalised)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _format_checker() -> FormatChecker:
    """The draft 2020-12 format checker, with a date-time check even without rfc3339-validator."""
    checker = Draft202012Validator.FORMAT_CHECKER
    if "date-time" in checker.checkers:
        return checker
    checker = FormatChecker(formats=list(checker.checkers))
    checker.checks("date-time")(_is_date_time)
    return checker


@functools.cache
def _validator(name: str, version: int) -> Draft202012Validator:
    """The compiled validator of one contract version; ContractViolation if there is none."""
    versions = _versions(name)
    if version not in versions:
        raise ContractViolation(
            f"{name} has no version {version} (no {name}.v{version}.schema.json); "
            f"known versions: {', '.join(str(known) for known in versions)}"
        )
    schema = _catalogue()[name, version]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry(), format_checker=_format_checker())


# --- rendering errors --------------------------------------------------------------------------


def _render(error: ValidationError, root: Any, echo_values: bool = True) -> tuple[str, str]:
    """One error as (json path, problem), the path pointing at the offending field."""
    path = error.json_path
    value = error.validator_value
    if error.validator == "required":
        missing = _missing_property(error)
        path, problem = f"{path}.{missing}", "is a required property"
    elif error.validator is None or (error.validator == "not" and value == {}):
        # `{"not": {}}` (or `false`, whose errors jsonschema reports without a path): the field
        # may not be there at all.
        problem = "must not be present"
    elif error.validator == "const":
        problem = f"must be {value!r}, not {_short(error.instance)}"
    elif error.validator == "not" and _is_exclusive_keys(value):
        # {"not": {"type": "object", "required": [a, b]}}: a and b exclude each other
        problem = " and ".join(repr(key) for key in value["required"]) + " cannot both be present"
    elif echo_values:
        problem = error.message
    else:
        problem = _problem_without_value(error)
    condition = _condition(error, root)
    if condition:
        problem = f"{problem} when {condition}"
    if len(problem) > _MAX_PROBLEM:
        problem = problem[: _MAX_PROBLEM - 3] + "..."
    return path, problem


def _problem_without_value(error: ValidationError) -> str:
    """jsonschema's message with the instance left out (its messages start with its repr), and
    what the schema expected; a pattern is described rather than quoted."""
    if error.validator == "pattern":
        problem = "is not in the expected form"
    else:
        problem = error.message.removeprefix(repr(error.instance)).strip()
    # The root's description describes the whole document, not what this field should be.
    described = error.path and isinstance(error.schema, dict)
    description = error.schema.get("description") if described else None
    return f"{problem}; expected: {description}" if description else problem


def _is_exclusive_keys(negated: Any) -> bool:
    """Whether a `not` subschema says "these keys may not all be present"."""
    return (
        isinstance(negated, dict)
        and isinstance(negated.get("required"), list)
        and set(negated) <= {"type", "required"}
        and negated.get("type", "object") == "object"
    )


def _missing_property(error: ValidationError) -> str:
    """The property a `required` error is about (jsonschema yields one error per property)."""
    present = error.instance if isinstance(error.instance, dict) else {}
    for key in error.validator_value:
        if key not in present and error.message == f"{key!r} is a required property":
            return str(key)
    return error.message.removesuffix(" is a required property").strip("'\"")


def _condition(error: ValidationError, root: Any) -> str:
    """For an error under an `if`/`then`, the condition that applied, e.g. "decision is 'run'"."""
    node, condition = root, ""
    for step in error.absolute_schema_path:
        if step == "then" and isinstance(node, dict) and isinstance(node.get("if"), dict):
            properties = node["if"].get("properties", {})
            condition = " and ".join(
                f"{key} is {rule['const']!r}"
                for key, rule in properties.items()
                if isinstance(rule, dict) and "const" in rule
            )
        try:
            node = node[step] if isinstance(node, dict | list) else None
        except (KeyError, IndexError, TypeError):
            node = None
        if node is None:
            break  # e.g. into a $ref: the schema path leaves this document
    return condition


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, with its article."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(constant: str) -> Any:
    """NaN and Infinity are accepted by Python's json module but are not JSON."""
    raise ValueError(f"{constant} is not a JSON value")


def _jsonable(value: Any) -> Any:
    """Datetimes rendered as message timestamps, inside dicts and lists too."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value

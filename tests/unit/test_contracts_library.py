"""shared.runtime.contracts: parsing, building and the text of a ContractViolation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from jsonschema import FormatChecker

from shared.errors import ContractViolation
from shared.runtime import contracts
from shared.runtime.contracts import (
    format_timestamp,
    message,
    parse,
    validate,
    violations,
)

REPO = Path(__file__).resolve().parents[2]
NAME = "acme-listings-20261122-184157"
ARN = f"arn:aws:states:eu-west-1:123456789012:execution:sourceflow-run:{NAME}"
TASK: dict[str, Any] = {
    "task_token": "token-1",
    "execution_arn": ARN,
    "execution_name": NAME,
    "source_id": "acme-listings",
}


def request(**changes: Any) -> dict[str, Any]:
    """A valid validation-request, with `changes` applied (None deletes a field)."""
    body: dict[str, Any] = {
        "schema": "validation-request",
        "version": 1,
        "correlation_id": NAME,
        "produced_at": "2026-11-22T18:41:57.126486Z",
        **TASK,
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def violation(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ContractViolation) as raised:
        call(*args, **kwargs)
    return str(raised.value)


# --- parse -------------------------------------------------------------------------------------


def test_parse_returns_the_valid_message_from_str_and_bytes() -> None:
    body = json.dumps(request())
    assert parse(body, "validation-request") == request()
    assert parse(body.encode(), "validation-request") == request()


@pytest.mark.parametrize(
    "body",
    [b"{not json", "", b"\xff\xfe{}", '{"schema": "validation-request",}', "NaN"],
    ids=["broken", "empty", "not-utf8", "trailing-comma", "nan"],
)
def test_parse_rejects_what_is_not_json(body: str | bytes) -> None:
    text = violation(parse, body, "validation-request")
    assert "validation-request" in text
    assert "is not JSON" in text


@pytest.mark.parametrize(
    ("body", "kind"),
    [("[1, 2]", "an array"), ('"run"', "a string"), ("42", "a number"), ("null", "null")],
)
def test_parse_rejects_what_is_not_an_object(body: str, kind: str) -> None:
    text = violation(parse, body, "validation-request")
    assert "validation-request message is not a JSON object" in text
    assert kind in text


def test_parse_rejects_another_contracts_message_naming_both() -> None:
    body = json.dumps(request(schema="download-request"))
    text = violation(parse, body, "validation-request")
    assert "'validation-request'" in text
    assert "'download-request'" in text


def test_parse_rejects_a_version_without_a_schema_naming_the_known_versions() -> None:
    text = violation(parse, json.dumps(request(version=7)), "validation-request")
    assert "version 7" in text
    assert "validation-request.v7.schema.json" in text
    assert "known versions: 1" in text


def test_parse_without_a_version_reports_it_with_the_other_problems() -> None:
    text = violation(parse, json.dumps(request(version=None, task_token="")), "validation-request")
    assert text.startswith("validation-request v1: ")
    assert "$.version: is a required property" in text
    assert "$.task_token: '' should be non-empty" in text


def test_parse_validates_against_the_carried_version() -> None:
    text = violation(parse, json.dumps(request(extra=1)), "validation-request")
    assert text == (
        "validation-request v1: $: Unevaluated properties are not allowed ('extra' was unexpected)"
    )


def test_parse_rejects_an_unknown_contract() -> None:
    text = violation(parse, "{}", "no-such-contract")
    assert "unknown contract 'no-such-contract'" in text
    assert "validation-request" in text


def test_parse_reads_batch_execution_params_without_an_envelope() -> None:
    assert parse('{"type": "Sold", "year": 2021}', "batch-execution-params") == {
        "type": "Sold",
        "year": 2021,
    }
    text = violation(parse, '{"typ": "Sold"}', "batch-execution-params")
    assert "'typ' was unexpected" in text


# --- validate: the text of a violation ---------------------------------------------------------


def test_violation_lists_every_problem_with_its_path() -> None:
    body = request(task_token=None, produced_at="x", execution_name="has spaces")
    text = violation(validate, body, "validation-request")
    assert text.startswith("validation-request v1: ")
    problems = text.removeprefix("validation-request v1: ").split("; ")
    assert problems == [
        "$.execution_name: 'has spaces' does not match '^[A-Za-z0-9_-]+$'",
        "$.produced_at: 'x' is not a 'date-time'",
        "$.task_token: is a required property",
    ]


def test_violation_paths_reach_into_nested_objects() -> None:
    plan = {
        "flow_type": "weekly",
        "window_field": "last_modified",
        "window_start": "2026-11-21",
        "window_end": "2026-11-22T18:41:57Z",
    }
    body = request(schema="download-request", plan=plan)
    assert violations(body, "download-request") == [
        "$.plan.flow_type: 'weekly' is not one of "
        "['normal', 'respecs', 'full_load', 'sold', 'backfill']",
        "$.plan.window_start: '2026-11-21' is not a 'date-time'",
        "$.plan.window_start_inclusive: is a required property",
    ]


def test_violation_of_a_conditional_rule_names_the_condition() -> None:
    body = {
        "schema": "validation-result",
        "version": 1,
        "correlation_id": NAME,
        "produced_at": "2026-11-22T18:41:57Z",
        "source_id": "acme-listings",
        "execution_arn": ARN,
        "decision": "skip",
        "runtime_count": 3,
    }
    assert violations(body, "validation-result") == [
        "$.reason: is a required property when decision is 'skip'",
        "$.runtime_count: must not be present when decision is 'skip'",
    ]


def test_violation_of_mutually_exclusive_keys() -> None:
    text = violation(validate, {"type": "Sold", "flow_type": "Sold"}, "batch-execution-params")
    assert text == "batch-execution-params v1: $: 'flow_type' and 'type' cannot both be present"


def test_violation_of_a_const_names_the_expected_value() -> None:
    assert violations(request(version=2), "validation-request") == ["$.version: must be 1, not 2"]


def test_validate_rejects_an_unknown_version() -> None:
    text = violation(validate, request(), "validation-request", 3)
    assert "validation-request has no version 3" in text
    assert "known versions: 1" in text


def test_valid_message_has_no_violations() -> None:
    assert violations(request(), "validation-request") == []
    validate(request(), "validation-request")


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-22T18:41:57",
        "2026-11-22",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-11-22T25:00:00Z",
        "20261122T184157Z",
        "2026-11-22T18:41:57+0200",
    ],
)
def test_timestamps_need_a_full_rfc3339_date_time_with_offset(value: str) -> None:
    assert not contracts._is_date_time(value)
    assert violations(request(produced_at=value), "validation-request") == [
        f"$.produced_at: {value!r} is not a 'date-time'"
    ]


@pytest.mark.parametrize(
    "value",
    ["2026-11-22T18:41:57.126486Z", "2026-11-22T18:41:57Z", "2026-11-22T20:41:57.5+02:00"],
)
def test_timestamps_with_an_offset_are_accepted(value: str) -> None:
    assert contracts._is_date_time(value)
    assert violations(request(produced_at=value), "validation-request") == []


# --- message -----------------------------------------------------------------------------------


def test_message_fills_the_envelope() -> None:
    before = datetime.now(UTC)
    built = message("validation-request", correlation_id=NAME, **TASK)
    assert built == {
        "schema": "validation-request",
        "version": 1,
        "correlation_id": NAME,
        "produced_at": built["produced_at"],
        **TASK,
    }
    assert built["produced_at"].endswith("Z")
    produced = datetime.fromisoformat(built["produced_at"].replace("Z", "+00:00"))
    assert before <= produced <= datetime.now(UTC)
    assert parse(json.dumps(built), "validation-request") == built


def test_message_renders_datetimes_in_utc_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    built = message(
        "download-request",
        correlation_id=NAME,
        produced_at=datetime(2026, 11, 22, 20, 41, 57, 126486, tzinfo=plus_two),
        plan={
            "flow_type": "normal",
            "window_field": "last_modified",
            "window_start": datetime(2026, 11, 21, 18, 40, 2, tzinfo=UTC),
            "window_end": datetime(2026, 11, 22, 18, 41, 57, 126486, tzinfo=UTC),
            "window_start_inclusive": False,
        },
        **TASK,
    )
    assert built["produced_at"] == "2026-11-22T18:41:57.126486Z"
    assert built["plan"]["window_start"] == "2026-11-21T18:40:02Z"
    assert built["plan"]["window_end"] == "2026-11-22T18:41:57.126486Z"


def test_message_rejects_a_bad_field() -> None:
    bad = {**TASK, "execution_name": "has spaces"}
    text = violation(message, "validation-request", correlation_id=NAME, **bad)
    assert text.startswith("validation-request v1: $.execution_name: ")


def test_message_rejects_a_missing_or_unknown_field() -> None:
    text = violation(message, "validation-request", correlation_id=NAME, source_id="s")
    assert "$.task_token: is a required property" in text
    text = violation(message, "validation-request", correlation_id=NAME, records=1, **TASK)
    assert "'records' was unexpected" in text


def test_message_rejects_a_naive_timestamp() -> None:
    text = violation(
        message,
        "validation-request",
        correlation_id=NAME,
        produced_at=datetime(2026, 11, 22, 18, 41, 57),
        **TASK,
    )
    assert "no time zone" in text


def test_message_rejects_an_empty_correlation_id_and_an_unknown_version() -> None:
    text = violation(message, "validation-request", correlation_id="", **TASK)
    assert "$.correlation_id: '' should be non-empty" in text
    text = violation(message, "validation-request", correlation_id=NAME, version=2, **TASK)
    assert "known versions: 1" in text


def test_message_will_not_build_what_is_not_a_message() -> None:
    text = violation(message, "batch-execution-params", correlation_id=NAME, type="Sold")
    assert "not a message" in text
    text = violation(message, "validation-request", correlation_id=NAME, schema="x", **TASK)
    assert "'schema' is set by message()" in text


def test_format_timestamp() -> None:
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    plus_one = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(2026, 1, 2, 4, 4, 5, 7, tzinfo=plus_one)) == (
        "2026-01-02T03:04:05.000007Z"
    )
    with pytest.raises(ContractViolation):
        format_timestamp(datetime(2026, 1, 2))


# --- where the schemas come from ---------------------------------------------------------------


def test_contracts_dir_defaults_to_the_repository() -> None:
    # A fresh interpreter without the override, whatever this one's environment says.
    script = (
        "from shared.runtime.contracts import CONTRACTS_DIR, schema_names; "
        "print(CONTRACTS_DIR); print(sorted(schema_names()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "SOURCEFLOW_CONTRACTS_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    directory, names = result.stdout.splitlines()
    assert Path(directory) == REPO / "contracts"
    assert "('validation-request', 1)" in names
    assert "'common'" not in names


def test_contracts_dir_can_be_overridden_by_the_environment(tmp_path: Path) -> None:
    for file_name in ("common.v1.schema.json", "run-failed.v1.schema.json"):
        shutil.copy(REPO / "contracts" / file_name, tmp_path / file_name)
    script = "from shared.runtime.contracts import schema_names; print(schema_names())"
    env = {**os.environ, "SOURCEFLOW_CONTRACTS_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[('run-failed', 1)]"


def test_date_time_is_checked_even_without_rfc3339_validator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_date_time = FormatChecker(formats=["email"])
    monkeypatch.setattr(contracts.Draft202012Validator, "FORMAT_CHECKER", without_date_time)
    checker = contracts._format_checker()
    assert checker is not without_date_time
    assert checker.conforms("2026-11-22T18:41:57.126486Z", "date-time")
    assert not checker.conforms("2026-11-22T18:41:57", "date-time")
    assert not checker.conforms("2026-11-22", "date-time")

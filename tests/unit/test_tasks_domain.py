"""The tasks service's decisions (services/tasks/domain.py) and its sql targets' settings."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.tasks.domain import (
    TaskFailed,
    child_answer,
    notification,
    params_to_write,
    query_parameters,
    run_status,
    variable_value,
)
from services.tasks.settings import sql_targets
from shared.rules.flows import FlowParams, FlowType
from shared.rules.workflows import WORKFLOW_TASK_ERROR, TaskStatus, WorkflowRunStatus
from shared.runtime.settings import SettingsError


def a_run(**changes: Any) -> dict[str, Any]:
    run = {
        "execution_name": "src-a-20261128T160000Z-req1",
        "source_id": "src-a",
        "status": "succeeded",
        "records": 12,
        "window_start": datetime(2026, 11, 28, 15, tzinfo=UTC),
        "window_end": datetime(2026, 11, 28, 16, tzinfo=UTC),
        "cursor_after": None,
        "error": None,
        "error_detail": None,
    }
    return {**run, **changes}


def test_a_succeeded_child_run_becomes_the_tasks_variables() -> None:
    answer = child_answer("load", a_run())
    assert answer.status is TaskStatus.SUCCEEDED and answer.error is None
    assert answer.variables == {
        "load_records": 12,
        "load_window_start": "2026-11-28T15:00:00Z",
        "load_window_end": "2026-11-28T16:00:00Z",
        "load_cursor": None,
    }


@pytest.mark.parametrize("status", ["failed", "cancelled", "skipped"])
def test_a_child_run_that_did_not_succeed_fails_the_task_saying_why(status: str) -> None:
    answer = child_answer("load", a_run(status=status, error="Boom", error_detail="vendor 503"))
    assert answer.status is TaskStatus.FAILED and answer.variables == {}
    assert f"ended {status}: vendor 503" in str(answer.error)


def test_the_flow_is_written_only_when_the_source_is_on_another() -> None:
    normal = FlowParams(FlowType.NORMAL)
    assert params_to_write("s", "normal", normal) is None
    assert params_to_write("s", "backdated", normal) == {"flow_type": "Full Load"}
    assert params_to_write("s", "sold", normal) == {"flow_type": "Sold"}
    assert params_to_write("s", "respecs", FlowParams(FlowType.RESPECS, sql="UPDATE x")) is None
    with pytest.raises(TaskFailed, match="cannot set a Re-specs flow") as raised:
        params_to_write("s", "respecs", normal)
    assert raised.value.error_name == WORKFLOW_TASK_ERROR


def test_a_query_binds_only_the_variables_it_names() -> None:
    spec = {"target": "w", "query": "SELECT %(a)s, %(a)s, 100 %% 7", "into": None}
    assert query_parameters("t", spec, {"a": 1, "b": 2}) == {"a": 1}
    with pytest.raises(TaskFailed, match="names 'missing'"):
        query_parameters("t", {**spec, "query": "SELECT %(missing)s"}, {"a": 1})


def test_a_notification_fills_its_placeholders_and_names_a_missing_one() -> None:
    spec = {"subject": "campaign {id}", "message": "{id}: {n} ({none})"}
    assert notification("t", spec, {"id": 7, "n": 3, "none": None}) == ("campaign 7", "7: 3 ()")
    with pytest.raises(TaskFailed, match="names 'n'"):
        notification("t", spec, {"id": 7, "none": None})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("7"), 7),
        (Decimal("7.5"), 7.5),
        (date(2026, 11, 28), "2026-11-28"),
        (datetime(2026, 11, 28, 6, tzinfo=UTC), "2026-11-28T06:00:00Z"),
        (None, None),
        ("x", "x"),
        (True, True),
    ],
)
def test_a_first_value_becomes_a_json_variable(value: Any, expected: Any) -> None:
    assert variable_value(value) == expected
    json.dumps(variable_value(value))


def test_a_run_fails_iff_a_task_failed() -> None:
    assert run_status({"a": "succeeded", "b": "skipped"}) is WorkflowRunStatus.SUCCEEDED
    assert run_status({"a": "failed", "b": "succeeded"}) is WorkflowRunStatus.FAILED
    assert run_status({}) is WorkflowRunStatus.SUCCEEDED


def test_sql_targets_come_from_their_dsn_or_their_database_secret() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sourceflow/dev/sql-targets/lake"
    secrets = {arn: json.dumps({"host": "db.internal", "username": "r", "password": "s3cret-pw"})}
    raw = json.dumps({"warehouse": "postgresql://w@localhost/w", "lake": arn})

    targets = sql_targets(raw, secrets.__getitem__)

    assert targets["warehouse"] == "postgresql://w@localhost/w"
    assert "host=db.internal" in targets["lake"] and "user=r" in targets["lake"]
    assert sql_targets("", secrets.__getitem__) == {}


def test_a_target_whose_secret_is_no_database_secret_is_a_settings_error_naming_it() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:lake"
    with pytest.raises(SettingsError, match=f"database secret {arn} is not a JSON object"):
        sql_targets(json.dumps({"lake": arn}), {arn: "not json"}.__getitem__)

"""The operator's command prints the same way everywhere, against the embedded stack: JSON times
ISO-8601 in UTC with Z, tables that fit the terminal with every id whole, a skipped run that
says so with its own exit code, and JSON from the commands that act."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from ops.config import CREDENTIALS_VARIABLE, read_env_file, write_env_file
from ops.output import EXIT_SKIPPED
from tests.e2e.harness import Harness

DAY = timedelta(days=1)
# A string that is a time: ISO-8601, or the `2026-01-01 00:00:00` form JSON must not have.
TIME_LIKE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
ISO_UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def strings_in(document: Any) -> list[str]:
    if isinstance(document, dict):
        return [text for value in document.values() for text in strings_in(value)]
    if isinstance(document, list):
        return [text for value in document for text in strings_in(value)]
    return [document] if isinstance(document, str) else []


def json_of(harness: Harness, *args: str) -> Any:
    completed = harness.sourceflow(*args, "--json")
    assert completed.returncode in (0, 1), completed.stderr  # status exits 1 on a part down
    return json.loads(completed.stdout)


@pytest.fixture
def ran(harness: Harness) -> tuple[str, str]:
    """A source with a succeeded run: its id and the run's execution name."""
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=3, cursor=datetime.now(UTC) - 2 * DAY
    )
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED"
    return source_id, result.run["execution_name"]


def test_every_time_in_json_is_iso_8601_utc_with_z(harness: Harness, ran: tuple[str, str]) -> None:
    source_id, _ = ran
    documents = {
        "sources list": json_of(harness, "sources", "list"),
        "sources show": json_of(harness, "sources", "show", source_id),
        "runs": json_of(harness, "runs", "--source", source_id),
        "status": json_of(harness, "status"),
        "approvals": json_of(harness, "approvals"),
    }
    for command, document in documents.items():
        times = [text for text in strings_in(document) if TIME_LIKE.match(text)]
        assert times or command in ("approvals", "status"), command
        assert [text for text in times if not ISO_UTC_Z.match(text)] == [], command
    [run] = documents["runs"]
    assert ISO_UTC_Z.match(run["window_start"]) and ISO_UTC_Z.match(run["started_at"])


@pytest.mark.parametrize("columns", [80, 120])
def test_tables_fit_the_terminal_and_show_every_id_whole(
    harness: Harness, ran: tuple[str, str], columns: int
) -> None:
    source_id, execution_name = ran
    for command in (
        ["sources", "list"],
        ["runs", "--source", source_id],
        ["sources", "show", source_id],
    ):
        completed = harness.sourceflow(*command, environment={"COLUMNS": str(columns)})
        assert completed.returncode == 0, completed.stderr
        out = completed.stdout
        assert max(len(line) for line in out.splitlines()) <= columns, command
        assert source_id in out, command
        if command[0] == "runs" or command[1] == "show":
            assert execution_name in out, command
        assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?!Z)", out), command


def test_sources_show_is_titled_with_the_source_not_a_count(
    harness: Harness, ran: tuple[str, str]
) -> None:
    source_id, _ = ran
    out = harness.sourceflow("sources", "show", source_id, environment={"COLUMNS": "200"}).stdout
    assert out.splitlines()[0].rstrip() == f"source {source_id}"


def test_a_skipped_run_says_skipped_and_why_and_exits_3(harness: Harness) -> None:
    # Given a source whose lock another execution holds
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    now = datetime.now(UTC)
    holder = "arn:aws:states:us-east-1:123456789012:execution:sourceflow-local:someone-else"
    harness.set_lock(source_id, holder, now, now + timedelta(hours=1))
    try:
        # When a run of it is followed
        completed = harness.sourceflow("run", source_id, "--wait")
        # Then the run is said skipped, with the reason, and the exit code is a skip's
        assert completed.returncode == EXIT_SKIPPED, completed.stdout + completed.stderr
        last = completed.stdout.strip().splitlines()[-1]
        assert "SKIPPED" in last and "SourceLocked" in last and "SUCCEEDED" not in completed.stdout
        # and --json says it in one document on stdout
        followed = harness.sourceflow("run", source_id, "--wait", "--json")
        assert followed.returncode == EXIT_SKIPPED
        document = json.loads(followed.stdout)
        assert document["outcome"] == "SKIPPED" and document["source_id"] == source_id
        assert "SourceLocked" in document["progress"][-1]["detail"]
        assert ISO_UTC_Z.match(document["progress"][0]["at"])
    finally:
        harness.set_lock(source_id, None)


def test_the_commands_that_act_answer_json(harness: Harness) -> None:
    login = json_of(harness, "whoami")["login"]
    assert isinstance(login, str) and login
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    asked = json_of(harness, "run", source_id)
    assert asked["source_id"] == source_id and asked["event_id"]
    harness.wait_for_scheduler()
    [execution] = harness.executions_of(source_id)
    assert harness.finish(execution["executionArn"], source_id).status == "SUCCEEDED"


def test_a_login_the_database_refuses_is_one_line_naming_the_credentials_file(
    harness: Harness, tmp_path: Path
) -> None:
    # Given alice's credentials file with a wrong password
    login = parse_dsn(read_env_file(harness.stack.people["alice"])["DATABASE_URL"])
    wrong = tmp_path / "alice.env"
    write_env_file(wrong, {"DATABASE_URL": make_dsn(**{**login, "password": "not-hers"})})
    # When she acts with it, Then one line says the login was refused and where it came from
    completed = harness.sourceflow("whoami", environment={CREDENTIALS_VARIABLE: str(wrong)})
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    [line] = completed.stderr.strip().splitlines()
    assert "password authentication failed" in line and str(wrong) in line
    assert "not-hers" not in line

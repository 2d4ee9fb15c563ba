"""`sourceflow audit` against a real PostgreSQL, over a ledger the services wrote: validation,
download (with a fake connector) and unlocking called as their handlers call them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ops import audit
from ops.config import OperatorError
from services.scheduler.service import apply_reset, request_resets
from services.unlocking.service import unlock_run
from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, overlap
from shared.store.db import Database
from shared.timefmt import isoformat
from tests.builders import Execution, records_modified
from tests.fakes import FakeSink
from tests.integration.conftest import (
    RESPECS,
    MakeSource,
    NewExecution,
    downloaded_run,
    run_row,
    validate,
)

OVERLAP = overlap(DEFAULT_LATENESS_ALLOWANCE)


def succeeded_run(db: Database, execution: Execution, *stamps: datetime) -> dict[str, Any]:
    """Given: the execution validated, downloaded records stamped `stamps`, and unlocked."""
    downloaded_run(db, execution, records_modified(*stamps), FakeSink())
    unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS)
    row = run_row(db, execution.arn)
    assert row is not None and row["status"] == "succeeded", row
    return row


def reset_to_normal(db: Database, source_id: str) -> None:
    """What the scheduler does once a special flow has had its successful run."""
    requested: list[Mapping[str, Any]] = []
    request_resets(datetime.now(UTC), db=db, publish=lambda _kind, detail: requested.append(detail))
    [detail] = [detail for detail in requested if detail["source_id"] == source_id]
    event = {"id": uuid.uuid4().hex, "detail": detail}
    assert apply_reset(event, db=db, now=datetime.now(UTC)) is not None


def sourceflow_audit(database_url: str, state_dir: Path, *args: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "audit", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": database_url},
    )


def test_a_history_the_services_wrote_is_whole_until_the_cursor_is_edited_by_hand(
    db: Database,
    migrated_url: str,
    make_source: MakeSource,
    new_execution: NewExecution,
    tmp_path: Path,
) -> None:
    # Given a source's first run (a Full Load) and two Normal runs, as the services and the
    # scheduler run them
    source_id = make_source(runtime_count=0, cursor=None)
    now = datetime.now(UTC)
    full_load = succeeded_run(db, new_execution(source_id), now - timedelta(hours=2))
    reset_to_normal(db, source_id)
    first = succeeded_run(db, new_execution(source_id), datetime.now(UTC) - timedelta(seconds=2))
    second = succeeded_run(db, new_execution(source_id), datetime.now(UTC) - timedelta(seconds=1))
    assert [full_load["flow_type"], first["flow_type"], second["flow_type"]] == [
        "full_load",
        "normal",
        "normal",
    ]

    # When it is audited, Then its windows are whole, and the command exits 0
    audited = audit.audit_source(db, source_id)
    assert audited.gaps == ()
    assert [run.execution_name for run in audited.runs] == [
        full_load["execution_name"],
        first["execution_name"],
        second["execution_name"],
    ]
    whole = sourceflow_audit(migrated_url, tmp_path, source_id, "--json")
    assert whole.returncode == 0, whole.stderr
    document = json.loads(whole.stdout)
    assert (document["source_id"], document["gaps"]) == (source_id, [])
    assert document["cursor"] == isoformat(second["cursor_after"])
    normal = document["runs"][2]
    assert normal["window_start"] == isoformat(second["cursor_before"] - OVERLAP)
    assert normal["lateness_allowance_seconds"] == DEFAULT_LATENESS_ALLOWANCE.total_seconds()
    assert (normal["records"], normal["duplicates_skipped"], normal["future_records"]) == (1, 0, 0)
    assert (
        "no gap: the windows of 3 runs cover"
        in sourceflow_audit(migrated_url, tmp_path, source_id).stdout
    )

    # When an operator sets the cursor a day ahead by hand (a typo)
    ahead = second["window_end"] + timedelta(days=1)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET last_modified_date = %s WHERE source_id = %s",
            (ahead, source_id),
        )

    # Then the audit names the gap after the last run, with its cause, and exits 1
    broken = sourceflow_audit(migrated_url, tmp_path, source_id, "--json")
    assert broken.returncode == 1, broken.stderr
    [gap] = json.loads(broken.stdout)["gaps"]
    assert (gap["before"], gap["after"]) == (second["execution_name"], None)
    assert (gap["start"], gap["end"]) == (
        isoformat(second["window_end"] - OVERLAP),
        isoformat(ahead - OVERLAP),
    )
    assert gap["causes"][0] == (
        f"the cursor was edited by hand after {second['execution_name']}: "
        f"{isoformat(second['cursor_after'])} → {isoformat(ahead)}"
    )
    assert gap["causes"][1].startswith(f"cursor ahead of time: {isoformat(ahead)}")

    # When a run then fails, and the next one runs from the edited cursor
    failed = new_execution(source_id)
    validate(db, failed)
    unlock_run(failed.unlock_failed(error="SourceUnavailable"), db=db, respecs=RESPECS)
    third = succeeded_run(db, new_execution(source_id))

    # Then the gap lies between the last good run and that one, naming the failure beside it
    later = sourceflow_audit(migrated_url, tmp_path, source_id, "--json")
    assert later.returncode == 1
    between, trailing = json.loads(later.stdout)["gaps"]
    assert (between["before"], between["after"]) == (
        second["execution_name"],
        third["execution_name"],
    )
    assert (between["start"], between["end"]) == (
        isoformat(second["window_end"] - OVERLAP),
        isoformat(third["window_start"]),
    )
    assert between["causes"][0].startswith("the cursor was edited by hand between")
    assert between["causes"][-1] == (f"failed runs between them: {failed.name} (SourceUnavailable)")
    assert trailing["after"] is None
    # And the table says the same
    table = sourceflow_audit(migrated_url, tmp_path, source_id)
    assert table.returncode == 1 and "gaps: 2" in table.stdout

    # And audited since the run after the edit, that run is the baseline: only the cursor gap
    since = sourceflow_audit(
        migrated_url, tmp_path, source_id, "--since", isoformat(third["started_at"]), "--json"
    )
    assert since.returncode == 1
    [only] = json.loads(since.stdout)["gaps"]
    assert only["after"] is None


def test_a_source_without_succeeded_runs_has_nothing_to_audit(
    db: Database, migrated_url: str, make_source: MakeSource, tmp_path: Path
) -> None:
    source_id = make_source(runtime_count=0, cursor=None)
    completed = sourceflow_audit(migrated_url, tmp_path, source_id, "--json")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {
        "source_id": source_id,
        "cursor": None,
        "runs": [],
        "gaps": [],
        "backfills": [],
    }
    table = sourceflow_audit(migrated_url, tmp_path, source_id)
    assert table.stdout.strip() == f"{source_id} has no succeeded runs to audit"


def test_an_unknown_source_is_one_line_naming_it(
    db: Database, migrated_url: str, tmp_path: Path
) -> None:
    with pytest.raises(OperatorError, match="unknown source 'nope'"):
        audit.audit_source(db, "nope")
    completed = sourceflow_audit(migrated_url, tmp_path, "nope")
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    [line] = completed.stderr.strip().splitlines()
    assert "unknown source 'nope'" in line

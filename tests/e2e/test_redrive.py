"""`sourceflow redrive RUN` on the embedded stack: a run fails, its vendor is healed, and the
redrive runs the failed window again as a new run (the emulator has no RedriveExecution); the
ledger links the two runs and says who redrove; a second redrive, and a redrive of a run that
did not fail, are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.runtime.executions import execution_arn
from tests.e2e.harness import Harness

DAY = timedelta(days=1)
WINDOW = ("window_field", "window_start", "window_end", "window_start_inclusive")


def shown(harness: Harness, run: str) -> dict[str, Any]:
    completed = harness.sourceflow("runs", "show", run, "--json")
    assert completed.returncode == 0, completed.stderr
    return dict(json.loads(completed.stdout)["run"])


def test_a_failed_run_redriven_loads_its_window_again_and_the_ledger_links_the_runs(
    harness: Harness,
) -> None:
    # Given a run that failed in Download: the vendor refused it
    now = datetime.now(UTC)
    dataset = harness.new_dataset([DAY / 10] * 5, now=now)
    cursor = now - DAY
    source_id = harness.new_source(dataset, cursor=cursor, runtime_count=4)
    harness.vendor.fault(dataset, fail_status=400, after_records=0)
    failed = harness.run(source_id)
    assert (failed.run["status"], failed.run["error"]) == ("failed", "SourceRequestRejected")
    failed_run = failed.run["execution_name"]

    # When the vendor is healed and alice redrives the run
    harness.vendor.clear_faults()
    completed = harness.sourceflow("redrive", failed_run, "--json", person="alice")

    # Then a new run is started over the failed run's window, and succeeds
    assert completed.returncode == 0, completed.stderr
    done = json.loads(completed.stdout)
    assert (done["failed_run"], done["how"], done["redriven_by"]) == (
        failed_run,
        "new_run",
        "alice",
    )
    new_arn = execution_arn(harness.stack.env["STATE_MACHINE_ARN"], done["redrive_run"])
    redriven = harness.finish(new_arn, source_id)
    assert redriven.status == "SUCCEEDED", redriven
    assert {field: redriven.run[field] for field in WINDOW} == {
        field: failed.run[field] for field in WINDOW
    }
    assert (redriven.run["flow_type"], redriven.run["records"]) == ("normal", 5)
    assert redriven.source is not None and redriven.source["last_modified_date"] > cursor

    # And `runs show` links the two runs, saying who redrove
    assert shown(harness, failed_run)["redriven_as"].startswith(
        f"{done['redrive_run']}: a new run over its window, by alice at "
    )
    new_run = shown(harness, done["redrive_run"])
    assert new_run["redrive_of"] == failed_run
    assert new_run["asked_by"] == f"alice, with `sourceflow redrive {failed_run}`"

    # And a run is redriven once, and only a failed run
    again = harness.sourceflow("redrive", failed_run, person="bob")
    assert again.returncode != 0
    assert f"was redriven already by alice, as {done['redrive_run']}" in again.stderr
    not_failed = harness.sourceflow("redrive", done["redrive_run"], person="bob")
    assert not_failed.returncode != 0
    assert "did not fail (its status: succeeded)" in not_failed.stderr

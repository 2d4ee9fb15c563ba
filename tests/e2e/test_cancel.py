"""`sourceflow cancel`: the step in progress notices, stops, and the run ends cancelled with the
source unlocked, the cursor unchanged and no manifest naming its partial output."""

from __future__ import annotations

from datetime import timedelta

from shared.runtime import contracts
from tests.e2e.harness import WAIT_SECONDS, Cli, Events, Runs, Sources

DAY = timedelta(days=1)


def test_cancel_during_download(sources: Sources, runs: Runs, events: Events, cli: Cli) -> None:
    # Given a run downloading one-record pages, half a second each, for longer than an operator
    # on a loaded machine could take to cancel it (it stops at the cancel, not at the end)
    slow = sources.slow_source(pages=int(2 * WAIT_SECONDS), delay_ms=500, runtime_count=3)
    source_id, cursor = slow.source_id, slow.cursor
    arn = runs.start(source_id)
    name = arn.rsplit(":", 1)[1]
    runs.wait_until_downloading(arn, records=2)

    # When an operator cancels it
    asked = cli.sourceflow("cancel", name, "--reason", "wrong dataset", person="alice")
    assert asked.returncode == 0, asked.stderr
    result = runs.finish(arn, source_id)

    # Then the run ended cancelled, by whom and why, with nothing else changed
    assert (result.status, result.error) == ("FAILED", "RunCancelled")
    run = result.run
    assert (run["status"], run["error"], run["failed_step"]) == (
        "cancelled",
        "RunCancelled",
        "Download",
    )
    assert run["cancel_requested_by"] == "alice"
    assert run["cancel_reason"] == "wrong dataset"
    assert "wrong dataset" in run["error_detail"]
    source = result.source
    assert source is not None
    assert (source["locked_by"], source["last_modified_date"]) == (None, cursor)
    assert not [
        key for key in runs.raw_objects(f"{source_id}/{name}/") if key.endswith("manifest.json")
    ]

    # And a Run Cancelled event says so (a cancel is not a failure to page people about)
    event = events.notifications(
        lambda e: e["detail"].get("execution_arn") if e["detail-type"] == "Run Cancelled" else None,
        {arn},
    )[arn]
    contracts.validate(event["detail"], "run-cancelled")
    assert event["detail"]["cancelled_step"] == "Download"
    assert "wrong dataset" in event["detail"]["reason"]


def test_cancel_refuses_a_run_that_ended_or_does_not_exist(
    sources: Sources, runs: Runs, cli: Cli
) -> None:
    source_id = sources.new_source(sources.new_dataset([DAY]), runtime_count=3)
    done = runs.run(source_id)
    name = done.execution_arn.rsplit(":", 1)[1]
    ended = cli.sourceflow("cancel", name, "--reason", "too late")
    assert ended.returncode == 1 and "has already ended (succeeded)" in ended.stderr
    unknown = cli.sourceflow("cancel", "no-such-run", "--reason", "x")
    assert unknown.returncode == 1 and "no run 'no-such-run'" in unknown.stderr
    assert runs.run_row(done.execution_arn)["status"] == "succeeded"  # type: ignore[index]

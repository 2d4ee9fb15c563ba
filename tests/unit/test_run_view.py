"""A run's steps from its execution history (ops.run_view.step_visits): the events below have
the shapes Step Functions (and the moto server) give, for runs that succeeded, failed, were
cancelled by an operator, were aborted, are still going, and that entered a state twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from infra.statemachine import placeholders, render
from ops.run_view import (
    StepStatus,
    StepVisit,
    asked_by,
    main_path,
    run_summary,
    step_visits,
    table_fields,
)
from shared.timefmt import isoformat

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)

# The definition as deployed: what a run that meets no trouble goes through.
PATH = main_path(render(dict.fromkeys(placeholders(), 1)))


class History:
    """Builds a history event by event, one second apart."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._ids: Iterator[int] = count(1)

    def at(self, index: int) -> datetime:
        return T0 + index * SECOND

    def add(self, kind: str, **details: Any) -> History:
        event_id = next(self._ids)
        self.events.append(
            {"id": event_id, "type": kind, "timestamp": self.at(event_id), **details}
        )
        return self

    def state(self, kind: str, name: str, *, exits: bool = True) -> History:
        self.add(f"{kind}StateEntered", stateEnteredEventDetails={"name": name})
        return (
            self.add(f"{kind}StateExited", stateExitedEventDetails={"name": name})
            if exits
            else self
        )

    def task(self, name: str, *, fails_with: str | None = None, ends: bool = True) -> History:
        self.add("TaskStateEntered", stateEnteredEventDetails={"name": name})
        self.add("TaskScheduled").add("TaskStarted").add("TaskSubmitted")
        if not ends:
            return self
        if fails_with:
            self.add("TaskFailed", taskFailedEventDetails={"error": fails_with, "cause": "why"})
        else:
            self.add("TaskSucceeded")
        return self.add("TaskStateExited", stateExitedEventDetails={"name": name})


def statuses(visits: list[StepVisit]) -> list[tuple[str, str]]:
    return [(visit.step, str(visit.status)) for visit in visits]


def started() -> History:
    return (
        History()
        .add("ExecutionStarted")
        .task("Validate")
        .state("Choice", "RunOrSkip")
        .state("Pass", "StartDownload")
    )


def test_the_path_is_the_flow_when_nothing_goes_wrong() -> None:
    assert PATH == [
        "Validate",
        "RunOrSkip",
        "StartDownload",
        "Download",
        "MoreToDownload",
        "UnlockAfterSuccess",
        "PublishRunSucceeded",
        "Succeeded",
    ]


def test_a_succeeded_run_succeeds_every_step_with_its_times() -> None:
    history = (
        started()
        .task("Download")
        .state("Choice", "MoreToDownload")
        .task("UnlockAfterSuccess")
        .task("PublishRunSucceeded")
        .state("Succeed", "Succeeded")
        .add("ExecutionSucceeded", executionSucceededEventDetails={})
    )
    visits = step_visits(history.events, PATH)
    assert statuses(visits) == [(step, "succeeded") for step in PATH]
    download = visits[3]
    assert (download.started_at, download.ended_at) == (history.at(12), history.at(17))


def test_a_failed_run_names_the_failed_step_and_what_it_did_not_reach() -> None:
    history = (
        started()
        .task("Download", fails_with="SourceRequestRejected")
        .state("Pass", "DownloadFailed")
        .task("UnlockAfterFailure")
        .state("Choice", "SucceededOrFailed")
        .state("Choice", "CancelledOrFailed")
        .task("PublishRunFailed")
        .add("FailStateEntered", stateEnteredEventDetails={"name": "RunFailed"})
        .add(
            "ExecutionFailed",
            executionFailedEventDetails={"error": "SourceRequestRejected", "cause": "c"},
        )
    )
    visits = step_visits(history.events, PATH)
    assert statuses(visits) == [
        ("Validate", "succeeded"),
        ("RunOrSkip", "succeeded"),
        ("StartDownload", "succeeded"),
        ("Download", "failed"),
        ("DownloadFailed", "succeeded"),
        ("UnlockAfterFailure", "succeeded"),
        ("SucceededOrFailed", "succeeded"),
        ("CancelledOrFailed", "succeeded"),
        ("PublishRunFailed", "succeeded"),
        ("RunFailed", "failed"),
        ("MoreToDownload", "not reached"),
        ("UnlockAfterSuccess", "not reached"),
        ("PublishRunSucceeded", "not reached"),
        ("Succeeded", "not reached"),
    ]
    assert (visits[3].error, visits[3].cause) == ("SourceRequestRejected", "why")
    assert visits[-1].started_at is None and visits[-1].ended_at is None


def test_an_operators_cancel_is_cancelled_not_failed() -> None:
    history = (
        started()
        .task("Download", fails_with="RunCancelled")
        .state("Pass", "DownloadFailed")
        .task("UnlockAfterFailure")
        .task("PublishRunCancelled")
        .add("FailStateEntered", stateEnteredEventDetails={"name": "RunCancelled"})
        .add("ExecutionFailed", executionFailedEventDetails={"error": "RunCancelled"})
    )
    visits = {visit.step: visit.status for visit in step_visits(history.events, PATH)}
    assert visits["Download"] is StepStatus.CANCELLED
    assert visits["RunCancelled"] is StepStatus.CANCELLED
    assert visits["UnlockAfterFailure"] is StepStatus.SUCCEEDED


def test_an_aborted_execution_cancels_the_step_it_was_in() -> None:
    history = (
        started()
        .task("Download", ends=False)
        .add("ExecutionAborted", executionAbortedEventDetails={"error": "x", "cause": "y"})
    )
    visits = step_visits(history.events, PATH)
    download = visits[3]
    assert (download.step, download.status) == ("Download", StepStatus.CANCELLED)
    assert download.ended_at == history.at(len(history.events))
    assert statuses(visits)[4:] == [
        ("MoreToDownload", "not reached"),
        ("UnlockAfterSuccess", "not reached"),
        ("PublishRunSucceeded", "not reached"),
        ("Succeeded", "not reached"),
    ]


def test_an_uncaught_timeout_fails_the_step_it_was_in() -> None:
    # moto ends a stopped execution waiting for a token this way
    history = (
        started()
        .task("Download", ends=False)
        .add("TaskTimedOut", taskTimedOutEventDetails={"error": "States.Timeout"})
        .add("ExecutionFailed", executionFailedEventDetails={"error": "States.Timeout"})
    )
    download = step_visits(history.events, PATH)[3]
    assert (download.status, download.error) == (StepStatus.FAILED, "States.Timeout")


def test_a_run_under_way_shows_its_step_in_progress_and_the_rest_not_reached() -> None:
    history = started().task("Download", ends=False)
    visits = step_visits(history.events, PATH)
    assert statuses(visits) == [
        ("Validate", "succeeded"),
        ("RunOrSkip", "succeeded"),
        ("StartDownload", "succeeded"),
        ("Download", "in progress"),
        ("MoreToDownload", "not reached"),
        ("UnlockAfterSuccess", "not reached"),
        ("PublishRunSucceeded", "not reached"),
        ("Succeeded", "not reached"),
    ]
    assert visits[3].started_at == history.at(12) and visits[3].ended_at is None


def test_a_continued_download_is_a_visit_each_time() -> None:
    # A download that stopped before its invocation's time ran out, continued twice
    history = started()
    for _ in range(2):
        history.task("Download").state("Choice", "MoreToDownload")
        history.state("Pass", "ContinueDownload")
    history.task("Download", ends=False)
    visits = step_visits(history.events, PATH)
    assert statuses(visits)[3:] == [
        ("Download", "succeeded"),
        ("MoreToDownload", "succeeded"),
        ("ContinueDownload", "succeeded"),
        ("Download", "succeeded"),
        ("MoreToDownload", "succeeded"),
        ("ContinueDownload", "succeeded"),
        ("Download", "in progress"),
        ("UnlockAfterSuccess", "not reached"),
        ("PublishRunSucceeded", "not reached"),
        ("Succeeded", "not reached"),
    ]
    starts = [visit.started_at for visit in visits if visit.step == "Download"]
    assert None not in starts and len(set(starts)) == 3


def test_events_out_of_order_are_read_in_their_order() -> None:
    history = started().task("Download", ends=False)
    assert step_visits(reversed(history.events), PATH) == step_visits(history.events, PATH)


def test_a_skipped_run_has_not_reached_the_download() -> None:
    history = (
        History()
        .add("ExecutionStarted")
        .task("Validate")
        .state("Choice", "RunOrSkip")
        .state("Succeed", "Skipped")
        .add("ExecutionSucceeded", executionSucceededEventDetails={})
    )
    assert statuses(step_visits(history.events, PATH))[2:] == [
        ("Skipped", "succeeded"),
        ("StartDownload", "not reached"),
        ("Download", "not reached"),
        ("MoreToDownload", "not reached"),
        ("UnlockAfterSuccess", "not reached"),
        ("PublishRunSucceeded", "not reached"),
        ("Succeeded", "not reached"),
    ]


# -- what the database knows, said ----------------------------------------------------------


def record(**parts: Any) -> dict[str, Any]:
    ledger = {
        "execution_name": "src-20261128T120000Z-req1",
        "execution_arn": "arn:aws:states:r:1:execution:m:src-20261128T120000Z-req1",
        "source_id": "src",
        "status": "succeeded",
        "flow_type": "normal",
        "window_start": T0 - SECOND,
        "window_end": T0,
        "cursor_before": None,
        "cursor_after": T0,
        "records": 3,
        "manifest_key": "src/src-20261128T120000Z-req1/manifest.json",
        "cancel_requested_by": None,
    }
    empty = {"admission": None, "request": None, "backfill": None, "approval": None}
    redrives = {"redrive_of": None, "redriven_as": None}
    return {"ledger": ledger, **empty, "flow_set": None, **redrives, **parts}


def test_the_manifest_is_an_s3_uri_when_the_raw_bucket_is_known() -> None:
    assert run_summary(record(), "raw")["manifest"] == (
        "s3://raw/src/src-20261128T120000Z-req1/manifest.json"
    )
    assert run_summary(record(), None)["manifest"] == (
        "src/src-20261128T120000Z-req1/manifest.json"
    )


def test_who_asked_is_the_login_that_ran_sourceflow_run_or_the_backfills_requester() -> None:
    admitted = {"kind": "requested", "execution_name": "n", "execution_arn": "a"}
    asked = record(admission=admitted, request={"requested_by": "alice"})
    assert asked_by(asked) == "alice, with `sourceflow run`"
    assert asked_by(record(admission={**admitted, "kind": "scheduled"})) == "its schedule"
    assert asked_by(record()) == "started outside the scheduler"
    backfill = {
        "backfill_id": 7,
        "slice_number": 2,
        "attempt": 1,
        "requested_by": "bob",
        "reason": "vendor fixed March",
    }
    assert asked_by(record(backfill=backfill)) == (
        "backfill 7 slice 2 (attempt 1), requested by bob: vendor fixed March"
    )
    flow = {"changed_by": "carol", "reason": "new attributes"}
    assert asked_by(record(flow_set=flow)).endswith("; flow set by carol: new attributes")


def test_a_redrive_is_said_on_both_runs_with_who_redrove_and_how() -> None:
    failed_run = record(
        redriven_as={
            "redrive_execution_name": "src-20261128T130000Z-rd1",
            "how": "new_run",
            "redriven_by": "alice",
            "redriven_at": T0,
        }
    )
    new_run = record(redrive_of={"failed_run": "src-20261128T120000Z-req1", "redriven_by": "alice"})

    assert run_summary(failed_run, None)["redriven_as"] == (
        f"src-20261128T130000Z-rd1: a new run over its window, by alice at {isoformat(T0)}"
    )
    assert run_summary(new_run, None)["redrive_of"] == "src-20261128T120000Z-req1"
    assert asked_by(new_run) == "alice, with `sourceflow redrive src-20261128T120000Z-req1`"


def test_a_run_waiting_for_admission_says_so_and_has_no_execution() -> None:
    waiting = {"kind": "requested", "execution_name": "n", "execution_arn": None}
    summary = run_summary(record(ledger=None, admission={**waiting, "source_id": "src"}), None)
    assert summary["status"] == "waiting for admission"
    assert summary["execution_arn"] is None and summary["source_id"] == "src"


def test_the_table_puts_window_and_cursor_on_a_line_each_and_leaves_out_what_is_empty() -> None:
    rows = table_fields(run_summary(record(), None), str)
    fields = {row["field"]: row["value"] for row in rows}
    assert fields["window"] == f"{T0 - SECOND} → {T0}"
    assert fields["cursor"] == f"none → {T0}"
    assert "cursor_before" not in fields and "approved_by" not in fields
    assert "progress_records" not in fields

"""One source's bad row never breaks another source, the scheduler or the operator's command
(issue 16; docs/limits.md): a row written before migration 0012 whose JSON is nested 3,000
levels deep is read, listed, validated and passed over by name, against the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from ops.sources import flow_set, source_show, sources_list
from services.scheduler.service import admit, tick
from services.validation.service import validate_run
from shared.errors import PermanentError
from shared.rules.flows import FlowParams, FlowType
from shared.store.db import Database
from shared.store.sources import get_source
from shared.timefmt import isoformat
from tests.builders import Execution
from tests.fakes import fake_access
from tests.integration.conftest import (
    LEASE,
    RESPECS_TABLES,
    ROOM_FOR_EVERY_RUN,
    MakeSource,
    flow_history_of,
    source_row_text,
    validate,
)
from tests.legacy_rows import bounds_lifted, deeply_nested, write_before_the_bounds

DEEP = deeply_nested(3_000)


@pytest.fixture
def deep_params(db: Database, make_source: MakeSource) -> str:
    """A source whose batch_execution_params were written 3,000 levels deep, long ago."""
    source_id = make_source(runtime_count=3)
    write_before_the_bounds(db, source_id, "batch_execution_params", DEEP)
    return source_id


def test_the_bad_row_is_read_with_its_value_marked_unreadable(
    db: Database, deep_params: str
) -> None:
    source = get_source(db, deep_params)
    assert source is not None
    assert str(source["batch_execution_params"]) == "<unreadable: nested deeper than 32 levels>"


def test_the_operator_lists_every_source_and_is_told_what_is_wrong_with_it(
    db: Database, deep_params: str, make_source: MakeSource
) -> None:
    # Given a good source beside the bad one
    good = make_source(params={"type": "Sold"})
    # When the operator lists the sources and shows the bad one
    flows = {row["source_id"]: row["flow"] for row in sources_list(db)}
    shown = source_show(db, deep_params)
    # Then both are listed, the bad one marked, and showing it says what to fix
    assert (flows[good], flows[deep_params]) == ("Sold", "INVALID PARAMS")
    [problem] = shown["source"]["problems"]
    assert problem.startswith(f"source {deep_params!r}: batch_execution_params cannot be read")
    assert "nested deeper than 32 levels" in problem


@pytest.mark.parametrize(
    ("column", "error_name"),
    [("batch_execution_params", "InvalidFlowParams"), ("connection", "InvalidConnection")],
)
def test_its_run_fails_in_validation_by_name_and_changes_nothing(
    db: Database, make_source: MakeSource, column: str, error_name: str
) -> None:
    source_id = make_source(runtime_count=3)
    write_before_the_bounds(db, source_id, column, DEEP)
    before = source_row_text(db, source_id)
    execution = Execution(source_id, f"{source_id}-{uuid.uuid4().hex[:8]}")
    with pytest.raises(PermanentError) as caught:
        validate_run(
            execution.validation(),
            db=db,
            lease=LEASE,
            respecs_tables=RESPECS_TABLES,
            approval_gate=False,
            check_connection=fake_access().check,
        )
    assert caught.value.error_name == error_name
    assert "nested deeper than 32 levels" in str(caught.value)
    assert source_row_text(db, source_id) == before


def test_the_operator_rewrites_the_params_and_the_next_run_goes_ahead(
    db: Database, deep_params: str
) -> None:
    # Given the bad source's run failed by name
    with pytest.raises(PermanentError, match="batch_execution_params cannot be read"):
        validate(db, Execution(deep_params, f"{deep_params}-{uuid.uuid4().hex[:8]}"))
    # When the operator sets its flow again (the bounds hold the new value, not the old one)
    flow_set(
        db,
        deep_params,
        FlowParams(FlowType.NORMAL),
        reason="params were unreadable",
        respecs_tables=RESPECS_TABLES,
    )
    # Then its next run goes ahead, and the history keeps what the change replaced
    result = validate(db, Execution(deep_params, f"{deep_params}-{uuid.uuid4().hex[:8]}"))
    assert result["decision"] == "run"
    assert str(flow_history_of(db, deep_params)[-1]["from_params"]).startswith("<unreadable")


def test_a_scheduler_tick_passes_over_the_bad_source_and_starts_the_others(
    db: Database, deep_params: str, make_source: MakeSource
) -> None:
    # Given the bad source and a good one, both due every hour and never run on schedule
    good = make_source(runtime_count=3)
    scheduled = [good, deep_params]
    set_hourly(db, scheduled)
    started: list[str] = []
    published: list[Any] = []

    def start_run(source_id: str, slot: datetime, nonce: str) -> str:
        started.append(source_id)
        return f"arn:aws:states:eu-west-1:123456789012:execution:sourceflow-run:{source_id}"

    # When the schedule ticks
    now = datetime.now(UTC)
    event = {"id": str(uuid.uuid4()), "time": isoformat(now), "resources": ["rule/it-hourly"]}
    try:
        tick(
            event,
            db=db,
            admit=partial(admit, db=db, start_run=start_run, admission=ROOM_FOR_EVERY_RUN),
            publish=lambda *event: published.append(event),
            start_workflows=lambda now: [],
        )
    finally:
        deactivate(db, scheduled)
    # Then the good source's run started; the bad source's slot could not be written
    assert good in started
    assert deep_params not in started
    assert not any(detail["source_id"] == deep_params for _, detail in published)


def set_hourly(db: Database, source_ids: list[str]) -> None:
    """Due every hour (written as before the bounds: one of the rows breaks them)."""
    with bounds_lifted(db) as cur:
        cur.execute(
            "UPDATE public.source SET schedule_interval = interval '1 hour',"
            " last_scheduled_slot = NULL WHERE source_id = ANY(%s)",
            (source_ids,),
        )


def deactivate(db: Database, source_ids: list[str]) -> None:
    """Out of the schedule of the other tests, which share the database (the bad row cannot be
    written with the bounds in place)."""
    with bounds_lifted(db) as cur:
        cur.execute(
            "UPDATE public.source SET is_active = false, schedule_interval = NULL"
            " WHERE source_id = ANY(%s)",
            (source_ids,),
        )

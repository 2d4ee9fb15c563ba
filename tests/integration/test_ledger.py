"""shared.store.ledger.set_flow_params: the compare-and-set change of a source's flow, with
history."""

from __future__ import annotations

from typing import Any

from shared.store.db import Database, session_login
from shared.store.ledger import set_flow_params
from shared.store.sources import get_source
from tests.integration.conftest import (
    MakeSource,
    flow_history_of,
    source_row_text,
)


def compare_and_set(
    db: Database,
    source_id: str,
    params: dict[str, Any] | None,
    *,
    expected: dict[str, Any] | None,
    reason: str,
) -> bool:
    """set_flow_params in a transaction of its own, on the expectation that the source's params
    are `expected`; returns whether it applied."""
    with db.transaction() as cur:
        return set_flow_params(
            cur,
            source_id,
            params,
            reason=reason,
            expected=expected,
            check_expected=True,
        )


def test_set_flow_params_applies_only_when_the_params_are_as_expected(
    db: Database, people: dict[str, Database], make_source: MakeSource
) -> None:
    # Given a source on the Sold flow
    source_id = make_source(runtime_count=2, params={"type": "Sold", "year": 2021})
    before = source_row_text(db, source_id)
    registered = flow_history_of(db, source_id)

    # When a reset decided on other params is applied
    stale = compare_and_set(
        db,
        source_id,
        {"flow_type": "Normal"},
        expected={"type": "Full Load"},
        reason="reset to Normal",
    )

    # Then it is refused: nothing changes and no history is written
    assert stale is False
    assert source_row_text(db, source_id) == before
    assert flow_history_of(db, source_id) == registered

    # When a reset decided on the current params (keys in another order) is applied, by alice
    applied = compare_and_set(
        people["it_alice"],
        source_id,
        {"flow_type": "Normal"},
        expected={"year": 2021, "type": "Sold"},
        reason="reset to Normal",
    )

    # Then the params change and one history row says from what, to what, by whom (alice's
    # login: who is connected, not a name the writer passes) and why
    assert applied is True
    source = get_source(db, source_id)
    assert source is not None
    assert source["batch_execution_params"] == {"flow_type": "Normal"}
    history = flow_history_of(db, source_id)[len(registered) :]
    assert [(h["from_params"], h["to_params"], h["changed_by"], h["reason"]) for h in history] == [
        ({"type": "Sold", "year": 2021}, {"flow_type": "Normal"}, "it_alice", "reset to Normal")
    ]


def test_set_flow_params_compares_missing_params_and_can_clear_them(
    db: Database, make_source: MakeSource
) -> None:
    # Given a source without params
    source_id = make_source(runtime_count=2, params=None)

    # When params are set on the expectation that there are none, then cleared again
    set_on_none = compare_and_set(db, source_id, {"type": "Sold"}, expected=None, reason="sell-off")
    stale = compare_and_set(db, source_id, None, expected=None, reason="clear")
    cleared = compare_and_set(db, source_id, None, expected={"type": "Sold"}, reason="clear")

    # Then the first and the last applied, the stale one did not
    assert (set_on_none, stale, cleared) == (True, False, True)
    source = get_source(db, source_id)
    assert source is not None
    assert source["batch_execution_params"] is None
    assert [(h["from_params"], h["to_params"]) for h in flow_history_of(db, source_id)] == [
        (None, {"type": "Sold"}),
        ({"type": "Sold"}, None),
    ]


def test_a_hand_edit_is_recorded_as_one(db: Database, make_source: MakeSource) -> None:
    # Given a source, and an operator who edits its params with plain SQL
    source_id = make_source(runtime_count=2, params=None)
    with db.transaction() as cur:
        cur.execute(
            'UPDATE public.source SET batch_execution_params = \'{"type": "SOLD"}\''
            " WHERE source_id = %s",
            (source_id,),
        )

    # Then the history has the change, attributed to the database login, by hand
    [change] = flow_history_of(db, source_id)
    assert (change["from_params"], change["to_params"]) == (None, {"type": "SOLD"})
    with db.transaction() as cur:
        assert change["changed_by"] == session_login(cur)
    assert change["reason"] == "batch_execution_params edited directly (by hand)"


def test_an_update_that_leaves_the_params_alone_records_nothing(
    db: Database, make_source: MakeSource
) -> None:
    source_id = make_source(runtime_count=2, params={"type": "Sold"})
    registered = flow_history_of(db, source_id)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET runtime_count = 3,"
            ' batch_execution_params = \'{"type": "Sold"}\' WHERE source_id = %s',
            (source_id,),
        )
    assert flow_history_of(db, source_id) == registered

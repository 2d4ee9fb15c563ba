"""The flow history's writer: a change of a source's `batch_execution_params`, attributed; and
the attribution every change of a source row carries (`attributed`), which the database's
triggers record in the flow history and the settings history (`public.source_change`).

(The run ledger, `public.source_run`, and the source's lock are written by
`shared.store.runs` alone.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from psycopg2.extras import Json


def set_flow_params(
    cur: Any,
    source_id: str,
    to_params: Mapping[str, Any] | None,
    *,
    reason: str,
    expected: Mapping[str, Any] | None = None,
    check_expected: bool = False,
    request_id: str | None = None,
) -> bool:
    """Change a source's `batch_execution_params`; the database's trigger records the change
    in the flow history with `reason` and `request_id`, by the session's login (who changed it
    is who is connected, not a name the caller chooses).

    With `check_expected`, the change applies only if the params are still `expected`
    (compare-and-set: a decision made on stale params loses to an operator's edit).
    Returns whether the change was applied.
    """
    condition = (
        "AND batch_execution_params IS NOT DISTINCT FROM %(expected)s" if check_expected else ""
    )
    with attributed(cur, reason, request_id=request_id or ""):
        cur.execute(
            f"""
            UPDATE public.source SET batch_execution_params = %(to)s, updated_at = now()
             WHERE source_id = %(source_id)s {condition}
            RETURNING source_id
            """,
            {
                "source_id": source_id,
                "expected": Json(expected) if expected is not None else None,
                "to": Json(to_params) if to_params is not None else None,
            },
        )
        return cur.fetchone() is not None


@contextmanager
def attributed(cur: Any, reason: str, *, request_id: str = "") -> Iterator[None]:
    """The source rows written inside are changed for `reason` (and `request_id`); who changed
    them is the session's login, which the triggers read for themselves."""
    _attribute_changes(cur, reason, request_id)
    yield
    # Later statements of the same transaction must not be attributed to this change (after an
    # error the transaction is rolled back, the setting with it).
    _attribute_changes(cur, "", "")


def _attribute_changes(cur: Any, reason: str, request_id: str) -> None:
    cur.execute(
        "SELECT set_config('sourceflow.change_reason', %s, true),"
        " set_config('sourceflow.change_request', %s, true)",
        (reason, request_id),
    )

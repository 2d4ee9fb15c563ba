"""Unlocking's SQL: the rows it locks, the landed versions it keeps, the Re-specs query and
the result it reports; the run's end, the cursor and the lock go through `shared.store.runs`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2.sql import SQL, Identifier

from shared.errors import PermanentError, bounded_line
from shared.rules.respecs import RESPECS_SEARCH_PATH
from shared.rules.versions import VERSION_COUNTS, landing_warnings
from shared.store.db import SERVER_MESSAGE_CHARS, fetch_one, query_at_fault
from shared.store.privileges import RESPECS_ROLE
from shared.store.runs import OPEN_RUN_STATUSES, RunStatus
from shared.timefmt import isoformat


def lock_run_row(cur: Any, execution_arn: str) -> dict[str, Any] | None:
    return fetch_one(
        cur, "SELECT * FROM public.source_run WHERE execution_arn = %s FOR UPDATE", (execution_arn,)
    )


def lock_source_row(cur: Any, source_id: str) -> dict[str, Any] | None:
    return fetch_one(
        cur,
        """
        SELECT locked_by, last_modified_date, source_type, landed_since
          FROM public.source WHERE source_id = %s FOR UPDATE
        """,
        (source_id,),
    )


def forget_landed(cur: Any, execution_arn: str) -> None:
    """A failed run landed nothing: its versions are not in the raw zone's runs."""
    cur.execute("DELETE FROM public.landed_version WHERE execution_arn = %s", (execution_arn,))


def keep_landed_since(cur: Any, source_id: str, landed_since: datetime | None) -> None:
    """Drop the landed versions that no later Normal window reads again (future-dated ones stay
    until a window reaches them), and the leftovers of runs that never succeeded."""
    cur.execute(
        "UPDATE public.source SET landed_since = %s WHERE source_id = %s",
        (landed_since, source_id),
    )
    cur.execute(
        """
        DELETE FROM public.landed_version v
         WHERE v.source_id = %(source_id)s
           AND (v.last_modified <= %(landed_since)s
                OR NOT EXISTS (SELECT 1 FROM public.source_run r
                                WHERE r.execution_arn = v.execution_arn
                                  AND r.status IN %(kept)s))
        """,
        {
            "source_id": source_id,
            "landed_since": landed_since,
            "kept": (RunStatus.SUCCEEDED, *OPEN_RUN_STATUSES),
        },
    )


def server_version(cur: Any) -> int:
    """The server's version as libpq reports it (160002 is PostgreSQL 16.2); no round trip."""
    return int(cur.connection.server_version)


def apply_respecs(cur: Any, sql: str, statement_timeout_ms: int) -> int:
    """Run a checked Re-specs query in the caller's transaction, as the Re-specs role (which
    may update only the allowed tables, whatever the checker missed); returns the rows it
    changed."""
    cur.execute("SET LOCAL statement_timeout = %s", (f"{statement_timeout_ms}ms",))
    cur.execute(SQL("SET LOCAL ROLE {}").format(Identifier(RESPECS_ROLE)))
    # Every name the query leaves unqualified resolves in pg_catalog, as the checker read it.
    cur.execute("SELECT set_config('search_path', %s, true)", (RESPECS_SEARCH_PATH,))
    try:
        cur.execute(sql)  # no parameters: psycopg2 leaves the text exactly as checked
    except psycopg2.errors.QueryCanceled as exc:
        raise PermanentError(
            f"the Re-specs query ran longer than {statement_timeout_ms} ms and was cancelled; "
            "narrow its WHERE clause or raise RESPECS_STATEMENT_TIMEOUT_MS",
            error_name="RespecsQueryTimedOut",
        ) from exc
    except psycopg2.Error as exc:
        if not query_at_fault(exc.pgcode):
            raise  # the connection or the server, not the query: retried (shared.store.db)
        message = bounded_line(exc.diag.message_primary or str(exc), SERVER_MESSAGE_CHARS)
        raise PermanentError(
            f"the Re-specs query failed in PostgreSQL (SQLSTATE {exc.pgcode}): {message}; "
            "correct the query and set the flow again",
            error_name="RespecsQueryFailed",
        ) from exc
    rows = int(cur.rowcount)
    cur.execute("RESET ROLE")
    cur.execute("SET LOCAL statement_timeout = 0")
    cur.execute("SET LOCAL search_path TO DEFAULT")
    return rows


def result_fields(run: Mapping[str, Any], *, lock_released: bool) -> dict[str, Any]:
    def stamp(value: datetime | None) -> str | None:
        return isoformat(value) if value else None

    fields = {
        "source_id": run["source_id"],
        "execution_arn": run["execution_arn"],
        "status": run["status"],
        "lock_released": lock_released,
        "cursor_before": stamp(run["cursor_before"]),
        "cursor_after": stamp(run["cursor_after"]),
        "flow_type": run["flow_type"],
        "error_detail": (
            run["error_detail"]
            if run["status"] in (RunStatus.FAILED, RunStatus.CANCELLED)
            else None
        ),
    }
    if run["status"] == RunStatus.SUCCEEDED:
        # For the Run Succeeded event, which the state machine builds from this result.
        fields.update({count: run[count] or 0 for count in VERSION_COUNTS})
        # The download's own (a connector's: one each at most) after the versions'.
        download_warnings = run.get("download_warnings") or []
        fields["warnings"] = [*landing_warnings(run["future_records"] or 0), *download_warnings]
    return fields

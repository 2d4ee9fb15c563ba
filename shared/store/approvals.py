"""Approvals of Re-specs queries, shared by the validation service (which asks) and the
operator's command (with which a person answers).

A Re-specs query rewrites attributes across a source's data, so a second person approves it
before it runs; an approval is remembered per source and query, so the same query does not
ask twice. A query's identity is the SHA-256 of its text as PostgreSQL's parser reads it,
re-printed canonically (pglast): whitespace, comments and keyword case do not change it, any
constant, table or column does. (libpg_query's own fingerprint ignores constants, so
`WHERE id = 1` and `WHERE id = 2` would share one: not something an approval may hang on.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.errors
from pglast import parse_sql
from pglast.stream import RawStream

from shared.errors import SourceflowError
from shared.store.db import fetch_one
from shared.store.runs import RunStatus
from shared.timefmt import isoformat

APPROVAL_STATUSES = ("waiting", "approved", "rejected", "cancelled")
# What the decision functions raise when the person may not decide, the run (or backfill) is in
# no state for it, or nothing matched (migrations 0011 and 0014).
_REFUSALS = (
    psycopg2.errors.InsufficientPrivilege,
    psycopg2.errors.ObjectNotInPrerequisiteState,
    psycopg2.errors.NoDataFound,
)


def query_hash(sql: str) -> str:
    """The identity an approval is remembered by; `sql` must parse (validation checked it)."""
    canonical = RawStream()(parse_sql(sql))
    return hashlib.sha256(canonical.encode()).hexdigest()


def remembered(cur: Any, source_id: str, hash_: str) -> dict[str, Any] | None:
    """An earlier approval of this query for this source, if any."""
    return fetch_one(
        cur,
        "SELECT approved_by, approved_at FROM public.respecs_approval"
        " WHERE source_id = %s AND query_hash = %s",
        (source_id, hash_),
    )


def record_request(
    cur: Any,
    *,
    execution_arn: str,
    source_id: str,
    query: str,
    hash_: str,
    task_token: str,
    expires_at: datetime,
) -> dict[str, Any]:
    """Keep the Approve task's token for whoever answers; a redelivered request finds the row
    it already wrote (and a token re-issued for the same run replaces a waiting one). Who asked
    is filled in by the database: the login that last set the source's params."""
    cur.execute(
        """
        INSERT INTO public.run_approval
            (execution_arn, source_id, query, query_hash, expires_at, task_token)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (execution_arn) DO UPDATE SET task_token = EXCLUDED.task_token
         WHERE run_approval.status = 'waiting'
        """,
        (execution_arn, source_id, query, hash_, expires_at, task_token),
    )
    found = find(cur, execution_arn)
    assert found is not None
    return found


def mark_announced(cur: Any, execution_arn: str) -> None:
    cur.execute(
        "UPDATE public.run_approval SET announced_at = now() WHERE execution_arn = %s",
        (execution_arn,),
    )


def find(cur: Any, run: str) -> dict[str, Any] | None:
    """A run's approval by execution name or ARN, with the run's ledger status."""
    return fetch_one(
        cur,
        """
        SELECT a.*, r.execution_name, r.status AS run_status
          FROM public.run_approval a JOIN public.source_run r USING (execution_arn)
         WHERE r.execution_arn = %(run)s OR r.execution_name = %(run)s
        """,
        {"run": run},
    )


def waiting(cur: Any) -> list[dict[str, Any]]:
    """Runs waiting for a person, oldest first (ties by source, so the listing is stable)."""
    cur.execute(
        """
        SELECT r.execution_name, a.source_id, a.query, a.requested_by, a.requested_at,
               a.expires_at, a.query_hash, a.execution_arn
          FROM public.run_approval a JOIN public.source_run r USING (execution_arn)
         WHERE a.status = 'waiting' AND r.status = %s AND r.cancel_requested_at IS NULL
         ORDER BY a.requested_at, a.source_id
        """,
        (RunStatus.RUNNING,),
    )
    return [dict(row) for row in cur.fetchall()]


class DecisionRefused(SourceflowError):
    """The database refused a person's decision; its message says why."""


def decide(cur: Any, execution_arn: str, decision: str, *, reason: str | None) -> Decision:
    """A person's decision on a waiting run, through the database's `respecs_decide`: it takes
    the person from the session's login, refuses an approval by the person who asked (or by the
    superuser), and remembers an approved query for the source."""
    assert decision in APPROVAL_STATUSES[1:]
    row = refusable(
        cur,
        "SELECT person, approved_at FROM public.respecs_decide(%s, %s, %s)",
        (execution_arn, decision, reason),
    )
    return Decision(person=row["person"], approved_at=row["approved_at"])


def revoke(cur: Any, source_id: str, hash_: str, *, reason: str) -> dict[str, Any]:
    """Withdraw a remembered approval (the next run of that query asks again); recorded in
    `public.respecs_approval_revocation` with the session's login."""
    return refusable(
        cur, "SELECT * FROM public.respecs_revoke(%s, %s, %s)", (source_id, hash_, reason)
    )


def remembered_for(cur: Any, source_id: str) -> list[dict[str, Any]]:
    """The source's remembered approvals, newest first."""
    cur.execute(
        "SELECT source_id, query_hash, query, approved_by, approved_at, approved_in"
        " FROM public.respecs_approval WHERE source_id = %s ORDER BY approved_at DESC",
        (source_id,),
    )
    return [dict(row) for row in cur.fetchall()]


@dataclass(frozen=True)
class Decision:
    person: str
    approved_at: datetime | None


def refusable(cur: Any, statement: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """The one row a decision function returns; its refusal (the person may not, the thing is in
    no state for it, nothing matched) as DecisionRefused with the database's words."""
    try:
        cur.execute(statement, args)
    except _REFUSALS as exc:
        raise DecisionRefused(exc.diag.message_primary or str(exc)) from None
    return dict(cur.fetchone())


def result_fields(
    approval: Mapping[str, Any], *, approved_by: str, approved_at: datetime, remembered: bool
) -> dict[str, Any]:
    """The fields of an approval-result message."""
    return {
        "source_id": approval["source_id"],
        "execution_arn": approval["execution_arn"],
        "decision": "approved",
        "query_hash": approval["query_hash"],
        "approved_by": approved_by,
        "approved_at": isoformat(approved_at),
        "remembered": remembered,
    }

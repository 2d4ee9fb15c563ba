"""Registering and reading sources and runs: the rows an operator, the demo and the tests read
and write (the services keep their own SQL)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json

from shared.store.db import Database, fetch_one


@dataclass(frozen=True)
class SourceSpec:
    source_id: str
    name: str
    source_type: str
    connection: Mapping[str, Any]
    backdate_days: int = 30
    batch_execution_params: Mapping[str, Any] | None = None
    is_active: bool = True


def register_source(db: Database, spec: SourceSpec) -> None:
    """Insert the source, or update its settings; its cursor, counts and lock are kept."""
    with db.transaction() as cur:
        cur.execute(
            """
            INSERT INTO public.source
                (source_id, name, source_type, connection, backdate_days,
                 batch_execution_params, is_active)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (source_id) DO UPDATE
               SET name = EXCLUDED.name, source_type = EXCLUDED.source_type,
                   connection = EXCLUDED.connection, backdate_days = EXCLUDED.backdate_days,
                   is_active = EXCLUDED.is_active, updated_at = now()
            """,
            (
                spec.source_id,
                spec.name,
                spec.source_type,
                Json(dict(spec.connection)),
                spec.backdate_days,
                Json(dict(spec.batch_execution_params))
                if spec.batch_execution_params is not None
                else None,
                spec.is_active,
            ),
        )


def get_source(db: Database, source_id: str) -> dict[str, Any] | None:
    with db.transaction() as cur:
        return fetch_one(cur, "SELECT * FROM public.source WHERE source_id = %s", (source_id,))


def get_run(db: Database, execution_arn: str) -> dict[str, Any] | None:
    with db.transaction() as cur:
        return fetch_one(
            cur, "SELECT * FROM public.source_run WHERE execution_arn = %s", (execution_arn,)
        )


# -- people's changes (ops/source_changes.py, ops/sources_file.py) ----------------------------
# Each is attributed by its caller (shared.store.ledger.attributed): the database's trigger
# records who and why in public.source_change (migration 0018).


def lock_source(cur: Any, source_id: str) -> dict[str, Any] | None:
    """The source's row, locked until the transaction ends: no run takes its lock meanwhile,
    and no other change interleaves."""
    return fetch_one(
        cur, "SELECT * FROM public.source WHERE source_id = %s FOR UPDATE", (source_id,)
    )


def lock_sources(cur: Any) -> list[dict[str, Any]]:
    """Every source's row, locked (in one order, so two callers never deadlock)."""
    cur.execute("SELECT * FROM public.source ORDER BY source_id FOR UPDATE")
    return [dict(row) for row in cur.fetchall()]


def insert_source(cur: Any, columns: Mapping[str, Any]) -> bool:
    """Add a source with these columns (the others take their defaults); False if the id is
    taken (by a source deleted or not)."""
    names = list(columns)
    cur.execute(
        sql.SQL(
            "INSERT INTO public.source ({}) VALUES ({}) ON CONFLICT (source_id) DO NOTHING"
            " RETURNING source_id"
        ).format(
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder(name) for name in names),
        ),
        _adapted(columns),
    )
    return cur.fetchone() is not None


def update_source(cur: Any, source_id: str, columns: Mapping[str, Any]) -> None:
    """Set these columns of the source (its updated_at too)."""
    cur.execute(
        sql.SQL("UPDATE public.source SET {}, updated_at = now() WHERE source_id = {}").format(
            sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
                for name in columns
            ),
            sql.Placeholder("_source_id"),
        ),
        {**_adapted(columns), "_source_id": source_id},
    )


def _adapted(columns: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: Json(dict(value)) if isinstance(value, Mapping) else value
        for name, value in columns.items()
    }


def source_changes(cur: Any, source_id: str, *, limit: int) -> list[dict[str, Any]]:
    """The source's settings history, newest first."""
    cur.execute(
        """
        SELECT change_id, changed_at, changed_by, action, reason, changes
          FROM public.source_change WHERE source_id = %s
         ORDER BY change_id DESC LIMIT %s
        """,
        (source_id, limit),
    )
    return [dict(row) for row in cur.fetchall()]


def source_ids(cur: Any) -> set[str]:
    """The ids of the sources that are not deleted (a workflow's ingest tasks name one)."""
    cur.execute("SELECT source_id FROM public.source WHERE deleted_at IS NULL")
    return {row["source_id"] for row in cur.fetchall()}

"""Registering and reading sources and runs: the rows an operator, the demo and the tests read
and write (the services keep their own SQL)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
